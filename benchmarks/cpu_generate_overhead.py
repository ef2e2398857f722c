"""Time per image: Easel's generate path vs a bare diffusers call, same model, settings and process.

    .venv/bin/python -m benchmarks.cpu_generate_overhead [--model NAME] [--steps 20] [--size 64] [--runs 7]

The app path is ``Engine.generate`` (request validation, registry lease, fresh scheduler, CPU-seeded noise,
step callback, infotext, atomic PNG save); the bare path calls the same loaded pipeline with an equivalent
scheduler and generator. Medians of warm, interleaved runs; the target ratio is <= 1.05.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent


def interleaved_medians(paths: dict, runs: int) -> dict[str, float]:
    """Median seconds of each path, run alternately so background load hits them alike."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for fn in paths.values():
        fn()  # warm-up
    for _ in range(runs):
        for name, fn in paths.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a model under models/ (default: the app's default model)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=None, help="default: the model's native size")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    import torch

    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry
    from pipelines.request import GenerationRequest
    from pipelines.samplers import make_scheduler
    from pipelines.services import DEFAULT_MODEL

    models_dir = ROOT / "models"
    registry = Registry(models_dir, device="cpu", default_model=DEFAULT_MODEL)
    if not registry.names():  # a checkout without models: use the tiny random one
        from training.tiny_random import save_tiny_models

        models_dir = Path(tempfile.mkdtemp())
        save_tiny_models(models_dir)
        registry = Registry(models_dir, device="cpu", default_model="tiny-sd")
    info = registry.resolve(args.model or registry.default_name())
    size = args.size or info.defaults["width"]
    request = GenerationRequest(prompt="a red circle on a white background", model=info.name, steps=args.steps,
                                width=size, height=size, seed=1, sampler="Euler a", cfg_scale=7)
    with tempfile.TemporaryDirectory() as outputs:
        engine = Engine(registry, OutputWriter(outputs))
        with registry.lease(info.name) as model:
            pipe = model.pipeline("txt2img")

            def bare():
                pipe.scheduler = make_scheduler("Euler a", "Automatic", model.pipe.scheduler.config)
                pipe(prompt=request.prompt, num_inference_steps=args.steps, guidance_scale=7, width=size, height=size,
                     generator=torch.Generator("cpu").manual_seed(1))

            def app():
                engine.generate(request)

            timings = interleaved_medians({"bare diffusers": bare, "Easel generate": app}, args.runs)

    print(f"model {info.name}, {size}x{size}, {args.steps} steps, Euler a, CFG 7, torch threads "
          f"{torch.get_num_threads()}, median of {args.runs} warm runs")
    print("| path | s / image |\n|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.3f} |")
    ratio = timings["Easel generate"] / timings["bare diffusers"]
    print(f"| ratio (target <= 1.05) | {ratio:.3f} |")


if __name__ == "__main__":
    main()
