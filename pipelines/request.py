"""The generation request: one frozen, validated object that every tab, the API and the tests build.

Values arrive from widgets, JSON or infotext as loosely typed things (``7.0`` for 7, ``"20"``); they are
coerced here once, and anything the engine cannot use raises ``RequestError`` with a sentence a user
understands. Task-specific parts (init image, mask, ControlNet units, adapters, extension settings) have
their place here so later features extend this object rather than passing values beside it.
"""

from __future__ import annotations

import math
import random
from dataclasses import astuple, dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Mapping

from . import infotext as infotext_format
from .cfg_rescale import RESCALE
from .controlnet import ControlUnit
from .deep_shrink import (BLOCK as DS_BLOCK, DEFAULTS as DS_DEFAULTS, END as DS_END, FIELDS as DS_FIELDS,
                          NUMBERS as DS_NUMBERS, START as DS_START, SWITCHES as DS_SWITCHES, DeepShrink,
                          check as check_deep_shrink, from_infotext as shrink_values)
from .dynamic_thresholding import (DEFAULTS as DT_DEFAULTS, FIELDS as DT_FIELDS, NUMBERS as DT_NUMBERS,
                                   DynamicThresholding, check_choices as check_dt_choices,
                                   from_infotext as thresholding_values)
from .errors import RequestError
from .freeu import (ENABLED as FREEU, FORGE_KEYS as FREEU_FORGE_KEYS, SETTINGS as FREEU_SETTINGS,
                    VERSION as FREEU_VERSION)
from .img2img_scripts import CURVES, MAX_LOOPS, MAX_OVERLAP, MAX_SCALE, loopback_strengths
from .kandinsky import mix_items
from .negative_guidance import NGMS, NGMS_ALL, NGMS_ALL_KEY, SKIP_EARLY
from .pag import FORGE_KEYS as PAG_FORGE_KEYS, PAG, PAG_ATTENUATION, PAG_END, PAG_SCHEDULE, PAG_SETTINGS, PAG_START
from .prompts import has_regions, is_template
from .regions import CALC_MODE, DIVIDE_MODE, RegionalSettings
from .sag import FORGE_KEYS as SAG_FORGE_KEYS, SAG, SAG_SETTINGS, SelfAttentionGuidance
from .sampler_parameters import (ENSD, ETA_ANCESTRAL, ETA_DDIM, KEYS as SAMPLER_KEYS, MAX_UNI_PC_ORDER, NOISE_SCHEDULE,
                                 NOISE_SCHEDULES, RHO, S_CHURN, S_NOISE, S_TMAX, S_TMIN, SETTINGS as SAMPLER_SETTINGS,
                                 SIGMA_MAX, SIGMA_MIN, UNI_PC, check_choices, check_range, infotext as sampler_infotext)
from .samplers import normalize
from .soft_inpainting import ENABLED as SOFT_INPAINTING, SETTINGS as SOFT_SETTINGS
from .step_cache import MAX_INTERVAL as MAX_STEP_CACHE
from .tiled_diffusion import (FIELDS as TILED_FIELDS, FLAT_UPSCALE_KEYS as TILED_UPSCALE_KEYS, METHODS as TILED_METHODS,
                              NUMBERS as TILED_NUMBERS, SCALE_FACTOR as TILED_SCALE_FACTOR, TiledDiffusion,
                              from_infotext as tiled_values)
from .tiling import AXES as TILING_AXES, axes_of
from .upscalers import NONE as NO_UPSCALER
from .variation import EXTRA_NOISE

TASKS = ("txt2img", "img2img", "inpaint")
MAX_SEED = 2**32 - 1
MAX_SIDE = 4096  # a picture's width or height, at most
MAX_NOISE_MULTIPLIER = 1.5  # A1111's slider
MAX_BATCH_COUNT = 100
MAX_GENERATIONS, MAX_COMBINATORIAL_BATCHES = 1000, 10  # Dynamic Prompts' sliders
VERSION = "easel-0.1.0"

# (field, label, low, high) for the whole-number fields, checked in this order.
_INT_RANGES = (
    ("steps", "Steps", 1, 150),
    ("width", "Width", 64, MAX_SIDE),
    ("height", "Height", 64, MAX_SIDE),
    ("batch_size", "Batch size", 1, 8),
    ("batch_count", "Batch count", 1, MAX_BATCH_COUNT),
    ("clip_skip", "Clip skip", 1, 12),
    ("seed", "Seed", -1, MAX_SEED),
    ("subseed", "Variation seed", -1, MAX_SEED),
    ("seed_resize_from_w", "Resize seed from width", 0, MAX_SIDE),
    ("seed_resize_from_h", "Resize seed from height", 0, MAX_SIDE),
    ("resize_mode", "Resize mode", 0, 3),
    ("mask_blur", "Mask blur", 0, 64),
    ("inpainting_fill", "Masked content", 0, 3),
    ("inpaint_full_res_padding", "Only masked padding", 0, 256),
    ("hr_resize_x", "Hires resize width", 0, MAX_SIDE),
    ("hr_resize_y", "Hires resize height", 0, MAX_SIDE),
    ("hr_second_pass_steps", "Hires steps", 0, 150),
    ("step_cache", "Step cache", 0, MAX_STEP_CACHE),
    ("loopback_loops", "Loops", 1, MAX_LOOPS),
    ("sd_upscale_overlap", "Tile overlap", 0, MAX_OVERLAP),
    ("dp_max_generations", "Max generations", 0, MAX_GENERATIONS),
    ("dp_combinatorial_batches", "Combinatorial batches", 1, MAX_COMBINATORIAL_BATCHES),
    ("uni_pc_order", "UniPC order", 1, MAX_UNI_PC_ORDER),
    (ENSD, "Eta noise seed delta", 0, MAX_SEED),
    *((number.field, number.label, number.low, number.high) for number in TILED_NUMBERS),
    (DS_BLOCK.field, f"{DS_BLOCK.label} (Deep Shrink)", DS_BLOCK.low, DS_BLOCK.high),
)
EMPTY_MASK = "The mask is empty: mark the part to repaint in white (paint or upload a mask), or outpaint."
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
LATENT_RESIZE = 3
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")
ORIGINAL = MASKED_CONTENT.index("original")
# The request's Dynamic Prompts fields: on, then its settings (``dynamic_prompts`` reads them)
DYNAMIC_FIELDS = ("dynamic_prompts", "dp_combinatorial", "dp_max_generations", "dp_combinatorial_batches",
                  "dp_fixed_seed", "dp_unlink_seed")
# The request's Regional Prompter fields: on, then its settings in ``regions.RegionalSettings``' order
REGIONAL_FIELDS = ("regional_prompter", "rp_splitting", "rp_ratios", "rp_base_ratios", "rp_use_base", "rp_use_common")
# A1111's words for "no second checkpoint" (its UI's first choice, what its API sends): "" here
NO_CHECKPOINT = {"hr_checkpoint_name": "Use same checkpoint", "refiner_checkpoint": "None"}


