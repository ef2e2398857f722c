"""What Tiled Diffusion costs and saves: one guided UNet call (a CFG batch of two) on latents larger than the model's
own size, whole and in tiles, on a random-weight UNet of a real architecture.

    .venv/bin/python -m benchmarks.tiled_diffusion [--unet sd15|sdxl] [--latent 96] [--tile 64] [--overlap 32]
        [--batch 4] [--runs 3] [--threads 2] [--device cpu]

The UNet is ``architectures.json``'s (fp32 on the CPU, fp16 on CUDA), the tiles the extension's grid
(``pipelines/tiled_diffusion.py``) through ``composable.ComposedUNet`` as a generation makes them. Seconds are
medians of ``--runs`` interleaved runs after a warm-up (``cpu_generate_overhead.interleaved_medians``); on CUDA the
peak memory the call allocated (``torch.cuda.max_memory_allocated``, weights included) is printed too.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> None:
    import torch

    from benchmarks.cpu_generate_overhead import interleaved_medians
    from benchmarks.random_pipelines import random_unet, unet_benchmark_args
    from pipelines.composable import ComposedUNet, Guidance
    from pipelines.tiled_diffusion import METHODS, TiledDiffusion

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latent", type=int, default=96, help="the latents' side (8 pixels each)")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4, help="tiles to a UNet call")
    args = unet_benchmark_args(parser, argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    unet = random_unet(args.unet, device, dtype)
    sample = torch.randn(2, 4, args.latent, args.latent, device=device, dtype=dtype)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    added = ({"text_embeds": torch.randn(2, 1280, device=device, dtype=dtype),
              "time_ids": torch.randn(2, 6, device=device, dtype=dtype)}
             if unet.config.addition_embed_type == "text_time" else None)
    cases = {"whole": None, **{method: TiledDiffusion(method, args.tile, args.tile, args.overlap, args.batch)
                               for method in METHODS}}
    peaks: dict[str, float] = {}

    @torch.no_grad()
    def call(name: str):
        composed = ComposedUNet(lambda: (unet, ()), 1, Guidance(scale=7.0, tiles=cases[name]))
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        composed(sample, torch.tensor(500, device=device), text, added_cond_kwargs=added, return_dict=False)
        if cuda:
            torch.cuda.synchronize()
            peaks[name] = torch.cuda.max_memory_allocated() / 2**30

    tiles = cases[METHODS[0]]
    count, calls = len(tiles.tiles(args.latent, args.latent)), len(tiles.batches(args.latent, args.latent))
    print(f"{args.unet} UNet, {args.latent}x{args.latent} latents ({args.latent * 8} px), tiles of {args.tile} "
          f"overlapping {args.overlap}: {count} tiles in {calls} calls; {args.device}, {dtype}, {args.threads} threads")
    medians = interleaved_medians({name: (lambda name=name: call(name)) for name in cases}, args.runs)
    print("| call | s |" + (" peak GiB |" if cuda else "") + "\n|---|---|" + ("---|" if cuda else ""))
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.2f} |" + (f" {peaks[name]:.2f} |" if cuda else ""))


if __name__ == "__main__":
    main()
