"""A1111's ui-config.json: the values the generation tabs start with, under A1111's keys (``txt2img/Sampling
steps/value``), so that A1111's own file gives the fields whose labels match its values.

The Settings tab's *Defaults* section saves the tabs' current values there: those that differ from Easel's own, the
others taken out. The page's layout is made once, when Easel starts, so saved values show after the next start (A1111
asks for a reload of its UI). Only plain fields count (numbers, sliders, boxes, choices, text) with a label their tab
has once; fields a setting decides (clip skip...) are left to the Settings tab. A value a field cannot take (out of its
range, not among its choices) is passed over with a warning; keys Easel does not know stay in the file as they are.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

import gradio as gr
from pipelines.atomic import read_json_object, write_json_object

from .common import PROMPT_LABELS

logger = logging.getLogger(__name__)
KINDS = (gr.Slider, gr.Number, gr.Checkbox, gr.Radio, gr.Dropdown, gr.Textbox)


def _fits(component, value: Any) -> bool:
    """Whether ``component`` can start with ``value``."""
    if isinstance(component, gr.Checkbox):
        return isinstance(value, bool)
    if isinstance(component, (gr.Slider, gr.Number)):
        return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                and (component.minimum is None or value >= component.minimum)
                and (component.maximum is None or value <= component.maximum))
    if isinstance(component, (gr.Radio, gr.Dropdown)):
        choices = [choice[1] if isinstance(choice, tuple) else choice for choice in component.choices]
        if getattr(component, "multiselect", False):
            return isinstance(value, list) and all(item in choices for item in value)
        return value in choices or (getattr(component, "allow_custom_value", False) and isinstance(value, str))
    return isinstance(value, str)


class UiDefaults:
    """The tabs' plain fields by A1111 key, the values Easel builds them with, and what ``path`` holds."""

    def __init__(self, path: Path | None, tabs: list, skip: set[str]):
        self.path = Path(path) if path else None
        self.fields = {}
        for tab in tabs:
            components = tab.fields.components
            # the prompts by their own labels, not with the token counter's count in them
            labels = {name: PROMPT_LABELS.get(name, component.label) for name, component in components.items()}
            counts = Counter(labels.values())
            for name, component in components.items():
                if isinstance(component, KINDS) and labels[name] and counts[labels[name]] == 1 and name not in skip:
                    self.fields[f"{tab.fields.prefix}/{labels[name]}/value"] = component
        self.built = {key: component.value for key, component in self.fields.items()}
        try:
            self.stored = read_json_object(self.path)
        except ValueError as exc:
            self.stored = {}
            logger.warning("%s; the tabs start as built.", exc)

    def apply(self) -> None:
        """Start the fields with the file's values (before the page's layout is made)."""
        for key, value in self.stored.items():
            component = self.fields.get(key)
            if component is None or value == self.built[key]:
                continue
            if _fits(component, value):
                component.value = component.postprocess(value)
            else:
                logger.warning("%s: %s cannot be %r; it starts as %r.", self.path, key, value, self.built[key])

    def save(self, values: list[Any]) -> list[str]:
        """Keep ``values`` (one per field, in ``fields``' order) that differ from Easel's own, take out those that do
        not; the keys whose saved value changed."""
        changed = []
        for key, value in zip(self.fields, values):
            if value == self.built[key]:
                if key in self.stored:
                    del self.stored[key]
                    changed.append(key)
            elif self.stored.get(key, self.built[key]) != value:
                self.stored[key] = value
                changed.append(key)
        if changed and self.path:
            write_json_object(self.path, self.stored)
        return changed
