"""A1111's *Sampler parameters* settings: eta, sigma churn, the schedule's sigmas and the noise schedule, on the
scheduler of a pass.

Each sampler reads the ones its A1111 counterpart reads and this library can honour: eta for DDIM (``Eta DDIM``)
and Euler a (``Eta``: k-diffusion's ancestral step, the share of each step's noise drawn anew; 0 is Euler); sigma
churn, tmin, tmax and noise for Euler (diffusers' own churn, which runs the UNet at the step's sigma where
k-diffusion runs it at the raised one); the schedule's min and max sigma for the Karras and Exponential schedule
types, and rho for Karras; the zero terminal SNR noise schedule for the samplers whose scheduler can rescale its
betas. A value that differs from A1111's default goes into the infotext where it is used; where A1111 would use it
and this sampler cannot (DPM2 a and the SDE samplers keep eta 1, Heun and DPM2 have no churn, the samplers not in
``ZERO_SNR_SAMPLERS`` keep the model's noise schedule), the job says so in a warning.

Eta noise seed delta (A1111's ENSD) moves the noise a sampler draws as it samples to another seed: the starting
noise is the seed's, every later draw seed + delta's (``variation.reseeded``). It changes the pictures of the
samplers that draw noise (``draws_noise``) and only theirs, and goes into their infotext.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import numpy as np
import torch
from diffusers.schedulers.scheduling_euler_ancestral_discrete import EulerAncestralDiscreteSchedulerOutput
from diffusers.utils.torch_utils import randn_tensor

from .errors import RequestError
from .script_settings import Setting

ETA_DDIM = Setting("eta_ddim", "Eta for DDIM", "Eta DDIM", 0.0, 0.0, 1.0, 0.01,
                   "DDIM's noise each step: 0 = none (deterministic), 1 = as much as DDPM")
ETA_ANCESTRAL = Setting("eta_ancestral", "Eta for k-diffusion samplers", "Eta", 1.0, 0.0, 1.0, 0.01,
                        "Euler a's noise each step: 0 = none (Euler), 1 = full")
S_CHURN = Setting("s_churn", "Sigma churn", "Sigma churn", 0.0, 0.0, 100.0, 0.01,
                  "Euler: noise added back each step; 0 = none")
S_TMIN = Setting("s_tmin", "Sigma tmin", "Sigma tmin", 0.0, 0.0, 10.0, 0.01, "churn from this noise level")
S_TMAX = Setting("s_tmax", "Sigma tmax", "Sigma tmax", 0.0, 0.0, 999.0, 0.01,
                 "churn up to this noise level; 0 = no limit")
S_NOISE = Setting("s_noise", "Sigma noise", "Sigma noise", 1.0, 0.0, 1.1, 0.001, "the churn's noise, scaled")
SIGMA_MIN = Setting("sigma_min", "Schedule min sigma", "Schedule min sigma", 0.0, 0.0, 10.0, 0.001,
                    "Karras, Exponential: the last noise level; 0 = the model's (~0.03)")
SIGMA_MAX = Setting("sigma_max", "Schedule max sigma", "Schedule max sigma", 0.0, 0.0, 100.0, 0.01,
                    "Karras, Exponential: the first noise level; 0 = the model's (~14.6)")
RHO = Setting("rho", "Schedule rho", "Schedule rho", 0.0, 0.0, 20.0, 0.1,
              "Karras: higher falls faster at first; 0 = 7")
SETTINGS = (ETA_DDIM, ETA_ANCESTRAL, S_CHURN, S_TMIN, S_TMAX, S_NOISE, SIGMA_MIN, SIGMA_MAX, RHO)
CHURN = tuple(setting.field for setting in (S_CHURN, S_TMIN, S_TMAX, S_NOISE))
_BY_FIELD = {setting.field: setting for setting in SETTINGS}
# A1111's "Noise schedule for sampling" (option sd_noise_schedule, infotext "Noise Schedule"): the model's betas, or
# rescaled to zero terminal SNR (the last step pure noise), for models trained so; the samplers whose diffusers
# scheduler can rescale them
NOISE_SCHEDULE = "noise_schedule"
NOISE_SCHEDULES = ("Default", "Zero Terminal SNR")
ZERO_SNR_SAMPLERS = ("Euler a", "Euler", "DPM++ 2M", "DPM++ 2M SDE", "DDIM", "DDPM", "UniPC", "LCM")
# A1111's UniPC options (their keys are the request's fields) -> (infotext key, A1111's default, diffusers' option);
# A1111's defaults are UniPC's here, not diffusers' (bh2, order 2). Its third variant, vary_coeff, and its skip type
# have no diffusers counterpart.
UNI_PC = {"uni_pc_variant": ("UniPC variant", "bh1", "solver_type"),
          "uni_pc_order": ("UniPC order", 3, "solver_order"),
          "uni_pc_lower_order_final": ("UniPC lower order final", True, "lower_order_final")}
UNI_PC_VARIANTS, MAX_UNI_PC_ORDER = ("bh1", "bh2"), 50
ENSD = "eta_noise_seed_delta"  # A1111's option and the request's field; 31337 reproduces NovelAI's pictures
_DEFAULTS = {**{setting.field: setting.default for setting in SETTINGS}, NOISE_SCHEDULE: NOISE_SCHEDULES[0],
             **{name: default for name, (_, default, _) in UNI_PC.items()}}
KEYS = {**{setting.field: setting.key for setting in SETTINGS}, NOISE_SCHEDULE: "Noise Schedule",
        **{name: key for name, (key, _, _) in UNI_PC.items()}, ENSD: "ENSD"}  # the infotext's

# The settings each sampler reads here, and those its A1111 counterpart reads that it cannot (it runs as if at
# their defaults).
READS = {"DDIM": (ETA_DDIM.field,), "Euler a": (ETA_ANCESTRAL.field,), "Euler": CHURN, "UniPC": tuple(UNI_PC)}
CANNOT_READ = {"DPM2 a": (ETA_ANCESTRAL.field,), "DPM++ SDE": (ETA_ANCESTRAL.field,),
               "DPM++ 2M SDE": (ETA_ANCESTRAL.field,), "Heun": CHURN, "DPM2": CHURN}
SCHEDULE_READS = {"Karras": (SIGMA_MIN.field, SIGMA_MAX.field, RHO.field),
                  "Exponential": (SIGMA_MIN.field, SIGMA_MAX.field)}


# The samplers whose every sampling step draws noise here (DPM++ SDE draws its Brownian noise from the seeds, as
# A1111's), and those that do where a parameter says so
NOISY_SAMPLERS = ("DPM2 a", "DPM++ 2M SDE", "DDPM", "LCM")
NOISY_WHEN = {"Euler a": ETA_ANCESTRAL.field, "DDIM": ETA_DDIM.field, "Euler": S_CHURN.field}


def draws_noise(request) -> bool:
    """Whether the pass's sampler draws noise as it samples (where ENSD changes its picture)."""
    sampler = request.sampler
    return sampler in NOISY_SAMPLERS or sampler in NOISY_WHEN and bool(getattr(request, NOISY_WHEN[sampler]))


