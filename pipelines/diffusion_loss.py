"""What denoising trainers share (the Train tab's runs, the adapters of ``training/``): latents noised at
random timesteps of the model's training schedule, and what the UNet should predict for them. Noise and timesteps
come from a CPU generator, so a seeded run is the same run on any device."""

from __future__ import annotations

import torch


def training_schedule(scheduler_config):
    """The model's schedule as it was trained (DDPM), whatever sampler its pipeline holds now."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler_config)


def noised(schedule, latents: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noisy latents, the noise, the timesteps) for a batch."""
    noise = torch.randn(latents.shape, generator=g).to(latents.device, latents.dtype)
    t = torch.randint(0, schedule.config.num_train_timesteps, (len(latents),), generator=g).to(latents.device)
    return schedule.add_noise(latents, noise, t), noise, t


def target(schedule, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The noise, or the velocity for v-prediction models (SD 2.x 768)."""
    if schedule.config.prediction_type == "v_prediction":
        return schedule.get_velocity(latents, noise, t)
    return noise
