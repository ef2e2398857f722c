"""Deep Shrink above the model's own size: how often the embedded model draws its circle once (not repeated) at
twice and three times the size it was trained at, with Deep Shrink and without, what a picture costs; and what one
guided UNet call of a real architecture costs at twice its size, shrunk and whole.

    .venv/bin/python -m benchmarks.deep_shrink [--seeds 8] [--runs 5] [--threads 2] [--unet sd15|sdxl|none]
        [--unet-runs 1] [--device cpu]

"once" counts pictures of "a large red circle in the center on a white background" (20 steps of Euler a, CFG 7)
with a single red patch (``training.classify.patches``) in the center (``classify``). Seconds are medians of warm,
interleaved runs (``cpu_generate_overhead.interleaved_medians``); the UNet call is a CFG batch of two at timestep
900 (shrunk under Deep Shrink's defaults, block 3 by 2), on ``architectures.json``'s UNet with random weights (fp32
on the CPU, fp16 on CUDA), ``--unet-runs`` times after a warm-up (SD 1.5's takes about 50 s on 2 CPU threads).
"""

from __future__ import annotations

import argparse

from benchmarks.embedded import embedded_engine

MODES = {"plain": {}, "Deep Shrink": {"deep_shrink": True},
         "end 0.7": {"deep_shrink": True, "deep_shrink_end": 0.7},
         "factor 0 (auto), end 0.7": {"deep_shrink": True, "deep_shrink_factor": 0, "deep_shrink_end": 0.7}}
SIZES = (128, 192)  # twice and three times the embedded model's 64


def main(argv: list[str] | None = None) -> None:
    from benchmarks.cpu_generate_overhead import interleaved_medians
    from pipelines.request import GenerationRequest
    from training.classify import classify, patches

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--unet", default="sd15", choices=("sd15", "sdxl", "none"))
        parser.add_argument("--unet-runs", type=int, default=1)
        parser.add_argument("--device", default="cpu")

    args, engine = embedded_engine(__doc__, argv, seeds=8, options=options)

    def picture(seed: int, size: int, values: dict):
        return engine.generate(GenerationRequest(
            prompt="a large red circle in the center on a white background", model="easel-shapes", width=size,
            height=size, steps=20, sampler="Euler a", cfg_scale=7, seed=seed, **values)).images[0]

    print(f"drawn once in the center, of {args.seeds} seeds")
    print(f"| size | {' | '.join(MODES)} |\n|---|{'---|' * len(MODES)}")
    for size in SIZES:
        counts = []
        for values in MODES.values():
            drawn = [picture(seed, size, values) for seed in range(args.seeds)]
            counts.append(sum(patches(image, "red") == 1 and classify(image).position == "center" for image in drawn))
        print(f"| {size} x {size} | {' | '.join(map(str, counts))} |")
    seconds = interleaved_medians({name: lambda values=values: picture(0, SIZES[0], values)
                                   for name, values in MODES.items()}, args.runs)
    print(f"\n| mode | s a {SIZES[0]} x {SIZES[0]} picture |\n|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.3f} |")
    if args.unet != "none":
        _unet_call(args.unet, args.device, args.unet_runs)


def _unet_call(name: str, device_name: str, runs: int) -> None:
    """One CFG call of a real architecture at twice its size (latents of 2 x its sample size), whole and shrunk."""
    import torch

    from benchmarks.cpu_generate_overhead import interleaved_medians
    from benchmarks.random_pipelines import random_unet
    from pipelines.deep_shrink import DEFAULTS, FIELDS, DeepShrink, applied

    device = torch.device(device_name)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    unet = random_unet(name, device, dtype)
    side = 2 * unet.config.sample_size
    sample = torch.randn(2, 4, side, side, device=device, dtype=dtype)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    added = ({"added_cond_kwargs": {"text_embeds": torch.randn(2, 1280, device=device, dtype=dtype),
                                    "time_ids": torch.randn(2, 6, device=device, dtype=dtype)}}
             if unet.config.addition_embed_type == "text_time" else {})
    shrink = DeepShrink(*(DEFAULTS[field] for field in FIELDS[1:]))

    @torch.no_grad()
    def call(settings: DeepShrink | None):
        with applied([unet], settings):
            unet(sample, torch.tensor(900, device=device), text, **added)
        if device.type == "cuda":
            torch.cuda.synchronize()

    medians = interleaved_medians({"whole": lambda: call(None), "Deep Shrink": lambda: call(shrink)}, runs)
    print(f"\n{name} UNet, {side}x{side} latents ({side * 8} px), a CFG batch of two; {device_name}, {dtype}")
    print("| call | s |\n|---|---|")
    for case, value in medians.items():
        print(f"| {case} | {value:.2f} |")


if __name__ == "__main__":
    main()
