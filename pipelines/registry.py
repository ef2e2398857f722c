"""The pipeline registry: every model loaded once, task variants sharing its weights, LRU under a budget.

A model name resolves to a source (a diffusers folder or a single-file checkpoint under
``models/Stable-diffusion``, or a Hub id; never a path). ``lease(name)`` loads it if needed and pins it while a
generation uses it; loading a new model first evicts the least recently used unpinned ones until the estimate
fits the memory budget (on a GPU they wait in CPU RAM, under a RAM budget, before being dropped), then places it
in a memory mode (``memory.py``: whole on the device, or offloaded when
it does not fit). Task variants (txt2img, img2img, inpaint) come from ``AutoPipelineFor*.from_pipe``, which
reuses the same modules and, unlike the concrete classes' ``from_pipe``, never casts them to float32 (diffusers
issue 12754).
"""

from __future__ import annotations

import gc
import json
import logging
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Mapping

from . import ip_adapter, kandinsky
from .checkpoints import (OWN_VAE, check_vae, checkpoint_files, detect, load_checkpoint, load_controlnet_file,
                          override_vae)
from .errors import ModelError, RequestError
from .hashing import short_hash, weight_files
from .memory import default_budget, place
from .generate import warm_up
from .speed import SpeedOptions, apply as apply_speed, is_compiled
from .upscalers import UPSCALER_DIR, ImageUpscaler, require_model_folder, upscaler_files

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "Stable-diffusion"
CONTROLNET_DIR = "ControlNet"
# A Hub id is owner/name; neither part may be "." or ".." or start with a dot.
_HUB_ID = re.compile(r"^[\w-][\w.-]*/[\w-][\w.-]*$")
FOLDER_NAME = re.compile(r"^[\w-][\w .+-]*$")
TITLE = re.compile(r"^(?P<name>.+?) \[(?P<hash>[0-9a-f]{8,10})\]$")  # A1111's checkpoint title: "name [hash]"
_TASK_PIPELINES = {
    "txt2img": "AutoPipelineForText2Image",
    "img2img": "AutoPipelineForImage2Image",
    "inpaint": "AutoPipelineForInpainting",
}
# A1111's defaults; a model folder's easel.json overrides any of them.
_BASE_DEFAULTS = {"steps": 20, "cfg_scale": 7.0, "sampler": "Euler a", "scheduler": "Automatic"}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str
    local: bool
    family: str = "sd"  # "sd", "sdxl" (KOALA is an SDXL pipeline) or "kandinsky22"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    inpainting: bool = False  # a dedicated inpainting checkpoint (9-channel UNet)
    kind: str = "pipeline"  # or "controlnet" (a ControlNetModel that attaches to a pipeline), "upscaler file",
    # ip_adapter.KIND (an IP-Adapter file) or ip_adapter.ENCODER_KIND (its CLIP image encoder)
    prior: str | None = None  # the Hub id of a separate prior (Kandinsky 2.2), which must be cached too


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def read_catalog(path: str | Path | None) -> dict[str, ModelInfo]:
    """Known Hub models with their presets, by name (``models/catalog.json``)."""
    entries = _read_json(Path(path)).get("models", []) if path else []
    preset_keys = ("width", "height", "steps", "cfg_scale", "sampler", "scheduler")
    return {
        e["name"]: ModelInfo(name=e["name"], source=e["hub_id"], local=False, family=e.get("family", "sd"),
                             defaults={**_BASE_DEFAULTS, **{k: e[k] for k in preset_keys if k in e}},
                             prior=e.get("prior"))
        for e in entries
    }


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE set in the environment (as tests and air-gapped installs do)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _is_cached(hub_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hub_id, "model_index.json"), str)


def describe_folder(name: str, folder: Path) -> ModelInfo:
    """Family and per-model defaults of a diffusers folder, read from its configs without loading weights."""
    index = _read_json(folder / "model_index.json")
    family = kandinsky.family_of(index.get("_class_name", "")) or ("sdxl" if "XL" in index.get("_class_name", "")
                                                                  else "sd")
    unet = _read_json(folder / "unet" / "config.json")
    vae = _read_json(folder / "vae" / "config.json")
    size = int(unet.get("sample_size", 64)) * 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)
    native = kandinsky.DEFAULTS if family == kandinsky.FAMILY else {"width": size, "height": size}
    defaults = {**_BASE_DEFAULTS, **native, **_read_json(folder / "easel.json")}
    return ModelInfo(name=name, source=str(folder), local=True, family=family, defaults=defaults,
                     inpainting=unet.get("in_channels") == 9)


