"""Dynamic Thresholding, mcmonkey's sd-dynamic-thresholding extension ("CFG Scale Fix"; ComfyUI's
DynamicThresholdingFull node, Forge's *DynamicThresholding Integrated*): a high CFG scale's guidance keeps its
direction but is brought back to the spread of a lower, *mimic* scale's, so the picture follows the prompt as hard
without burning. Its rule acts on the denoised pictures each step predicts (k-diffusion's): the guided one at the
CFG scale and at the mimic scale, each centred on its mean per channel (or per picture), the first clamped at its
top percentile of magnitudes (or the second's largest, whichever is larger), shrunk to the second's largest magnitude
(or scaled by their standard deviations) and moved back; ``Interpolate Phi`` mixes it with plain CFG. Either scale may
follow a schedule over the pass, from its minimum.

``composable.ComposedUNet`` applies it to each CFG call: the predictions are turned into denoised pictures at the
step's noise level (an epsilon or a v-prediction), guided by the rule, and turned back into the prompted half the
pipeline's own guidance then makes that picture of. Without ``Separate Feature Channels`` the extension measures the
whole batch at once; here each picture is measured by itself, so a batch's pictures stay those of single runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

import torch

from .errors import RequestError
from .samplers import NoiseLevel
from .script_settings import Setting, switched_values

MODES = ("Constant", "Linear Down", "Cosine Down", "Half Cosine Down", "Linear Up", "Cosine Up", "Half Cosine Up",
         "Power Up", "Power Down", "Linear Repeating", "Cosine Repeating", "Sawtooth")
VALUED_MODES = MODES[7:]  # the modes that read the scheduler value
STARTPOINTS, MEASURES = ("MEAN", "ZERO"), ("AD", "STD")
ENABLED = "Dynamic thresholding enabled"  # the extension's infotext keys, here and in the settings
NUMBERS = (
    Setting("dt_mimic_scale", "Mimic CFG Scale", "Mimic scale", 7.0, 1.0, 30.0, 0.5,
            "the CFG scale whose spread the picture keeps"),
    Setting("dt_threshold_percentile", "Top percentile of latents to clamp", "Threshold percentile", 100.0, 90.0,
            100.0, 0.05, "100 = none clamped"),
    Setting("dt_mimic_scale_min", "Minimum value of the Mimic Scale Scheduler", "Mimic scale minimum", 0.0, 0.0,
            30.0, 0.5, "where its schedule starts from"),
    Setting("dt_cfg_scale_min", "Minimum value of the CFG Scale Scheduler", "CFG scale minimum", 0.0, 0.0, 30.0,
            0.5, "where its schedule starts from"),
    Setting("dt_sched_val", "Scheduler Value", "Scheduler value", 4.0, 0.0, 40.0, 0.5,
            "Power Up/Down: the power; Repeating and Sawtooth: the repeats"),
    Setting("dt_interpolate_phi", "Interpolate Phi", "Interpolate Phi", 1.0, 0.0, 1.0, 0.01,
            "1 = the rule alone; 0 = plain CFG"),
)
DEFAULTS = {**{number.field: number.default for number in NUMBERS}, "dynamic_thresholding": False,
            "dt_mimic_mode": MODES[0], "dt_cfg_mode": MODES[0], "dt_separate_feature_channels": True,
            "dt_scaling_startpoint": STARTPOINTS[0], "dt_variability_measure": MEASURES[0]}
# Its other infotext keys, for the request's fields
KEYS = {"dt_mimic_mode": "Mimic mode", "dt_cfg_mode": "CFG mode", "dt_separate_feature_channels":
        "Separate Feature Channels", "dt_scaling_startpoint": "Scaling Startpoint",
        "dt_variability_measure": "Variability Measure", **{number.field: number.key for number in NUMBERS}}
CHOICES = (("dt_mimic_mode", "Mimic Scale Scheduler", MODES), ("dt_cfg_mode", "CFG Scale Scheduler", MODES),
           ("dt_scaling_startpoint", "Scaling Startpoint", STARTPOINTS),
           ("dt_variability_measure", "Variability Measure", MEASURES))


def check_choices(values: Mapping[str, Any]) -> None:
    """The request's schedules, startpoint and measure among the extension's, or a RequestError naming the field."""
    for field, label, choices in CHOICES:
        if values[field] not in choices:
            raise RequestError(f"{label} is one of {', '.join(choices)}; got {values[field]!r}.", field)


def scheduled(scale: float, mode: str, low: float, value: float, share: float) -> float:
    """A scale at ``share`` of the pass (0 the first call, 1 the last) under the extension's schedule ``mode``: from
    ``low`` up to ``scale`` by the mode's curve (``value``: its power or repeats)."""
    curves = {
        "Constant": lambda: 1.0, "Linear Down": lambda: 1 - share, "Half Cosine Down": lambda: math.cos(share),
        "Cosine Down": lambda: math.cos(share * 1.5707), "Linear Up": lambda: share,
        "Half Cosine Up": lambda: 1 - math.cos(share), "Cosine Up": lambda: 1 - math.cos(share * 1.5707),
        "Power Up": lambda: share ** value, "Power Down": lambda: 1 - share ** value,
        "Linear Repeating": lambda: abs(0.5 - (share * value) % 1.0) * 2,
        "Cosine Repeating": lambda: math.cos(share * 6.28318 * value) * 0.5 + 0.5,
        "Sawtooth": lambda: (share * value) % 1.0}
    return (scale - low) * curves[mode]() + low


