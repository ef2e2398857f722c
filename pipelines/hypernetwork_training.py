"""A1111's hypernetwork training (the Train tab's *Create hypernetwork* and *Train Hypernetwork*): a new file with
A1111's layer settings and weight initialisations, then its MLPs trained on a folder of pictures with the model
frozen (the run itself: ``training_run``). In training the hypernetwork is on every attention layer at strength 1,
dropout on; previews are made through the engine with ``<hypernet:name:1>`` in the caption. The file is A1111's
``.pt``, so A1111 reads it and it reads A1111's.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, ContextManager, Sequence

import torch

from .atomic import replace_file
from .errors import EaselError, RequestError
from .networks.files import NetworkError, NetworkFile
from .networks.hypernetwork import ACTIVATION_NAMES, WEIGHT_INITS, Hypernetwork, installed
from .training_run import (Trainee, TrainProgress, TrainRequest, TrainResult, check_name, find_file, new_file,
                           run)

SIZES = (768, 1024, 320, 640, 1280)  # A1111's "Modules": text-context widths (SD 1.x, 2.x), then UNet channels
DEFAULT_SIZES = (768, 320, 640, 1280)
MAX_WIDTH = 8192


def model_widths(registry, name: str) -> list[int]:
    """The widths a hypernetwork module can have on the model's attention layers, read from a diffusers folder's
    UNet config without loading it (its text context, the channels of its blocks with attention), so that a model
    of other widths than A1111's (the embedded easel-shapes: 64 and 128) can be given modules; [] when unknown."""
    try:
        info = registry.resolve(name)
    except EaselError:
        return []
    try:
        config = json.loads((Path(info.source) / "unet" / "config.json").read_text())
    except (OSError, ValueError):
        return []
    channels = config.get("block_out_channels") or []
    widths = {channels[i] for i, kind in enumerate(config.get("down_block_types") or []) if "CrossAttn" in kind
              and i < len(channels)}
    if channels and "CrossAttn" in (config.get("mid_block_type") or "UNetMidBlock2DCrossAttn"):
        widths.add(channels[-1])
    if isinstance(config.get("cross_attention_dim"), int):
        widths.add(config["cross_attention_dim"])
    return sorted(widths)


def _numbers(value: str | Sequence[float], label: str, field_name: str) -> list[float]:
    """``"1, 2, 1"`` (A1111's text) or a list of numbers."""
    pieces = value.split(",") if isinstance(value, str) else list(value)
    try:
        return [float(str(piece).strip()) for piece in pieces if str(piece).strip()]
    except ValueError:
        raise RequestError(f"{label} {value!r} is not numbers separated by commas (such as 1, 2, 1).",
                           field_name) from None


@dataclass(frozen=True)
class CreateHypernetworkRequest:
    """A1111's *Create hypernetwork* (its API's ``/sdapi/v1/create/hypernetwork``): the widths it has MLPs for
    (``enable_sizes``), each MLP's layer widths as multiples of its own (``layer_structure``), the activation after
    each layer but the last, weight initialisation, layer normalisation and dropout (``dropout_structure``: a
    probability per layer, the first and last 0)."""

    name: str
    enable_sizes: tuple[int, ...] = DEFAULT_SIZES
    overwrite_old: bool = False
    layer_structure: str | tuple[float, ...] = "1, 2, 1"
    activation_func: str = "linear"
    weight_init: str = "Normal"
    add_layer_norm: bool = False
    use_dropout: bool = False
    dropout_structure: str | tuple[float, ...] = "0, 0, 0"

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "name", check_name(self.name, "hypernetwork"))
        try:
            sizes = tuple(sorted({int(size) for size in self.enable_sizes}))
        except (TypeError, ValueError):
            sizes = ()
        if not sizes or not 1 <= min(sizes) <= max(sizes) <= MAX_WIDTH:
            raise RequestError(f"Modules must be widths (such as {', '.join(map(str, SIZES))}), at least one, got "
                               f"{self.enable_sizes!r}.", "enable_sizes")
        set_(self, "enable_sizes", sizes)
        layers = _numbers(self.layer_structure, "The layer structure", "layer_structure")
        if len(layers) < 2 or layers[0] != 1 or layers[-1] != 1 or min(layers) <= 0:
            raise RequestError(f"The layer structure {self.layer_structure!r} must start and end with 1 and have only "
                               "widths above 0 (such as 1, 2, 1).", "layer_structure")
        set_(self, "layer_structure", tuple(layers))
        if self.use_dropout and str(self.dropout_structure).strip():
            dropout = _numbers(self.dropout_structure, "The dropout structure", "dropout_structure")
            if len(dropout) != len(layers) or dropout[0] != 0 or dropout[-1] != 0 or not all(0 <= p < 1
                                                                                            for p in dropout):
                raise RequestError(f"The dropout structure {self.dropout_structure!r} needs a probability (0 up to 1) "
                                   f"for each of the {len(layers)} layers, the first and last 0.", "dropout_structure")
        else:
            dropout = [0.0] * len(layers)
        set_(self, "dropout_structure", tuple(dropout))
        for field_name, choices in (("activation_func", ACTIVATION_NAMES), ("weight_init", WEIGHT_INITS)):
            if getattr(self, field_name) not in choices:
                raise RequestError(f"{field_name} must be one of {', '.join(choices)}, got "
                                   f"{getattr(self, field_name)!r}.", field_name)

    def settings(self) -> dict[str, Any]:
        """The file's settings under A1111's keys (a new hypernetwork's last layer has no activation, as A1111's)."""
        return {"layer_structure": list(self.layer_structure), "activation_func": self.activation_func,
                "weight_initialization": self.weight_init, "is_layer_norm": self.add_layer_norm,
                "use_dropout": self.use_dropout, "dropout_structure": list(self.dropout_structure),
                "activate_output": False, "last_layer_dropout": False, "sd_checkpoint": None,
                "sd_checkpoint_name": None}