def _changed(request, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(request, name) for name in names if getattr(request, name) != _DEFAULTS[name]}


def _passes(request):
    """The request's passes: itself, and hires fix's second (whose sampler may be its own)."""
    yield request
    if request.enable_hr:
        yield request.hires_pass()


def used(request) -> dict[str, Any]:
    """The settings the pass's sampler and schedule type read, where they differ from A1111's defaults."""
    sampler = request.sampler
    return _changed(request, READS.get(sampler, ()) + SCHEDULE_READS.get(request.scheduler, ())
                    + ((NOISE_SCHEDULE,) if sampler in ZERO_SNR_SAMPLERS else ()))


def infotext(request) -> dict[str, Any]:
    """The settings its passes read (``used``'s) under their infotext keys, and ENSD where a pass draws noise."""
    delta = request.eta_noise_seed_delta if any(map(draws_noise, _passes(request))) else 0
    return {**{KEYS[name]: value for made in _passes(request) for name, value in used(made).items()},
            **({KEYS[ENSD]: delta} if delta else {})}


def unapplied(request) -> list[str]:
    """A warning for each setting the request changes that A1111's sampler would read and this one cannot."""
    return list(dict.fromkeys(
        f"{made.sampler} runs here with the model's noise schedule: {value} is not applied." if name == NOISE_SCHEDULE
        else f"{made.sampler} runs here as at {_BY_FIELD[name].label} {_BY_FIELD[name].default:g}: the {value:g} "
             "asked for is not applied." for made in _passes(request)
        for name, value in _changed(made, CANNOT_READ.get(made.sampler, ())
                                    + (() if made.sampler in ZERO_SNR_SAMPLERS else (NOISE_SCHEDULE,))).items()))


def check_choices(noise_schedule: str, uni_pc_variant: str) -> None:
    for value, choices, label, field in ((noise_schedule, NOISE_SCHEDULES, "Noise schedule", NOISE_SCHEDULE),
                                         (uni_pc_variant, UNI_PC_VARIANTS, "UniPC variant", "uni_pc_variant")):
        if value not in choices:
            raise RequestError(f"{label} must be one of {', '.join(choices)}; got {value!r}.", field)


