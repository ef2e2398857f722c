"""Side-by-side model comparison: one request per model, differing only in the model (or, with presets, in each
model's own size, steps, CFG and sampler), run one after another through the engine's job stream, so every
run takes the same queue, loading, eviction and timing path as any generation.

Shared noise comes from the engine: each image's starting latents are drawn on the CPU from its seed, so models
whose latents have the same shape start from identical noise; the export lists those groups. Timings are the
engine's ``RunStats``. The first run of each model is reported as it happened (cold when it had to load);
with a warm-up that run is left out of the medians, which are taken over ``repeats`` runs.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

from PIL import Image

from .engine import GenerationResult, Progress
from .errors import RequestError
from .grid import labelled_grid
from .request import GenerationRequest
from .stats import RunStats

MAX_MODELS = 9
PRESET_FIELDS = ("width", "height", "steps", "cfg_scale", "sampler", "scheduler")
COLUMNS = ("model", "parameters_m", "load", "load_s", "first_run_s", "denoise_s", "it_per_s", "decode_s", "total_s",
           "peak_memory_mb", "memory_kind", "latent_shape", "size", "steps", "timed_runs")


def comparison_requests(request: GenerationRequest, models: list[str], registry,
                        use_presets: bool = False) -> list[GenerationRequest]:
    """``request`` once per model (2 to 9, in the order given), all with the same concrete seed."""
    names = list(dict.fromkeys(m.strip() for m in models if m and m.strip()))
    if not 2 <= len(names) <= MAX_MODELS:
        raise RequestError(f"Pick 2 to {MAX_MODELS} different models to compare, got {len(names)}.", "model")
    request = request.with_seed()
    requests = []
    for name in names:
        info = registry.resolve(name)
        presets = {k: info.defaults[k] for k in PRESET_FIELDS if k in info.defaults} if use_presets else {}
        requests.append(replace(request, model=info.name, **presets))
    return requests


@dataclass
class ModelRun:
    """One model's outcome: its picture, its first run, and the runs its medians come from."""

    result: GenerationResult
    first: RunStats
    timed: list[RunStats]

    def _median(self, name: str) -> float:
        return statistics.median(getattr(s, name) for s in self.timed)

    def row(self) -> dict[str, Any]:
        request, first = self.result.request, self.first
        denoise = self._median("denoise_s")
        return {
            "model": request.model,
            "parameters_m": round(first.parameters / 1e6, 3),
            "load": "cold" if first.cold else "resident",
            "load_s": round(first.load_s, 3),
            "first_run_s": round(first.total_s, 3),
            "denoise_s": round(denoise, 3),
            "it_per_s": round(self._median("steps") / denoise, 2) if denoise else 0.0,
            "decode_s": round(self._median("decode_s"), 3),
            "total_s": round(self._median("total_s"), 3),
            "peak_memory_mb": None if first.peak_memory is None else
            round(max(s.peak_memory or 0 for s in (first, *self.timed)) / 2**20, 1),
            "memory_kind": first.memory_kind,
            "latent_shape": "x".join(map(str, first.latent_shape)),
            "size": "{}x{}".format(*request.output_size),
            "steps": request.steps,
            "timed_runs": len(self.timed),
        }


@dataclass
class Comparison:
    runs: list[ModelRun] = field(default_factory=list)
    interrupted: bool = False

    def rows(self) -> list[dict[str, Any]]:
        return [run.row() for run in self.runs]

    def shared_noise(self) -> list[dict[str, Any]]:
        """Models grouped by latent shape: each group started from the same noise."""
        groups: dict[str, list[str]] = {}
        for row in self.rows():
            groups.setdefault(row["latent_shape"], []).append(row["model"])
        return [{"latent_shape": shape, "models": models} for shape, models in groups.items()]

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, COLUMNS)
        writer.writeheader()
        writer.writerows(self.rows())
        return out.getvalue()

    def json(self) -> str:
        first = self.runs[0].result if self.runs else None
        return json.dumps({
            "prompt": first.request.prompt if first else "",
            "negative_prompt": first.request.negative_prompt if first else "",
            "seed": first.request.seed if first else None,
            "interrupted": self.interrupted,
            "shared_noise": self.shared_noise(),
            "results": [{**run.row(), "infotext": run.result.infotexts[0] if run.result.infotexts else "",
                         "runs": [s.as_dict() for s in (run.first, *run.timed)]} for run in self.runs],
        }, indent=2)

    def grid(self) -> Image.Image:
        """The first picture of every model in a row, labelled with its name and median times."""
        labels = [f"{r['model']}\n{r['total_s']:.2f} s, {r['it_per_s']:.1f} it/s\ndecode {r['decode_s']:.2f} s"
                  for r in self.rows()]
        return labelled_grid([[run.result.images[0] if run.result.images else None for run in self.runs]], labels)


@dataclass
class CompareProgress:
    """A step of one run of one model."""

    model: str
    index: int  # of the model, from 0
    models: int
    run: int  # from 0
    runs: int
    step: Progress

    @property
    def fraction(self) -> float:
        return (self.index + (self.run + self.step.fraction) / self.runs) / self.models

    def describe(self) -> str:
        return (f"Model {self.index + 1}/{self.models} ({self.model}), run {self.run + 1}/{self.runs}: "
                f"step {self.step.step}/{self.step.steps}")


def run_comparison(stream: Callable[..., Iterator], requests: list[GenerationRequest], *, repeats: int = 1,
                   warmup: bool = False, owner: Any = None) -> Iterator[CompareProgress | Comparison]:
    """Run each request ``repeats`` times (plus one warm-up run first) through ``stream`` (``Services.stream``)
    and yield progress, then the ``Comparison``. Only each model's first run is saved to the outputs folder.
    An interrupt ends the comparison with what was finished."""
    if not 1 <= int(repeats) <= 10:
        raise RequestError(f"Repeats must be between 1 and 10, got {repeats}.", "repeats")
    runs = int(repeats) + bool(warmup)
    comparison = Comparison()
    for index, request in enumerate(requests):
        done: list[GenerationResult] = []
        for run in range(runs):
            for event in stream(request, owner=owner, save=run == 0):
                if isinstance(event, GenerationResult):
                    done.append(event)
                else:
                    yield CompareProgress(request.model, index, len(requests), run, runs, event)
            if done[-1].interrupted:
                comparison.interrupted = True
                break
        stats = [result.stats for result in done]
        comparison.runs.append(ModelRun(done[0], stats[0], stats[1:] if warmup and len(stats) > 1 else stats))
        if comparison.interrupted:
            break
    yield comparison
