"""A KOALA-style student of easel-shapes: a compressed UNet distilled from the model's own UNet.

    python -m training.distill [--teacher models/Stable-diffusion/easel-shapes] [--out models/Stable-diffusion/easel-shapes-koala]

As KOALA does for SDXL, the student drops blocks: it has no mid block (KOALA-700M's choice), no transformers in
its up path (KOALA thins the decoder's transformer depth; here the up path's two were most of the cost on a CPU)
and thinner convolution-only levels (16 and 32 channels where the teacher has 32 and 64), while the attention
level keeps the teacher's 128 channels so that its transformer starts from the teacher's and its self-attention
output can be matched directly. It learns from three losses: the task loss (the noise), output distillation
(the teacher's prediction) and feature distillation on the self-attention output of the stage both keep. The text encoder
and VAE are the teacher's, frozen, and the student's folder links to them rather than copying them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from training.frozen import FrozenPipeline, step_random
from training.shapes import caption, example
from training.train import _lr_factor

STUDENT = {"block_out_channels": [16, 32, 128], "mid_block_type": None,
           "up_block_types": ["UpBlock2D", "UpBlock2D", "UpBlock2D"]}
# Self-attention outputs compared between teacher and student: the stage both keep, at equal width.
FEATURES = ("down_blocks.2.attentions.0.transformer_blocks.0.attn1",)
SHARED = ("vae", "text_encoder", "tokenizer", "scheduler", "model_index.json")  # linked from the teacher


def build_student(teacher_unet):
    """The compressed UNet, starting from the teacher's weights wherever a layer kept its shape (the attention
    level's transformers, as KOALA starts from SDXL's)."""
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in teacher_unet.config.items() if not k.startswith("_")}
    student = UNet2DConditionModel.from_config({**config, **STUDENT})
    own = student.state_dict()
    student.load_state_dict({k: v for k, v in teacher_unet.state_dict().items()
                             if k in own and own[k].shape == v.shape}, strict=False)
    return student


def _capture(model, names: tuple[str, ...]) -> tuple[dict, list]:
    """Forward hooks that keep the latest output of each named module."""
    found, handles = {}, []
    for name in names:
        def keep(module, args, output, name=name):
            found[name] = output
        handles.append(model.get_submodule(name).register_forward_hook(keep))
    return found, handles


def train(teacher_dir: Path, out: Path, steps: int, batch: int, lr: float, feature_weight: float,
          seed: int = 0, start: Path | None = None) -> None:
    """``start``: a student folder to go on training (a later stage of the same run uses another ``seed``)."""
    frozen = FrozenPipeline(teacher_dir)
    pipe = frozen.pipe
    torch.manual_seed(seed)
    if start is not None:
        from diffusers import UNet2DConditionModel

        student = UNet2DConditionModel.from_pretrained(start / "unet", dtype=torch.float32).train()
    else:
        student = build_student(pipe.unet).train()
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.01)
    ema = [p.detach().clone() for p in student.parameters()]
    teacher_features, teacher_hooks = _capture(pipe.unet, FEATURES)
    student_features, student_hooks = _capture(student, FEATURES)
    bar = tqdm(range(steps), desc="distil", mininterval=2)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr * _lr_factor(step, steps, 50)
        rng, g = step_random("distill", seed, step)
        examples = [example(f"distill/{seed}/{step}/{j}", two_shape_prob=0.1) for j in range(batch)]
        texts = ["" if rng.random() < 0.1 else caption(scene, rng) for scene, _, _ in examples]
        latents = frozen.latents([picture for _, _, picture in examples], g)
        with torch.no_grad():
            context = frozen.text(texts)
            noisy, noise, t = frozen.noised(latents, g)
            teacher_out = pipe.unet(noisy, t, context).sample
        student_out = student(noisy, t, context).sample
        task = torch.nn.functional.mse_loss(student_out, frozen.target(latents, noise, t))
        output = torch.nn.functional.mse_loss(student_out, teacher_out)
        feature = sum(torch.nn.functional.mse_loss(student_features[n], teacher_features[n]) for n in FEATURES)
        loss = task + output + feature_weight * feature
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, list(student.parameters()), 1 - min(0.995, (1 + step) / (10 + step)))
        bar.set_postfix(task=f"{task.item():.3f}", out=f"{output.item():.3f}", feat=f"{feature.item():.3f}",
                        refresh=False)
    for handle in teacher_hooks + student_hooks:
        handle.remove()
    with torch.no_grad():
        for p, e in zip(student.parameters(), ema):
            p.copy_(e)
    save(student, teacher_dir, out)


def save(student, teacher_dir: Path, out: Path) -> None:
    """The student UNet (fp16) in a pipeline folder whose other components link to the teacher's; the rest of
    the folder (its card and pictures) stays."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "unet", ignore_errors=True)
    student.to(torch.float16).save_pretrained(out / "unet")
    for name in SHARED:
        link = out / name
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.exists():
            shutil.rmtree(link)
        link.symlink_to(os.path.relpath(teacher_dir / name, out))
    print(f"saved the student to {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, default=Path("models/Stable-diffusion/easel-shapes"))
    parser.add_argument("--out", type=Path, default=Path("models/Stable-diffusion/easel-shapes-koala"))
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--feature-weight", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=Path, help="a student folder to go on training")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train(args.teacher, args.out, args.steps, args.batch, args.lr, args.feature_weight, args.seed, args.start)


if __name__ == "__main__":
    main()
