"""A1111 hypernetworks as a diffusers attention processor (diffusers has none; issue 1140).

An A1111 hypernetwork ``.pt`` holds, per feature width (768, 320, 640, 1280, ...), two small MLPs, one for the
keys and one for the values of every attention layer whose context has that width (cross-attention reads the
text, self-attention its own pixels). The context goes through ``x + mlp(x) * multiplier`` before ``to_k`` and
``to_v``; queries are untouched; several hypernetworks chain; the MLPs run in float32. The MLP layout is rebuilt
from the file's ``layer_structure``, activation, layer norm and dropout settings exactly as A1111 builds it, so
the ``linear.N`` keys land where they were trained.

``Hypernetwork.create`` makes a new one as A1111 does (its weight initialisations) and ``state`` is the file A1111
writes, for the Train tab (``hypernetwork_training``).

``installed`` swaps the UNet's attention processors for ``HypernetworkProcessor`` for one pass and puts the
originals back afterwards. The processor is ``AttnProcessor2_0`` for the 3-d sequences of the UNet's
transformer blocks (the only attention SD and SDXL UNets have), with the context transform added.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import get_module_execution_device
from torch import nn

from .files import NetworkError, NetworkFile, read_weights

_ACTIVATIONS = {"relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "elu": nn.ELU, "swish": nn.Hardswish, "tanh": nn.Tanh,
                "sigmoid": nn.Sigmoid}
_ACTIVATIONS.update({name.lower(): cls for name, cls in vars(nn.modules.activation).items()  # as A1111 does
                     if isinstance(cls, type) and cls.__module__ == nn.modules.activation.__name__
                     and name.lower() not in _ACTIVATIONS})
ACTIVATION_NAMES = ("linear", *_ACTIVATIONS)  # "linear": none
WEIGHT_INITS = ("Normal", "KaimingUniform", "KaimingNormal", "XavierUniform", "XavierNormal")  # A1111's, its order
_OLD_KEYS = {"linear1.bias": "linear.0.bias", "linear1.weight": "linear.0.weight",
             "linear2.bias": "linear.1.bias", "linear2.weight": "linear.1.weight"}


def _dropout_structure(data: dict) -> list[float]:
    """A1111's ``parse_dropout_structure`` for files that predate ``dropout_structure``."""
    layers = data.get("layer_structure") or [1, 2, 1]
    if data.get("dropout_structure") is not None:
        return list(data["dropout_structure"])
    if not data.get("use_dropout", False):
        return [0] * len(layers)
    return [0] + [0.3] * (len(layers) - 3) + [0.3 if data.get("last_layer_dropout", False) else 0] + [0]


def _mlp(width: int, data: dict) -> nn.Sequential:
    """A1111's ``HypernetworkModule.linear`` for one width, as the file's settings describe it."""
    structure = list(data.get("layer_structure") or [1, 2, 1])
    dropout = _dropout_structure(data)
    activation = data.get("activation_func")
    activate_output = data.get("activate_output", True)
    layers: list[nn.Module] = []
    for i in range(len(structure) - 1):
        size = int(width * structure[i + 1])
        layers.append(nn.Linear(int(width * structure[i]), size))
        last = i >= len(structure) - 2
        if activation not in (None, "linear") and not (last and not activate_output):
            if activation not in _ACTIVATIONS:
                raise ValueError(f"unknown activation {activation!r}")
            layers.append(_ACTIVATIONS[activation]())
        if data.get("is_layer_norm", False):
            layers.append(nn.LayerNorm(size))
        if dropout[i + 1] > 0:
            layers.append(nn.Dropout(p=dropout[i + 1]))
    return nn.Sequential(*layers)


def _loaded(mlp: nn.Sequential, state: dict) -> nn.Sequential:
    holder = nn.Module()  # A1111's keys carry the prefix of its module's ``linear`` attribute
    holder.linear = mlp
    holder.load_state_dict({_OLD_KEYS.get(k, k): v for k, v in state.items()})
    return mlp


def _initialised(mlp: nn.Sequential, weight_init: str, activation: str | None) -> nn.Sequential:
    """A new MLP's weights as A1111 starts them: ``Normal`` (std 0.01, zero biases; layer norms always), or Xavier
    or Kaiming (fitted to leaky ReLU when that is the activation, else ReLU) with zero biases."""
    gain = {"nonlinearity": "leaky_relu" if activation == "leakyrelu" else "relu"}
    starts = {"XavierUniform": (nn.init.xavier_uniform_, {}), "XavierNormal": (nn.init.xavier_normal_, {}),
              "KaimingUniform": (nn.init.kaiming_uniform_, gain), "KaimingNormal": (nn.init.kaiming_normal_, gain)}
    with torch.no_grad():
        for layer in mlp:
            if isinstance(layer, nn.LayerNorm) or (isinstance(layer, nn.Linear) and weight_init == "Normal"):
                nn.init.normal_(layer.weight, std=0.01)
            elif isinstance(layer, nn.Linear):
                start, options = starts[weight_init]
                start(layer.weight, **options)
            if isinstance(layer, (nn.Linear, nn.LayerNorm)):
                nn.init.zeros_(layer.bias)
    return mlp


