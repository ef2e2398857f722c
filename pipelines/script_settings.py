"""A number an extension's panel sets (soft inpainting's sliders, FreeU's, Rescale CFG, PAG's scale, A1111's NGMS):
the request field that holds it, the label and infotext key the extension gives it, its default and its slider's
range, in one place that the request's check, the infotext, the API and the panel all read."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    field: str  # the request's
    label: str  # the extension's slider
    key: str  # the extension's infotext key
    default: float
    low: float
    high: float
    step: float
    info: str  # the slider's help line