def whole_number(value: Any, label: str, field: str) -> int:
    """``value`` as an int, or a RequestError naming ``field`` (a bool, a fraction or text is not a whole number)."""
    problem = RequestError(f"{label} must be a whole number, got {value!r}.", field)
    if isinstance(value, bool):
        raise problem
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise problem from None
    if not math.isfinite(number) or number != int(number):
        raise problem
    return int(number)


def finite_number(value: Any, label: str, field: str) -> float:
    """``value`` as a float, or a RequestError naming ``field`` (text, NaN and infinities are not numbers)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RequestError(f"{label} must be a number, got {value!r}.", field) from None
    if not math.isfinite(number):
        raise RequestError(f"{label} must be a finite number, got {value!r}.", field)
    return number


def whole_between(value: Any, label: str, field: str, low: int, high: int) -> int:
    """``whole_number`` within ``low`` and ``high``, or a RequestError saying so."""
    number = whole_number(value, label, field)
    if not low <= number <= high:
        raise RequestError(f"{label} must be between {low} and {high}, got {number}.", field)
    return number


def number_between(value: Any, label: str, field: str, low: float, high: float) -> float:
    """``finite_number`` within ``low`` and ``high``, or a RequestError saying so."""
    number = finite_number(value, label, field)
    if not low <= number <= high:
        raise RequestError(f"{label} must be between {low:g} and {high:g}, got {number:g}.", field)
    return number


def _size(text: str, field: str) -> tuple[str, str]:
    try:
        width, height = text.lower().split("x")
    except ValueError:
        raise RequestError(f"A size must look like 512x512, got {text!r}.", field) from None
    return width, height


def parse_sizes(text: str) -> tuple[tuple[int, int], ...]:
    """"1024x1024,832x1216" -> ((1024, 1024), (832, 1216)), each checked as a request's width and height."""
    sizes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        width, height = _size(item, "size")
        request = GenerationRequest(width=width, height=height)
        sizes.append((request.width, request.height))
    return tuple(sizes)


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str = ""
    negative_prompt: str = ""
    sampler: str = "Euler a"
    scheduler: str = "Automatic"  # A1111's "Schedule type"
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    seed: int = -1
    subseed: int = -1  # A1111's variation seed: mixed into the seed's noise by subseed_strength (variation.py)
    subseed_strength: float = 0.0
    # A1111's "Resize seed from": the noise of this size, centred in the picture's (variation.py); 0 x 0: off
    seed_resize_from_w: int = 0
    seed_resize_from_h: int = 0
    batch_size: int = 1
    batch_count: int = 1
    clip_skip: int = 1
    model: str = ""
    task: str = "txt2img"
    # img2img and inpaint (A1111's field names and codes); txt2img leaves them alone.
    init_image: Any = None  # PIL image
    mask: Any = None  # PIL image; white repaints
    denoising_strength: float = 0.75
    initial_noise_multiplier: float = 1.0  # A1111's img2img "Noise multiplier": scales the noise added to the picture
    img2img_extra_noise: float = EXTRA_NOISE.default  # A1111's: more noise at an img2img pass's start (hires fix's too)
    color_correction: bool = False  # A1111's img2img setting: the result's colours matched to the picture's (images.py)
    resize_mode: int = 0  # index into RESIZE_MODES
    mask_blur: int = 4
    inpainting_fill: int = ORIGINAL  # index into MASKED_CONTENT
    inpaint_full_res: bool = False  # "Only masked": work on the masked region at full resolution
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: bool = False
    outpaint: tuple[int, int, int, int] = (0, 0, 0, 0)  # pixels added left, right, up, down (inpaint task)
    # A1111's soft inpainting (pipelines/soft_inpainting.py): the mask's grey levels kept; its settings' defaults
    soft_inpainting: bool = False
    soft_schedule_bias: float = SOFT_SETTINGS[0].default
    soft_preservation: float = SOFT_SETTINGS[1].default
    soft_contrast_boost: float = SOFT_SETTINGS[2].default
    soft_mask_influence: float = SOFT_SETTINGS[3].default
    soft_difference_threshold: float = SOFT_SETTINGS[4].default
    soft_difference_contrast: float = SOFT_SETTINGS[5].default
    # Hires fix (txt2img), A1111's names: a second img2img pass over the upscaled first pass.
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_resize_x: int = 0  # a target size instead of the scale; 0 = from the scale (one side alone keeps aspect)
    hr_resize_y: int = 0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0  # 0 = as many as the first pass
    hr_sampler_name: str = ""  # "" = the first pass's sampler and schedule type
    hr_scheduler: str = ""
    hr_prompt: str = ""  # "" = the first pass's prompt
    hr_negative_prompt: str = ""
    hr_checkpoint_name: str = ""  # "" = the first pass's model
    firstpass_image: Any = None  # A1111's: the first pass given (a PIL image), not run; its upscale is repainted
    # A1111's refiner: this model takes over the (last) pass once refiner_switch_at of its steps are done
    refiner_checkpoint: str = ""
    refiner_switch_at: float = 0.8
    # A1111's img2img scripts Loopback and SD upscale (pipelines/img2img_scripts.py); SD upscale's tiles are
    # width x height
    loopback: bool = False
    loopback_loops: int = 4
    loopback_final_strength: float = 0.5
    loopback_curve: str = "Linear"  # CURVES
    sd_upscale: bool = False
    sd_upscale_overlap: int = 64
    sd_upscale_scale: float = 2.0
    sd_upscale_upscaler: str = "Lanczos"  # an Extras upscaler; "None" keeps the picture's size
    # The Regional Prompter extension's Matrix mode (pipelines/regions.py): cells of the picture guided by the
    # prompt's parts; its keys (``rp_...``) hold its panel's values
    regional_prompter: bool = False
    rp_splitting: str = "Columns"
    rp_ratios: str = "1,1"
    rp_base_ratios: str = "0.2"
    rp_use_base: bool = False
    rp_use_common: bool = False
    # The Dynamic Prompts extension (pipelines/dynamic_prompts.py): the prompts are templates ({red|blue},
    # __wildcards__) that each picture resolves; on by default, as the extension is (a plain prompt is no template)
    dynamic_prompts: bool = True
    dp_combinatorial: bool = False
    dp_max_generations: int = 0  # combinatorial: at most this many prompts, 0 for all
    dp_combinatorial_batches: int = 1  # combinatorial: each prompt this many times
    dp_fixed_seed: bool = False  # every picture the job's seed
    dp_unlink_seed: bool = False  # random prompts not drawn from the seed
    # Each picture's prompt and negative prompt, in the job's order, where the engine resolved templates; empty: the
    # prompts themselves
    all_prompts: tuple[str, ...] = ()
    all_negative_prompts: tuple[str, ...] = ()
    controlnets: tuple = ()  # ControlUnit (or the extension's API dicts, made into units here)
    mix: tuple = ()  # Kandinsky 2.2 image mixing: MixItem (or {"prompt"|"image": ..., "weight": w} dicts)
    step_cache: int = 0  # DeepCache-style interval (pipelines/step_cache.py): a fast mode, not exact; 0 or 1: off
    tiling: bool = False  # seamless tiling: circular padding (pipelines/tiling.py)
    tiling_axes: str = "both"  # which edges wrap around when tiling: "both", "x" or "y"
    rescale_cfg: float = RESCALE.default  # Rescale CFG (pipelines/cfg_rescale.py): 0 = off
    pag_scale: float = PAG.default  # Perturbed-Attention Guidance (pipelines/pag.py): 0 = off
    pag_attenuation: float = PAG_ATTENUATION.default  # % of its scale lost per call it pushed (Forge's)
    pag_start: float = PAG_START.default  # the share of the pass where it starts
    pag_end: float = PAG_END.default  # and where it stops
    sag_scale: float = SAG.default  # Self-Attention Guidance (pipelines/sag.py): 0 = off
    sag_blur_sigma: float = SAG_SETTINGS[1].default
    sag_threshold: float = SAG_SETTINGS[2].default
    # A1111's settings that ignore the negative prompt in some steps (pipelines/negative_guidance.py)
    s_min_uncond: float = NGMS.default  # negative guidance minimum sigma
    s_min_uncond_all: bool = False  # below it every step, not every other one
    skip_early_cond: float = SKIP_EARLY.default  # the share of the first steps
    # A1111's sampler parameters (pipelines/sampler_parameters.py), read by the samplers that take them
    eta_ddim: float = ETA_DDIM.default
    eta_ancestral: float = ETA_ANCESTRAL.default
    s_churn: float = S_CHURN.default
    s_tmin: float = S_TMIN.default
    s_tmax: float = S_TMAX.default  # 0: no limit
    s_noise: float = S_NOISE.default
    sigma_min: float = SIGMA_MIN.default  # 0: the model's
    sigma_max: float = SIGMA_MAX.default  # 0: the model's
    rho: float = RHO.default  # 0: the schedule's own
    noise_schedule: str = NOISE_SCHEDULES[0]  # "Default": the model's betas; or rescaled to zero terminal SNR
    uni_pc_variant: str = UNI_PC["uni_pc_variant"][1]
    uni_pc_order: int = UNI_PC["uni_pc_order"][1]
    uni_pc_lower_order_final: bool = UNI_PC["uni_pc_lower_order_final"][1]
    eta_noise_seed_delta: int = 0  # ENSD: the samplers' noise after the start is seed + this one's
    # FreeU (pipelines/freeu.py): on, and its factors
    freeu: bool = False
    freeu_b1: float = FREEU_SETTINGS[0].default
    freeu_b2: float = FREEU_SETTINGS[1].default
    freeu_s1: float = FREEU_SETTINGS[2].default
    freeu_s2: float = FREEU_SETTINGS[3].default
    freeu_start: float = FREEU_SETTINGS[4].default  # the share of the pass where it starts
    freeu_end: float = FREEU_SETTINGS[5].default  # and where it stops
    freeu_version: int = FREEU_VERSION.default  # 1: the paper's; 2: Forge's
    # Dynamic Thresholding (pipelines/dynamic_thresholding.py): on, and its settings
    dynamic_thresholding: bool = False
    dt_mimic_scale: float = DT_DEFAULTS["dt_mimic_scale"]
    dt_threshold_percentile: float = DT_DEFAULTS["dt_threshold_percentile"]
    dt_mimic_mode: str = DT_DEFAULTS["dt_mimic_mode"]
    dt_mimic_scale_min: float = DT_DEFAULTS["dt_mimic_scale_min"]
    dt_cfg_mode: str = DT_DEFAULTS["dt_cfg_mode"]
    dt_cfg_scale_min: float = DT_DEFAULTS["dt_cfg_scale_min"]
    dt_sched_val: float = DT_DEFAULTS["dt_sched_val"]
    dt_separate_feature_channels: bool = DT_DEFAULTS["dt_separate_feature_channels"]
    dt_scaling_startpoint: str = DT_DEFAULTS["dt_scaling_startpoint"]
    dt_variability_measure: str = DT_DEFAULTS["dt_variability_measure"]
    dt_interpolate_phi: float = DT_DEFAULTS["dt_interpolate_phi"]
    # Deep Shrink (pipelines/deep_shrink.py): on, and Forge's settings
    deep_shrink: bool = False
    deep_shrink_block: int = DS_DEFAULTS["deep_shrink_block"]
    deep_shrink_factor: float = DS_DEFAULTS["deep_shrink_factor"]  # 0: from the size
    deep_shrink_start: float = DS_DEFAULTS["deep_shrink_start"]
    deep_shrink_end: float = DS_DEFAULTS["deep_shrink_end"]
    deep_shrink_after_skip: bool = DS_DEFAULTS["deep_shrink_after_skip"]
    deep_shrink_downscale: str = DS_DEFAULTS["deep_shrink_downscale"]
    deep_shrink_upscale: str = DS_DEFAULTS["deep_shrink_upscale"]
    deep_shrink_phase2: bool = DS_DEFAULTS["deep_shrink_phase2"]
    # Tiled Diffusion (pipelines/tiled_diffusion.py): on, and its method and tiles (in latent pixels)
    tiled_diffusion: bool = False
    td_method: str = TILED_METHODS[0]
    td_tile_width: int = TILED_NUMBERS[0].default
    td_tile_height: int = TILED_NUMBERS[1].default
    td_overlap: int = TILED_NUMBERS[2].default
    td_batch_size: int = TILED_NUMBERS[3].default
    td_upscaler: str = NO_UPSCALER  # img2img's picture upscaled first, by the factor, from its own size or the size's
    td_scale_factor: float = TILED_SCALE_FACTOR.default
    td_keep_input_size: bool = True
    styles: tuple[str, ...] = ()  # names in the models folder's styles.csv, written into the prompts by the engine
    # Parts that later features fill.
    adapters: tuple = ()
    extensions: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        set_ = object.__setattr__
        for name in ("prompt", "negative_prompt", "model", "hr_sampler_name", "hr_scheduler", "hr_prompt",
                     "hr_negative_prompt", "hr_checkpoint_name", "refiner_checkpoint"):
            value = getattr(self, name)
            set_(self, name, "" if value is None else str(value))
        for name, word in NO_CHECKPOINT.items():
            if getattr(self, name) == word:
                set_(self, name, "")
        for name, label, low, high in _INT_RANGES:
            set_(self, name, whole_between(getattr(self, name), label, name, low, high))
        for name, label in (("width", "Width"), ("height", "Height")):
            if getattr(self, name) % 8:
                raise RequestError(f"{label} must be a multiple of 8, got {getattr(self, name)}.", name)
        set_(self, "cfg_scale", finite_number(self.cfg_scale, "CFG scale", "cfg_scale"))
        strength = finite_number(self.denoising_strength, "Denoising strength", "denoising_strength")
        if not 0.0 <= strength <= 1.0:
            raise RequestError(f"Denoising strength must be between 0 and 1, got {strength}.", "denoising_strength")
        set_(self, "denoising_strength", strength)
        variation = finite_number(self.subseed_strength, "Variation strength", "subseed_strength")
        if not 0.0 <= variation <= 1.0:
            raise RequestError(f"Variation strength must be between 0 and 1, got {variation}.", "subseed_strength")
        set_(self, "subseed_strength", variation)
        multiplier = finite_number(self.initial_noise_multiplier, "Noise multiplier", "initial_noise_multiplier")
        if not 0.0 <= multiplier <= MAX_NOISE_MULTIPLIER:
            raise RequestError(f"Noise multiplier must be between 0 and {MAX_NOISE_MULTIPLIER}, got {multiplier}.",
                               "initial_noise_multiplier")
        set_(self, "initial_noise_multiplier", multiplier)
        self._check_seed_resize()
        switch_at = finite_number(self.refiner_switch_at, "Refiner switch at", "refiner_switch_at")
        if not 0.0 < switch_at <= 1.0:
            raise RequestError(f"Refiner switch at must be over 0 and at most 1, got {switch_at}.", "refiner_switch_at")
        set_(self, "refiner_switch_at", switch_at)
        if self.task not in TASKS:
            raise RequestError(f"Unknown task {self.task!r}. Choose one of: {', '.join(TASKS)}.", "task")
        self._check_outpaint()
        self._check_hires()
        for name, label, needed in (("init_image", "an init image", self.task != "txt2img"),
                                    ("mask", "a mask", self.task == "inpaint" and not any(self.outpaint))):
            value = getattr(self, name)
            if needed and value is None:
                raise RequestError(f"{self.task} needs {label}." if name == "init_image" else EMPTY_MASK, name)
            if value is not None and not (hasattr(value, "size") and hasattr(value, "convert")):
                raise RequestError(f"The {name.replace('_', ' ')} must be an image.", name)
        if self.task != "txt2img" and int(self.steps * strength) < 1:
            raise RequestError(f"Denoising strength {strength} of {self.steps} steps runs no step at all; "
                               "raise the strength or the steps.", "denoising_strength")
        set_(self, "inpaint_full_res", bool(self.inpaint_full_res))
        set_(self, "tiling", bool(self.tiling))
        if self.tiling_axes not in TILING_AXES:
            raise RequestError(f"Tiling axes must be one of {', '.join(TILING_AXES)}; got {self.tiling_axes!r}.",
                               "tiling_axes")
        set_(self, "freeu", bool(self.freeu))
        set_(self, "color_correction", bool(self.color_correction))
        names = (self.styles,) if isinstance(self.styles, str) else self.styles or ()
        set_(self, "styles", tuple(str(name) for name in names))
        set_(self, "inpainting_mask_invert", bool(self.inpainting_mask_invert))
        for name in (*DYNAMIC_FIELDS[:2], *DYNAMIC_FIELDS[4:]):
            set_(self, name, bool(getattr(self, name)))
        set_(self, "all_prompts", tuple(map(str, self.all_prompts)))
        set_(self, "all_negative_prompts", tuple(map(str, self.all_negative_prompts)))
        if len(self.all_negative_prompts) != len(self.all_prompts):
            raise RequestError("Every picture needs a prompt and a negative prompt: all_prompts and "
                               "all_negative_prompts differ in length.", "all_negative_prompts")
        self._check_settings(SOFT_SETTINGS, "soft inpainting")
        set_(self, "soft_inpainting", bool(self.soft_inpainting))
        self._check_settings(FREEU_SETTINGS, "FreeU")
        if self.freeu_version not in (1, 2):
            raise RequestError(f"FreeU's version must be 1 or 2, got {self.freeu_version:g}.", FREEU_VERSION.field)
        set_(self, FREEU_VERSION.field, int(self.freeu_version))
        self._check_settings((RESCALE, *PAG_SETTINGS, *SAG_SETTINGS, NGMS, SKIP_EARLY, EXTRA_NOISE, *SAMPLER_SETTINGS))
        self._check_settings(DT_NUMBERS, "Dynamic Thresholding")
        for name in ("dynamic_thresholding", "dt_separate_feature_channels"):
            set_(self, name, bool(getattr(self, name)))
        check_dt_choices({name: getattr(self, name) for name in DT_FIELDS})
        self._check_deep_shrink()
        # spans, of a pass (PAG's, FreeU's) or of the noise schedule (Deep Shrink's)
        for start, end in ((PAG_START, PAG_END), FREEU_SETTINGS[4:6], (DS_START, DS_END)):
            if getattr(self, start.field) > getattr(self, end.field):
                raise RequestError(f"{start.key} ({getattr(self, start.field):g}) must not come after {end.key} "
                                   f"({getattr(self, end.field):g}).", start.field)
        if self.sag_scale and self.tiled_diffusion:
            raise RequestError("Self-Attention Guidance reads the whole picture's attention map, and Tiled Diffusion's "
                               "calls see a tile of it: set SAG scale to 0, or turn Tiled Diffusion off.", SAG.field)
        if self.sag_scale and self.step_cache > 1:
            raise RequestError("The step cache keeps one UNet call's features for the next, which would be Self-"
                               "Attention Guidance's second call: set the step cache or SAG scale to 0.", "step_cache")
        set_(self, NGMS_ALL, bool(self.s_min_uncond_all))
        if self.sigma_min and self.sigma_max:
            check_range(self.sigma_min, self.sigma_max)
        check_choices(self.noise_schedule, self.uni_pc_variant)
        set_(self, "uni_pc_lower_order_final", bool(self.uni_pc_lower_order_final))
        self._check_regions()
        self._check_tiled()
        sampler, schedule = normalize(self.sampler, self.scheduler, ("sampler", "scheduler"))
        set_(self, "sampler", sampler)
        set_(self, "scheduler", schedule)
        set_(self, "controlnets", tuple(ControlUnit.from_values(u, i) for i, u in enumerate(self.controlnets or ())))
        if self.tiled_diffusion and any(unit.effective_region_mask is not None for unit in self.active_controls):
            raise RequestError("Tiled Diffusion's UNet calls see one tile at a time, which a ControlNet unit's "
                               "effective region mask is not cut to: take the mask off, or Tiled Diffusion.",
                               "controlnets")
        set_(self, "mix", mix_items(self.mix))
        set_(self, "adapters", tuple(self.adapters))
        set_(self, "extensions", MappingProxyType(dict(self.extensions)))
        self._check_scripts()

    def _check_deep_shrink(self) -> None:
        """Deep Shrink's settings, checked whether or not it is on, and what it cannot join: SAG (its map has the
        middle block's size, which Deep Shrink changes) and the step cache (its kept features would have another
        size)."""
        self._check_settings(DS_NUMBERS[1:], "Deep Shrink")
        for name in ("deep_shrink", *DS_SWITCHES):
            object.__setattr__(self, name, bool(getattr(self, name)))
        check_deep_shrink({name: getattr(self, name) for name in DS_FIELDS})
        if self.deep_shrink and self.sag_scale:
            raise RequestError("Self-Attention Guidance reads a map the size of the UNet's middle block, which Deep "
                               "Shrink changes: set SAG scale to 0, or turn Deep Shrink off.", SAG.field)
        if self.deep_shrink and self.step_cache > 1:
            raise RequestError("The step cache keeps one UNet call's features for the next, which Deep Shrink may "
                               "make at another size: set the step cache to 0, or turn Deep Shrink off.", "step_cache")

    def _check_settings(self, settings: tuple, owner: str = "") -> None:
        """An extension's numbers in its sliders' ranges, checked whether or not it is on (soft inpainting's too
        where the task has no mask, as A1111's)."""
        for setting in settings:
            label = f"{setting.label} ({owner})" if owner else setting.label
            value = number_between(getattr(self, setting.field), label, setting.field, setting.low, setting.high)
            object.__setattr__(self, setting.field, value)

    def _check_regions(self) -> None:
        """Regional Prompter's settings, checked whether or not it is on, and the prompt's regions against them
        when it is (a style's words come later, and are checked as the pass encodes them)."""
        set_ = object.__setattr__
        settings = RegionalSettings.checked(*(getattr(self, name) for name in REGIONAL_FIELDS[1:]))
        for name, value in zip(REGIONAL_FIELDS[1:], astuple(settings)):
            set_(self, name, value)
        set_(self, "regional_prompter", bool(self.regional_prompter))
        if self.regional_prompter:
            settings.parts(self.prompt)

    @property
    def regions(self) -> RegionalSettings | None:
        """Regional Prompter's settings while it is on."""
        if not self.regional_prompter:
            return None
        return RegionalSettings(*(getattr(self, name) for name in REGIONAL_FIELDS[1:]))

    def _check_tiled(self) -> None:
        """Tiled Diffusion's method and scale factor (its numbers are whole numbers in ``_INT_RANGES``), and what it
        cannot join: tiling's wrap-around (a tile's edges are not the picture's) and the step cache (its kept
        features would be another tile's); its upscaler upscales once."""
        set_ = object.__setattr__
        for name in ("tiled_diffusion", "td_keep_input_size"):
            set_(self, name, bool(getattr(self, name)))
        set_(self, "td_upscaler", str(self.td_upscaler))
        self._check_settings((TILED_SCALE_FACTOR,), "Tiled Diffusion")
        if self.td_method not in TILED_METHODS:
            raise RequestError(f"Tiled Diffusion's method is {' or '.join(TILED_METHODS)}, got {self.td_method!r}.",
                               "td_method")
        if self.tiled_diffusion and self.tiling:
            raise RequestError("Tiling wraps the picture's edges around, which Tiled Diffusion's tiles do not have: "
                               "turn one of them off.", "tiling")
        if self.tiled_diffusion and self.step_cache > 1:
            raise RequestError("The step cache keeps one UNet call's features for the next, which with Tiled "
                               "Diffusion is another tile's: turn one of them off.", "step_cache")
        if self.tiles is None or not self.tiles.upscaling:
            return
        refusals = ((self.loopback, "would upscale every loop's picture: upscale once, then loop"),
                    (self.sd_upscale, "and SD upscale both upscale the picture: turn one of them off"))
        refused = next((words for on, words in refusals if on), None)
        if refused:
            raise RequestError(f"Tiled Diffusion's upscaler {refused}.", "td_upscaler")

    @property
    def thresholding(self) -> DynamicThresholding | None:
        """Dynamic Thresholding's settings while it is on."""
        return DynamicThresholding(*(getattr(self, name) for name in DT_FIELDS[1:])) if self.dynamic_thresholding \
            else None

    @property
    def sag(self) -> SelfAttentionGuidance | None:
        """Self-Attention Guidance's settings while its scale is not 0."""
        return SelfAttentionGuidance(*(getattr(self, s.field) for s in SAG_SETTINGS)) if self.sag_scale else None

    @property
    def shrink(self) -> DeepShrink | None:
        """Deep Shrink's settings while it is on."""
        return DeepShrink(*(getattr(self, name) for name in DS_FIELDS[1:])) if self.deep_shrink else None

    @property
    def tiles(self) -> TiledDiffusion | None:
        """Tiled Diffusion's settings while it is on; txt2img has no picture for its upscaler (the extension shows
        it in img2img only)."""
        if not self.tiled_diffusion:
            return None
        tiles = TiledDiffusion(*(getattr(self, name) for name in TILED_FIELDS[1:]))
        return replace(tiles, upscaler=NO_UPSCALER) if self.task == "txt2img" else tiles

    def _check_scripts(self) -> None:
        """Loopback's and SD upscale's settings, checked whether or not they are on (a later switch must not
        fail), and what each needs when it is."""
        set_ = object.__setattr__
        final = finite_number(self.loopback_final_strength, "Final denoising strength", "loopback_final_strength")
        if not 0.0 <= final <= 1.0:
            raise RequestError(f"Final denoising strength must be between 0 and 1, got {final}.",
                               "loopback_final_strength")
        set_(self, "loopback_final_strength", final)
        if self.loopback_curve not in CURVES:
            raise RequestError(f"Unknown denoising strength curve {self.loopback_curve!r}. Choose one of: "
                               f"{', '.join(CURVES)}.", "loopback_curve")
        scale = finite_number(self.sd_upscale_scale, "SD upscale scale factor", "sd_upscale_scale")
        if not 1.0 <= scale <= MAX_SCALE:
            raise RequestError(f"SD upscale's scale factor must be between 1 and {MAX_SCALE:g}, got {scale}.",
                               "sd_upscale_scale")
        set_(self, "sd_upscale_scale", scale)
        set_(self, "sd_upscale_upscaler", str(self.sd_upscale_upscaler))
        for name in ("loopback", "sd_upscale"):
            set_(self, name, bool(getattr(self, name)))
        if self.loopback:
            self._check_loopback()
        if self.sd_upscale:
            self._check_sd_upscale()

    def _check_loopback(self) -> None:
        if self.task == "txt2img":
            raise RequestError("Loopback is an img2img script: use it in img2img or inpaint.", "loopback")
        if self.batch_size != 1:
            raise RequestError("Loopback makes one picture a loop: set the batch size to 1 (the batch count runs "
                               "that many chains).", "batch_size")
        if any(self.outpaint):
            raise RequestError("Loopback repaints the same canvas: outpaint first, then loop over the result.",
                               "outpaint")
        weakest = min(self.loopback_strengths)
        if int(self.steps * weakest) < 1:
            raise RequestError(f"Loopback's denoising strength falls to {weakest}, which runs no step of "
                               f"{self.steps}: raise the final denoising strength or the steps.",
                               "loopback_final_strength")

    def _check_sd_upscale(self) -> None:
        if self.task != "img2img":
            raise RequestError("SD upscale is an img2img script: use it in img2img, without a mask.", "sd_upscale")
        if self.active_controls:
            raise RequestError("SD upscale with ControlNet is not supported yet: turn the units off.", "sd_upscale")
        width, height = self.sd_upscale_size
        if any(side < length and self.sd_upscale_overlap >= side
               for side, length in ((self.width, width), (self.height, height))):
            raise RequestError(f"Tile overlap ({self.sd_upscale_overlap}) must be smaller than a tile (the width "
                               f"and height, {self.width}x{self.height}).", "sd_upscale_overlap")
        if width < self.width or height < self.height:
            raise RequestError(f"SD upscale makes a {width}x{height} picture, smaller than one tile ({self.width}x"
                               f"{self.height}, the width and height): raise the scale factor or lower the width "
                               "and height.", "sd_upscale_scale")
        if max(width, height) > MAX_SIDE:
            raise RequestError(f"The SD upscale size {width}x{height} is over {MAX_SIDE}.", "sd_upscale_scale")

    @property
    def loopback_strengths(self) -> list[float]:
        """Each loop's denoising strength."""
        return loopback_strengths(self.denoising_strength, self.loopback_final_strength, self.loopback_loops,
                                  self.loopback_curve)

    @property
    def sd_upscale_size(self) -> tuple[int, int]:
        """The size SD upscale cuts into tiles: the init picture's times the scale factor (its own without an
        upscaler)."""
        width, height = self.init_image.size
        if self.sd_upscale_upscaler == NO_UPSCALER:
            return width, height
        return round(width * self.sd_upscale_scale), round(height * self.sd_upscale_scale)

    def _check_seed_resize(self) -> None:
        sides = (self.seed_resize_from_w, self.seed_resize_from_h)
        if not any(sides):
            return
        if not all(sides) or any(side % 8 for side in sides):
            raise RequestError("Resize seed from takes a width and a height, both multiples of 8 (0 and 0: off); got "
                               "{}x{}.".format(*sides), "seed_resize_from_w")

    @property
    def noise_multiplier(self) -> float:
        """The scale of the noise added to an init picture: A1111 applies its setting to img2img and inpaint only."""
        return 1.0 if self.task == "txt2img" else self.initial_noise_multiplier

    @property
    def extra_noise(self) -> float:
        """A1111's extra noise for the passes that add noise to a picture (img2img, inpaint, hires fix's second);
        none for inpainting at full strength, which starts from noise alone."""
        return 0.0 if self.task == "inpaint" and self.denoising_strength == 1 else self.img2img_extra_noise

    @property
    def tiled_axes(self) -> str | None:
        """The axes whose edges wrap around (``tiling.tiled``), or None without tiling."""
        return self.tiling_axes if self.tiling else None

    @property
    def corrects_colours(self) -> bool:
        """Whether colour correction applies: A1111 applies its setting to img2img and inpaint only."""
        return self.color_correction and self.task != "txt2img"

    @property
    def seed_resize_from(self) -> tuple[int, int] | None:
        """(width, height) whose noise the picture starts from, centred, when that is not its own size."""
        size = (self.seed_resize_from_w, self.seed_resize_from_h)
        return size if all(size) and size != (self.width, self.height) else None

    def _check_outpaint(self) -> None:
        try:
            margins = tuple(whole_number(v, "Outpaint margin", "outpaint") for v in self.outpaint)
        except TypeError:
            raise RequestError("Outpaint takes four margins: left, right, up, down.", "outpaint") from None
        if len(margins) != 4 or any(m < 0 or m % 8 for m in margins):
            raise RequestError(f"Outpaint margins must be four multiples of 8 (left, right, up, down), got {margins}.",
                               "outpaint")
        if any(margins) and self.task != "inpaint":
            raise RequestError("Outpainting is an inpaint task.", "outpaint")
        object.__setattr__(self, "outpaint", margins)
        if max(self.output_size) > MAX_SIDE:
            raise RequestError(f"The outpainted size {self.output_size[0]}x{self.output_size[1]} is over {MAX_SIDE}.",
                               "outpaint")

    def _check_hires(self) -> None:
        set_ = object.__setattr__
        set_(self, "enable_hr", bool(self.enable_hr))
        scale = finite_number(self.hr_scale, "Hires upscale", "hr_scale")
        if not 1.0 <= scale <= 4.0:
            raise RequestError(f"Hires upscale must be between 1 and 4, got {scale}.", "hr_scale")
        set_(self, "hr_scale", scale)
        if self.hr_sampler_name:
            sampler, schedule = normalize(self.hr_sampler_name, self.hr_scheduler or "Automatic",
                                          ("hr_sampler_name", "hr_scheduler"))
            set_(self, "hr_sampler_name", sampler)
            set_(self, "hr_scheduler", schedule)
        if self.firstpass_image is not None and not self.enable_hr:
            raise RequestError("A first-pass image is hires fix's: turn hires fix on (enable_hr) to repaint it.",
                               "firstpass_image")
        if self.enable_hr:
            if self.task != "txt2img":
                raise RequestError("Hires fix is a txt2img feature.", "enable_hr")
            if max(self.hires_size) > MAX_SIDE:
                raise RequestError("The hires size {}x{} is over {}.".format(*self.hires_size, MAX_SIDE), "hr_scale")
            self.hires_pass()  # validates the second pass as a request of its own

    @property
    def hires_size(self) -> tuple[int, int]:
        def multiple_of_8(value: float) -> int:
            return max(64, int(round(value / 8)) * 8)

        x, y = self.hr_resize_x, self.hr_resize_y
        if x and y:
            return multiple_of_8(x), multiple_of_8(y)
        if x or y:
            ratio = x / self.width if x else y / self.height
        else:
            ratio = self.hr_scale
        return multiple_of_8(self.width * ratio), multiple_of_8(self.height * ratio)

    def hires_pass(self) -> "GenerationRequest":
        """The second pass of hires fix as a request of its own (the engine feeds it the upscaled first pass).

        As in A1111, explicit hires steps are the steps actually run, so the img2img pass is asked for
        steps / strength; otherwise it runs steps x strength like any img2img. Deep Shrink composes the first pass
        and is left out of the second, as Forge's later script leaves it."""
        width, height = self.hires_size
        steps = self.steps
        if self.hr_second_pass_steps:
            steps = min(150, math.ceil(self.hr_second_pass_steps / max(self.denoising_strength, 1e-6)))
        if int(steps * self.denoising_strength) < 1:
            raise RequestError(f"Denoising strength {self.denoising_strength} runs no hires step at all; raise it.",
                               "denoising_strength")
        return replace(self, enable_hr=False, firstpass_image=None, width=width, height=height, steps=steps,
                       sampler=self.hr_sampler_name or self.sampler, scheduler=self.hr_scheduler or self.scheduler,
                       prompt=self.hr_prompt or self.prompt,
                       negative_prompt=self.hr_negative_prompt or self.negative_prompt, deep_shrink=False)

    @property
    def output_size(self) -> tuple[int, int]:
        """Width and height of the images this request makes (larger than width x height when outpainting)."""
        left, right, up, down = self.outpaint
        return self.width + left + right, self.height + up + down

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "GenerationRequest":
        """Build from a mapping of field names, ignoring keys that are not fields (UI-only values)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    @property
    def active_controls(self) -> list[ControlUnit]:
        return [unit for unit in self.controlnets if unit.enabled]

    @property
    def image_count(self) -> int:
        """The pictures' own prompts count them (a combinatorial job's last batch may be short)."""
        return len(self.all_prompts) or self.batch_size * self.batch_count

    @property
    def templated(self) -> bool:
        """Dynamic Prompts reads the prompts: it is on and they are templates."""
        return self.dynamic_prompts and (is_template(self.prompt) or is_template(self.negative_prompt))

    @property
    def combinatorial(self) -> bool:
        """Dynamic Prompts makes every combination of the templates: the pictures are counted by them."""
        return self.templated and self.dp_combinatorial

    @property
    def pictures_per_batch(self) -> int:
        """The pictures of a batch that have prompts of their own: one Loopback chain's, one SD upscale picture's
        (its batch size counts tiles), else the batch size."""
        return 1 if self.loopback or self.sd_upscale else self.batch_size

    def prompted(self, start: int, seeds: list[int]) -> list[tuple["GenerationRequest", list[int]]]:
        """The pictures from the ``start``-th on, one per seed, in runs of one prompt (resolved templates differ
        from picture to picture): each run's request, with its prompts, and its seeds."""
        if not self.all_prompts:
            return [(self, list(seeds))]
        runs: list[tuple[tuple[str, str], list[int]]] = []
        for index, seed in enumerate(seeds, start):
            prompts = self.all_prompts[index], self.all_negative_prompts[index]
            if runs and runs[-1][0] == prompts:
                runs[-1][1].append(seed)
            else:
                runs.append((prompts, [seed]))
        return [(replace(self, prompt=prompt, negative_prompt=negative, all_prompts=(), all_negative_prompts=()),
                 seeds) for (prompt, negative), seeds in runs]

    def with_seed(self) -> "GenerationRequest":
        """The same request with -1 replaced by a concrete random seed (and variation seed, when one is used)."""
        seed = self.seed if self.seed >= 0 else random.randint(0, MAX_SEED)
        subseed = self.subseed if self.subseed >= 0 or not self.subseed_strength else random.randint(0, MAX_SEED)
        return self if (seed, subseed) == (self.seed, self.subseed) else replace(self, seed=seed, subseed=subseed)

    def subseed_for(self, seed: int) -> int:
        """The variation seed of the image made with ``seed``: it moves on with the seed (A1111: subseed + i)."""
        return (self.subseed + seed - self.seed) % (MAX_SEED + 1)

    def seeds(self) -> list[int]:
        """A1111's rule: image i of the whole job uses seed + i (Dynamic Prompts' *Fixed seed*: the seed)."""
        if self.dp_fixed_seed and self.all_prompts:
            return [self.seed] * self.image_count
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.image_count)]

    def infotext(self, seed: int, model_name: str, model_hash: str | None = None,
                 extra: Mapping[str, Any] | None = None, vae: tuple = (None, None)) -> str:
        """A1111's "parameters" text for the image made with ``seed``; ``extra`` holds keys the engine adds
        (A1111's extra_generation_params: ``Lora hashes``, ...), written before ``Version``; ``vae`` is the
        (name, short hash) of a VAE that replaced the model's own."""
        params = {
            "Steps": self.steps,
            "Sampler": self.sampler,
            "Schedule type": None if self.scheduler == "Automatic" else self.scheduler,
            "CFG scale": self.cfg_scale,
            "Seed": seed,
            "Size": "{}x{}".format(*self.output_size),
            "Model hash": model_hash,
            "Model": model_name,
            "VAE hash": vae[1],
            "VAE": vae[0],
            "Variation seed": self.subseed_for(seed) if self.subseed_strength else None,
            "Variation seed strength": self.subseed_strength or None,
            "Seed resize from": "{}x{}".format(*self.seed_resize_from) if self.seed_resize_from else None,
            "Denoising strength": self.denoising_strength if self.task != "txt2img" or self.enable_hr else None,
            "Noise multiplier": self.noise_multiplier if self.noise_multiplier != 1 else None,
            EXTRA_NOISE.key: (self.extra_noise or None) if self.task != "txt2img" or self.enable_hr else None,
            "Color correction": True if self.corrects_colours else None,
            "Clip skip": self.clip_skip if self.clip_skip > 1 else None,
            "RNG": "CPU",
            **sampler_infotext(self),
            "Step cache": self.step_cache if self.step_cache > 1 else None,
            "Tiling": True if self.tiled_axes == "both" else None,
            **({"Tile X": self.tiled_axes == "x", "Tile Y": self.tiled_axes == "y"}  # the Asymmetric tiling extension's
               if self.tiled_axes in ("x", "y") else {}),
            RESCALE.key: self.rescale_cfg or None,
            PAG.key: self.pag_scale or None,
            **{setting.key: getattr(self, setting.field) if self.pag_scale else None for setting in PAG_SCHEDULE
               if getattr(self, setting.field) != setting.default},
            **{setting.key: getattr(self, setting.field) if self.sag_scale else None for setting in SAG_SETTINGS},
            FREEU: True if self.freeu else None,
            **{setting.key: getattr(self, setting.field) if self.freeu else None for setting in FREEU_SETTINGS},
            **(self.thresholding.infotext() if self.thresholding else {}),
            **(self.shrink.infotext() if self.shrink else {}),
            **self._regional_params(),
            **(self._inpaint_params() if self.task == "inpaint" else {}),
            **(self._hires_params() if self.enable_hr else {}),
            "Final denoising strength": self.loopback_final_strength if self.loopback else None,  # A1111's keys
            "Denoising curve": self.loopback_curve if self.loopback else None,
            "SD upscale overlap": self.sd_upscale_overlap if self.sd_upscale else None,
            "SD upscale upscaler": self.sd_upscale_upscaler if self.sd_upscale else None,
            **(dict(zip(TILED_UPSCALE_KEYS, (self.td_upscaler, self.td_scale_factor)))
               if self.tiles is not None and self.tiles.upscaling else {}),
            **(extra or {}),
            "Version": VERSION,
        }
        return infotext_format.format_infotext(self.prompt, self.negative_prompt, params)

    def _regional_params(self) -> dict:
        """The extension's keys, when it acts on the prompt (it writes none for a prompt without its keywords)."""
        if not (self.regional_prompter and has_regions(self.prompt)):
            return {}
        return {"RP Active": True, "RP Divide mode": DIVIDE_MODE, "RP Matrix submode": self.rp_splitting,
                "RP Calc Mode": CALC_MODE, "RP Ratios": self.rp_ratios, "RP Base Ratios": self.rp_base_ratios,
                "RP Use Base": self.rp_use_base, "RP Use Common": self.rp_use_common}

    def _inpaint_params(self) -> dict:
        return {
            "Mask blur": self.mask_blur,
            "Inpaint area": "Only masked" if self.inpaint_full_res else None,
            "Masked area padding": self.inpaint_full_res_padding if self.inpaint_full_res else None,
            "Mask mode": "Inpaint not masked" if self.inpainting_mask_invert else None,
            "Masked content": MASKED_CONTENT[self.inpainting_fill],
            "Outpaint": self._outpaint_history() if any(self.outpaint) else None,
            SOFT_INPAINTING: True if self.soft_inpainting else None,
            **{setting.key: getattr(self, setting.field) if self.soft_inpainting else None
               for setting in SOFT_SETTINGS},
        }

    def _hires_params(self) -> dict:
        resized = bool(self.hr_resize_x or self.hr_resize_y)
        return {
            "Hires upscale": None if resized else self.hr_scale,
            "Hires resize": "{}x{}".format(*self.hires_size) if resized else None,
            "Hires steps": self.hr_second_pass_steps or None,
            "Hires upscaler": self.hr_upscaler,
            "Hires sampler": self.hr_sampler_name or None,
            "Hires schedule type": self.hr_scheduler if self.hr_sampler_name else None,
            "Hires prompt": self.hr_prompt or None,
            "Hires negative prompt": self.hr_negative_prompt or None,
        }

    def _outpaint_history(self) -> str:
        """This extension after those recorded in the init image's own infotext, so a chain stays readable."""
        step = "L{} R{} U{} D{}".format(*self.outpaint)
        earlier = getattr(self.init_image, "info", {}).get("parameters")
        previous = infotext_format.parse_infotext(earlier)[2].get("Outpaint") if earlier else None
        return f"{previous}; {step}" if previous else step

    @classmethod
    def from_infotext(cls, text: str, **overrides: Any) -> "GenerationRequest":
        """Read A1111 (or our) infotext back into a request; missing keys keep A1111's defaults."""
        prompt, negative, params = infotext_format.parse_infotext(text)
        with_foreign_keys(params)
        values: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative}
        for key, name in (("Steps", "steps"), ("CFG scale", "cfg_scale"), ("Seed", "seed"),
                          ("Clip skip", "clip_skip"), ("Model", "model"), ("Denoising strength", "denoising_strength"),
                          ("Step cache", "step_cache"), ("Variation seed", "subseed"),
                          ("Variation seed strength", "subseed_strength"), ("Refiner", "refiner_checkpoint"),
                          ("Refiner switch at", "refiner_switch_at"), ("Noise multiplier", "initial_noise_multiplier"),
                          *((SAMPLER_KEYS[name], name) for name in (NOISE_SCHEDULE, *UNI_PC, ENSD))):
            if key in params:
                values[name] = params[key] == "True" if name == "uni_pc_lower_order_final" else params[key]
        if "Sampler" in params:
            values["sampler"] = params["Sampler"]
            values["scheduler"] = params.get("Schedule type", "Automatic")
        for key, name in (("Hires upscale", "hr_scale"), ("Hires steps", "hr_second_pass_steps"),
                          ("Hires upscaler", "hr_upscaler"), ("Hires sampler", "hr_sampler_name"),
                          ("Hires schedule type", "hr_scheduler"), ("Hires prompt", "hr_prompt"),
                          ("Hires negative prompt", "hr_negative_prompt"), ("Hires checkpoint", "hr_checkpoint_name")):
            if key in params:
                values[name] = params[key]
                values["enable_hr"] = True
        if "Hires resize" in params:
            values["hr_resize_x"], values["hr_resize_y"] = _size(params["Hires resize"], "hr_resize_x")
            values["enable_hr"] = True
        if "Size" in params:
            values["width"], values["height"] = _size(params["Size"], "width")
        if "Seed resize from" in params:
            values["seed_resize_from_w"], values["seed_resize_from_h"] = _size(params["Seed resize from"],
                                                                               "seed_resize_from_w")
        values["tiling"] = params.get("Tiling") == "True"
        axes = axes_of(params.get("Tile X") == "True", params.get("Tile Y") == "True")
        if axes:
            values.update(tiling=True, tiling_axes=axes)
        values["color_correction"] = params.get("Color correction") == "True"
        values["soft_inpainting"] = params.get(SOFT_INPAINTING) == "True"
        values["freeu"] = params.get(FREEU) == "True"
        values[NGMS_ALL] = params.get(NGMS_ALL_KEY) == "True"
        values.update(regional_values(params))
        values.update(tiled_values(params))
        values.update(thresholding_values(params))
        values.update(shrink_values(params))
        values.update({setting.field: params[setting.key]
                       for setting in (*SOFT_SETTINGS, *FREEU_SETTINGS, RESCALE, *PAG_SETTINGS, *SAG_SETTINGS, NGMS,
                                       SKIP_EARLY, EXTRA_NOISE, *SAMPLER_SETTINGS)
                       if setting.key in params})
        values.update(overrides)
        return cls.from_values(values)