def describe_file(name: str, path: Path, config: Path) -> ModelInfo:
    """A single-file checkpoint: family and native size from the config folder of its kind, defaults also from
    its sidecar ``<name>.easel.json``."""
    info = describe_folder(name, config)
    return replace(info, source=str(path), defaults={**info.defaults, **detect(path).options})


class LoadedModel:
    """A resident pipeline, its task variants, and its bookkeeping."""

    def __init__(self, info: ModelInfo, pipe, mode: str = "normal", vae: tuple = (None, None)):
        self.info = info
        self.pipe = pipe
        self.mode = mode  # the memory mode it was placed in
        self.vae = vae  # (name, short hash) of an override from models/VAE, for the infotext
        modules = pipe.components.values() if hasattr(pipe, "components") else [pipe]
        self.nbytes = sum(
            t.numel() * t.element_size()
            for module in modules if hasattr(module, "parameters")
            for t in (*module.parameters(), *module.buffers())
        )
        self.leases = 0
        self.last_used = time.monotonic()
        self._variants: dict[str, Any] = {}
        self.load_seconds = 0.0  # what the latest lease paid to load it: 0 when it was already resident
        self.parked = False  # evicted from the device to CPU RAM, ready to move back

    def pipeline(self, task: str = "txt2img", controlnets: list | None = None):
        """The pipeline for ``task``, sharing this model's modules (no second copy, same dtype).

        With ``controlnets`` (ControlNetModels, several as a MultiControlNetModel) it is a ControlNet pipeline
        made for this call only: the base pipeline and its cached variants never hold a ControlNet."""
        if task not in _TASK_PIPELINES:
            raise RequestError(f"Unknown task {task!r}.", "task")
        if task in self._variants and not controlnets:
            return self._variants[task]
        import diffusers

        # Kandinsky's ordinary decoder inpaints as img2img with masked latent blending (kandinsky.LatentBlend).
        blended = task == "inpaint" and self.info.family == kandinsky.FAMILY
        auto = getattr(diffusers, _TASK_PIPELINES["img2img" if blended else task])
        extra = {}
        if controlnets:
            from diffusers.models.controlnets import MultiControlNetModel

            extra["controlnet"] = controlnets[0] if len(controlnets) == 1 else MultiControlNetModel(controlnets)
        try:
            variant = auto.from_pipe(self.pipe, **extra)
        except ValueError as exc:
            raise ModelError(f"Model {self.info.name!r} cannot run {task}{' with ControlNet' if extra else ''}: "
                             f"{exc}") from exc
        variant.set_progress_bar_config(disable=True)
        if not controlnets:
            self._variants[task] = variant
        return variant

    @cached_property
    def parameters(self) -> int:
        modules = self.pipe.components.values() if hasattr(self.pipe, "components") else [self.pipe]
        return sum(p.numel() for module in modules if hasattr(module, "parameters") for p in module.parameters())

    @cached_property
    def hash(self) -> str | None:
        return short_hash(self.info.source) if self.info.local else None

    @property
    def title(self) -> str:
        """A1111's checkpoint title, ``name [hash]``."""
        return f"{self.info.name} [{self.hash}]" if self.hash else self.info.name

    @property
    def autoencoder(self):
        """What turns latents into pictures: the VAE, or Kandinsky's MoVQ."""
        return getattr(self.pipe, "vae", None) or self.pipe.movq

    def shares_latents(self, other: "LoadedModel") -> bool:
        """Whether ``other`` reads this model's latents: autoencoders of one configuration, UNets of one input."""
        def public(config) -> dict:
            return {key: value for key, value in config.items() if not key.startswith("_")}

        return public(self.autoencoder.config) == public(other.autoencoder.config) and \
            self.pipe.unet.config.in_channels == other.pipe.unet.config.in_channels

    @property
    def latent_scale(self) -> int:
        """Pixels per latent along each side."""
        return 2 ** (len(self.autoencoder.config.block_out_channels) - 1)


def _check_tokenizers(pipe, name: str) -> None:
    """transformers 5 loads an unreachable Hub tokenizer as an empty one; refuse it loudly."""
    for key, component in pipe.components.items():
        if "tokenizer" in key and component is not None:  # Kandinsky's is prior_tokenizer
            if len(component) <= 1000 or component.model_max_length > 1024:
                raise ModelError(
                    f"Model {name!r} has a broken {key} (vocabulary {len(component)}, max length "
                    f"{component.model_max_length}); its tokenizer files are missing or incomplete."
                )


