"""Train a Canny-edge ControlNet for easel-shapes, and measure that it steers the picture.

    python -m training.controlnet [--model models/Stable-diffusion/easel-shapes] [--out models/ControlNet/easel-shapes-canny]
    python -m training.controlnet --evaluate-only

The ControlNet starts as a copy of the model's UNet encoder (``ControlNetModel.from_unet``, zero convolutions)
and learns (Canny edges of a generated picture -> that picture) with the model frozen. A quarter of its
captions name a wrong position and a quarter are empty, so the edges win over the prompt, as they must when a
user draws where the shape goes. The evaluation draws a shape at one place, asks the prompt for another, and
reports the F1 of the output's edges against the control's (within one pixel), with and without the ControlNet.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from pipelines.preprocessors import Preprocessors
from training.evaluate import GUIDANCE, SIZE, STEPS, eval_scenes
from training.frozen import FrozenPipeline, pixels, step_random
from training.shapes import POSITION_PHRASES, POSITIONS, Scene, example, full_caption, make_item, render
from training.train import _lr_factor

CANNY = (100, 200)
_edges = Preprocessors(Path("/nonexistent"))  # canny needs no weights


def edge_map(picture: Image.Image) -> Image.Image:
    return _edges.run("canny", picture, SIZE, *CANNY)


def _wrong_position(text: str, position: str, rng: random.Random) -> str:
    other = rng.choice([p for p in POSITIONS if p != position])
    return text.replace(POSITION_PHRASES[position], POSITION_PHRASES[other])


def _training_example(seed: str, rng: random.Random) -> tuple[str, Image.Image, Image.Image]:
    scene, text, picture = example(seed, two_shape_prob=0.1)
    roll = rng.random()
    if roll < 0.25:
        text = ""
    elif roll < 0.5 and scene.second is None:
        text = _wrong_position(full_caption(scene, rng.randrange(3)), scene.item.position, rng)
    return text, picture, edge_map(picture)


def train(model: Path, out: Path, steps: int, batch: int, lr: float, seed: int = 0) -> None:
    from diffusers import ControlNetModel

    frozen = FrozenPipeline(model)
    pipe = frozen.pipe
    torch.manual_seed(seed)
    levels = len(pipe.vae.config.block_out_channels)  # the hint encoder must shrink pictures as the VAE does
    net = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(16, 32, 64, 128)[:levels])
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    ema = copy.deepcopy(net).requires_grad_(False)
    for step in tqdm(range(steps), desc="controlnet", mininterval=2):
        for group in opt.param_groups:
            group["lr"] = lr * _lr_factor(step, steps, 50)
        rng, g = step_random("controlnet", seed, step)
        texts, pictures, maps = zip(*(_training_example(f"cn/{seed}/{step}/{j}", rng) for j in range(batch)))
        latents = frozen.latents(list(pictures), g)
        with torch.no_grad():
            context = frozen.text(list(texts))
        noisy, noise, t = frozen.noised(latents, g)
        down, mid = net(noisy, t, context, controlnet_cond=pixels(list(maps), low=0.0), return_dict=False)
        pred = pipe.unet(noisy, t, context, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample
        loss = torch.nn.functional.mse_loss(pred, frozen.target(latents, noise, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(0.99, (1 + step) / (10 + step))
            for e, p in zip(ema.parameters(), net.parameters()):
                e.lerp_(p, 1 - decay)
    ema.to(torch.float16).save_pretrained(out)
    print(f"saved ControlNet to {out}", file=sys.stderr)


def _f1(control: np.ndarray, output: np.ndarray) -> float:
    """Edge F1 within one pixel: a control edge counts as found if the output has an edge next to it."""
    def near(mask):
        padded = np.pad(mask, 1)
        return np.max([padded[1 + dy:1 + dy + mask.shape[0], 1 + dx:1 + dx + mask.shape[1]]
                       for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)

    if not control.any() or not output.any():
        return 0.0
    precision = (output & near(control)).sum() / output.sum()
    recall = (control & near(output)).sum() / control.sum()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def evaluation_cases(n: int = 32) -> list[tuple[str, Image.Image]]:
    """(prompt naming another position, control edge map of the shape where it is) pairs."""
    rng, cases = random.Random(7), []
    for scene in eval_scenes(n):
        moved = Scene(scene.background, make_item(scene.item.shape, scene.item.colour, scene.item.size,
                                                  rng.choice([p for p in POSITIONS if p != scene.item.position]), rng))
        cases.append((full_caption(scene), edge_map(render(moved))))
    return cases


def evaluate(model: Path, controlnet: Path, n: int = 32, seeds=(0, 1), grid: Path | None = None) -> dict:
    """Mean edge F1 with and without the ControlNet, through the app's engine; ``grid`` saves the first eight
    cases (control map, with, without; seed 0) as one picture."""
    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry
    from pipelines.request import GenerationRequest

    root = model.resolve().parent.parent
    if controlnet.resolve().parent != root / "ControlNet":
        raise SystemExit(f"{controlnet} must be in {root / 'ControlNet'}")
    engine = Engine(Registry(root), OutputWriter(root, enabled=False))
    scores: dict[str, list[float]] = {"with": [], "without": []}
    rows: list[list[Image.Image]] = []
    started = time.perf_counter()
    for prompt, control in evaluation_cases(n):
        for seed in seeds:
            base = dict(prompt=prompt, model=model.name, width=SIZE, height=SIZE, steps=STEPS, cfg_scale=GUIDANCE,
                        seed=seed)
            unit = {"model": controlnet.name, "module": "none", "image": control, "processor_res": SIZE}
            row = [control]
            for key, units in (("with", [unit]), ("without", [])):
                picture = engine.generate(GenerationRequest(**base, controlnets=units), save=False).images[0]
                scores[key].append(_f1(np.asarray(control.convert("L")) > 127,
                                       np.asarray(edge_map(picture).convert("L")) > 127))
                row.append(picture)
            if seed == seeds[0] and len(rows) < 8:
                rows.append(row)
    if grid is not None:
        sheet = Image.new("RGB", (SIZE * 3, SIZE * len(rows)))
        for r, row in enumerate(rows):
            for c, picture in enumerate(row):
                sheet.paste(picture.convert("RGB"), (SIZE * c, SIZE * r))
        sheet.save(grid)
    return {"f1_with": statistics.mean(scores["with"]), "f1_without": statistics.mean(scores["without"]),
            "pictures": len(scores["with"]), "minutes": (time.perf_counter() - started) / 60}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/Stable-diffusion/easel-shapes"))
    parser.add_argument("--out", type=Path, default=Path("models/ControlNet/easel-shapes-canny"))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--evaluate-only", action="store_true")
    parser.add_argument("--grid", type=Path, help="save eight cases (control, with, without) as one picture")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.evaluate_only:
        train(args.model, args.out, args.steps, args.batch, args.lr)
    result = evaluate(args.model, args.out, grid=args.grid)
    print(f"| ControlNet | edge F1 |\n|---|---|\n| with | {result['f1_with']:.2f} |\n"
          f"| without | {result['f1_without']:.2f} |\n\n{result['pictures']} pictures each, prompts naming another "
          f"position ({result['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
