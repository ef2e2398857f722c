"""Settings and the long-lived services built from them (registry, output writer, engine, the Save buttons' log, the
options a user changes while it runs).

``app.py`` turns command-line flags into ``Settings``; tests build ``Settings`` directly. On a Hugging Face
ZeroGPU Space the GPU work must run inside a function decorated with ``spaces.GPU``; elsewhere that
decorator is absent and the function runs as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .checkpoints import AUTOMATIC, OWN_VAE, vae_names
from .config import CHECKPOINT, VAE, Config
from .engine import Engine, GenerationResult, Progress
from .outputs import OutputWriter, SaveLog
from .registry import TITLE, Registry
from .request import GenerationRequest
from .speed import SpeedOptions, preferred_dtype

DEFAULT_MODEL = "easel-shapes"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    models_dir: Path = Path("models")
    outputs_dir: Path = Path("outputs")
    device: str = "auto"
    dtype: str = "auto"
    # A1111's options a flag decides for this run (None: as config_file says): samples_save, samples_format (png,
    # jpg or webp) and show_progress_every_n_steps (0: no live previews) (pipelines/config.py)
    save_outputs: bool | None = None
    samples_format: str | None = None
    preview_every: int | None = None
    config_file: Path | None = None  # where the options a user changes are kept (A1111's config.json); None: nowhere
    ui_config_file: Path | None = None  # the tabs' saved starting values (A1111's ui-config.json, ui/defaults.py)
    memory_budget_gb: float | None = None
    offline: bool = False
    default_model: str | None = None  # None: the checkpoint config_file keeps, else DEFAULT_MODEL
    catalog: Path | None = None  # known Hub models and their presets (models/catalog.json)
    memory_mode: str = "auto"  # auto, normal, medvram, lowvram (pipelines/memory.py)
    vae: str | None = None  # a name in models/VAE used by every model whose easel.json names none
    controlnet_units: int = 3  # ControlNet units per generation tab (1 to 10)
    fast: bool = True  # the CUDA fast path (pipelines/speed.py): bf16, channels-last, fused QKV; nothing on CPU
    compile: bool = False  # regional torch.compile on CUDA (pipelines/speed.py)
    compile_mode: str = "default"  # "reduce-overhead": compile with CUDA graphs
    weights: str = "full"  # "int8", "fp8" (and -fast): the UNet's weights stored quantised (pipelines/quantize.py)
    compile_sizes: tuple[tuple[int, int], ...] = ()  # (width, height) compiled when a model loads


def resolve_device(name: str) -> str:
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(name: str, device: str, fast: bool = False):
    import torch

    if name == "auto":
        return preferred_dtype(device, fast) or (torch.float16 if device.startswith(("cuda", "mps")) else torch.float32)
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def _kept_vae(config: Config, settings: Settings) -> str | None:
    """The VAE the settings file keeps (A1111's ``sd_vae``), when it is still in models/VAE; a warning otherwise."""
    kept = config.kept(VAE)
    if not isinstance(kept, str) or kept in OWN_VAE:
        return None
    if kept in vae_names(settings.models_dir):
        return kept
    config.warnings.append(f"The VAE {settings.config_file} names, {kept!r}, is not in models/VAE; starting with "
                           "each model's own.")
    return None


def _gpu_decorator() -> Callable:
    try:
        import spaces
    except ImportError:
        return lambda fn: fn
    return spaces.GPU


@dataclass
class Services:
    settings: Settings
    registry: Registry
    engine: Engine
    saved: SaveLog  # what the Save and Zip buttons keep: outputs/log, as A1111's log folder
    config: Config  # A1111's options: the Settings tab, /sdapi/v1/options
    _stream: Callable[..., Iterator[Progress | GenerationResult]] = field(repr=False, default=None)

    @classmethod
    def build(cls, settings: Settings) -> "Services":
        device = resolve_device(settings.device)
        budget = int(settings.memory_budget_gb * 2**30) if settings.memory_budget_gb else None
        flags = {"samples_save": settings.save_outputs, "samples_format": settings.samples_format,
                 "show_progress_every_n_steps": settings.preview_every}
        config = Config(settings.config_file, {key: value for key, value in flags.items() if value is not None})
        vae = settings.vae if settings.vae is not None else _kept_vae(config, settings)
        registry = Registry(settings.models_dir, device=device,
                            dtype=resolve_dtype(settings.dtype, device, settings.fast),
                            memory_budget=budget, offline=settings.offline,
                            default_model=settings.default_model or DEFAULT_MODEL,
                            catalog=settings.catalog, memory_mode=settings.memory_mode, vae=vae,
                            speed=SpeedOptions.from_flags(settings.fast, settings.compile, settings.compile_mode,
                                                          settings.weights, settings.compile_sizes))
        kept = config.kept(CHECKPOINT)
        if settings.default_model is None and isinstance(kept, str) and kept:
            name = match["name"] if (match := TITLE.match(kept)) else kept
            if name in registry.names():
                registry.set_default(name)
            else:
                config.warnings.append(f"The checkpoint {settings.config_file} names, {kept!r}, is not among the "
                                       f"models; starting on {registry.default_name()}.")
        for warning in config.warnings:
            logger.warning(warning)
        engine = Engine(registry, OutputWriter(settings.outputs_dir))
        services = cls(settings, registry, engine, SaveLog(Path(settings.outputs_dir) / "log"), config,
                       _gpu_decorator()(engine.stream))
        services.configure()
        return services

    def set_vae(self, name: str | None) -> None:
        """A1111's SD VAE: a VAE of models/VAE for every model whose easel.json names none ("Automatic": each
        model's own), kept for the next start as A1111 keeps it."""
        self.engine.set_vae(name)
        self.config.keep(VAE, self.registry.vae or AUTOMATIC)

    def configure(self, values: dict[str, Any] | None = None) -> list[str]:
        """Set A1111 options (``values``: none when one is refused, with a RequestError naming it) and put them all to
        work; the keys whose value changed. Options read where they are used (the request defaults, the grid's rows,
        the networks' weight) are read from ``config`` there."""
        changed = self.config.update(values) if values else []
        options = self.config
        engine, grids = self.engine, self.engine.grid_writer
        for writer in (engine.writer, grids, self.saved.writer):
            writer.format, writer.quality = options["samples_format"], options["jpeg_quality"]
            writer.pattern, writer.save_txt = options["samples_filename_pattern"], options["save_txt"]
            writer.save_to_dirs, writer.pnginfo = options["save_to_dirs"], options["enable_pnginfo"]
            writer.directory_pattern, writer.add_number = (options["directories_filename_pattern"],
                                                           options["save_images_add_number"])
        engine.writer.enabled = options["samples_save"]  # the Save buttons' writer always saves: the user asked
        grids.enabled, grids.format, grids.save_to_dirs = (options["grid_save"], options["grid_format"],
                                                           options["grid_save_to_dirs"])
        engine.grid_extended, engine.pnginfo = options["grid_extended_filename"], options["enable_pnginfo"]
        engine.save_before_hires = options["save_images_before_highres_fix"]
        engine.original_names = options["use_original_name_batch"]
        engine.write_templates, engine.wildcards.ignore_whitespace = (options["dp_write_raw_template"],
                                                                      options["dp_ignore_whitespace"])
        every = options["show_progress_every_n_steps"]
        self.engine.preview_every = max(every, 0) if options["live_previews_enable"] else 0
        return changed

    def stream(self, request: GenerationRequest, owner: Any = None,
               save: bool = True) -> Iterator[Progress | GenerationResult]:
        """The engine's job stream, run where GPU work is allowed to run."""
        return self._stream(request, owner=owner, save=save)
