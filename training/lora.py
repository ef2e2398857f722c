"""Train easel-outline: a LoRA for the embedded model that draws its shapes as outlines.

    python -m training.lora [--model models/Stable-diffusion/easel-shapes] [--out models/Lora/easel-outline.safetensors]
                            [--steps 2000] [--minutes 14] [--evaluate]

The base model stays frozen. Rank-8 LoRA layers on the UNet's attention, feed-forward and ResNet convolutions
(the convolutions matter: easel-shapes has attention only at 4x4, too coarse to hollow a shape out) learn from
pictures of the same captioned scenes the base model saw, drawn in ``shapes``' "outline" style. Captions carry
no trigger word: the style comes with the LoRA's weight. The loss is the base model's own (its prediction type,
noise offset, min-SNR weights, empty captions now and then so classifier-free guidance keeps working); the text
encoder is untouched. The file is in diffusers' LoRA format, so ``<lora:easel-outline:w>`` applies it.

``evaluate_style`` measures the style metric (``classify.hollowness``: the share of a shape's area that is
enclosed background) at several LoRA weights through the app's own engine, with the colour accuracy beside it
to show the content still follows the prompt.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipelines.clip_tokenizer import MODEL_MAX_LENGTH
from training.architecture import Config as BaseConfig
from training.classify import classify, hollowness
from training.evaluate import eval_scenes, generate_images
from training.shapes import caption, example, full_caption, sample_scene

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2"]
OUTLINED = 0.1  # hollowness above which a picture counts as outlined (plain shapes score 0)
STYLE = "outline"


@dataclass(frozen=True)
class LoraConfig:
    seed: int = 0
    rank: int = 8
    steps: int = 2000
    batch: int = 16
    lr: float = 2e-3
    warmup_steps: int = 50
    pool_size: int = 4000  # outline pictures encoded once to latents


def _generator(cfg: LoraConfig, step: int) -> torch.Generator:
    digest = hashlib.sha256(f"lora/{cfg.seed}/{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


@torch.no_grad()
def _encode_pool(vae, seeds: list[str], two_shape_prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent means and standard deviations of the pool's outline pictures, unscaled."""
    means, stds = [], []
    for start in range(0, len(seeds), 256):
        pictures = [np.asarray(example(s, two_shape_prob, STYLE)[2]) for s in seeds[start:start + 256]]
        x = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).float() / 127.5 - 1
        dist = vae.encode(x.to(vae.dtype)).latent_dist
        means.append(dist.mean.float())
        stds.append(dist.std.float())
    return torch.cat(means), torch.cat(stds)


