"""A1111 sampler and schedule-type names, mapped to diffusers schedulers.

Schedulers carry per-run state and are shared by pipelines derived with ``from_pipe``, so every request
gets a fresh one built from the model's own scheduler config (which keeps its prediction type and betas).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import RequestError
from .sampler_parameters import UNI_PC, scheduler_options, tuned


@dataclass(frozen=True)
class Sampler:
    name: str
    scheduler_class: str
    options: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()


SAMPLERS: dict[str, Sampler] = {
    s.name: s
    for s in (
        Sampler("Euler a", "EulerAncestralDiscreteScheduler", aliases=("k_euler_a", "euler_ancestral")),
        Sampler("Euler", "EulerDiscreteScheduler", aliases=("k_euler",)),
        Sampler("LMS", "LMSDiscreteScheduler", aliases=("k_lms",)),
        Sampler("Heun", "HeunDiscreteScheduler", aliases=("k_heun",)),
        Sampler("DPM2", "KDPM2DiscreteScheduler", aliases=("k_dpm_2",)),
        Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", aliases=("k_dpm_2_a",)),
        Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}, ("k_dpmpp_2m",)),
        Sampler("DPM++ SDE", "DPMSolverSDEScheduler", aliases=("k_dpmpp_sde",)),
        Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, ("k_dpmpp_2m_sde",)),
        # A1111's DDIM and DDPM never clip their prediction of the picture; diffusers' do unless a model's config
        # says not to (SD 1.x configs without the key, the embedded model's): colours go wrong
        Sampler("DDIM", "DDIMScheduler", {"set_alpha_to_one": False, "clip_sample": False}, ("ddim",)),
        Sampler("DDPM", "DDPMScheduler", {"clip_sample": False}, ("ddpm",)),  # Forge's name; Kandinsky 2.2's own
        Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, ("plms",)),
        # A1111's defaults (diffusers': bh2, order 2); like A1111's, it ends at the model's least noise, not at none,
        # where diffusers' bh1 divides by an infinite step (NaN pictures)
        Sampler("UniPC", "UniPCMultistepScheduler", {**{option: default for _, default, option in UNI_PC.values()},
                                                     "final_sigmas_type": "sigma_min"}, ("unipc",)),
        Sampler("DEIS", "DEISMultistepScheduler", aliases=("deis",)),
        Sampler("LCM", "LCMScheduler", aliases=("lcm",)),
    )
}

# A1111 1.9+ "Schedule type" -> scheduler constructor options.
SCHEDULE_TYPES: dict[str, dict] = {
    "Automatic": {},
    "Uniform": {"timestep_spacing": "linspace"},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
}

_CANONICAL = {alias.lower(): s.name for s in SAMPLERS.values() for alias in (s.name, *s.aliases)}
_SCHEDULES_BY_LOWER = {name.lower(): name for name in SCHEDULE_TYPES}


def normalize(sampler: str, schedule_type: str = "Automatic",
              fields: tuple[str, str] = ("sampler", "scheduler")) -> tuple[str, str]:
    """Canonical (sampler, schedule type); old names like "DPM++ 2M Karras" split into both parts.
    ``fields`` names the two request fields an error is about."""
    sampler_text = str(sampler).strip()
    schedule = _SCHEDULES_BY_LOWER.get(str(schedule_type or "Automatic").strip().lower())
    if schedule is None:
        raise RequestError(f"Unknown schedule type {schedule_type!r}. Choose one of: {', '.join(SCHEDULE_TYPES)}.",
                           fields[1])
    name = _CANONICAL.get(sampler_text.lower())
    if name is None:
        for suffix in ("Karras", "Exponential"):
            head = sampler_text[: -len(suffix)].strip()
            if sampler_text.lower().endswith(" " + suffix.lower()) and head.lower() in _CANONICAL:
                name = _CANONICAL[head.lower()]
                schedule = suffix if schedule == "Automatic" else schedule
                break
    if name is None:
        raise RequestError(f"Unknown sampler {sampler!r}. Choose one of: {', '.join(SAMPLERS)}.", fields[0])
    if SCHEDULE_TYPES[schedule] and not _accepts(SAMPLERS[name].scheduler_class, SCHEDULE_TYPES[schedule]):
        raise RequestError(f"Sampler {name!r} does not support the {schedule} schedule type.", fields[1])
    return name, schedule


def _scheduler_class(class_name: str):
    import diffusers

    return getattr(diffusers, class_name)


def _accepts(class_name: str, options: dict) -> bool:
    params = inspect.signature(_scheduler_class(class_name).__init__).parameters
    return all(key in params for key in options)


def make_scheduler(sampler: str, schedule_type: str, base_config, seeds: list[int] | None = None,
                   parameters: Mapping[str, Any] | None = None):
    """A fresh scheduler for one request, built from the model's scheduler config; ``parameters`` are the sampler
    parameters it reads (``sampler_parameters.used``)."""
    name, schedule = normalize(sampler, schedule_type)
    spec = SAMPLERS[name]
    parameters = parameters or {}
    cls = tuned(_scheduler_class(spec.scheduler_class), parameters)
    options = {**spec.options, **SCHEDULE_TYPES[schedule], **scheduler_options(parameters)}
    if "noise_sampler_seed" in inspect.signature(cls.__init__).parameters and seeds:
        # SDE samplers draw their Brownian noise from their own seeded tree: one seed per image.
        options["noise_sampler_seed"] = seeds if len(seeds) > 1 else seeds[0]
    return cls.from_config(base_config, **options)


def sampler_names() -> list[str]:
    return list(SAMPLERS)


def schedule_type_names() -> list[str]:
    return list(SCHEDULE_TYPES)


def alpha_bar(scheduler, timestep) -> float:
    """The share of signal in the UNet's input at ``timestep`` (its cumulative alpha; a tensor's first value), for
    every scheduler: the nearest of its training timesteps (Karras schedules pass fractional ones)."""
    alphas, value = scheduler.alphas_cumprod, timestep.flatten()[0] if hasattr(timestep, "flatten") else timestep
    return float(alphas[min(max(round(float(value)), 0), len(alphas) - 1)])


@dataclass(frozen=True)
class NoiseLevel:
    """A UNet's input at one noise level, ``signal`` x picture + ``noise`` x noise (the square roots of the
    cumulative alpha and of its complement), and what its predictions (epsilon or v) say of the picture: the
    denoised pictures the guidance rules read and write (Dynamic Thresholding, Self-Attention Guidance)."""
    signal: float
    noise: float
    v_prediction: bool

    @classmethod
    def at(cls, scheduler, timestep) -> "NoiseLevel":
        share = alpha_bar(scheduler, timestep)
        return cls(share ** 0.5, (1 - share) ** 0.5, scheduler.config.get("prediction_type") == "v_prediction")

    def denoised(self, predicted, latents):
        """The pictures ``predicted`` (for the input ``latents``) means."""
        if self.v_prediction:
            return self.signal * latents - self.noise * predicted
        return (latents - self.noise * predicted) / self.signal

    def predicted(self, pictures, latents):
        """The prediction for the input ``latents`` that means ``pictures`` (``denoised``'s inverse; affine, so
        ``predicted(change, 0)`` is what a change of the pictures alone changes it by)."""
        if self.v_prediction:
            return (self.signal * latents - pictures) / self.noise
        return (latents - self.signal * pictures) / self.noise