def save_hypernetwork(path: Path, data: dict[str, Any]) -> None:
    replace_file(path, lambda file: torch.save(data, file))


def create_hypernetwork(engine, request: CreateHypernetworkRequest) -> Path:
    """The new file (``hypernetworks/<name>.pt``, replacing one of that name when overwriting); no model is needed."""
    path = new_file(engine.registry.models_dir, "hypernet", request.name, request.overwrite_old)
    save_hypernetwork(path, Hypernetwork.create(request.name, request.enable_sizes, request.settings()).state())
    return path


@dataclass(frozen=True, kw_only=True)
class TrainHypernetworkRequest(TrainRequest):
    """A1111's *Train Hypernetwork* (its API's ``/sdapi/v1/train/hypernetwork``), with A1111's default rate."""

    NAME_FIELD: ClassVar[str] = "hypernetwork_name"
    SAVE_FIELD: ClassVar[str] = "save_hypernetwork_every"
    KIND: ClassVar[str] = "hypernetwork"

    hypernetwork_name: str
    learn_rate: str = "0.00001"
    save_hypernetwork_every: int = 500


class _HypernetworkTrainee(Trainee):
    """The hypernetwork's MLPs, on the UNet's attention at strength 1 while it predicts."""

    kind, loss_file = "hypernetwork", "hypernetwork_loss.csv"

    def __init__(self, item: NetworkFile, network: Hypernetwork):
        self.network = network
        super().__init__(item.name, item.path, network.notes.get("step") or 0, network.train(True))

    def applied(self, unet) -> ContextManager:
        return installed(unet, [(self.network, 1.0)])

    def data(self, step: int, checkpoint: tuple[str, str]) -> dict[str, Any]:
        return self.network.state(name=self.name, step=step, sd_checkpoint=checkpoint[0],
                                  sd_checkpoint_name=checkpoint[1])

    def save(self, step: int, checkpoint: tuple[str, str]) -> None:
        save_hypernetwork(self.path, self.data(step, checkpoint))

    def preview_prompt(self, caption: str) -> str:
        return f"{caption} <hypernet:{self.name}:1>"

    def described(self) -> dict[str, Any]:
        keys = ("layer_structure", "activation_func", "weight_initialization", "is_layer_norm", "use_dropout",
                "dropout_structure")
        return {key: self.network.notes.get(key) for key in keys} | {"sizes": sorted(self.network.layers)}


def train_hypernetwork(engine, request: TrainHypernetworkRequest,
                       on_progress: Callable[[TrainProgress], None] | None = None,
                       cancel: threading.Event | None = None, owner: Any = None) -> TrainResult:
    """Train the named hypernetwork (``training_run.run``)."""
    item = find_file(engine.registry.models_dir, "hypernet", request.hypernetwork_name)
    if item is None:
        raise RequestError(f"No hypernetwork named {request.hypernetwork_name!r} in the hypernetworks folder: make "
                           "one under Create hypernetwork.", "hypernetwork_name")

    def begin(pipe, device) -> _HypernetworkTrainee:
        try:
            network = Hypernetwork.load(item)
        except NetworkError as exc:
            raise RequestError(str(exc), "hypernetwork_name") from None
        width = pipe.unet.config.cross_attention_dim
        if width not in network.layers:
            raise RequestError(f"{item.label} has no module for this model's text context (width {width}; it has "
                               f"{sorted(network.layers)}): create one with {width} among its modules.",
                               "hypernetwork_name")
        return _HypernetworkTrainee(item, network.to(device))

    return run(engine, request, begin, on_progress, cancel, owner)
