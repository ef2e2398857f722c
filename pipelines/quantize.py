"""Weight-only int8 and fp8 storage for a UNet: an opt-in fast mode (``--weights``) that trades exactness for memory.

Each ``nn.Linear`` and ``nn.Conv2d`` weight of the UNet (but ``conv_in`` and ``conv_out``, small and
precision-critical) is stored as int8 or float8 (e4m3) with one scale per output channel, its absolute maximum
mapped to the format's largest value, and dequantised to the compute dtype on each use. That is a torch
parametrization of ``weight``: the module stays an ``nn.Linear``/``nn.Conv2d``, so PEFT still wraps it with a LoRA,
``torch.compile`` traces through it, and any device runs it (storage only: no int8 or fp8 matmul kernels, so no
speed-up, about half the UNet's bf16 bytes). fp8 casting this way works on every card and on the CPU; fp8 *compute*
(sm89+) is not used.

Why not diffusers' ``enable_layerwise_casting``: it stores fp8 without scales (small weights lose their digits) and
casts whole modules in hooks, so a LoRA loaded afterwards takes the storage dtype (PEFT copies its base layer's
dtype) and fails; one parametrization serves both formats and keeps LoRA working.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

import torch
from torch import nn
from torch.nn.utils import parametrize

FORMATS = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}
LABELS = {"int8": "int8 weight-only", "fp8": "fp8 e4m3 weight-only"}
_SKIPPED = ("conv_in", "conv_out")
_modes: WeakKeyDictionary = WeakKeyDictionary()  # quantised model -> its format


class Dequantize(nn.Module):
    """The parametrization: stored codes times the per-output-channel scale, in the compute dtype."""

    def __init__(self, scale: torch.Tensor, storage: torch.dtype):
        super().__init__()
        self.register_buffer("scale", scale)  # in the compute dtype
        self.storage = storage

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.to(self.scale.dtype) * self.scale

    def right_inverse(self, weight: torch.Tensor) -> list[torch.Tensor]:
        """The codes, as a one-element list: torch lets only that form change the stored dtype."""
        codes = weight.float() / self.scale.float()
        if self.storage == torch.int8:
            codes = codes.round().clamp(-127, 127)
        return [codes.to(self.storage)]


def _scale(weight: torch.Tensor, storage: torch.dtype) -> torch.Tensor:
    top = 127.0 if storage == torch.int8 else torch.finfo(storage).max
    absmax = weight.detach().float().flatten(1).abs().amax(1).clamp(min=1e-12)
    return (absmax / top).to(weight.dtype).view(-1, *([1] * (weight.dim() - 1)))


@torch.no_grad()
def quantize(model: nn.Module, mode: str) -> int:
    """Store ``model``'s Linear and Conv2d weights in ``mode`` ("int8" or "fp8"); returns how many layers."""
    storage = FORMATS[mode]
    count = 0
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)) or name in _SKIPPED or parametrize.is_parametrized(module):
            continue
        module.weight.requires_grad_(False)
        parametrize.register_parametrization(module, "weight", Dequantize(_scale(module.weight, storage), storage),
                                             unsafe=True)
        count += 1
    _modes[model] = mode
    return count


def mode_of(model: nn.Module) -> str | None:
    return _modes.get(model)


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of a model's parameters and buffers as stored (the dequantised weights exist only while used)."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
