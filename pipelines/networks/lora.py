"""LoRA files (A1111/kohya and diffusers formats) on diffusers' PEFT integration.

A file is loaded into a model once, as a PEFT adapter under its name (``load_lora_weights(weights,
adapter_name=...)``, which converts kohya key names), and stays resident with the model. A request switches the
adapters it names on with its text-encoder and UNet weights and every other one off. The switch is made on each
PEFT layer directly (its active adapters and their scales): diffusers' ``set_adapters`` cannot switch all
adapters off, and ``disable_lora`` is all or nothing. A PEFT layer with no active adapter computes exactly its
base layer, so a request without LoRA gives the pixels of a model that never had one. A change of the text
encoders' active LoRAs drops their cached prompt encodings (``text_encoding.text_encoders_changed``). A compiled
UNet (``--compile``) is switched differently, so that it does not recompile: see ``_hold_scales``. A tag's block
weights (``lbw=``) set each UNet layer's scale by its block (``block_weights``).

Before loading, a LoRA's cross-attention width (the input of its ``to_k`` projections) is compared with the
model's: an SDXL LoRA is refused on an SD 1.x model with a sentence rather than a shape error. After loading,
the share of the file's layers that found a layer in the model is measured: below 100 % on KOALA's UNets, which
keep SDXL's names but drop blocks, so part of an SDXL LoRA has nothing to attach to.
"""

from __future__ import annotations

import hashlib
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping
from weakref import WeakKeyDictionary

from .block_weights import Strength
from .files import NetworkError, NetworkFile, family_name, read_weights

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
_text_state: WeakKeyDictionary = WeakKeyDictionary()  # first text encoder -> its active (adapter, weight) pairs
_scales: WeakKeyDictionary = WeakKeyDictionary()  # LoRA layer of a compiled UNet -> {adapter: its scale tensor}
# The down (A) matrix of one LoRA layer, in kohya (lora_down), PEFT (lora_A) and older diffusers formats.
_DOWN = re.compile(r"^(.*?)\.(?:lora_down|lora_A|lora\.down|down)\.weight$")
_OFF = Strength(0.0, 0.0)


def context_width(shapes: Mapping[str, tuple]) -> int | None:
    """The text-context width a LoRA's cross-attention layers read (768 SD 1.x, 1024 SD 2.x, 2048 SDXL)."""
    for key, shape in shapes.items():
        if "attn2" in key and "to_k" in key and _DOWN.match(key) and len(shape) == 2:
            return int(shape[1])
    return None


def family(shapes: Mapping[str, tuple]) -> str:
    """What a card shows: the model family, and the algorithms of a LyCORIS file ("SD 1.x LoHa")."""
    from . import lycoris

    if lycoris.is_lycoris(shapes):
        return f"{family_name(lycoris.context_width(shapes))} {lycoris.algorithms(shapes)}".strip()
    width = context_width(shapes)
    if width is None and any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in shapes):
        return "SDXL"  # a text-encoder-only SDXL LoRA
    return family_name(width)


def layer_count(keys) -> int:
    """How many layers a LoRA file adapts (one down matrix each)."""
    return len({m.group(1) for m in map(_DOWN.match, keys) if m})


def adapter_name(name: str) -> str:
    """The PEFT adapter name for a file name: PEFT keeps adapters in ModuleDicts, whose keys cannot hold a dot
    or shadow a module attribute ("train", "forward"), so other names get a short digest to stay unique."""
    safe = re.sub(r"\W", "_", name)
    import torch

    if safe != name or hasattr(torch.nn.ModuleDict(), safe):
        safe = f"{safe}_{hashlib.sha1(name.encode()).hexdigest()[:6]}"
    return safe


def _components(pipe):
    return [m for m in (getattr(pipe, key, None) for key in COMPONENTS) if m is not None]


def _layers_with(pipe, adapter: str) -> int:
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(m, LoraLayer) and adapter in m.lora_A for c in _components(pipe) for m in c.modules())


def forget(pipe, adapter: str) -> None:
    """Remove an adapter from every component that holds it."""
    for module in _components(pipe):
        if adapter in (getattr(module, "peft_config", None) or {}):
            delete = getattr(module, "delete_adapters", None) or module.delete_adapter  # diffusers / transformers
            delete(adapter)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers 5 logs a "LOAD REPORT" listing every base weight as missing when an adapter goes into a text
    encoder, diffusers that a UNet-only LoRA has no text-encoder part, and PEFT that a second adapter is a second
    adapter; none of it is a problem here. diffusers' check of the keys a file left missing takes every key holding
    the adapter's name as a substring for the adapter's own, so a LoRA named "b" beside another lists all the other's
    keys ("down_blocks..."); ``load`` reports the share of a file's layers that applied itself."""
    import logging
    import warnings

    names = ("transformers", "diffusers.loaders.lora_base", "diffusers.utils.peft_utils")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Already found a `peft_config`")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@dataclass(frozen=True)
