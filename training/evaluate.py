"""Score a shapes model: fixed prompts -> pictures -> pixel classifier -> accuracy per attribute.

    python -m training.evaluate [--model models/Stable-diffusion/easel-shapes] [--grid sheet.png]

64 single-shape prompts (balanced over shapes, colours, positions, sizes and backgrounds) x 2 seeds,
at 64x64, 20 steps, Euler a, CFG 7, through the app's engine. Each picture is read by ``training.classify`` and compared
with what the prompt asked for; the median time per picture is reported too. ``--img2img`` measures img2img
under a prompt that contradicts the picture instead: how often low strength keeps it and high strength redraws it.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from functools import lru_cache
from pathlib import Path

import torch
from PIL import Image

from training.classify import classify
from training.shapes import COLOURS, POSITIONS, SHAPES, SIZES, Scene, full_caption, make_item

STEPS = 20
GUIDANCE = 7.0
SIZE = 64
SEEDS = (0, 1)
TARGETS = {"colour": 0.90, "shape": 0.75, "position": 0.80, "background": 0.90, "size": None}
SECONDS_TARGET = 1.0


def eval_scenes(n: int = 64) -> list[Scene]:
    """A fixed, balanced set of single-shape scenes; each attribute cycles through its values."""
    rng = random.Random(2024)
    colours = list(COLOURS)

    def cycle(values):
        out = []
        while len(out) < n:
            chunk = list(values)
            rng.shuffle(chunk)
            out += chunk
        return out[:n]

    shapes, fills, sizes, positions, shifts = (
        cycle(SHAPES), cycle(colours), cycle(SIZES), cycle(POSITIONS), cycle(range(1, len(colours)))
    )
    scenes = []
    for shape, colour, size, position, shift in zip(shapes, fills, sizes, positions, shifts):
        background = colours[(colours.index(colour) + shift) % len(colours)]
        scenes.append(Scene(background, make_item(shape, colour, size, position, rng)))
    return scenes


@lru_cache(maxsize=2)
def _engine(models_root: str):
    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry

    return Engine(Registry(models_root), OutputWriter(models_root, enabled=False))


def generate_images(prompts: list[str], seeds: list[int], model_dir: str | Path, **values) -> list[Image.Image]:
    """One picture per (prompt, seed) pair with the evaluation settings, through the app's own engine (request
    validation, registry, fresh Euler a scheduler, CPU-seeded noise), so the scores are the app's.
    ``model_dir`` is a folder in a models tree: ``<root>/Stable-diffusion/<name>``; ``values`` are further
    request fields (an img2img task, say)."""
    from pipelines.request import GenerationRequest

    model_dir = Path(model_dir).resolve()
    engine = _engine(str(model_dir.parent.parent))
    return [
        engine.generate(GenerationRequest(prompt=prompt, model=model_dir.name, width=SIZE, height=SIZE, steps=STEPS,
                                          cfg_scale=GUIDANCE, sampler="Euler a", seed=seed, **values)).images[0]
        for prompt, seed in zip(prompts, seeds)
    ]


def evaluate(model_dir: str | Path, n_prompts: int = 64, seeds=SEEDS, grid: Path | None = None) -> dict:
    """Accuracy per attribute over n_prompts x seeds pictures, plus median seconds per picture."""
    scenes = eval_scenes(n_prompts)
    prompts = [full_caption(s, i % 3) for i, s in enumerate(scenes)]
    generate_images(prompts[:1], [0], model_dir)  # load and warm up outside the timing
    correct = dict.fromkeys(TARGETS, 0)
    seconds, pictures = [], []
    for scene, prompt in zip(scenes, prompts):
        for seed in seeds:
            start = time.perf_counter()
            (picture,) = generate_images([prompt], [seed], model_dir)
            seconds.append(time.perf_counter() - start)
            pictures.append(picture)
            pred = classify(picture)
            correct["background"] += pred.background == scene.background
            for attribute in ("colour", "shape", "size", "position"):
                correct[attribute] += getattr(pred, attribute) == getattr(scene.item, attribute)
    if grid is not None:
        sheet = Image.new("RGB", (SIZE * 16, SIZE * -(-len(pictures) // 16)))
        for i, picture in enumerate(pictures):
            sheet.paste(picture, (SIZE * (i % 16), SIZE * (i // 16)))
        sheet.save(grid)
    total = len(pictures)
    return {
        "accuracy": {a: correct[a] / total for a in TARGETS},
        "seconds_per_picture": statistics.median(seconds),
        "pictures": total,
    }


def contradicting(scene: Scene) -> Scene:
    """The scene with its shape, colour and background each changed (size and place kept): a prompt for it
    contradicts every attribute img2img could keep."""
    colours = list(COLOURS)

    def after(value, values, avoid):
        return next(v for v in values[values.index(value) + 1:] + values if v not in avoid)

    item = scene.item
    colour = after(item.colour, colours, (item.colour, scene.background))
    background = after(scene.background, colours, (scene.background, colour))
    shape = after(item.shape, list(SHAPES), (item.shape,))
    return Scene(background, make_item(shape, colour, item.size, item.position, random.Random(0)))


IMG2IMG_STRENGTHS = (0.3, 0.9)


def evaluate_img2img(model_dir: str | Path, n_prompts: int = 32, strengths=IMG2IMG_STRENGTHS) -> dict:
    """img2img of each scene's picture (seed 0) under a contradicting scene's prompt (seed 1): per strength, the
    share of results whose colour, shape and background are still the picture's as the classifier read it
    (``kept``) and the share that took all three from the new prompt (``followed``)."""
    scenes = eval_scenes(n_prompts)
    sources = generate_images([full_caption(s) for s in scenes], [0] * n_prompts, model_dir)
    readings = [classify(source) for source in sources]
    result = {}
    for strength in strengths:
        kept = dict.fromkeys(("colour", "shape", "background"), 0)
        followed = 0
        for scene, source, before in zip(scenes, sources, readings):
            new = contradicting(scene)
            (picture,) = generate_images([full_caption(new)], [1], model_dir, task="img2img", init_image=source,
                                         denoising_strength=strength)
            after = classify(picture)
            for attribute in kept:
                kept[attribute] += getattr(after, attribute) == getattr(before, attribute)
            followed += (after.colour, after.shape, after.background) == (new.item.colour, new.item.shape,
                                                                         new.background)
        result[strength] = {"kept": {a: k / n_prompts for a, k in kept.items()}, "followed": followed / n_prompts}
    return result


def format_img2img_report(result: dict) -> str:
    lines = ["| strength | colour kept | shape kept | background kept | new prompt followed |", "|---|---|---|---|---|"]
    for strength, r in result.items():
        k = r["kept"]
        lines.append(f"| {strength:g} | {k['colour']:.1%} | {k['shape']:.1%} | {k['background']:.1%} "
                     f"| {r['followed']:.1%} |")
    return "\n".join(lines)


def format_report(result: dict) -> str:
    lines = ["| attribute | accuracy | target |", "|---|---|---|"]
    for attribute, accuracy in result["accuracy"].items():
        target = TARGETS[attribute]
        verdict = "-" if target is None else f">= {target:.0%} {'met' if accuracy >= target else 'MISSED'}"
        lines.append(f"| {attribute} | {accuracy:.1%} | {verdict} |")
    s = result["seconds_per_picture"]
    lines.append(
        f"\n{result['pictures']} pictures; median {s:.2f} s per picture "
        f"({'met' if s <= SECONDS_TARGET else 'MISSED'}: <= {SECONDS_TARGET:.0f} s)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models/Stable-diffusion/easel-shapes")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--seeds", type=int, default=len(SEEDS), help="seeds 0..N-1 per prompt")
    parser.add_argument("--grid", type=Path, help="also save all pictures as a contact sheet")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--img2img", action="store_true", help="measure img2img under contradicting prompts instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.img2img:
        print(format_img2img_report(evaluate_img2img(args.model, args.prompts)))
    else:
        print(format_report(evaluate(args.model, args.prompts, tuple(range(args.seeds)), args.grid)))


if __name__ == "__main__":
    main()
