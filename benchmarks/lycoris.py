"""LyCORIS files against the LoRA making the same change: what a picture costs with each, how far apart their
pictures are, and what adding the changes to a full-size UNet's weights (and putting them back) costs a pass.

    .venv/bin/python -m benchmarks.lycoris [--runs 5] [--unet sd15|sdxl] [--rank 8]

The first table is the embedded model with its easel-outline LoRA (PEFT adapters) and that LoRA rewritten as a
LoHa, a LoKr and a full difference (``tests/network_support.lycoris_from_lora``; the same change, applied by adding
it to the weights): seconds are medians of warm, interleaved runs of one 64 x 64, 20-step picture
(``cpu_generate_overhead.interleaved_medians``); "max diff" is the largest pixel difference to the LoRA's picture.
The last two rows give every block weight 1 by LoRA Block Weight's ``lbw=``: the cost of setting each layer's
scale (or multiplier) by its block.
The second times ``lycoris.applied`` (compute each layer's change, keep the original on the CPU, add; then put it
back) on a random-weight UNet of the real architecture (``architectures.json``, fp32 on the CPU) with a random file
of the given rank on every Linear and Conv2d layer: the cost it adds to each sampling pass.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # network_support: the LoRA-to-LyCORIS rewriting the tests check
PROMPT = "a large red circle in the middle, white background"


def embedded_table(runs: int) -> None:
    import numpy as np
    from safetensors.torch import load_file, save_file

    from benchmarks.cpu_generate_overhead import interleaved_medians
    from network_support import kohya_from_peft, lycoris_from_lora
    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry
    from pipelines.request import GenerationRequest

    root = Path(tempfile.mkdtemp())
    (root / "Stable-diffusion").symlink_to(ROOT / "models" / "Stable-diffusion")
    (root / "Lora").mkdir()
    outline = ROOT / "models" / "Lora" / "easel-outline.safetensors"
    (root / "Lora" / outline.name).symlink_to(outline)
    kohya = kohya_from_peft(load_file(outline))
    for algorithm in ("LoHa", "LoKr", "full"):
        save_file(lycoris_from_lora(kohya, algorithm), root / "Lora" / f"outline-{algorithm}.safetensors")
    engine = Engine(Registry(root), OutputWriter(root / "out", enabled=False))
    every_block = ",".join(["1"] * 26)
    tags = {"none": "", "LoRA": "<lora:easel-outline:1>",
            **{algorithm: f"<lora:outline-{algorithm}:1>" for algorithm in ("LoHa", "LoKr", "full")},
            "LoRA, lbw= 26 ones": f"<lora:easel-outline:1:lbw={every_block}>",
            "LoHa, lbw= 26 ones": f"<lora:outline-LoHa:1:lbw={every_block}>"}

    def picture(tag: str):
        return np.asarray(engine.generate(GenerationRequest(
            prompt=f"{PROMPT} {tag}", model="easel-shapes", width=64, height=64, steps=20, sampler="Euler a",
            seed=3)).images[0], dtype=np.int16)

    lora = picture(tags["LoRA"])
    seconds = interleaved_medians({name: lambda tag=tag: picture(tag) for name, tag in tags.items()}, runs)
    print("| network | s a picture | max diff to the LoRA's picture |\n|---|---|---|")
    for name, tag in tags.items():
        print(f"| {name} | {seconds[name]:.3f} | {np.abs(picture(tag) - lora).max() if tag else '-'} |")


def patch_table(unet_name: str, rank: int) -> None:
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from benchmarks.random_pipelines import architectures
    from pipelines.networks import lycoris
    from pipelines.networks.block_weights import Strength
    from pipelines.networks.files import NetworkFile

    unet = UNet2DConditionModel(**architectures()["unet"][unet_name]["config"]).eval()
    layers = {name: module for name, module in unet.named_modules()
              if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))}
    g = torch.Generator().manual_seed(0)
    print(f"\n{unet_name} UNet, {len(layers)} Linear and Conv2d layers, rank {rank}")
    print("| file | MiB | load s | apply + restore s |\n|---|---|---|---|")
    for algorithm in ("LoHa", "LoKr"):
        tensors = {}
        for name, module in layers.items():
            out, inputs = module.weight.shape[0], module.weight[0].numel()
            key = f"lora_unet_{name.replace('.', '_')}"
            if algorithm == "LoHa":
                parts = {f"hada_w{i}_{side}": torch.randn(*shape, generator=g) * 0.01 for i in (1, 2)
                         for side, shape in (("a", (out, rank)), ("b", (rank, inputs)))}
            else:  # LyCORIS's default split: a small full factor, a low-rank big one
                small = next(f for f in (8, 4, 2, 1) if out % f == 0 and inputs % f == 0)
                parts = {"lokr_w1": torch.randn(small, small, generator=g),
                         "lokr_w2_a": torch.randn(out // small, rank, generator=g) * 0.01,
                         "lokr_w2_b": torch.randn(rank, inputs // small, generator=g) * 0.01}
            parts["alpha"] = torch.tensor(rank / 2)
            tensors.update({f"{key}.{part}": value for part, value in parts.items()})
        path = Path(tempfile.mkdtemp()) / f"{algorithm}.safetensors"
        save_file(tensors, path)
        pipe = SimpleNamespace(unet=unet)
        started = time.perf_counter()
        loaded = lycoris.load(pipe, NetworkFile("lora", algorithm, path))
        load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        with lycoris.applied(pipe, [(loaded, Strength(1.0, 1.0))]):
            pass
        print(f"| {algorithm} | {path.stat().st_size / 2**20:.0f} | {load_seconds:.1f} | "
              f"{time.perf_counter() - started:.2f} |")


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--unet", default="sd15", choices=("sd15", "sdxl"))
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    embedded_table(args.runs)
    patch_table(args.unet, args.rank)


if __name__ == "__main__":
    main()
