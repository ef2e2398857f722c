"""Train easel-shapes from scratch on the synthetic shapes world, on a CPU, in well under an hour.

    python -m training.train --out models/Stable-diffusion/easel-shapes [--minutes 40] [--resume] [--device cuda]
                             [--init-from MODEL_DIR]

Three phases, each resumable from ``--work``: (1) the autoencoder on freshly drawn pictures,
(2) encoding a fixed pool of captioned pictures to latents once, (3) the UNet and text encoder
jointly on those latents (SD's noise schedule, min-SNR weighting, caption dropout for CFG).
All randomness is drawn per step from the seed and the step number, so a resumed run is the run
that was interrupted. ``--device cuda`` trains on a GPU (TF32 matmuls, fp32 weights) with the
randomness still drawn on the CPU, so it is the CPU run up to float arithmetic; ``training/gpu_train.sh``
is the longer GPU recipe. ``--init-from`` fine-tunes a saved model instead: its autoencoder and latent
scale stay, the pool is encoded with them and phase 3 starts from its text encoder and UNet.
The result is saved as a diffusers StableDiffusionPipeline folder (fp16).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipelines.clip_tokenizer import MODEL_MAX_LENGTH, load_tokenizer
from training import architecture as arch
from training.shapes import Scene, caption, example, sample_scene

_FLAGS = {"int": int, "float": float, "str": str}  # Config fields that get a command-line flag


@dataclass
class State:
    """Everything a resumed run needs: where training is, and the weights and optimiser moments."""

    phase: str = "vae"
    step: int = 0
    vae: dict | None = None
    vae_opt: dict | None = None
    text: dict | None = None
    unet: dict | None = None
    opt: dict | None = None
    ema: list | None = None
    fine_tune_of: str | None = None  # the model folder a fine-tune started from


def _generator(cfg: arch.Config, stream: str, step: int) -> torch.Generator:
    digest = hashlib.sha256(f"{stream}/{cfg.seed}/{step}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _pictures(seeds: list[str], cfg: arch.Config) -> torch.Tensor:
    """Pictures for the given seeds as a batch in [-1, 1]."""
    arrays = [np.asarray(example(s, cfg.two_shape_prob)[2]) for s in seeds]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1


def _shape_weight(x: torch.Tensor, shape_weight: float) -> torch.Tensor:
    """Per-pixel loss weights: pixels that differ from the border colour count ``shape_weight``
    times; shapes cover a few percent of a picture, and unweighted the autoencoder learns
    backgrounds long before shapes."""
    border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2)
    background = border.median(dim=2).values[:, :, None, None]
    return 1 + (shape_weight - 1) * ((x - background).abs().amax(dim=1, keepdim=True) > 0.02).float()


def _crops(x: torch.Tensor, weight: torch.Tensor, size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crops on the latent grid: the autoencoder is convolutional, and a crop costs a
    quarter of a full picture while holding the same kind of edges."""
    if size >= x.shape[-1]:
        return x, weight
    cells = (x.shape[-1] - size) // 4 + 1
    offsets = (torch.randint(0, cells, (len(x), 2), generator=g) * 4).tolist()
    xs = torch.stack([x[i, :, r : r + size, c : c + size] for i, (r, c) in enumerate(offsets)])
    ws = torch.stack([weight[i, :, r : r + size, c : c + size] for i, (r, c) in enumerate(offsets)])
    return xs, ws


def _captions(cfg: arch.Config, scenes: list[Scene], idx: list[int], t: list[int], rng: random.Random) -> list[str]:
    """Each latent's caption: empty (caption dropout), another scene's (caption swap, low noise only) or its own."""
    out = []
    for i, timestep in zip(idx, t):
        if rng.random() < cfg.caption_dropout:
            out.append("")
            continue
        if cfg.caption_swap and timestep < cfg.caption_swap_below and rng.random() < cfg.caption_swap:
            i = rng.randrange(len(scenes))
        out.append(caption(scenes[i], rng))
    return out