def widths(data: dict) -> list[int]:
    """The feature widths a hypernetwork file has layers for."""
    return sorted(k for k in data if isinstance(k, int))


def context_width(data: dict) -> int | None:
    """The text-context width (768 SD 1.x, 1024 SD 2.x, 2048 SDXL) among a file's widths; the others are
    UNet channel counts (320, 640, 1280) that its self-attention layers have."""
    return max((w for w in widths(data) if w in (768, 1024, 2048)), default=None)


class Hypernetwork:
    """The (key MLP, value MLP) pair for each width of one file, and the file's other entries (``notes``: its
    settings, ``step``, ``name``, checkpoint), which a saved copy keeps."""

    def __init__(self, name: str, layers: dict[int, tuple[nn.Sequential, nn.Sequential]], notes: dict | None = None):
        self.name = name
        self.layers = layers
        self.notes = notes or {}

    @classmethod
    def load(cls, item: NetworkFile) -> "Hypernetwork":
        """The file's networks, for generating (evaluation mode, no gradients)."""
        data = read_weights(item)
        if not widths(data):
            raise NetworkError(f"{item.label} is not an A1111 hypernetwork (no per-width layers).")
        try:
            layers = {w: tuple(_loaded(_mlp(w, data), dict(state)) for state in data[w][:2]) for w in widths(data)}
        except (ValueError, TypeError, KeyError, RuntimeError) as exc:
            raise NetworkError(f"{item.label} does not hold the layers it describes: {exc}") from None
        if any(len(pair) != 2 for pair in layers.values()):
            raise NetworkError(f"{item.label} lacks a key or value network for some width.")
        network = cls(item.name, layers, {k: v for k, v in data.items() if not isinstance(k, int)})
        network.train(False)
        return network

    @classmethod
    def create(cls, name: str, sizes: Sequence[int], settings: dict) -> "Hypernetwork":
        """A new hypernetwork with A1111's ``settings`` (``layer_structure``, ``activation_func``,
        ``weight_initialization``, ``is_layer_norm``, ``use_dropout``, ``dropout_structure``, ...) for each width."""
        init, activation = settings.get("weight_initialization", "Normal"), settings.get("activation_func")
        layers = {w: tuple(_initialised(_mlp(w, settings), init, activation) for _ in range(2)) for w in sizes}
        return cls(name, layers, {**settings, "name": name, "step": 0})

    def train(self, training: bool) -> list[nn.Parameter]:
        """Dropout and gradients on (training) or off; the parameters."""
        parameters = []
        for pair in self.layers.values():
            for mlp in pair:
                mlp.train(training).requires_grad_(training)
                parameters.extend(mlp.parameters())
        return parameters

    def state(self, **notes) -> dict:
        """The networks in A1111's file layout, with the notes and these changes to them."""
        layers = {w: tuple({f"linear.{k}": v.detach().float().cpu() for k, v in mlp.state_dict().items()}
                           for mlp in pair) for w, pair in self.layers.items()}
        return {**layers, **self.notes, **notes}

    def to(self, device) -> "Hypernetwork":
        for pair in self.layers.values():
            for mlp in pair:
                mlp.to(device)
        return self


class HypernetworkProcessor:
    """``AttnProcessor2_0`` with keys and values read from the hypernetwork-transformed context."""

    def __init__(self, networks: Sequence[tuple[Hypernetwork, float]]):
        self.networks = list(networks)

    def _transform(self, context: torch.Tensor, which: int) -> torch.Tensor:
        for network, multiplier in self.networks:
            pair = network.layers.get(context.shape[-1])
            if pair is not None:
                x = context.float()
                context = (x + pair[which](x) * multiplier).to(context.dtype)
        return context

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: Any = None, *args, **kwargs) -> torch.Tensor:
        batch, _, _ = hidden_states.shape
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.to_k(self._transform(context, 0))
        value = attn.to_v(self._transform(context, 1))
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (t.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for t in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0,
                                             is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


@contextmanager
def installed(unet, networks: Sequence[tuple[Hypernetwork, float]]) -> Iterator[None]:
    """The hypernetworks on every attention layer of ``unet`` for the block; its own processors after it."""
    saved = unet.attn_processors
    device = get_module_execution_device(unet)  # where it runs, even offloaded (low-memory modes)
    for network, _ in networks:
        network.to(device)
    unet.set_attn_processor(HypernetworkProcessor(networks))
    try:
        yield
    finally:
        unet.set_attn_processor(saved)
