"""Deep Shrink (kohya-ss's "Kohya Hires.fix"; ComfyUI's PatchModelAddDownscale node, Forge's *Kohya HRFix
Integrated*): at a size above the model's own, the UNet's deeper blocks see its features shrunk to about the size it
was trained at while the noise is high, so the picture is composed once instead of repeated; the skip connections
keep the full size, and the features are stretched back to them on the way up. Past the early steps the UNet runs
as is, and fills in the detail at the full size.

The rule is ComfyUI's and Forge's, under Forge's settings and infotext keys (so pictures read back both ways):

- the *block number* counts ComfyUI's input blocks: the UNet's first convolution is 0, then each level's layers
  (a resnet with its transformer) and its downsampler, in order (SD 1.x/2.x: 1 to 11, SDXL: 1 to 8); the output of
  that block is shrunk by the *downscale factor* (``round(side / factor)``; 0: the picture's size over the model's
  native size, Forge's later "auto"), after it was kept as a skip connection (*downscale after skip*) or before;
- before each output block, features of another size than their skip connection are resized to it, and each
  upsampler makes the size of the skip connection that follows (ComfyUI's UNet does so always);
- it acts on the UNet calls whose noise is between *start percent* and *end percent* of the model's schedule (0 the
  noisiest, timestep 999; ComfyUI's ``percent_to_sigma``), read from each call's timestep; with *second phase*
  (Forge's later script) the calls up to 1.5 x the end percent after it are shrunk by the mean of 1 and the factor.

On diffusers' UNet it is done with hooks on the UNet's own blocks (``applied``), taken off after the pass; only the
calls it shrinks are changed, the others run exactly as without it. ControlNet's residuals, made for the full size,
are resized to the skip connections and middle block they are added to (ComfyUI leaves out those whose size
differs). The hires fix's second pass is left alone, as Forge's later script leaves it. Self-Attention Guidance
(whose map has the middle block's size) and the step cache (whose kept features would have another size) refuse
it; Kandinsky 2.2's decoder does too. A UNet compiled whole compiles again for the shrunk sizes.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F

from .errors import RequestError
from .script_settings import Setting, switched_values

METHODS = ("bicubic", "nearest-exact", "bilinear", "area", "adaptive_avgpool")  # Forge's, but bislerp
ENABLED = "kohya_hrfix_enabled"  # Forge's infotext keys, here and in the settings
NUMBERS = (
    Setting("deep_shrink_block", "Block Number", "kohya_hrfix_block_number", 3, 1, 32, 1,
            "the input block whose output is shrunk (SD: 1-11, SDXL: 1-8)"),
    Setting("deep_shrink_factor", "Downscale Factor", "kohya_hrfix_downscale_factor", 2.0, 0.0, 9.0, 0.001,
            "0 = the picture's size over the model's native size"),
    Setting("deep_shrink_start", "Start Percent", "kohya_hrfix_start_percent", 0.0, 0.0, 1.0, 0.001,
            "of the noise schedule, 0 the noisiest"),
    Setting("deep_shrink_end", "End Percent", "kohya_hrfix_end_percent", 0.35, 0.0, 1.0, 0.001,
            "where the UNet goes back to the full size"),
)
BLOCK, FACTOR, START, END = NUMBERS
MIN_FACTOR = 0.1  # a factor under it (but 0, auto) would blow the features up over ten times
DEFAULTS = {**{number.field: number.default for number in NUMBERS}, "deep_shrink": False,
            "deep_shrink_after_skip": True, "deep_shrink_downscale": METHODS[0], "deep_shrink_upscale": METHODS[0],
            "deep_shrink_phase2": False}
KEYS = {**{number.field: number.key for number in NUMBERS},
        **{f"deep_shrink_{name}": f"kohya_hrfix_{key}" for name, key in (
            ("after_skip", "downscale_after_skip"), ("downscale", "downscale_method"), ("upscale", "upscale_method"),
            ("phase2", "phase2"))}}
SWITCHES = ("deep_shrink_after_skip", "deep_shrink_phase2")
CHOICES = (("deep_shrink_downscale", "Downscale Method"), ("deep_shrink_upscale", "Upscale Method"))


def check(values: Mapping[str, Any]) -> None:
    """The request's methods among those Easel has and its factor over ``MIN_FACTOR`` (or 0), or a RequestError
    naming the field."""
    for name, label in CHOICES:
        if values[name] not in METHODS:
            raise RequestError(f"Deep Shrink's {label} is one of {', '.join(METHODS)}; got {values[name]!r}.", name)
    if 0 < values[FACTOR.field] < MIN_FACTOR:
        raise RequestError(f"Deep Shrink's Downscale Factor is 0 (from the size) or at least {MIN_FACTOR:g}, got "
                           f"{values[FACTOR.field]:g}.", FACTOR.field)


@dataclass(frozen=True)
class DeepShrink:
    """The settings, as the request's fields hold them, in Forge's API order (``FIELDS``)."""
    deep_shrink_block: int
    deep_shrink_factor: float
    deep_shrink_start: float
    deep_shrink_end: float
    deep_shrink_after_skip: bool
    deep_shrink_downscale: str
    deep_shrink_upscale: str
    deep_shrink_phase2: bool

    def infotext(self) -> dict[str, Any]:
        """Forge's keys, every one of them (as Forge writes them)."""
        return {ENABLED: True, **{KEYS[item.name]: getattr(self, item.name) for item in fields(self)}}

    def factor_at(self, timestep: float, latents: tuple[int, int], native: int) -> float | None:
        """The shrink of a UNet call at ``timestep`` on latents of ``latents`` (height, width) for a UNet trained
        on ``native`` a side, or None where it runs as is."""
        factor = self.deep_shrink_factor or math.sqrt(latents[0] * latents[1]) / native
        if not _below(timestep, self.deep_shrink_start):
            return None
        if _above(timestep, self.deep_shrink_end):
            return factor
        if self.deep_shrink_phase2 and _above(timestep, min(1.0, self.deep_shrink_end * 1.5)):
            return (factor + 1) / 2
        return None


