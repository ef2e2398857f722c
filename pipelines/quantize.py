"""int8 and fp8 weights for a UNet: opt-in fast modes (``--weights``) that trade exactness for memory or speed.

Each ``nn.Linear`` and ``nn.Conv2d`` weight of the UNet (but ``conv_in`` and ``conv_out``, small and
precision-critical) is stored as int8 or float8 (e4m3) with one scale per output channel, its absolute maximum
mapped to the format's largest value, and dequantised to the compute dtype on each use. That is a torch
parametrization of ``weight``: the module stays an ``nn.Linear``/``nn.Conv2d``, so PEFT still wraps it with a LoRA,
``torch.compile`` traces through it, and any device runs it. ``int8`` and ``fp8`` stop there (storage only: about
half the UNet's bf16 bytes, no speed-up).

``int8-fast`` and ``fp8-fast`` also multiply in 8 bits, where the card's tensor cores are twice as fast as in bf16
(int8 from Ampere, fp8 from Ada and Hopper; the CPU runs both kernels too): each ``nn.Linear`` (the attention
projections and feed-forwards, most of an SDXL UNet's FLOPs) scales every row of its input to the format on the fly
(a dynamic per-token scale) and multiplies the codes with ``torch._int_mm`` or ``torch._scaled_mm``, as ComfyUI's
``fp8_e4m3fn_fast`` and torchao's dynamic quantisation do. Convolutions keep the dequantising path. A device without
the kernel is refused when the model loads, with a message, not at the first picture.

Why not diffusers' ``enable_layerwise_casting``: it stores fp8 without scales (small weights lose their digits) and
casts whole modules in hooks, so a LoRA loaded afterwards takes the storage dtype (PEFT copies its base layer's
dtype) and fails; one parametrization serves every format and keeps LoRA working.
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

import torch
from torch import nn
from torch.nn.utils import parametrize

from .errors import ModelError

FORMATS = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}
MODES = (*FORMATS, *(f"{name}-fast" for name in FORMATS))  # "-fast": the Linear layers multiply in 8 bits
LABELS = {"int8": "int8 weight-only", "fp8": "fp8 e4m3 weight-only",
          "int8-fast": "int8 weights and matmuls", "fp8-fast": "fp8 e4m3 weights and matmuls"}
_SKIPPED = ("conv_in", "conv_out")
MIN_ROWS = 17  # torch._int_mm's least row count on CUDA; smaller inputs (the time embedding's) dequantise
MULTIPLE = 16  # torch._scaled_mm's on CUDA for both sides of the weight; other Linear layers dequantise
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


class Linear8bit(nn.Linear):
    """A quantised Linear of a "-fast" mode: its input's rows scaled to the format as they come, then one 8-bit
    matmul with the stored codes. The class is swapped in place (``isinstance`` still holds, so PEFT wraps it and
    the state dict keeps its keys); torch's parametrization then subclasses it as it does any module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows < MIN_ROWS:
            return super().forward(x)
        weight = self.parametrizations.weight  # original0: the codes (right_inverse returns a list)
        out = matmul_8bit(x.reshape(rows, x.shape[-1]), weight.original0, weight[0].scale)
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], out.shape[-1])


def matmul_8bit(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x @ (codes * scale).T`` in 8 bits: ``x`` (rows x in) scaled per row, ``codes`` (out x in) with ``scale``
    (out x 1) per output channel; the result in ``x``'s dtype. fp8 rows keep bf16 out, as CUDA's kernel needs."""
    x_scale = x.abs().amax(1, keepdim=True).float().clamp(min=1e-12) / _top(codes.dtype)
    scaled = x.float() / x_scale
    weight_scale = scale.float().view(1, -1)
    if codes.dtype == torch.int8:
        out = torch._int_mm(scaled.round().clamp(-127, 127).to(torch.int8), codes.t()).float() * x_scale * weight_scale
    else:
        out = torch._scaled_mm(scaled.to(codes.dtype), codes.t(), scale_a=x_scale, scale_b=weight_scale,
                               out_dtype=torch.bfloat16)
    return out.to(x.dtype)


def _top(storage: torch.dtype) -> float:
    return 127.0 if storage == torch.int8 else torch.finfo(storage).max


def _scale(weight: torch.Tensor, storage: torch.dtype) -> torch.Tensor:
    absmax = weight.detach().float().flatten(1).abs().amax(1).clamp(min=1e-12)
    return (absmax / _top(storage)).to(weight.dtype).view(-1, *([1] * (weight.dim() - 1)))


def _check_kernel(mode: str, storage: torch.dtype, device: torch.device) -> None:
    """One tiny 8-bit matmul on ``device``: a card without the kernel is refused now, with what to use instead."""
    size = (MIN_ROWS, MULTIPLE)
    try:
        matmul_8bit(torch.ones(size, device=device, dtype=torch.bfloat16), torch.ones(size, device=device).to(storage),
                    torch.ones(MIN_ROWS, 1, device=device))
    except (RuntimeError, NotImplementedError) as error:
        format_name = mode.removesuffix("-fast")
        raise ModelError(f"--weights {mode} needs {format_name} matmuls, which {device} lacks (int8: CUDA compute "
                         f"capability 8.0 or newer; fp8: 8.9 or newer, Ada or Hopper). --weights {format_name} "
                         f"stores the weights in 8 bits without them. ({error})") from error


@torch.no_grad()
def quantize(model: nn.Module, mode: str) -> int:
    """Store ``model``'s Linear and Conv2d weights as ``mode`` says (one of ``MODES``); returns how many layers."""
    fast = mode.endswith("-fast")
    storage = FORMATS[mode.removesuffix("-fast")]
    if fast:
        _check_kernel(mode, storage, next(model.parameters()).device)
    count = 0
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)) or name in _SKIPPED or parametrize.is_parametrized(module):
            continue
        module.weight.requires_grad_(False)
        if fast and type(module) is nn.Linear and not (module.in_features % MULTIPLE or module.out_features % MULTIPLE):
            module.__class__ = Linear8bit
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