def scheduler_options(values: Mapping[str, Any]) -> dict:
    """The scheduler config options ``values`` (``used``'s) ask for: betas rescaled to zero terminal SNR, UniPC's."""
    options = {option: values[name] for name, (_, _, option) in UNI_PC.items() if name in values}
    return {**options, "rescale_betas_zero_snr": True} if values.get(NOISE_SCHEDULE) == NOISE_SCHEDULES[1] else options


def check_range(low: float, high: float) -> None:
    """The schedule's sigmas must fall: a min sigma under the max one."""
    if low >= high:
        raise RequestError(f"Schedule min sigma ({low:g}) must be under the max sigma ({high:g}); 0 takes the "
                           "model's.", SIGMA_MIN.field)


def tuned(cls: type, values: Mapping[str, Any]) -> type:
    """``cls``, a diffusers scheduler class, reading ``values`` (``used``'s); ``cls`` itself when there are none.
    The subclass keeps its name, so the scheduler's config is the model's own."""
    body: dict = {}
    if ETA_DDIM.field in values:
        body["step"] = _with_step_options(cls.step, {"eta": values[ETA_DDIM.field]})
    if any(name in values for name in CHURN):
        churn = {name: values.get(name, _DEFAULTS[name]) for name in CHURN}
        churn[S_TMAX.field] = churn[S_TMAX.field] or math.inf  # A1111's 0: no limit
        body["step"] = _with_step_options(cls.step, churn)
    if ETA_ANCESTRAL.field in values:
        body["step"] = _ancestral_step(values[ETA_ANCESTRAL.field])
    if any(name in values for name in SCHEDULE_READS["Karras"]):
        low, high, rho = (values.get(setting.field, 0.0) for setting in (SIGMA_MIN, SIGMA_MAX, RHO))
        body["_convert_to_karras"] = _karras(low, high, rho or 7.0)
        body["_convert_to_exponential"] = _exponential(low, high)
    return type(cls.__name__, (cls,), body) if body else cls


def _with_step_options(step, options: dict):
    """``step`` given ``options`` over what the pipeline passes; its signature kept, which pipelines read to know
    what to pass (the generators of DDIM's noise)."""
    @functools.wraps(step)
    def with_options(self, *args, **kwargs):
        return step(self, *args, **{**kwargs, **options})

    return with_options


def _ancestral_step(eta: float):
    """k-diffusion's Euler ancestral step with ``eta``: down to sigma_down, then sigma_up of fresh noise (eta 1:
    diffusers' Euler a; 0: Euler)."""
    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        if self.step_index is None:
            self._init_step_index(timestep)
        sigma, sigma_to = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]
        sample = sample.to(torch.float32)
        if self.config.prediction_type == "v_prediction":
            denoised = model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
        else:
            denoised = sample - sigma * model_output
        sigma_up = torch.minimum(sigma_to, eta * (sigma_to**2 * (sigma**2 - sigma_to**2) / sigma**2) ** 0.5)
        sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
        previous = sample + (sample - denoised) / sigma * (sigma_down - sigma)
        noise = randn_tensor(model_output.shape, dtype=model_output.dtype, device=model_output.device,
                             generator=generator)
        previous = (previous + noise * sigma_up).to(model_output.dtype)
        self._step_index += 1
        if not return_dict:
            return (previous, denoised)
        return EulerAncestralDiscreteSchedulerOutput(prev_sample=previous, pred_original_sample=denoised)

    return step


def _ends(self, in_sigmas, low: float, high: float) -> tuple[float, float]:
    """The schedule's (min, max) sigma: the ones asked for, else the model's (its config's, else its schedule's)."""
    low = low or getattr(self.config, "sigma_min", None) or float(in_sigmas[-1])
    high = high or getattr(self.config, "sigma_max", None) or float(in_sigmas[0])
    check_range(low, high)
    return low, high


def _karras(low: float, high: float, rho: float):
    def convert(self, in_sigmas, num_inference_steps=None):
        sigma_min, sigma_max = _ends(self, in_sigmas, low, high)
        ramp = np.linspace(0, 1, num_inference_steps or self.num_inference_steps)
        return (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho

    return convert


def _exponential(low: float, high: float):
    def convert(self, in_sigmas, num_inference_steps=None):
        sigma_min, sigma_max = _ends(self, in_sigmas, low, high)
        return np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min),
                                  num_inference_steps or self.num_inference_steps))

    return convert