class LoadedLora:
    signature: tuple  # the file's, when it was loaded
    adapter: str
    share: float  # of the file's layers that found their layer in the model
    shortfall: str = "this model lacks the blocks the rest were made for (KOALA's UNets drop some of SDXL's)"


def load(pipe, item: NetworkFile) -> LoadedLora:
    """Load ``item`` into ``pipe`` as an adapter, or refuse it with a message naming it."""
    weights = read_weights(item)
    width = context_width({k: tuple(v.shape) for k, v in weights.items() if hasattr(v, "shape")})
    model_width = pipe.unet.config.cross_attention_dim
    if width is not None and width != model_width:
        raise NetworkError(f"{item.label} is a {family_name(width)} LoRA; this model is {family_name(model_width)}: "
                           "skipped.")
    expected = layer_count(weights)
    if not expected:
        raise NetworkError(f"{item.label} holds no LoRA layers in a format Easel reads: skipped.")
    adapter = adapter_name(item.name)
    try:
        with _quiet_transformers():
            pipe.load_lora_weights(weights, adapter_name=adapter)
    except Exception as exc:  # noqa: BLE001 - whatever diffusers or PEFT refuse, the generation goes on
        forget(pipe, adapter)
        raise NetworkError(f"{item.label} does not fit this model: {exc}") from None
    applied = _layers_with(pipe, adapter)
    if not applied:
        forget(pipe, adapter)
        raise NetworkError(f"{item.label} matches no layer of this model: skipped.")
    return LoadedLora(item.signature, adapter, min(1.0, applied / expected))


def activate(pipe, weights: Mapping[str, Strength]) -> None:
    """Make exactly these adapters active, each at its tag's strength; ``{}`` switches all off. When that changes
    what the text encoders compute, their cached prompt encodings are dropped."""
    from diffusers.utils.peft_utils import set_weights_and_activate_adapters

    from ..speed import is_compiled
    from ..text_encoding import text_encoders_changed

    for key in COMPONENTS:
        module = getattr(pipe, key, None)
        if module is None or not getattr(module, "peft_config", None):
            continue
        compiled = key == "unet" and is_compiled(module)
        # a compiled UNet keeps every loaded adapter active, those not asked for at weight 0 (see _hold_scales)
        names = list(module.peft_config) if compiled else list(weights)
        strengths = [weights.get(name, _OFF) for name in names]
        set_weights_and_activate_adapters(module, names, [w.unet if key == "unet" else w.te for w in strengths])
        if key == "unet":
            _scale_blocks(pipe, {name: w for name, w in zip(names, strengths) if w.blocks})
        if compiled:
            _hold_scales(module)
    on_text = set().union(*(getattr(getattr(pipe, key, None), "peft_config", None) or {} for key in COMPONENTS[1:]))
    state = tuple((name, w.te) for name, w in weights.items() if name in on_text)
    if _text_state.get(pipe.text_encoder, ()) != state:
        _text_state[pipe.text_encoder] = state
        text_encoders_changed(pipe)


def _scale_blocks(pipe, weights: Mapping[str, Strength]) -> None:
    """Each UNet LoRA layer of these adapters at its block's weight (``lbw=``)."""
    from peft.tuners.lora import LoraLayer

    for name, module in pipe.unet.named_modules() if weights else ():
        if isinstance(module, LoraLayer):
            for adapter, strength in weights.items():
                if adapter in module.scaling:
                    module.set_scale(adapter, strength.layer(pipe, "unet", name))


def _hold_scales(unet) -> None:
    """The switch on a compiled UNet (``speed.compile_unet``): each layer's scales are 0-d tensors changed in place.
    The compiled blocks then see the same structure on every request, so changing LoRAs or their weights
    recompiles nothing (a file loaded for the first time compiles once). ``x @ A @ B * 0`` adds exact zeros: no
    LoRA still gives the base picture."""
    import torch
    from peft.tuners.lora import LoraLayer

    for module in unet.modules():
        if not isinstance(module, LoraLayer):
            continue
        tensors = _scales.setdefault(module, {})
        for name, value in module.scaling.items():
            if name not in tensors:
                tensors[name] = torch.zeros((), device=module.lora_A[name].weight.device)
            module.scaling[name] = tensors[name].fill_(float(value))


def has_adapters(pipe) -> bool:
    return any(getattr(m, "peft_config", None) for m in _components(pipe))


@contextmanager
def active(pipe, weights: Mapping[str, Strength]) -> Iterator[None]:
    """These adapters on for the block, every adapter off after it (even when the block fails)."""
    try:
        if has_adapters(pipe):
            activate(pipe, weights)
        yield
    finally:
        if has_adapters(pipe):
            activate(pipe, {})
