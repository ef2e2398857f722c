"""The Compare tab's measurement from the command line: the same prompt and seed on several models, each model's
load, denoise, decode and total time, it/s and parameters, through the app's own engine and queue.

    .venv/bin/python -m benchmarks.compare_models easel-shapes easel-shapes-koala [--repeats 5] [--prompt ...]

Prints the results table (medians of ``--repeats`` after a warm-up run) and the speed of each model relative to
the first.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    import torch

    from pipelines.compare import Comparison, comparison_requests, run_comparison
    from pipelines.request import GenerationRequest
    from pipelines.services import Services, Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--prompt", default="a red circle on a white background")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    services = Services.build(Settings(models_dir=ROOT / "models", save_outputs=False, preview_every=0))
    request = GenerationRequest(prompt=args.prompt, seed=0, steps=args.steps, width=args.size, height=args.size)
    requests = comparison_requests(request, args.models, services.registry)
    result = next(e for e in run_comparison(services.stream, requests, repeats=args.repeats, warmup=True)
                  if isinstance(e, Comparison))
    rows = result.rows()
    print("| model | parameters | denoise s | it/s | decode s | total s | speed vs first |\n|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['model']} | {row['parameters_m']:.2f} M | {row['denoise_s']:.3f} | {row['it_per_s']:.1f} | "
              f"{row['decode_s']:.3f} | {row['total_s']:.3f} | {rows[0]['total_s'] / row['total_s']:.2f}x |")


if __name__ == "__main__":
    main()