def train_lora(model_dir: str | Path, out: str | Path, cfg: LoraConfig = LoraConfig(), minutes: float = 15.0) -> dict:
    """Train and save the LoRA (stopping early, and saving, when ``minutes`` run out); returns what it did."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from peft import LoraConfig as PeftConfig
    from peft.utils import get_peft_model_state_dict

    started = time.time()
    base = BaseConfig()
    torch.manual_seed(cfg.seed)
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, dtype=torch.float32)
    unet, vae, text, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    for module in (unet, vae, text):
        module.requires_grad_(False)
    unet.add_adapter(PeftConfig(r=cfg.rank, lora_alpha=cfg.rank, init_lora_weights="gaussian", target_modules=TARGETS))
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    seeds = [f"lora/{cfg.seed}/{i}" for i in range(cfg.pool_size)]
    scenes = [sample_scene(random.Random(s), base.two_shape_prob) for s in seeds]  # as ``example`` draws them
    mean, std = _encode_pool(vae, seeds, base.two_shape_prob)
    scaling = vae.config.scaling_factor
    noise_schedule = DDPMScheduler.from_config(pipe.scheduler.config)
    alphas = noise_schedule.alphas_cumprod
    velocity = noise_schedule.config.prediction_type == "v_prediction"
    unet.train()
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc="lora", mininterval=2)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
        g = _generator(cfg, step)
        idx = torch.randint(len(scenes), (cfg.batch,), generator=g)
        latents = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scaling
        noise = torch.randn(latents.shape, generator=g)
        noise += base.noise_offset * torch.randn(latents.shape[:2] + (1, 1), generator=g)
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (cfg.batch,), generator=g)
        rng = random.Random(f"lora-captions/{cfg.seed}/{step}")
        captions = ["" if rng.random() < base.caption_dropout else caption(scenes[i], rng) for i in idx.tolist()]
        with torch.no_grad():
            ids = tokenizer(captions, padding="max_length", max_length=MODEL_MAX_LENGTH, truncation=True,
                            return_tensors="pt").input_ids
            context = text(ids)[0]
        pred = unet(noise_schedule.add_noise(latents, noise, t), t, context).sample
        target = noise_schedule.get_velocity(latents, noise, t) if velocity else noise
        weight = (base.snr_gamma * (1 - alphas[t]) / alphas[t]).clamp(max=1.0)  # min-SNR, as the base model
        loss = (weight * (pred - target).pow(2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{statistics.fmean(losses[-50:]):.4f}", refresh=False)
        if time.time() - started > minutes * 60:
            print(f"stopped at the time budget after {step + 1} steps", file=sys.stderr)
            break
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(out.parent, unet_lora_layers=get_peft_model_state_dict(unet),
                                              weight_name=out.name)
    return {"steps": len(losses), "minutes": (time.time() - started) / 60,
            "loss_first_50": statistics.fmean(losses[:50]), "loss_last_50": statistics.fmean(losses[-50:]),
            "parameters": sum(p.numel() for p in params)}


def evaluate_style(model_dir: str | Path, lora: str, weights=(0.0, 0.5, 1.0), n_prompts: int = 32,
                   seeds=(0, 1)) -> dict[float, dict]:
    """Per LoRA weight: mean hollowness, share of outlined pictures and colour accuracy over fixed prompts.
    ``lora`` is a file name in ``<models root>/Lora`` of the models tree ``model_dir`` is in."""
    scenes = eval_scenes(n_prompts)
    prompts = [full_caption(scene, i % 3) for i, scene in enumerate(scenes)]
    pairs = [(scene, prompt, seed) for scene, prompt in zip(scenes, prompts) for seed in seeds]
    result = {}
    for weight in weights:
        pictures = generate_images([f"{p} <lora:{lora}:{weight:g}>" for _, p, _ in pairs], [s for *_, s in pairs],
                                   model_dir)
        scores = [hollowness(picture) for picture in pictures]
        result[weight] = {
            "hollowness": statistics.fmean(scores),
            "outlined": statistics.fmean(score > OUTLINED for score in scores),
            "colour": statistics.fmean(classify(p).colour == scene.item.colour for p, (scene, *_) in zip(pictures, pairs)),
        }
    return result


def style_sheet(model_dir: str | Path, lora: str, path: str | Path, weights=(0.0, 0.5, 1.0), n_prompts: int = 8) -> None:
    """A contact sheet for the card: one row per LoRA weight, the same prompts and seed 0 across."""
    from PIL import Image

    prompts = [full_caption(scene) for scene in eval_scenes(n_prompts)]
    sheet = Image.new("RGB", (64 * n_prompts, 64 * len(weights)))
    for row, weight in enumerate(weights):
        tagged = [f"{p} <lora:{lora}:{weight:g}>" for p in prompts]
        for col, picture in enumerate(generate_images(tagged, [0] * n_prompts, model_dir)):
            sheet.paste(picture, (64 * col, 64 * row))
    sheet.save(path)


def format_style_report(result: dict[float, dict]) -> str:
    lines = ["| LoRA weight | hollowness (mean) | outlined (> 0.1) | colour accuracy |", "|---|---|---|---|"]
    for weight, row in result.items():
        lines.append(f"| {weight:g} | {row['hollowness']:.3f} | {row['outlined']:.1%} | {row['colour']:.1%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("models/Stable-diffusion/easel-shapes"))
    parser.add_argument("--out", type=Path, default=Path("models/Lora/easel-outline.safetensors"))
    parser.add_argument("--steps", type=int, default=LoraConfig.steps)
    parser.add_argument("--minutes", type=float, default=14.0, help="stop (and save) after this long")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--evaluate", action="store_true", help="then measure the style at weights 0, 0.5, 1")
    parser.add_argument("--evaluate-only", action="store_true", help="measure an existing --out, train nothing")
    parser.add_argument("--sheet", type=Path, help="also save pictures at weights 0, 0.5, 1 (rows) to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.evaluate_only:
        print(train_lora(args.model, args.out, LoraConfig(steps=args.steps), args.minutes))
    if args.evaluate or args.evaluate_only:
        print(format_style_report(evaluate_style(args.model, args.out.stem)))
    if args.sheet:
        style_sheet(args.model, args.out.stem, args.sheet)


if __name__ == "__main__":
    main()
