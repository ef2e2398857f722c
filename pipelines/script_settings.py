"""A number an extension's panel sets (soft inpainting's sliders, FreeU's, Rescale CFG, PAG's and SAG's, A1111's NGMS):
the request field that holds it, the label and infotext key the extension gives it, its default and its slider's
range, in one place that the request's check, the infotext, the API and the panel all read; the keys another UI's
script writes for such numbers; an extension's infotext keys read back; and the share of a pass that a start or an
end setting is measured in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


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


@dataclass(frozen=True)
class ForeignKeys:
    """The infotext keys another UI's script writes for some settings (Forge's PAG, SAG and FreeU scripts), so its
    pictures read back: ``read`` gives Easel's keys for them where its ``enabled`` key says the script was on."""
    enabled: str
    keys: tuple[str, ...]  # its keys for ``settings``, in their order
    settings: tuple[Setting, ...]
    implied: tuple[tuple[str, str], ...] = ()  # Easel's keys and values its pictures imply

    def read(self, params: Mapping[str, str]) -> dict[str, str]:
        if params.get(self.enabled) != "True":
            return {}
        return {**dict(self.implied), **{setting.key: params[key] for key, setting in zip(self.keys, self.settings)
                                         if key in params}}


def switched_values(params: Mapping[str, str], enabled: str, switch: str, keys: Mapping[str, str],
                    flags: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request fields of an extension's infotext keys (``keys``: field -> key; ``flags``' fields read as True or
    False) and its ``switch`` on, when its ``enabled`` key says it was on (Dynamic Thresholding's, Deep Shrink's)."""
    if params.get(enabled) != "True":
        return {}
    return {switch: True, **{name: params[key] == "True" if name in flags else params[key]
                             for name, key in keys.items() if key in params}}


def share_of(done: int, total: int) -> float:
    """Where call or step ``done`` (counted from 0) of a pass of ``total`` lies, the share a start and an end (PAG's,
    FreeU's, Dynamic Thresholding's schedules) are given in: 0 the first, 1 the last."""
    return done / max(total - 1, 1)