def with_foreign_keys(params: dict[str, str]) -> dict[str, str]:
    """``params`` (parsed infotext) with Easel's keys added for those Forge's PAG, SAG and FreeU scripts wrote."""
    for foreign in (PAG_FORGE_KEYS, SAG_FORGE_KEYS, FREEU_FORGE_KEYS):
        params.update(foreign.read(params))
    return params


# Regional Prompter's infotext keys -> request fields (A1111 pastes them into the extension's panel).
RP_KEYS = (("RP Matrix submode", "rp_splitting"), ("RP Ratios", "rp_ratios"),
           ("RP Base Ratios", "rp_base_ratios"), ("RP Use Base", "rp_use_base"), ("RP Use Common", "rp_use_common"))


def regional_values(params: Mapping[str, str]) -> dict[str, Any]:
    """The request fields of an infotext's Regional Prompter keys (its Matrix mode's; the others are not built).
    Its *Generation mode* is not read: Latent is the only one here."""
    if params.get("RP Active") != "True" or params.get("RP Divide mode", DIVIDE_MODE) != DIVIDE_MODE:
        return {}
    values: dict[str, Any] = {"regional_prompter": True}
    for key, name in RP_KEYS:
        if key in params:
            values[name] = params[key] == "True" if name.startswith("rp_use") else params[key]
    return values
