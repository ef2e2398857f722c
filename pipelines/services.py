"""Settings and the long-lived services built from them (registry, output writer, engine, the Save buttons' log).

``app.py`` turns command-line flags into ``Settings``; tests build ``Settings`` directly. On a Hugging Face
ZeroGPU Space the GPU work must run inside a function decorated with ``spaces.GPU``; elsewhere that
decorator is absent and the function runs as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .engine import Engine, GenerationResult, Progress
from .outputs import OutputWriter, SaveLog
from .registry import Registry
from .request import GenerationRequest
from .speed import SpeedOptions, preferred_dtype

DEFAULT_MODEL = "easel-shapes"


@dataclass(frozen=True)
class Settings:
    models_dir: Path = Path("models")
    outputs_dir: Path = Path("outputs")
    device: str = "auto"
    dtype: str = "auto"
    save_outputs: bool = True
    samples_format: str = "png"  # png, jpg or webp: A1111's samples_format (pipelines/outputs.py)
    memory_budget_gb: float | None = None
    preview_every: int = 5
    offline: bool = False
    default_model: str = DEFAULT_MODEL
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
    _stream: Callable[..., Iterator[Progress | GenerationResult]] = field(repr=False, default=None)

    @classmethod
    def build(cls, settings: Settings) -> "Services":
        device = resolve_device(settings.device)
        budget = int(settings.memory_budget_gb * 2**30) if settings.memory_budget_gb else None
        registry = Registry(settings.models_dir, device=device,
                            dtype=resolve_dtype(settings.dtype, device, settings.fast),
                            memory_budget=budget, offline=settings.offline, default_model=settings.default_model,
                            catalog=settings.catalog, memory_mode=settings.memory_mode, vae=settings.vae,
                            speed=SpeedOptions.from_flags(settings.fast, settings.compile, settings.compile_mode,
                                                          settings.weights, settings.compile_sizes))
        engine = Engine(registry, OutputWriter(settings.outputs_dir, enabled=settings.save_outputs,
                                               format=settings.samples_format),
                        preview_every=settings.preview_every)
        saved = SaveLog(Path(settings.outputs_dir) / "log", format=settings.samples_format)
        return cls(settings, registry, engine, saved, _gpu_decorator()(engine.stream))

    def stream(self, request: GenerationRequest, owner: Any = None,
               save: bool = True) -> Iterator[Progress | GenerationResult]:
        """The engine's job stream, run where GPU work is allowed to run."""
        return self._stream(request, owner=owner, save=save)