def _below(timestep: float, percent: float) -> bool:
    """The call's noise is at most that of ``percent`` of the schedule (ComfyUI's ``sigma <= percent_to_sigma``)."""
    return percent <= 0 or timestep <= (1 - percent) * 999


def _above(timestep: float, percent: float) -> bool:
    return percent >= 1 or timestep >= (1 - percent) * 999


def from_infotext(params: Mapping[str, str]) -> dict[str, Any]:
    """The request fields of Forge's infotext keys, when it was on."""
    return switched_values(params, ENABLED, "deep_shrink", KEYS, SWITCHES)


# The request's fields in Forge's API order: [enabled, block number, downscale factor, start percent, end percent,
# downscale after skip, downscale method, upscale method, second phase]
FIELDS = ("deep_shrink", *(item.name for item in fields(DeepShrink)))


def _resized(features: torch.Tensor, size, method: str) -> torch.Tensor:
    """``features`` (rows x channels x height x width) at ``size`` (height, width) by ``method``; as they are where
    they have it."""
    size = tuple(int(side) for side in size)
    if tuple(features.shape[-2:]) == size:
        return features
    if method == "adaptive_avgpool":
        return F.adaptive_avg_pool2d(features, size)
    return F.interpolate(features, size=size, mode=method)


def input_blocks(unet) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
    """ComfyUI's input blocks of a diffusers UNet, each as the module its input goes to and the module whose output
    is its skip connection: the first convolution, then each down block's resnets (with their transformers) and its
    downsampler."""
    blocks = [(unet.conv_in, unet.conv_in)]
    for down in unet.down_blocks:
        attentions = getattr(down, "attentions", None) or [None] * len(down.resnets)
        blocks += [(resnet, attention or resnet) for resnet, attention in zip(down.resnets, attentions)]
        blocks += [(sampler, sampler) for sampler in down.downsamplers or ()]
    return blocks


@dataclass
class _Call:
    """What one UNet call's hooks share: its shrink (None: the call as is), the size of each skip connection as it
    is made, and ControlNet's residuals, taken out of the UNet's hands to be resized."""
    factor: float | None = None
    sizes: list = field(default_factory=list)
    residuals: tuple = ()
    middle: torch.Tensor | None = None


def _timestep(value) -> float:
    return float(value.flatten()[0]) if isinstance(value, torch.Tensor) else float(value)