class Registry:
    def __init__(self, models_dir: str | Path, device: str = "cpu", dtype=None,
                 memory_budget: int | None = None, offline: bool = True, default_model: str | None = None,
                 catalog: str | Path | None = None, memory_mode: str = "auto", vae: str | None = None,
                 speed: SpeedOptions | None = None):
        """``memory_mode``: auto, normal, medvram or lowvram (``memory.py``); ``vae``: a name in ``models/VAE``
        for every model whose ``easel.json`` names none; ``speed``: the CUDA fast path (``speed.py``)."""
        import torch

        self.models_dir = Path(models_dir)
        self.device = device
        self.dtype = dtype or torch.float32
        self.memory_budget = memory_budget if memory_budget is not None else default_budget(device)
        self.memory_mode = memory_mode
        # Evicted models wait in CPU RAM (up to this many bytes) when the device is not the CPU itself.
        self.park = torch.device(device).type != "cpu"
        self.ram_budget = default_budget("cpu")
        self.vae = None if vae in OWN_VAE else vae  # a name of models/VAE, checked when a model loads with it
        self.speed = speed or SpeedOptions()
        self.offline = offline
        self._default_model = default_model
        self.catalog = read_catalog(catalog)
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.RLock()

    # -- catalog -------------------------------------------------------------------------------------------
    def list_models(self) -> list[ModelInfo]:
        root = self.models_dir / CHECKPOINT_DIR
        if not root.is_dir():
            return []
        folders = [describe_folder(p.name, p) for p in sorted(root.iterdir()) if (p / "model_index.json").is_file()]
        files = [describe_file(name, *found) for name, found in checkpoint_files(root).items()]
        return sorted(folders + files, key=lambda m: m.name)

    def names(self) -> list[str]:
        """Models on disk, then catalog models not on disk under the same name."""
        on_disk = [m.name for m in self.list_models()]
        return on_disk + [name for name in self.catalog if name not in on_disk]

    def default_name(self) -> str:
        names = self.names()
        if self._default_model and (self._default_model in names or self._default_model in self._loaded):
            return self._default_model
        if not names:
            raise ModelError(f"No models found in {self.models_dir / CHECKPOINT_DIR}.")
        return names[0]

    def set_default(self, name: str) -> ModelInfo:
        """Make ``name`` the model a request without one runs on (A1111's current checkpoint)."""
        info = self.resolve(name)
        self._default_model = info.name
        return info

    def resolve(self, name: str) -> ModelInfo:
        """A model by name: a folder in the models directory or a Hub id. Paths are never accepted,
        so no request can make the server read outside its models folder."""
        name = (name or "").strip()
        if not name:
            return self.resolve(self.default_name())
        if title := TITLE.match(name):  # as infotexts name a refiner or hires checkpoint
            name = title["name"]
        folder = self.models_dir / CHECKPOINT_DIR / name
        if FOLDER_NAME.match(name) and (folder / "model_index.json").is_file():
            return describe_folder(name, folder)
        if found := checkpoint_files(self.models_dir / CHECKPOINT_DIR).get(name):
            return describe_file(name, *found)
        if name in self.catalog:
            return self.catalog[name]
        if _HUB_ID.match(name) and ".." not in name:
            return ModelInfo(name=name, source=name, local=False, defaults=dict(_BASE_DEFAULTS))
        available = ", ".join(self.names()) or "none"
        raise RequestError(f"Unknown model {name!r}. Available models: {available}.", "model")

    def _controlnet_sources(self) -> dict[str, Path]:
        """ControlNet models on disk by name: diffusers folders (a ``config.json`` beside the weights) and single
        files (``.safetensors``; ``.pth``/``.ckpt``/``.pt`` read safely), named by their stem."""
        root = self.models_dir / CONTROLNET_DIR
        if not root.is_dir():
            return {}
        found = {}
        for p in sorted(root.iterdir()):
            if (p / "config.json").is_file():
                found[p.name] = p
            elif p.is_file() and p.suffix.lower() in (".safetensors", ".pth", ".ckpt", ".pt"):
                found.setdefault(p.stem, p)
        return found

    def controlnet_names(self) -> list[str]:
        return list(self._controlnet_sources())

    def resolve_controlnet(self, name: str) -> ModelInfo:
        """A ControlNet model by name (the extension's "name [hash]" form too); never a path."""
        from .controlnet import model_name

        name = model_name(name)
        sources = self._controlnet_sources()
        if name not in sources:
            available = ", ".join(sources) or "none"
            raise RequestError(f"Unknown ControlNet model {name!r}. Available in {self.models_dir / CONTROLNET_DIR}: "
                               f"{available}.", "controlnets")
        kind = ip_adapter.KIND if ip_adapter.is_adapter_file(sources[name]) else "controlnet"
        return ModelInfo(name=f"{CONTROLNET_DIR}/{name}", source=str(sources[name]), local=True, kind=kind)

    def resolve_image_encoder(self, module: str) -> ModelInfo:
        """The CLIP image encoder an IP-Adapter preprocessor (``module``) names, in ``models/clip_vision``."""
        from .preprocessors import PREPROCESSORS, unavailable_reason

        path = ip_adapter.encoder_path(self.models_dir, PREPROCESSORS[module].encoder)
        if path is None:
            raise RequestError(unavailable_reason(self.models_dir, module), "controlnets")
        return ModelInfo(name=f"{ip_adapter.ENCODER_DIR}/{path.name}", source=str(path), local=True,
                         kind=ip_adapter.ENCODER_KIND)

    # -- residency -----------------------------------------------------------------------------------------
    def resolve_upscaler(self, name: str) -> ModelInfo:
        """A model upscaler (its pipeline folder under ``models/upscalers``) or an upscaler file (``models/ESRGAN``
        and its siblings), to lease like a checkpoint."""
        if path := upscaler_files(self.models_dir).get(name):
            return ModelInfo(name=f"{UPSCALER_DIR}/{path.parent.name}/{path.name}", source=str(path), local=True,
                             kind="upscaler file")
        folder = require_model_folder(self.models_dir, name)
        return ModelInfo(name=f"{UPSCALER_DIR}/{folder.name}", source=str(folder), local=True)

    @contextmanager
    def lease(self, model: str | ModelInfo) -> Iterator[LoadedModel]:
        """The loaded model, pinned (never evicted) until the block ends."""
        info = model if isinstance(model, ModelInfo) else self.resolve(model)
        with self._lock:
            entry = self._loaded.get(info.name)
            if entry is None:
                entry = self._load(info)
            elif entry.parked:
                self._unpark(entry)
            else:
                entry.load_seconds = 0.0
            entry.leases += 1
        try:
            yield entry
        finally:
            with self._lock:
                entry.leases -= 1
                entry.last_used = time.monotonic()

    def resident(self) -> list[dict]:
        """What is loaded, where, how large, and whether a job holds it now."""
        with self._lock:
            return [{"name": n, "device": "cpu (parked)" if e.parked else self.device, "mode": e.mode,
                     "bytes": e.nbytes, "leases": e.leases} for n, e in self._loaded.items()]

    def set_vae(self, name: str | None) -> None:
        """The VAE of every model whose ``easel.json`` names none (``--vae``, A1111's ``sd_vae``): a name in
        ``models/VAE``, or None/"Automatic"/"None" for each model's own. Resident models it changes are unloaded
        (those a job holds are not: call it between jobs), to load again with it when next used."""
        self.vae = check_vae(self.models_dir, name)
        with self._lock:
            changed = [n for n, e in self._loaded.items()
                       if hasattr(e.pipe, "vae") and "vae" not in e.info.defaults and e.vae[0] != self.vae]
        for changed_name in changed:
            self.unload(changed_name)

    def unload(self, name: str) -> bool:
        with self._lock:
            entry = self._loaded.get(name)
            if entry is None or entry.leases:
                return False
            del self._loaded[name]
        self.release_memory()
        return True

    def _used(self, parked: bool = False) -> int:
        """Bytes of the models on the device (or, with ``parked``, of those waiting in CPU RAM)."""
        return sum(e.nbytes for e in self._loaded.values() if e.parked == parked)

    def _make_room(self, needed: int) -> None:
        while self._used() + needed > self.memory_budget:
            idle = [(e.last_used, n) for n, e in self._loaded.items() if not e.leases and not e.parked]
            if not idle:
                log.warning("memory budget exceeded: every resident model is in use")
                return
            _, victim = min(idle)
            self._evict(self._loaded[victim])
            self.release_memory()

    def _evict(self, entry: LoadedModel) -> None:
        """Move ``entry`` to CPU RAM (dropping the longest-parked models if RAM runs short), or drop it when the
        device is the CPU, it is offloaded already, or it cannot fit in RAM at all."""
        if self.park and entry.mode == "normal":
            parked = sorted((e.last_used, n) for n, e in self._loaded.items() if e.parked and not e.leases)
            while parked and self._used(parked=True) + entry.nbytes > self.ram_budget:
                name = parked.pop(0)[1]
                log.info("dropping %s from CPU RAM", name)
                del self._loaded[name]
            if self._used(parked=True) + entry.nbytes <= self.ram_budget:
                log.info("moving %s to CPU RAM to stay within the memory budget", entry.info.name)
                entry.pipe.to("cpu")
                entry.parked = True
                return
        log.info("evicting %s to stay within the memory budget", entry.info.name)
        del self._loaded[entry.info.name]

    def _unpark(self, entry: LoadedModel) -> None:
        """Bring a parked model back to the device (its load time is this move)."""
        started = time.perf_counter()
        entry.parked = False  # counted on the device from here, and pinned while room is made for it
        entry.leases += 1
        try:
            self._make_room(0)
        finally:
            entry.leases -= 1
        entry.pipe.to(self.device)
        entry.load_seconds = time.perf_counter() - started

    def release_memory(self) -> None:
        """Hand freed tensors back (the CUDA cache too), after an eviction or an out-of-memory error."""
        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def read(self, info: ModelInfo) -> tuple[Any, tuple]:
        """A fresh copy of a model from its files, on the CPU, with the VAE the registry gives it (its name and short
        hash, or Nones): no placement, no adapters, no bookkeeping. ``_load`` places it; the merger reads models this
        way to write a new one."""
        from diffusers import AutoPipelineForText2Image, ControlNetModel, DiffusionPipeline

        offline = self.offline or _hub_offline()
        if not info.local and offline and not all(_is_cached(hub_id) for hub_id in (info.source, info.prior) if hub_id):
            folder = self.models_dir / CHECKPOINT_DIR / info.name.split("/")[-1]
            where = (kandinsky.layout_hint(str(folder)) if info.family == kandinsky.FAMILY
                     else f"put its diffusers folder (from {info.source}) at {folder}")
            raise ModelError(f"{info.name} is not downloaded and Easel is offline: {where}, "
                             "or start once without --offline to download it.")
        kwargs: dict[str, Any] = {"dtype": self.dtype, "local_files_only": info.local or offline}
        if "safety_checker" in _read_json(Path(info.source) / "model_index.json"):
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        vae = (None, None)
        try:
            if info.kind == "upscaler file":
                pipe = ImageUpscaler(Path(info.source))
            elif info.kind == ip_adapter.KIND:
                pipe = ip_adapter.read_adapter(Path(info.source), self.dtype)
            elif info.kind == ip_adapter.ENCODER_KIND:
                pipe = ip_adapter.read_encoder(Path(info.source), self.dtype)
            elif info.local and Path(info.source).is_file():
                single_file = load_controlnet_file if info.kind == "controlnet" else load_checkpoint
                pipe = single_file(Path(info.source), self.models_dir, self.dtype)
            else:
                # Kandinsky's Hub decoder brings its prior along only through the auto pipeline (connected pipes)
                loader = (ControlNetModel if info.kind == "controlnet" else AutoPipelineForText2Image
                          if info.family == kandinsky.FAMILY and not info.local else DiffusionPipeline)
                pipe = loader.from_pretrained(info.source, **kwargs)
            if info.kind == "pipeline" and hasattr(pipe, "vae"):
                vae = override_vae(pipe, self.models_dir, info.defaults.get("vae", self.vae))
        except Exception as exc:  # every loader failure becomes one readable message
            hint = " (offline: only local files can be used)" if not info.local and offline else ""
            raise ModelError(f"Could not load model {info.name!r} from {info.source}{hint}: {exc}") from exc
        if info.kind == "pipeline":
            kandinsky.check_loaded(info, pipe, str(self.models_dir / CHECKPOINT_DIR / info.name.split("/")[-1]))
        return pipe, vae

    def _load(self, info: ModelInfo) -> LoadedModel:
        estimate = sum(f.stat().st_size for f in weight_files(Path(info.source))) if info.local else 0
        self._make_room(estimate)
        started = time.perf_counter()
        pipe, vae = self.read(info)
        mode = place(pipe, self.memory_mode, self.device, self.memory_budget - self._used())
        if info.kind == "pipeline":
            _check_tokenizers(pipe, info.name)
            apply_speed(pipe, self.speed, self.device, mode)
            pipe.set_progress_bar_config(disable=True)
            if (hasattr(pipe, "unet") and is_compiled(pipe.unet) and self.speed.compile_sizes
                    and not info.name.startswith(f"{UPSCALER_DIR}/")):  # an upscaler's sizes follow its input
                warm_up(pipe, self.speed.compile_sizes)  # counted in the load time, where a user waits for it
        entry = LoadedModel(info, pipe, mode, vae)
        entry.load_seconds = time.perf_counter() - started
        log.info("loaded %s in %.1f s (%.1f MB)", info.name, entry.load_seconds, entry.nbytes / 2**20)
        self._loaded[info.name] = entry
        return entry