def _pool_seeds(cfg: arch.Config) -> list[str]:
    return [f"pool/{cfg.seed}/{i}" for i in range(cfg.pool_size)]


class Trainer:
    def __init__(self, cfg: arch.Config, work: Path, deadline: float, device: str | torch.device = "cpu"):
        self.cfg, self.work, self.deadline = cfg, work, deadline
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(cfg.seed)  # weights are initialised on the CPU, then moved
        self.vae = arch.build_vae(cfg).to(self.device)
        self.text = arch.build_text_encoder(cfg).to(self.device)
        self.unet = arch.build_unet(cfg).to(self.device)
        self.tokenizer = load_tokenizer(work / "tokenizer")
        self._token_ids: dict[str, torch.Tensor] = {}
        self.noise = arch.training_scheduler(cfg)
        self.state = State()

    # --- checkpoints -------------------------------------------------------------------------

    @property
    def _checkpoint(self) -> Path:
        return self.work / "checkpoint.pt"

    def save(self) -> None:
        tmp = self._checkpoint.with_suffix(".tmp")
        torch.save({"config": asdict(self.cfg), **asdict(self.state)}, tmp)
        tmp.replace(self._checkpoint)

    def load(self) -> bool:
        if not self._checkpoint.exists():
            return False
        saved = torch.load(self._checkpoint, map_location=self.device, weights_only=False)
        saved.pop("config")
        self.state = State(**saved)
        if self.state.vae is not None:
            self.vae.load_state_dict(self.state.vae)
        if self.state.text is not None:
            self.text.load_state_dict(self.state.text)
            self.unet.load_state_dict(self.state.unet)
        return True

    def start_from(self, model: Path) -> None:
        """Begin a fine-tune of a saved pipeline folder: its weights, then the pool (phase 2) and phase 3."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel

        for module, cls, folder in ((self.vae, AutoencoderKL, "vae"), (self.text, CLIPTextModel, "text_encoder"),
                                    (self.unet, UNet2DConditionModel, "unet")):
            module.load_state_dict(cls.from_pretrained(model / folder).state_dict())
        self.vae.register_to_config(scaling_factor=AutoencoderKL.load_config(model / "vae")["scaling_factor"])
        self.state = State(phase="encode", vae=self.vae.state_dict(), text=self.text.state_dict(),
                           unet=self.unet.state_dict(), fine_tune_of=str(model))

    def _out_of_time(self) -> bool:
        return time.time() > self.deadline

    # --- phase 1: autoencoder ----------------------------------------------------------------

    def train_vae(self) -> bool:
        cfg, st = self.cfg, self.state
        opt = torch.optim.AdamW(self.vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0, fused=True)
        if st.vae_opt is not None:
            opt.load_state_dict(st.vae_opt)
        self.vae.train()
        bar = tqdm(range(st.step, cfg.vae_steps), initial=st.step, total=cfg.vae_steps, desc="autoencoder", mininterval=2)
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = cfg.vae_lr * _lr_factor(step, cfg.vae_steps, cfg.warmup_steps)
            g = _generator(cfg, "vae", step)
            x = _pictures([f"vae/{cfg.seed}/{step}/{j}" for j in range(cfg.vae_batch)], cfg).to(self.device)
            x, weight = _crops(x, _shape_weight(x, cfg.vae_shape_weight), cfg.vae_crop, g)
            posterior = self.vae.encode(x).latent_dist
            recon = self.vae.decode(posterior.sample(generator=g)).sample
            loss = (weight * (recon - x).abs()).mean() / weight.mean() + cfg.kl_weight * posterior.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.vae.parameters(), 1.0)
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            st.step = step + 1
            if st.step % cfg.checkpoint_every == 0 or st.step == cfg.vae_steps or self._out_of_time():
                st.vae, st.vae_opt = self.vae.state_dict(), opt.state_dict()
                self.save()
                if self._out_of_time():
                    return False
        st.phase, st.step, st.vae_opt = "encode", 0, None
        return True

    # --- phase 2: latents of the training pool -----------------------------------------------

    @property
    def _latents(self) -> Path:
        return self.work / "latents.pt"

    @torch.no_grad()
    def encode_pool(self) -> None:
        """Encode the pool once; the UNet phase then samples posterior latents from mean and std."""
        cfg = self.cfg
        self.vae.eval()
        seeds = _pool_seeds(cfg)
        means, stds = [], []
        for start in tqdm(range(0, len(seeds), 256), desc="encoding pool", mininterval=2):
            dist = self.vae.encode(_pictures(seeds[start : start + 256], cfg).to(self.device)).latent_dist
            means.append(dist.mean.half().cpu())
            stds.append(dist.std.half().cpu())
        mean, std = torch.cat(means), torch.cat(stds)
        scaling = self.vae.config.scaling_factor if self.state.fine_tune_of else 1.0 / float(mean.float().std())
        self.vae.register_to_config(scaling_factor=scaling)
        torch.save({"mean": mean, "std": std, "scaling_factor": scaling}, self._latents)
        self.state.phase, self.state.step = "unet", 0
        self.state.vae = self.vae.state_dict()
        self.save()

    # --- phase 3: UNet + text encoder ----------------------------------------------------------

    def _ids(self, captions: list[str]) -> torch.Tensor:
        """Token ids of the captions, each distinct caption tokenised once: a run draws far more
        captions than the pool has phrasings of, and tokenising 256 costs more than a GPU step."""
        new = [c for c in dict.fromkeys(captions) if c not in self._token_ids]
        if new:
            ids = self.tokenizer(
                new, padding="max_length", max_length=MODEL_MAX_LENGTH, truncation=True, return_tensors="pt"
            ).input_ids
            self._token_ids.update(zip(new, ids))
        return torch.stack([self._token_ids[c] for c in captions])

    def train_unet(self) -> bool:
        cfg, st, device = self.cfg, self.state, self.device
        pool = torch.load(self._latents)
        mean, std, scaling = pool["mean"].float(), pool["std"].float(), pool["scaling_factor"]
        self.vae.register_to_config(scaling_factor=scaling)
        scenes = [sample_scene(random.Random(s), cfg.two_shape_prob) for s in _pool_seeds(cfg)]
        params = list(self.unet.parameters()) + list(self.text.parameters())
        opt = torch.optim.AdamW(params, lr=cfg.unet_lr, weight_decay=0.01, fused=True)
        if st.opt is not None:
            opt.load_state_dict(st.opt)
        ema = st.ema if st.ema is not None else [p.detach().clone() for p in params]
        alphas = self.noise.alphas_cumprod.to(device)
        self.unet.train()
        self.text.train()
        bar = tqdm(range(st.step, cfg.unet_steps), initial=st.step, total=cfg.unet_steps, desc="unet+text", mininterval=2)
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = cfg.unet_lr * _lr_factor(step, cfg.unet_steps, cfg.warmup_steps)
            g = _generator(cfg, "unet", step)
            idx = torch.randint(len(scenes), (cfg.unet_batch,), generator=g)
            latents = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * scaling
            noise = torch.randn(latents.shape, generator=g)
            noise += cfg.noise_offset * torch.randn(latents.shape[:2] + (1, 1), generator=g)
            t = torch.randint(0, self.noise.config.num_train_timesteps, (cfg.unet_batch,), generator=g)
            latents, noise, t = latents.to(device), noise.to(device), t.to(device)
            captions = _captions(cfg, scenes, idx.tolist(), t.tolist(), random.Random(f"captions/{cfg.seed}/{step}"))
            ids = self._ids(captions).to(device)
            pred = self.unet(self.noise.add_noise(latents, noise, t), t, self.text(ids)[0]).sample
            v_prediction = cfg.prediction_type == "v_prediction"
            target = self.noise.get_velocity(latents, noise, t) if v_prediction else noise
            weight = (cfg.snr_gamma * (1 - alphas[t]) / alphas[t]).clamp(max=1.0)
            loss = (weight * (pred - target).pow(2).mean(dim=(1, 2, 3))).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema, params, 1 - decay)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            st.step = step + 1
            if st.step % cfg.checkpoint_every == 0 or st.step == cfg.unet_steps or self._out_of_time():
                st.text, st.unet, st.opt, st.ema = self.text.state_dict(), self.unet.state_dict(), opt.state_dict(), ema
                self.save()
                if self._out_of_time():
                    return False
        st.phase = "done"
        self.save()
        return True

    # --- export --------------------------------------------------------------------------------

    def export(self, out: Path) -> None:
        """Save the EMA weights as a StableDiffusionPipeline folder, weights in fp16."""
        from diffusers import StableDiffusionPipeline

        text, unet = copy.deepcopy(self.text).cpu(), copy.deepcopy(self.unet).cpu()
        ema_params = list(unet.parameters()) + list(text.parameters())
        with torch.no_grad():
            for p, e in zip(ema_params, self.state.ema):
                p.copy_(e)  # from the training device
        pipe = StableDiffusionPipeline(
            vae=copy.deepcopy(self.vae).cpu(),
            text_encoder=text,
            tokenizer=self.tokenizer,
            unet=unet,
            scheduler=arch.sampling_scheduler(self.cfg),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.to(torch.float16)
        pipe.save_pretrained(out)
        _mark_float32(out)


def _mark_float32(out: Path) -> None:
    """Weights are stored in fp16 for size, but a plain ``from_pretrained`` must load fp32 (CPU):
    transformers would otherwise load the text encoder in the dtype its config names."""
    config = out / "text_encoder" / "config.json"
    data = json.loads(config.read_text())
    data["dtype"] = "float32"
    config.write_text(json.dumps(data, indent=2) + "\n")


def train(
    cfg: arch.Config,
    out: Path,
    work: Path,
    minutes: float = 40.0,
    resume: bool = False,
    device: str | torch.device = "cpu",
    init_from: Path | None = None,
) -> bool:
    """Run (or resume) training on ``device``, from scratch or (``init_from``) as a fine-tune of a saved model;
    export the pipeline when done or out of time in the UNet phase.

    Returns True when all phases finished.
    """
    start = time.time()
    work.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, work, deadline=start + minutes * 60, device=device)
    if resume and trainer.load():
        print(f"resuming: phase {trainer.state.phase}, step {trainer.state.step}", file=sys.stderr)
    elif init_from is not None:
        trainer.start_from(init_from)
    finished = True
    if trainer.state.phase == "vae":
        finished = trainer.train_vae()
    if finished and trainer.state.phase == "encode":
        trainer.encode_pool()
    if finished and trainer.state.phase == "unet":
        finished = trainer.train_unet()
    if trainer.state.phase in ("unet", "done") and trainer.state.ema is not None:
        trainer.export(out)
        print(f"saved pipeline to {out}", file=sys.stderr)
    took = (time.time() - start) / 60
    if not finished:
        print(f"stopped at the time budget after {took:.1f} min; rerun with --resume to continue", file=sys.stderr)
    else:
        print(f"training finished in {took:.1f} min", file=sys.stderr)
    return finished


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("models/Stable-diffusion/easel-shapes"))
    parser.add_argument("--work", type=Path, default=Path(".cache/easel-shapes-train"), help="checkpoints and latents")
    parser.add_argument("--minutes", type=float, default=40.0, help="stop (resumably) after this long")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --work")
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest when others share the CPU")
    parser.add_argument("--device", default="cpu", help="torch device to train on, e.g. cuda")
    parser.add_argument("--init-from", type=Path, help="fine-tune this saved model instead of training from scratch")
    for f in fields(arch.Config):
        if f.type in _FLAGS:
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=_FLAGS[f.type], default=f.default)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = arch.Config(**{f.name: getattr(args, f.name) for f in fields(arch.Config) if hasattr(args, f.name)})
    train(cfg, args.out, args.work, args.minutes, args.resume, args.device, args.init_from)


if __name__ == "__main__":
    main()