def _first_input(args: tuple, kwargs: dict, change) -> tuple[tuple, dict]:
    """A module's inputs with its features (the first argument, or ``hidden_states``) changed by ``change``."""
    if args:
        return (change(args[0]), *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": change(kwargs["hidden_states"])}


def _output(output, change):
    """A module's output (features, or a tuple that starts with them: a transformer's) changed by ``change``."""
    return (change(output[0]), *output[1:]) if isinstance(output, tuple) else change(output)


def _hooked(unet, shrink: DeepShrink) -> list:
    """The hooks that put Deep Shrink on ``unet``; their handles."""
    blocks = input_blocks(unet)
    number = int(shrink.deep_shrink_block)
    if number >= len(blocks):
        raise RequestError(f"Deep Shrink's block number is {number}, and this model's UNet has input blocks 1 to "
                           f"{len(blocks) - 1}: lower it.", BLOCK.field)
    call = _Call()

    def shrunk(features: torch.Tensor) -> torch.Tensor:
        if call.factor is None:
            return features
        size = [max(1, round(side / call.factor)) for side in features.shape[-2:]]
        return _resized(features, size, shrink.deep_shrink_downscale)

    def start(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        native = unet.config.sample_size
        native = native if isinstance(native, int) else int(native[0])
        call.factor = shrink.factor_at(_timestep(timestep), tuple(sample.shape[-2:]), native)
        call.sizes, call.residuals, call.middle = [tuple(sample.shape[-2:])], (), None
        down, middle = kwargs.get("down_block_additional_residuals"), kwargs.get("mid_block_additional_residual")
        if call.factor is None or down is None or middle is None:
            return None
        call.residuals, call.middle = tuple(down), middle
        return args, {**kwargs, "down_block_additional_residuals": None, "mid_block_additional_residual": None}

    def recorded(module, args, output) -> None:
        if call.factor is not None:
            call.sizes += [tuple(skip.shape[-2:]) for skip in output[1]]

    handles = [unet.register_forward_pre_hook(start, with_kwargs=True)]
    handles += [down.register_forward_hook(recorded) for down in unet.down_blocks]
    if shrink.deep_shrink_after_skip:
        following = (blocks[number + 1][0] if number + 1 < len(blocks) else
                     unet.mid_block if unet.mid_block is not None else unet.up_blocks[0])
        handles.append(following.register_forward_pre_hook(
            lambda module, args, kwargs: _first_input(args, kwargs, shrunk), with_kwargs=True))
    else:
        handles.append(blocks[number][1].register_forward_hook(lambda module, args, output: _output(output, shrunk)))
    taken = len(blocks)  # the skip connections the up blocks before this one took, counted from the end
    for index, up in enumerate(unet.up_blocks):
        first = taken - len(up.resnets)  # the index of this block's first skip connection (it takes them backwards)
        handles.append(up.register_forward_pre_hook(_up_block(call, shrink, first, index == 0), with_kwargs=True))
        attentions = getattr(up, "attentions", None) or up.resnets
        for layer in range(1, len(up.resnets)):  # the layer before each later concatenation
            handles.append(attentions[layer - 1].register_forward_hook(_fitted(call, shrink, taken - 1 - layer)))
        taken = first
    return handles


def _up_block(call: _Call, shrink: DeepShrink, first: int, deepest: bool):
    """An up block's pre-hook: on a shrunk call, ControlNet's residuals added to its skip connections (and the middle
    block's to its input, for the deepest), its input resized to its first skip connection, and its upsampler made
    to give the size of the skip connection after its own."""

    def hook(module, args, kwargs):
        if call.factor is None:
            return None
        skips = kwargs["res_hidden_states_tuple"]
        if call.residuals:
            residuals = call.residuals[first:first + len(skips)]
            skips = tuple(skip + _resized(residual, skip.shape[-2:], shrink.deep_shrink_downscale)
                          for skip, residual in zip(skips, residuals))
        features = kwargs["hidden_states"]
        if deepest and call.middle is not None:
            features = features + _resized(call.middle, features.shape[-2:], shrink.deep_shrink_downscale)
        changed = {**kwargs, "res_hidden_states_tuple": skips,
                   "hidden_states": _resized(features, skips[-1].shape[-2:], shrink.deep_shrink_upscale)}
        if first > 0:
            changed["upsample_size"] = call.sizes[first - 1]
        return args, changed

    return hook


def _fitted(call: _Call, shrink: DeepShrink, skip: int):
    """A forward hook that resizes a layer's output to skip connection ``skip``'s size, on a shrunk call."""

    def hook(module, args, output):
        if call.factor is None:
            return None
        return _output(output, lambda features: _resized(features, call.sizes[skip], shrink.deep_shrink_upscale))

    return hook


@contextmanager
def applied(unets: list, shrink: DeepShrink | None) -> Iterator[None]:
    """Deep Shrink on ``unets`` while the pass runs, when ``shrink`` (the request's settings) is given."""
    handles: list = []
    try:
        for unet in unets if shrink else ():
            handles += _hooked(getattr(unet, "_orig_mod", unet), shrink)
        yield
    finally:
        for handle in handles:
            handle.remove()
