"""LyCORIS files (LoHa, LoKr, full, IA3, norm layers) as A1111 applies them: each layer's change is added to the
model's weights for the pass, and the weights are put back exactly after it.

diffusers reads kohya's LoRA (and LoCon) files into PEFT adapters, but has no loader for LyCORIS's other
algorithms on SD 1.x/2.x and SDXL models, whose files A1111 reads through the same ``<lora:name:w>`` tag (and its
old ``<lyco:...>`` alias). A file holding any such layer is read here whole, its plain LoRA layers too. Every kind
reduces to a weight difference, computed in float32 on the weight's device as A1111 computes it:

- LoRA (``lora_up``/``lora_down``, a ``lora_mid`` core for LoCon's Tucker form): ``up @ down``, times alpha/rank;
- LoHa (``hada_w1_a``...``hada_w2_b``, Tucker cores ``hada_t1``/``hada_t2``): the element-wise product of two
  low-rank matrices, times alpha/rank;
- LoKr (``lokr_w1``/``lokr_w2``, either as two factors ``_a``/``_b``, ``lokr_t2``): their Kronecker product, times
  alpha/rank when a factor is decomposed;
- full (``diff``, ``diff_b``) and norm layers (``w_norm``, ``b_norm``): the difference itself;
- IA3 (``weight``, ``on_input``): the weight scaled per output (or input) channel.

The multiplier is the tag's text-encoder weight on text-encoder layers and its UNet weight on UNet layers (times
the layer's block weight, with ``lbw=``: ``block_weights``). Layer names are kohya's (``lora_unet_``,
``lora_te_``/``lora_te1_``, ``lora_te2_`` and the module path with underscores); SDXL files name the UNet's blocks
as Stability's own UNet does (``input_blocks_4_1``), mapped to diffusers' here.
The originals of the changed weights wait on the CPU while the pass runs (a copy of the patched layers, as A1111's
backup); the parameters change in place, so a compiled UNet recompiles nothing, and under sequential offload
(``--lowvram``) the values accelerate keeps on the CPU change. Layers of kinds Easel does not apply (OFT, GLoRA,
DoRA's magnitudes), of int8/fp8 weights (``--weights``) or of shapes that do not fit are left out and reported.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

from .block_weights import Strength
from .files import NetworkError, NetworkFile, family_name, read_weights

# A tensor name's ending that only a LyCORIS file has (kohya's LoRA and LoCon files have none of them).
_LYCORIS = re.compile(r"\.(hada_|lokr_|diff$|diff_b$|w_norm$|b_norm$|on_input$|oft_|a1\.weight$)")
_PREFIXES = {"lora_unet_": "unet", "lora_te_": "text_encoder", "lora_te1_": "text_encoder",
             "lora_te2_": "text_encoder_2"}
# Stability's UNet (SDXL files) to diffusers, inside blocks and at the top level, once the blocks are renamed.
_SGM_INNER = (("input_blocks_", "down_blocks_"), ("middle_block_", "mid_block_"), ("output_blocks_", "up_blocks_"),
              ("in_layers_0", "norm1"), ("in_layers_2", "conv1"), ("emb_layers_1", "time_emb_proj"),
              ("out_layers_0", "norm2"), ("out_layers_3", "conv2"), ("skip_connection", "conv_shortcut"),
              ("downsamplers_0_op", "downsamplers_0_conv"))
_SGM_TOP = {"time_embed_0": "time_embedding_linear_1", "time_embed_2": "time_embedding_linear_2",
            "label_emb_0_0": "add_embedding_linear_1", "label_emb_0_2": "add_embedding_linear_2",
            "input_blocks_0_0": "conv_in", "out_0": "conv_norm_out", "out_2": "conv_out"}
_INPUT_SIDE = {"LoRA": "lora_down.weight", "LoHa": "hada_w1_b", "full": "diff"}  # the tensor whose columns are inputs
_KINDS = {"lora_down.weight": "LoRA", "hada_w1_a": "LoHa", "lokr_w1": "LoKr", "lokr_w1_a": "LoKr", "diff": "full",
          "on_input": "IA3", "w_norm": "norm"}


def is_lycoris(keys) -> bool:
    return any(_LYCORIS.search(key) for key in keys)


def _groups(tensors: Mapping) -> dict[str, dict]:
    """Tensors by layer (the key's part before its first dot) and then by what they are (the rest)."""
    layers: dict[str, dict] = {}
    for key, value in tensors.items():
        layer, _, part = key.partition(".")
        layers.setdefault(layer, {})[part] = value
    return layers


def kind(parts: Mapping) -> str | None:
    """The layer's algorithm ("LoHa", "LoKr"...), or None for one Easel does not apply (OFT, GLoRA, DoRA)."""
    if "dora_scale" in parts:
        return None
    found = next((name for part, name in _KINDS.items() if part in parts), None)
    if found == "LoKr" and not ({"lokr_w2", "lokr_w2_a"} & set(parts)):
        return None
    return found


def algorithms(shapes: Mapping) -> str:
    """The algorithms of a file's layers, for its card: "LoHa", "LoKr", "LoHa+full"..."""
    found = {kind(parts) for parts in _groups(shapes).values()} - {None, "LoRA"}
    return "+".join(sorted(found))


def context_width(shapes: Mapping) -> int | None:
    """The text-context width its cross-attention layers read, as ``lora.context_width`` for LoRA."""
    for layer, parts in _groups(shapes).items():
        if "attn2" in layer and layer.endswith("to_k"):
            width = _in_width(parts)
            if width:
                return width
    return None


def _in_width(parts: Mapping) -> int | None:
    """A linear layer's input features, from its tensors' shapes (for LoKr, its two factors' columns multiplied)."""
    algorithm = kind(parts)
    if algorithm == "LoKr":
        return _columns(parts, "lokr_w1") * _columns(parts, "lokr_w2")
    return parts[_INPUT_SIDE[algorithm]][1] if algorithm in _INPUT_SIDE else None


def _columns(parts: Mapping, factor: str) -> int:
    return (parts[factor] if factor in parts else parts[f"{factor}_b"])[1]


@dataclass(frozen=True)
class Layer:
    component: str  # "unet", "text_encoder" or "text_encoder_2"
    module: str  # its path in that component
    parts: dict  # the file's tensors of this layer, by what they are ("hada_w1_a", "alpha"...)


@dataclass(frozen=True)
class LoadedLycoris:
    signature: tuple  # the file's, when it was loaded
    layers: tuple[Layer, ...]
    share: float  # of the file's layers that found their layer in the model
    shortfall: str  # why the others did not


def load(pipe, item: NetworkFile) -> LoadedLycoris:
    """The file's layers matched to ``pipe``'s modules, or a refusal naming it."""
    from torch.nn.utils import parametrize

    tensors = {key: value for key, value in read_weights(item).items() if hasattr(value, "shape")}
    width = context_width({key: tuple(value.shape) for key, value in tensors.items()})
    model_width = pipe.unet.config.cross_attention_dim
    if width is not None and width != model_width:
        raise NetworkError(f"{item.label} is a {family_name(width)} LyCORIS network; this model is "
                           f"{family_name(model_width)}: skipped.")
    groups = _groups(tensors)
    try:
        names = _module_names(pipe, groups)
    except ValueError as exc:  # diffusers' renaming of Stability's blocks refuses ones it does not know
        raise NetworkError(f"{item.label} names UNet layers Easel cannot place: {exc}") from None
    layers, unknown, quantised, misfits = [], set(), 0, 0
    for name, parts in groups.items():
        if name not in names:
            continue
        component, path = names[name]
        module = _base(getattr(pipe, component).get_submodule(path))
        if kind(parts) is None:
            unknown.add(_unknown_kind(parts))
        elif parametrize.is_parametrized(module):
            quantised += 1
        elif not _fits(parts, _parameters(module)[0]):
            misfits += 1
        else:
            layers.append(Layer(component, path, parts))
    reasons = [f"{'/'.join(sorted(unknown))} layers, which Easel does not apply"] if unknown else []
    reasons += [f"{quantised} layers of int8/fp8 weights (--weights), which it cannot change"] if quantised else []
    reasons += [f"{misfits} layers whose shapes do not fit this model's"] if misfits else []
    if len(names) < len(groups):
        reasons.append("layers naming modules this model lacks (KOALA's UNets drop some of SDXL's blocks)")
    if not layers:
        raise NetworkError(f"{item.label} has no layer Easel can apply to this model ({'; '.join(reasons)}): skipped.")
    return LoadedLycoris(item.signature, tuple(layers), len(layers) / len(groups), "; ".join(reasons))


def _fits(parts: Mapping, weight) -> bool:
    """Whether the layer's change has the weight's shape: worked out on torch's "meta" device, shapes only."""
    import torch

    empty = {part: value if value.dim() == 0 else value.to("meta") for part, value in parts.items()}
    try:
        delta(empty, torch.empty(weight.shape, device="meta"))
    except RuntimeError:
        return False
    return True


def _unknown_kind(parts: Mapping) -> str:
    if "dora_scale" in parts:
        return "DoRA"
    return "OFT" if any(part.startswith("oft_") for part in parts) else "GLoRA" if "a1.weight" in parts else "unknown"


def _module_names(pipe, groups: Mapping) -> dict[str, tuple[str, str]]:
    """File layer name -> (component, module path) for the layers that have a module in ``pipe``."""
    found = {}
    for component in set(_PREFIXES.values()):
        model = getattr(pipe, component, None)
        if model is None:
            continue
        index = {}
        for path, _ in model.named_modules():
            index[path.replace(".", "_")] = path
            if component != "unet" and not path.startswith("text_model."):  # kohya's transformers-4 CLIP paths
                index[f"text_model_{path.replace('.', '_')}"] = path
        prefixes = [p for p, c in _PREFIXES.items() if c == component]
        owned = {name: name.removeprefix(prefix) for name in groups for prefix in prefixes if name.startswith(prefix)}
        if component == "unet":
            owned = _diffusers_unet_names(owned, model.config)
        for name, underscored in owned.items():
            if underscored in index:
                found[name] = (component, index[underscored])
    return found


def _diffusers_unet_names(owned: Mapping[str, str], config) -> dict[str, str]:
    """File layer name -> diffusers' module path with underscores, for UNet layers named either way."""
    from diffusers.loaders.lora_conversion_utils import _maybe_map_sgm_blocks_to_diffusers

    renamed = _maybe_map_sgm_blocks_to_diffusers({f"lora_unet_{path}": name for name, path in owned.items()}, config)
    result = {}
    for path, name in renamed.items():
        path = path.removeprefix("lora_unet_")
        path = _SGM_TOP.get(path, path)
        for old, new in _SGM_INNER:
            path = path.replace(old, new)
        result[name] = path
    return result


def _base(module):
    """The layer under PEFT's LoRA wrapper (a file's LoRA loaded into the same model), or the module itself."""
    return getattr(module, "base_layer", module)


def _parameters(module) -> tuple:
    """The module's weight and bias where their values are: under sequential offload (``--lowvram``) the module
    holds empty "meta" tensors between its calls, and accelerate's hook the real ones, on the CPU."""
    stored = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
    if module.weight.is_meta and stored is not None:
        return stored["weight"], stored["bias"] if module.bias is not None else None
    return module.weight, module.bias


def delta(parts: Mapping, weight) -> tuple:
    """The layer's change to its module's weight and bias (None: no change) at multiplier 1, in float32."""
    import torch

    def get(part: str):
        return parts[part].to(weight.device, torch.float32) if part in parts else None

    algorithm = kind(parts)
    if algorithm in ("full", "norm"):
        change, bias = ("diff", "diff_b") if algorithm == "full" else ("w_norm", "b_norm")
        return get(change).reshape(weight.shape), get(bias)
    if algorithm == "IA3":
        ones = [1] * (weight.dim() - 1)
        shape = (1, -1, *ones[1:]) if parts["on_input"].item() else (-1, *ones)  # per input or output channel
        return weight.float() * get("weight").reshape(shape), None
    if algorithm == "LoRA":
        dim = parts["lora_down.weight"].shape[0]
        if "lora_mid.weight" in parts:
            up, down = get("lora_up.weight").flatten(1), get("lora_down.weight").flatten(1)
            change = torch.einsum("nmkl,in,mj->ijkl", get("lora_mid.weight"), up, down)
        else:
            change = _product(get("lora_up.weight"), get("lora_down.weight"))
    elif algorithm == "LoHa":
        dim = parts["hada_w1_b"].shape[0]
        change = _product(get("hada_w1_a"), get("hada_w1_b"), get("hada_t1")).reshape(weight.shape)
        change.mul_(_product(get("hada_w2_a"), get("hada_w2_b"), get("hada_t2")).reshape(weight.shape))
    else:  # LoKr
        decomposed = [part for part in ("lokr_w1_b", "lokr_w2_b") if part in parts]
        dim = parts[decomposed[-1]].shape[0] if decomposed else None
        w1 = get("lokr_w1") if "lokr_w1" in parts else _product(get("lokr_w1_a"), get("lokr_w1_b"))
        w2 = get("lokr_w2") if "lokr_w2" in parts else _product(get("lokr_w2_a"), get("lokr_w2_b"), get("lokr_t2"))
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        change = torch.kron(w1, w2.contiguous())
    alpha = parts.get("alpha")
    scale = float(alpha) / dim if alpha is not None and dim else 1.0
    return change.reshape(weight.shape).mul_(scale), None  # in place: a product made here, not a file's tensor


def _product(a, b, core=None):
    """``a @ b`` over flattened inputs (a convolution's kernel flattened into its inputs), or with a Tucker core:
    ``a`` (rank, out) and ``b`` (rank, in) then map the core's two sides."""
    import torch

    if core is not None:
        return torch.einsum("ijkl,jr,ip->prkl", core, b, a)
    return a.flatten(1) @ b.flatten(1)


@contextmanager
def applied(pipe, uses: Sequence[tuple[LoadedLycoris, Strength]]) -> Iterator[None]:
    """Each file's changes, at its tag's multiplier for each layer, in ``pipe``'s weights for the block; the
    weights exactly as they were after it, whatever happens inside."""
    import torch

    from ..text_encoding import text_encoders_changed

    originals: dict = {}  # parameter -> its values before the block, on the CPU
    text = False
    try:
        with torch.no_grad():
            for loaded, strength in uses:
                for layer in loaded.layers:
                    multiplier = strength.layer(pipe, layer.component, layer.module)
                    if not multiplier:
                        continue
                    params = _parameters(_base(getattr(pipe, layer.component).get_submodule(layer.module)))
                    for param, change in zip(params, delta(layer.parts, params[0])):
                        if change is None or param is None:
                            continue
                        originals.setdefault(param, param.detach().to("cpu", copy=True))
                        param.add_(change, alpha=multiplier)  # summed in float32, rounded once to the weight's
                    text = text or layer.component != "unet"
        if text:
            text_encoders_changed(pipe)
        yield
    finally:
        with torch.no_grad():
            for param, original in originals.items():
                param.copy_(original)
        if text:
            text_encoders_changed(pipe)
