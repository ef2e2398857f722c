"""What an IP-Adapter unit costs: encoding its picture, setting the adapter on the UNet for a pass and taking it off,
and each UNet call with the image tokens, on random-weight models of the real architectures.

    .venv/bin/python -m benchmarks.ip_adapter [--unet sd15|sdxl] [--plus] [--runs 3] [--threads 2] [--device cpu]

The UNet is ``architectures.json``'s (fp32 on the CPU unless ``--device``), the adapter a random one of h94's shape
for it (``training.tiny_random.tiny_ip_adapter`` at full size: 4 tokens from a 1024-wide ViT-H embedding, or with
``--plus`` a resampler of its hidden states, 768 wide with 16 queries, as h94's SD 1.5 Plus) and the encoder a random
ViT-H/14 (``CLIPVisionModelWithProjection`` of LAION's shape, 632 M parameters). One UNet call is a CFG batch of two
at the model's native size; seconds are medians of ``--runs`` interleaved runs after a warm-up
(``cpu_generate_overhead.interleaved_medians``).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VIT_H = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
             patch_size=14, projection_dim=1024, hidden_act="gelu")


def main(argv: list[str] | None = None) -> None:
    import torch
    from PIL import Image
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from benchmarks.cpu_generate_overhead import interleaved_medians
    from benchmarks.random_pipelines import random_unet, unet_benchmark_args
    from pipelines.ip_adapter import IPAdapter, ImagePrompt, applied, encode, nested
    from training.tiny_random import tiny_ip_adapter

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plus", action="store_true")
    args = unet_benchmark_args(parser, argv)
    device = torch.device(args.device)
    unet = random_unet(args.unet, device)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_H)).eval().to(device)
    started = time.perf_counter()
    flat = tiny_ip_adapter(unet, encoder, plus=args.plus, inner=768, queries=16)
    adapter = IPAdapter(nested(flat), "random").to(device)
    built = time.perf_counter() - started
    picture = Image.new("RGB", (512, 512), "red")
    encodings = encode(encoder, adapter, picture)
    prompt = ImagePrompt(adapter, *encodings)

    side = unet.config.sample_size
    sample = torch.randn(2, 4, side, side, device=device)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, device=device)
    added = ({"text_embeds": torch.randn(2, 1280, device=device), "time_ids": torch.randn(2, 6, device=device)}
             if unet.config.addition_embed_type == "text_time" else {})

    @torch.no_grad()
    def call(with_adapter: bool):
        extra = {"image_embeds": [prompt.embeds(True).to(device)]} if with_adapter else {}
        unet(sample, 500, encoder_hidden_states=text, added_cond_kwargs={**added, **extra} or None)

    def pass_with(with_adapter: bool | None):
        """A UNet call without the adapter (False), one with it set for the call (True), or only setting it (None)."""
        if with_adapter is False:
            return call(False)
        with applied(unet, (prompt,), lambda: (0, 1)):
            if with_adapter:
                call(True)

    parameters = sum(p.numel() for p in adapter.parameters())
    print(f"{args.unet} UNet, {'Plus' if args.plus else 'plain'} IP-Adapter ({parameters / 1e6:.1f} M parameters, "
          f"{prompt.adapter.tokens} tokens), ViT-H/14 encoder, {args.device}, {args.threads} threads")
    print("| step | s |\n|---|---|")
    print(f"| build the adapter from its weights (once per file) | {built:.2f} |")
    seconds = interleaved_medians({
        "encode": lambda: encode(encoder, adapter, picture),
        "set": lambda: pass_with(None),
        "plain": lambda: pass_with(False),
        "adapted": lambda: pass_with(True),
    }, args.runs)
    print(f"| encode one picture (once per job) | {seconds['encode']:.3f} |")
    print(f"| set on the UNet and take off (each pass) | {seconds['set']:.4f} |")
    print(f"| one UNet call, CFG batch of 2 | {seconds['plain']:.3f} |")
    print(f"| one UNet call with the adapter | {seconds['adapted']:.3f} "
          f"({100 * (seconds['adapted'] / seconds['plain'] - 1):+.1f}%) |")


if __name__ == "__main__":
    main()
