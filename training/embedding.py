"""Train a textual-inversion embedding for easel-shapes: a colour scheme of the training data under a new word.

    python -m training.embedding [--model models/Stable-diffusion/easel-shapes] [--out models/embeddings/easel-sunset.safetensors]

The word ``easel-sunset`` (the file's stem, as A1111 names embeddings) means "a purple shape on an orange
background". Four vectors are learnt for it, started from the words "purple on orange background" (fewer, or
neutral starting words, left easel-shapes v2 drawing yellow backgrounds), with the whole model frozen, the way
Easel uses it at generation time: written over the token embeddings where the word stands. The evaluation asks
for 32 shapes "in easel-sunset" through the app's engine and counts pictures whose shape is purple on orange.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm import tqdm

from training.classify import classify
from training.evaluate import GUIDANCE, SIZE, STEPS
from training.frozen import FrozenPipeline, step_random
from training.shapes import POSITION_PHRASES, POSITIONS, SHAPES, SIZES, Scene, make_item, render
from training.train import _lr_factor

WORD = "easel-sunset"
COLOUR, BACKGROUND = "purple", "orange"
# A1111's "initialization text": one learnt vector per word, each starting from that word's token vector.
INIT = ("purple", "on", "orange", "background")
PLACEHOLDERS = ("sks", "ohwx", "zzz", "kk")  # single tokens the captions never use: where the vectors go in training


def _caption(word: str, shape: str, size: str, position: str, rng: random.Random) -> str:
    return rng.choice([
        f"a {size} {word} {shape}",
        f"a {word} {shape} {POSITION_PHRASES[position]}",
        f"{size} {shape} {POSITION_PHRASES[position]} in {word}",
        f"a {shape} in {word}",
    ])


def _scene(rng: random.Random) -> tuple[str, str, str, Scene]:
    shape, size, position = rng.choice(SHAPES), rng.choice(SIZES), rng.choice(list(POSITIONS))
    return shape, size, position, Scene(BACKGROUND, make_item(shape, COLOUR, size, position, rng))


def train(model: Path, out: Path, steps: int, batch: int, lr: float, seed: int = 0,
          init: tuple[str, ...] = INIT) -> None:
    frozen = FrozenPipeline(model)
    pipe = frozen.pipe
    table = pipe.text_encoder.get_input_embeddings()
    placeholders = PLACEHOLDERS[:len(init)]
    markers = [pipe.tokenizer(word).input_ids[1] for word in placeholders]
    start = [pipe.tokenizer(word).input_ids[1] for word in init]
    vectors = torch.nn.Parameter(table.weight[start].detach().clone())
    opt = torch.optim.AdamW([vectors], lr=lr, weight_decay=0.0)

    def put_vectors(module, args, output):
        for marker, vector in zip(markers, vectors):
            output = torch.where((args[0] == marker)[..., None], vector.to(output.dtype), output)
        return output

    hook = table.register_forward_hook(put_vectors)
    try:
        for step in tqdm(range(steps), desc="embedding", mininterval=2):
            for group in opt.param_groups:
                group["lr"] = lr * _lr_factor(step, steps, 20)
            rng, g = step_random("embedding", seed, step)
            scenes = [_scene(rng) for _ in range(batch)]
            texts = [_caption(" ".join(placeholders), shape, size, position, rng) for shape, size, position, _ in scenes]
            latents = frozen.latents([render(scene) for *_, scene in scenes], g)
            context = frozen.text(texts)  # with gradients: the learnt vectors are in it
            noisy, noise, t = frozen.noised(latents, g)
            loss = torch.nn.functional.mse_loss(pipe.unet(noisy, t, context).sample, frozen.target(latents, noise, t))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        hook.remove()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": vectors.detach().contiguous()}, out)  # A1111's safetensors layout
    print(f"saved {out}", file=sys.stderr)


def evaluation_prompts(n: int = 32) -> list[str]:
    rng = random.Random(11)
    return [_caption(WORD, *_scene(rng)[:3], rng) for _ in range(n)]


def evaluate(model: Path, embedding: Path, n: int = 32, seeds=(0,)) -> dict:
    """The share of pictures for prompts using the word that show its colours, through the app's engine. The engine
    reads embeddings from its models folder's ``embeddings/``, so it gets a folder of its own holding the model and
    this file under the word (links): the file scored is the one asked for, wherever it is."""
    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry
    from pipelines.request import GenerationRequest

    hits, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for link, target in ((root / "Stable-diffusion" / model.name, model),
                             (root / "embeddings" / f"{WORD}.safetensors", embedding)):
            link.parent.mkdir()
            link.symlink_to(target.resolve())
        engine = Engine(Registry(root), OutputWriter(root, enabled=False))
        for prompt in evaluation_prompts(n):
            for seed in seeds:
                result = engine.generate(GenerationRequest(prompt=prompt, model=model.name, width=SIZE, height=SIZE,
                                                           steps=STEPS, cfg_scale=GUIDANCE, seed=seed), save=False)
                read = classify(result.images[0])
                hits.append((read.colour, read.background) == (COLOUR, BACKGROUND))
    return {"concept": statistics.mean(hits), "pictures": len(hits), "minutes": (time.perf_counter() - started) / 60}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/Stable-diffusion/easel-shapes"))
    parser.add_argument("--out", type=Path, default=Path(f"models/embeddings/{WORD}.safetensors"))
    parser.add_argument("--init", nargs="+", default=list(INIT), metavar="WORD",
                        help=f"one vector per word (at most {len(PLACEHOLDERS)}), started from its token vector")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--evaluate-only", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.evaluate_only:
        train(args.model, args.out, args.steps, args.batch, args.lr, init=tuple(args.init))
    result = evaluate(args.model, args.out)
    print(f"'{WORD}' gives a {COLOUR} shape on {BACKGROUND} in {result['concept']:.0%} of {result['pictures']} "
          f"pictures ({result['minutes']:.1f} min)")


if __name__ == "__main__":
    main()
