"""Regional Prompter on the embedded model: how often two halves each take their own background, with the
extension on and off (one prompt naming both), and the time a picture takes.

    .venv/bin/python -m benchmarks.regional_prompter [--seeds 2] [--sampler Euler]

A picture follows when each half has more of its own colour than of the other's (training/classify.py's nearest
named colours). Prints a table per splitting: pictures that follow, of 8 colour pairs x seeds, and seconds each.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
PAIRS = (("red", "blue"), ("green", "purple"), ("yellow", "blue"), ("blue", "yellow"), ("purple", "green"),
         ("white", "red"), ("black", "orange"), ("orange", "black"))
SIZES = {"Columns": (128, 64), "Rows": (64, 128)}  # two cells of the model's own 64 x 64


def follows(engine, first: str, second: str, seed: int, splitting: str, regional: bool,
            sampler: str = "Euler", size: tuple[int, int] | None = None, **values) -> bool:
    """Whether each half of "... on a ``first`` background BREAK ... on a ``second`` background" has more of its own
    colour than of the other's (a picture of two cells of 64, or of ``size``; ``values``: more request fields)."""
    from pipelines.request import GenerationRequest
    from training.classify import nearest_labels
    from training.shapes import COLOURS

    width, height = size or SIZES[splitting]
    prompt = " BREAK ".join(f"a small white circle in the center on a {colour} background" for colour in (first,
                                                                                                           second))
    image = engine.generate(GenerationRequest(
        prompt=prompt, model="easel-shapes", width=width, height=height, steps=20, sampler=sampler, cfg_scale=7,
        seed=seed, regional_prompter=regional, rp_splitting=splitting, **values)).images[0]
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    halves = np.split(pixels, 2, axis=1 if splitting == "Columns" else 0)
    shares = [[np.mean(nearest_labels(half.reshape(-1, 3)) == list(COLOURS).index(colour))
               for colour in (first, second)] for half in halves]
    return bool(shares[0][0] > shares[0][1] and shares[1][1] > shares[1][0])


def main(argv: list[str] | None = None) -> None:
    import torch

    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--sampler", default="Euler")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine = Engine(Registry(ROOT / "models"), OutputWriter(ROOT / "outputs", enabled=False))
    print(f"| splitting | Regional Prompter | pictures that follow | s/picture ({args.sampler}) |")
    print("|---|---|---|---|")
    for splitting in SIZES:
        for regional in (True, False):
            started, made = time.perf_counter(), [follows(engine, *pair, seed, splitting, regional, args.sampler)
                                                  for pair in PAIRS for seed in range(args.seeds)]
            seconds = (time.perf_counter() - started) / len(made)
            print(f"| {splitting} | {'on' if regional else 'off'} | {sum(made)} of {len(made)} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