@dataclass(frozen=True)
class DynamicThresholding:
    """The extension's settings, as the request's fields hold them, in its API's order (``FIELDS``)."""
    dt_mimic_scale: float
    dt_threshold_percentile: float
    dt_mimic_mode: str
    dt_mimic_scale_min: float
    dt_cfg_mode: str
    dt_cfg_scale_min: float
    dt_sched_val: float
    dt_separate_feature_channels: bool
    dt_scaling_startpoint: str
    dt_variability_measure: str
    dt_interpolate_phi: float

    def infotext(self) -> dict[str, Any]:
        """The extension's keys: its schedules' only where they are not constant."""
        params: dict[str, Any] = {ENABLED: True, **{KEYS[name]: getattr(self, name) for name in (
            "dt_mimic_scale", "dt_separate_feature_channels", "dt_scaling_startpoint", "dt_variability_measure",
            "dt_interpolate_phi", "dt_threshold_percentile")}}
        for mode, low in (("dt_mimic_mode", "dt_mimic_scale_min"), ("dt_cfg_mode", "dt_cfg_scale_min")):
            if getattr(self, mode) != MODES[0]:
                params.update({KEYS[mode]: getattr(self, mode), KEYS[low]: getattr(self, low)})
        if {self.dt_mimic_mode, self.dt_cfg_mode} & set(VALUED_MODES):
            params[KEYS["dt_sched_val"]] = self.dt_sched_val
        return params

    def denoised(self, unprompted: torch.Tensor, prompted: torch.Tensor, cfg_scale: float,
                 share: float) -> torch.Tensor:
        """The guided denoised pictures for the ``unprompted`` and ``prompted`` ones (pictures x channels x height x
        width) at CFG ``cfg_scale``, at ``share`` of the pass: the extension's rule."""
        mimic = scheduled(self.dt_mimic_scale, self.dt_mimic_mode, self.dt_mimic_scale_min, self.dt_sched_val, share)
        cfg = scheduled(cfg_scale, self.dt_cfg_mode, self.dt_cfg_scale_min, self.dt_sched_val, share)
        towards = prompted - unprompted
        mimic_target, cfg_target = unprompted + towards * mimic, unprompted + towards * cfg
        groups = (cfg_target.shape[0], cfg_target.shape[1] if self.dt_separate_feature_channels else 1, -1)
        mimicked, guided = mimic_target.reshape(groups), cfg_target.reshape(groups)
        means = guided.mean(2, keepdim=True)
        mimicked, centred = mimicked - mimicked.mean(2, keepdim=True), guided - means
        if self.dt_variability_measure == "STD":
            mimic_spread, cfg_spread = mimicked.std(2, keepdim=True), centred.std(2, keepdim=True)
        else:
            mimic_spread = mimicked.abs().amax(2, keepdim=True)
            cfg_spread = torch.quantile(centred.abs(), self.dt_threshold_percentile / 100, dim=2, keepdim=True)
        if self.dt_scaling_startpoint == "ZERO":
            result = guided * (mimic_spread / cfg_spread)
        elif self.dt_variability_measure == "STD":
            result = centred / cfg_spread * mimic_spread + means
        else:
            top = torch.maximum(mimic_spread, cfg_spread)
            result = centred.clamp(-top, top) / top * mimic_spread + means
        result = result.reshape(cfg_target.shape)
        phi = self.dt_interpolate_phi
        return result if phi == 1 else result * phi + cfg_target * (1 - phi)

    def guided(self, out: torch.Tensor, sample: torch.Tensor, timestep, images: int, scale: float, scheduler,
               share: float) -> torch.Tensor:
        """A CFG batch's predictions ``out`` (``[unprompted, prompted]``, ``images`` each) for the UNet's input
        ``sample`` (its first channels: the latents) at ``timestep`` of ``scheduler``, with the prompted half changed
        so that the pipeline's guidance by ``scale`` makes ``denoised``'s pictures; computed in float32."""
        level = NoiseLevel.at(scheduler, timestep)
        latents, predicted = sample[:, :out.shape[1]].float(), out.float()  # the same latents in either half
        pictures = level.denoised(predicted, latents)
        target = self.denoised(pictures[:images], pictures[images:], scale, share)
        wanted = level.predicted(target, latents[:images])
        unprompted = predicted[:images]
        return torch.cat([unprompted, unprompted + (wanted - unprompted) / scale]).to(out.dtype)


def from_infotext(params: Mapping[str, str]) -> dict[str, Any]:
    """The request fields of the extension's infotext keys, when it was on."""
    return switched_values(params, ENABLED, "dynamic_thresholding", KEYS, ("dt_separate_feature_channels",))


# The request's fields in the extension's API order: [enabled, mimic scale, threshold percentile, mimic mode, mimic
# minimum, CFG mode, CFG minimum, scheduler value, separate feature channels, scaling startpoint, variability measure,
# interpolate phi]
FIELDS = ("dynamic_thresholding", *(field.name for field in fields(DynamicThresholding)))
