"""A1111's ``/sdapi/v1`` payloads and responses, and their mapping onto ``GenerationRequest``.

Field names, types and defaults are A1111's (``modules/api/models.py``), so the OpenAPI schema and existing
clients agree with sd-webui; unknown fields are ignored, as A1111 does. Pydantic only checks types here: value
checks (ranges, multiples of 8, sampler names, model names) are ``GenerationRequest``'s, shared with the UI,
and ``field_of`` names the A1111 field a ``RequestError`` is about. Fields of features this server does not
have (scripts other than A1111's prompt list, prompt matrix, X/Y/Z plot, Loopback and SD upscale, face restoration, a
separate latent mask, ...) are refused with a clear message when they ask for something, never silently ignored.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.cfg_rescale import RESCALE
from pipelines.deep_shrink import DEFAULTS as DS_DEFAULTS, FIELDS as DS_FIELDS, from_infotext as shrink_infotext
from pipelines.dynamic_thresholding import (DEFAULTS as DT_DEFAULTS, FIELDS as DT_FIELDS,
                                            from_infotext as thresholding_infotext)
from pipelines.errors import RequestError
from pipelines.extras import ExtrasRequest
from pipelines.freeu import ENABLED as FREEU, SETTINGS as FREEU_SETTINGS, VERSION as FREEU_VERSION
from pipelines.infotext import parse_infotext
from pipelines.job_plan import Plan, plan
from pipelines.negative_guidance import NGMS, NGMS_ALL, NGMS_ALL_KEY, SKIP_EARLY
from pipelines.pag import PAG, PAG_SCHEDULE, PAG_SETTINGS
from pipelines.regions import DIVIDE_MODE
from pipelines.request import (DYNAMIC_FIELDS, REGIONAL_FIELDS, VERSION, GenerationRequest, number_between,
                               regional_values, with_foreign_keys)
from pipelines.sampler_parameters import (CHURN, ENSD, ETA_ANCESTRAL, ETA_DDIM, KEYS as SAMPLER_KEYS, NOISE_SCHEDULE,
                                         RHO, SETTINGS as SAMPLER_SETTINGS, SIGMA_MAX, SIGMA_MIN, UNI_PC)
from pipelines.sag import SAG, SAG_SETTINGS
from pipelines.samplers import normalize
from pipelines.soft_inpainting import ENABLED as SOFT_INPAINTING, SETTINGS as SOFT_SETTINGS
from pipelines.tiled_diffusion import (FIELDS as TILED_FIELDS, METHODS as TILED_METHODS, NUMBERS as TILED_NUMBERS,
                                       SCALE_FACTOR as TILED_SCALE_FACTOR, from_infotext as tiled_values)
from pipelines.tiling import axes_of
from pipelines.upscalers import NONE as NO_UPSCALER
from pipelines.variation import EXTRA_NOISE

from .encoding import PayloadError, decode_image
from .xyz_script import XYZ_SCRIPT, plot_values


class Txt2ImgPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str = "Euler"
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = 0.75
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    force_task_id: str | None = None
    script_name: str | None = None
    script_args: list = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None
    mix: list[dict[str, Any]] | None = Field(None, description=(
        "Easel: Kandinsky 2.2 image mixing, a list of {\"prompt\": text} or {\"image\": base64} items, each with "
        "a \"weight\"; the prior blends their image embeddings and the decoder paints the blend"))


class Img2ImgPayload(Txt2ImgPayload):
    init_images: list[str] | None = None
    resize_mode: int = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False


class ImageResponse(BaseModel):
    images: list[str] | None = Field(None, description="base64 PNGs, each with its infotext")
    parameters: dict[str, Any]
    info: str = Field(description="JSON: infotexts, all_seeds, seed, sd_model_name, ...")


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: dict[str, Any]
    current_image: str | None = None
    textinfo: str | None = None


class ExtrasPayload(BaseModel):
    """A1111's ``ExtrasBaseRequest``: the Extras tab's upscale settings."""
    model_config = ConfigDict(extra="ignore")

    resize_mode: int = 0
    show_extras_results: bool = True
    gfpgan_visibility: float = 0.0
    codeformer_visibility: float = 0.0
    codeformer_weight: float = 0.0
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = "None"
    upscaler_2: str = "None"
    extras_upscaler_2_visibility: float = 0.0
    upscale_first: bool = False


class ExtrasSingleImagePayload(ExtrasPayload):
    image: str = ""


class ExtrasBatchImagesPayload(ExtrasPayload):
    imageList: list[dict[str, Any]] = Field(default_factory=list)  # [{"data": base64, "name": file name}]


class ExtrasSingleImageResponse(BaseModel):
    html_info: str
    image: str


class ExtrasBatchImagesResponse(BaseModel):
    html_info: str
    images: list[str]


def extras_requests(payload: ExtrasPayload, images: list) -> list[ExtrasRequest]:
    """One ``ExtrasRequest`` per decoded picture; face restoration is refused (Easel has none)."""
    for field in ("gfpgan_visibility", "codeformer_visibility"):
        if getattr(payload, field):
            raise PayloadError(field, "Face restoration is not available on this server.")
    settings = payload.model_dump(include={"resize_mode", "upscaling_resize", "upscaling_resize_w",
                                           "upscaling_resize_h", "upscaling_crop", "upscaler_1", "upscaler_2",
                                           "extras_upscaler_2_visibility"})
    return [ExtrasRequest(image=image, **settings) for image in images]


class PNGInfoPayload(BaseModel):
    image: str = ""


class PNGInfoResponse(BaseModel):
    info: str
    items: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)


SOFT_INPAINTING_SCRIPT = "soft inpainting"  # A1111's always-on script, in img2img
SOFT_INPAINTING_FIELD = f"alwayson_scripts.{SOFT_INPAINTING_SCRIPT}.args"
FREEU_SCRIPT, RESCALE_SCRIPT = "freeu", "rescalecfg"  # Easel's FreeU; Forge Neo's RescaleCFG
FORGE_FREEU_SCRIPT = "freeu integrated"  # Forge's FreeU: version 2
PAG_SCRIPT = "perturbedattentionguidance integrated"  # Forge's
PAG_FIELD = f"alwayson_scripts.{PAG_SCRIPT}.args"
SAG_SCRIPT = "selfattentionguidance integrated"  # Forge's, under its first title and its later one
FORGE_SAG_SCRIPTS = (SAG_SCRIPT, f"{SAG_SCRIPT} (sd 1.x, sd 2.x, sdxl)")
A1111_SAG_SCRIPT = "self attention guidance"  # the A1111 extension's (sd-webui-sag)
REGIONAL_SCRIPT = "regional prompter"  # hako-mikan's extension, its script title in any case
REGIONAL_FIELD = f"alwayson_scripts.{REGIONAL_SCRIPT}.args"
DYNAMIC_SCRIPT = "dynamic prompts"  # adieyal's extension; its title has its version after it (Dynamic Prompts v2.17.1)
DYNAMIC_FIELD = f"alwayson_scripts.{DYNAMIC_SCRIPT}.args"
TILED_SCRIPT = "tiled diffusion"  # the multidiffusion-upscaler extension's
TILED_SCRIPT_FIELD = f"alwayson_scripts.{TILED_SCRIPT}.args"
DT_SCRIPT = "dynamic thresholding (cfg scale fix)"  # mcmonkey's extension
DT_FIELD = f"alwayson_scripts.{DT_SCRIPT}.args"
DEEP_SHRINK_SCRIPT = "kohya hrfix integrated"  # Forge's, under its first title and its later one
DEEP_SHRINK_SCRIPTS = (DEEP_SHRINK_SCRIPT, f"{DEEP_SHRINK_SCRIPT} (sd1.x, sd2.x, sdxl)")
ALWAYS_ON = ("controlnet", SOFT_INPAINTING_SCRIPT, REGIONAL_SCRIPT, DYNAMIC_SCRIPT, FREEU_SCRIPT, FORGE_FREEU_SCRIPT,
             RESCALE_SCRIPT, PAG_SCRIPT, *FORGE_SAG_SCRIPTS, A1111_SAG_SCRIPT, TILED_SCRIPT, DT_SCRIPT,
             *DEEP_SHRINK_SCRIPTS)
# Request fields whose A1111 payload name differs; a PayloadError already names the A1111 field.
_A1111_FIELDS = {
    "batch_count": "n_iter", "sampler": "sampler_name", "init_image": "init_images",
    "clip_skip": "override_settings.CLIP_stop_at_last_layers", "model": "override_settings.sd_model_checkpoint",
    "controlnets": "alwayson_scripts.controlnet.args", "step_cache": "override_settings.step_cache",
    "prompt_lines": "script_args", "prompt_matrix": "script_args", "matrix_margin": "script_args",
    "loopback": "script_name", "loopback_loops": "script_args", "loopback_final_strength": "script_args",
    "loopback_curve": "script_args", "sd_upscale": "script_name", "sd_upscale_overlap": "script_args",
    "sd_upscale_upscaler": "script_args", "sd_upscale_scale": "script_args", "xyz": "script_args",
    "xyz_margin": "script_args", "tiling_axes": "script_args",
    **{name: f"override_settings.{name}" for name in (ETA_DDIM.field, ETA_ANCESTRAL.field, SIGMA_MIN.field,
                                                        SIGMA_MAX.field, RHO.field, NGMS_ALL, SKIP_EARLY.field,
                                                        EXTRA_NOISE.field)},
    NOISE_SCHEDULE: "override_settings.sd_noise_schedule",
    **{name: f"override_settings.{name}" for name in (*UNI_PC, ENSD)},
    **{name: SOFT_INPAINTING_FIELD for name in ("soft_inpainting", *(setting.field for setting in SOFT_SETTINGS))},
    **{name: f"alwayson_scripts.{FREEU_SCRIPT}.args" for name in ("freeu", *(s.field for s in FREEU_SETTINGS))},
    RESCALE.field: f"alwayson_scripts.{RESCALE_SCRIPT}.args",
    **{setting.field: PAG_FIELD for setting in PAG_SETTINGS},
    **{setting.field: f"alwayson_scripts.{SAG_SCRIPT}.args" for setting in SAG_SETTINGS},
    **{name: REGIONAL_FIELD for name in REGIONAL_FIELDS},
    **{name: DYNAMIC_FIELD for name in DYNAMIC_FIELDS},
    **{name: TILED_SCRIPT_FIELD for name in TILED_FIELDS},
    **{name: DT_FIELD for name in DT_FIELDS},
    **{name: f"alwayson_scripts.{DEEP_SHRINK_SCRIPT}.args" for name in DS_FIELDS},
}


def field_of(error: RequestError) -> str | None:
    """The A1111 field a ``RequestError`` is about."""
    return _A1111_FIELDS.get(error.field, error.field)


def _refuse_unimplemented(payload: Txt2ImgPayload) -> None:
    def refuse(field: str, message: str):
        raise PayloadError(field, message)

    for name in payload.alwayson_scripts:
        if _script(name) not in ALWAYS_ON:
            refuse(f"alwayson_scripts.{name}", f"Always-on script {name!r} is not available on this server.")
    if payload.script_name and payload.script_name.lower() not in SCRIPTS:
        refuse("script_name", f"Script {payload.script_name!r} not found; this server has "
                              f"{', '.join(map(repr, SCRIPTS))}.")
    if payload.restore_faces:
        refuse("restore_faces", "Face restoration is not available on this server.")
    if isinstance(payload, Img2ImgPayload):
        if payload.latent_mask:
            refuse("latent_mask", "A separate latent mask is not implemented.")
        if payload.mask_blur is None and payload.mask_blur_x != payload.mask_blur_y:
            refuse("mask_blur_x", "Different horizontal and vertical mask blur is not supported; set mask_blur.")


def mix_items(payload: Txt2ImgPayload) -> list:
    """Easel's ``mix`` with its pictures decoded; the request checks the rest."""
    return [{**item, "image": decode_image(item["image"], f"mix[{index}].image")}
            if isinstance(item, dict) and isinstance(item.get("image"), str) else item
            for index, item in enumerate(payload.mix or [])]


def _script(title: str) -> str:
    """An always-on script's name in ``ALWAYS_ON``: its title in any case, without a version at its end."""
    return re.sub(r"\s+v\d+(\.\d+)*$", "", title.strip().lower())


def _always_on_args(payload: Txt2ImgPayload, name: str) -> Any:
    """An always-on script's ``args`` (``alwayson_scripts``' keys as ``_script`` reads them; ``{"args": [...]}`` or
    the list)."""
    script = next((value for key, value in payload.alwayson_scripts.items() if _script(key) == name), None)
    return script.get("args", []) if isinstance(script, dict) else script or []


class SettingScript(NamedTuple):
    """An always-on script whose args are [enabled, *its settings' values] (without a ``switch``: the values)."""
    name: str  # as ``_script`` reads its title
    switch: str | None  # the request field that turns it on
    key: str  # the infotext key that says it was on
    settings: tuple


SOFT_INPAINTING_ARGS = SettingScript(SOFT_INPAINTING_SCRIPT, "soft_inpainting", SOFT_INPAINTING, SOFT_SETTINGS)
FREEU_ARGS = SettingScript(FREEU_SCRIPT, "freeu", FREEU, FREEU_SETTINGS)
FORGE_FREEU_ARGS = SettingScript(FORGE_FREEU_SCRIPT, "freeu", FREEU, FREEU_SETTINGS[:-1])  # without the version
RESCALE_ARGS = SettingScript(RESCALE_SCRIPT, None, RESCALE.key, (RESCALE,))


def setting_values(payload: Txt2ImgPayload, script: SettingScript) -> dict[str, Any]:
    """``alwayson_scripts[script].args`` as request fields; the later values may be left out. Soft inpainting
    (A1111's, img2img): [enabled, schedule bias, preservation strength, transition contrast boost, mask influence,
    difference threshold, difference contrast]; FreeU: [enabled, b1, b2, s1, s2, start, end, version] (Forge's order,
    then Easel's version); RescaleCFG (Forge Neo's): [factor]."""
    args = _always_on_args(payload, script.name)
    names = [*([script.switch] if script.switch else []), *(setting.field for setting in script.settings)]
    if not isinstance(args, list) or len(args) > len(names):
        labels = [*(["enabled"] if script.switch else []), *(setting.label.lower() for setting in script.settings)]
        raise PayloadError(f"alwayson_scripts.{script.name}.args", f"{script.name} takes [{', '.join(labels)}].")
    values = dict(zip(names, args))
    if script.switch:
        values[script.switch] = bool(values.get(script.switch))
    return values


def freeu_values(payload: Txt2ImgPayload) -> dict[str, Any]:
    """Easel's ``alwayson_scripts.FreeU.args``, or Forge's ``["FreeU Integrated"]``'s (``setting_values``): the same
    args without the version, as Forge's FreeU is version 2."""
    forge = setting_values(payload, FORGE_FREEU_ARGS)
    return {**forge, FREEU_VERSION.field: 2} if forge["freeu"] else setting_values(payload, FREEU_ARGS)


def _infotext_args(params: dict[str, str], script: SettingScript) -> list | None:
    """The script's args an infotext's keys give (A1111 fills a script's arguments from the infotext too)."""
    on = params.get(script.key) == "True" if script.switch else script.key in params
    if not on:
        return None
    return [*([True] if script.switch else []), *(params.get(setting.key, setting.default)
                                                  for setting in script.settings)]


class ScaleScript(NamedTuple):
    """An always-on script whose args are [enabled, *values] for ``settings`` whose first is a scale that 0 turns off
    here (PAG's, SAG's); ``defaults`` are the script's values of those left out."""
    name: str  # as ``_script`` reads its title
    title: str
    settings: tuple
    labels: str  # its args, after enabled
    defaults: tuple


PAG_ARGS = ScaleScript(PAG_SCRIPT, "PerturbedAttentionGuidance", PAG_SETTINGS,
                       "scale, attenuation, start step, end step",
                       (3.0, *(setting.default for setting in PAG_SCHEDULE)))  # Forge's scale, then none of the rest
SAG_ARGS = (*(ScaleScript(name, "SelfAttentionGuidance", SAG_SETTINGS, "scale, blur sigma, blur mask threshold",
                          (0.5, 2.0, 1.0)) for name in FORGE_SAG_SCRIPTS),  # Forge's (ComfyUI's) defaults
            ScaleScript(A1111_SAG_SCRIPT, "Self Attention Guidance", (SAG, SAG_SETTINGS[2]), "scale, mask threshold",
                        (0.75, 1.0)))  # the A1111 extension's: its blur sigma is 1


def scale_values(payload: Txt2ImgPayload, scripts: tuple[ScaleScript, ...]) -> dict[str, Any]:
    """The request fields of the first of ``scripts`` the payload enables (the later args may be left out); Forge's
    PerturbedAttentionGuidance [enabled, scale, attenuation, start step, end step], its SelfAttentionGuidance
    [enabled, scale, blur sigma, blur mask threshold], the A1111 extension's [enabled, scale, mask threshold]."""
    for script in scripts:
        args = _always_on_args(payload, script.name)
        if not isinstance(args, list) or len(args) > len(script.settings) + 1:
            raise PayloadError(f"alwayson_scripts.{script.name}.args",
                               f"{script.title} takes [enabled, {script.labels}].")
        enabled, *values = [*args, *(None, *script.defaults)[len(args):]]
        if enabled:
            return dict(zip((setting.field for setting in script.settings), values))
    return {}


def regional_prompter_values(payload: Txt2ImgPayload) -> dict[str, Any]:
    """The extension's ``alwayson_scripts["Regional Prompter"].args``, in its order: [active, debug, mode, matrix
    submode, mask submode, prompt submode, ratios, base ratios, use base, use common, use common negative,
    generation mode, options, ...] (the later ones, its LoRA and mask settings, are not read; its flip of ``,`` and
    ``;``, the 20th, is). Its Matrix mode runs, in Latent mode whatever the generation mode says."""
    args = _always_on_args(payload, REGIONAL_SCRIPT)
    if not isinstance(args, list):
        raise PayloadError(REGIONAL_FIELD, "Regional Prompter takes a list of arguments, the extension's order.")
    if not (args and args[0]):
        return {}
    args = [*args, *[None] * (20 - len(args))]
    if (args[2] or DIVIDE_MODE) != DIVIDE_MODE:
        raise PayloadError(REGIONAL_FIELD, f"Regional Prompter's {args[2]} mode is not available on this server; "
                                           f"its {DIVIDE_MODE} mode is.")
    if args[10] or args[12]:
        raise PayloadError(REGIONAL_FIELD, "Regional Prompter's common negative prompt and options are not available "
                                           "on this server: one negative prompt guides the whole picture.")
    ratios = str(args[6] if args[6] is not None else "1,1")
    if args[19]:
        ratios = ratios.translate(str.maketrans(",;", ";,"))
    given = {"RP Active": "True", "RP Matrix submode": args[3] or "Columns", "RP Ratios": ratios,
             "RP Base Ratios": str(args[7] if args[7] is not None else "0.2"),
             "RP Use Base": str(bool(args[8])), "RP Use Common": str(bool(args[9]))}
    return regional_values(given)


# The Dynamic Prompts extension's arguments this server does not offer, by their place in its list.
_DYNAMIC_REFUSED = ((3, "Magic prompt"), (4, "I'm feeling lucky"), (5, "Attention grabber"), (13, "Jinja2 templates"),
                    (14, "Don't generate images"))


def dynamic_prompts_values(payload: Txt2ImgPayload) -> dict[str, Any]:
    """The extension's ``alwayson_scripts["Dynamic Prompts v2.17.1"].args`` (any version), in its order: [enabled,
    combinatorial, combinatorial batches, magic prompt, I'm feeling lucky, attention grabber, min and max attention,
    magic prompt length and creativity, fixed seed, unlink seed from prompt, don't apply to negative prompts (a prompt
    magic setting), Jinja2 templates, don't generate images, max generations, ...], as request fields. Left out: the
    extension's defaults (on), as A1111 runs an always-on script."""
    args = _always_on_args(payload, DYNAMIC_SCRIPT)
    if not isinstance(args, list):
        raise PayloadError(DYNAMIC_FIELD, "Dynamic Prompts takes a list of arguments, the extension's order.")
    if not args:
        return {}
    args = [*args, *[None] * (16 - len(args))]
    if not args[0]:
        return {"dynamic_prompts": False}
    refused = [name for index, name in _DYNAMIC_REFUSED if args[index]]
    if refused:
        raise PayloadError(DYNAMIC_FIELD, f"Dynamic Prompts' {refused[0]} is not available on this server; its "
                                          "templates, wildcards and combinatorial generation are.")
    return {"dynamic_prompts": True, "dp_combinatorial": bool(args[1]),
            "dp_combinatorial_batches": 1 if args[2] is None else args[2], "dp_fixed_seed": bool(args[10]),
            "dp_unlink_seed": bool(args[11]), "dp_max_generations": args[15] or 0}


# The extension's args up to its region control's switch: [enabled, method, overwrite size, keep input size, image
# width, image height, tile width, tile height, overlap, tile batch size, upscaler, scale factor, noise inversion,
# its steps, retouch, renoise strength and kernel, ControlNet tensors on the CPU, region control] and its defaults
_TILED_DEFAULTS = (False, TILED_METHODS[0], False, True, 1024, 1024, *(number.default for number in TILED_NUMBERS),
                   NO_UPSCALER, TILED_SCALE_FACTOR.default, False, 10, 1.0, 1.0, 64, False, False)


class ListScript(NamedTuple):
    """An always-on script whose args are request ``fields`` in order, the first one turning it on (the later ones
    may be left out)."""
    name: str  # as ``_script`` reads its title
    title: str
    fields: tuple[str, ...]
    labels: str  # its args


DT_ARGS = ListScript(DT_SCRIPT, "Dynamic Thresholding", DT_FIELDS,
                     "enabled, mimic scale, threshold percentile, mimic mode, mimic minimum, CFG mode, CFG minimum, "
                     "scheduler value, separate feature channels, scaling startpoint, variability measure, "
                     "interpolate phi")
_DS_LABELS = ("enabled, block number, downscale factor, start percent, end percent, downscale after skip, downscale "
              "method, upscale method")
DEEP_SHRINK_ARGS = (ListScript(DEEP_SHRINK_SCRIPTS[0], "Kohya HRFix Integrated", DS_FIELDS[:-1], _DS_LABELS),
                    ListScript(DEEP_SHRINK_SCRIPTS[1], "Kohya HRFix Integrated", DS_FIELDS,  # the later one's
                               f"{_DS_LABELS}, second phase"))


def list_values(payload: Txt2ImgPayload, scripts: tuple[ListScript, ...]) -> dict[str, Any]:
    """The request fields of the first of ``scripts`` the payload enables: mcmonkey's Dynamic Thresholding, Forge's
    Kohya HRFix (Deep Shrink) under either title."""
    for script in scripts:
        args = _always_on_args(payload, script.name)
        if not isinstance(args, list) or len(args) > len(script.fields):
            raise PayloadError(f"alwayson_scripts.{script.name}.args", f"{script.title} takes [{script.labels}].")
        values = dict(zip(script.fields, args))
        if values.get(script.fields[0]):
            return values
    return {}


def tiled_diffusion_values(payload: Txt2ImgPayload, init_image=None) -> dict[str, Any]:
    """The extension's ``alwayson_scripts["Tiled Diffusion"].args`` as request fields: its switch, method, tiles
    and upscaler (img2img's; by name); *Overwrite image size* (txt2img) sets the size, *Keep input image size*
    (img2img, on by default) the init picture's (to whole latent pixels), which the upscaler then starts from. Its
    noise inversion and region control are refused; moving ControlNet's tensors to the CPU is a memory hint, passed
    over."""
    args = _always_on_args(payload, TILED_SCRIPT)
    if not isinstance(args, list):
        raise PayloadError(TILED_SCRIPT_FIELD, "Tiled Diffusion takes a list of arguments, the extension's order.")
    args = [*args[:len(_TILED_DEFAULTS)], *_TILED_DEFAULTS[len(args):]]
    if not args[0]:
        return {}
    refusals = ((args[12], "noise inversion"), (args[18], "region prompt control"))
    refused = next((words for on, words in refusals if on), None)
    if refused:
        raise PayloadError(TILED_SCRIPT_FIELD, f"Tiled Diffusion's {refused} is not available on this server; its "
                                               "MultiDiffusion and Mixture of Diffusers tiles are.")
    values = dict(zip(TILED_FIELDS, (True, args[1], *args[6:10], args[10] or NO_UPSCALER, args[11], bool(args[3]))))
    if init_image is not None and args[3]:
        values["width"], values["height"] = (max(8, round(side / 8) * 8) for side in init_image.size)
    elif init_image is None and args[2]:
        values["width"], values["height"] = args[4], args[5]
    return values


def control_units(payload: Txt2ImgPayload) -> list[dict[str, Any]]:
    """The ControlNet extension's ``alwayson_scripts.controlnet.args`` as unit dicts with decoded pictures
    (``image`` may be base64 or ``{"image": base64, "mask": ...}``; ``input_image`` is its older name; the
    ``effective_region_mask`` base64)."""
    field = "alwayson_scripts.controlnet.args"
    units = _always_on_args(payload, "controlnet")
    if not isinstance(units, list) or not all(isinstance(unit, dict) for unit in units):
        raise PayloadError(field, 'Expected {"args": [unit, ...]} with each unit a JSON object.')
    decoded = []
    for index, unit in enumerate(units):
        if unit.get("enabled", True) is False:
            continue  # clients send every unit of their UI; the disabled ones are not looked at
        unit = dict(unit)
        picture = unit.pop("image", None) or unit.pop("input_image", None)
        if isinstance(picture, dict):
            picture = picture.get("image")
        unit["image"] = decode_image(picture, f"{field}[{index}].image") if picture else None
        region = unit.get("effective_region_mask")
        unit["effective_region_mask"] = (decode_image(region, f"{field}[{index}].effective_region_mask") if region
                                         else None)
        decoded.append(unit)
    return decoded


# Infotext keys -> payload fields, for A1111's ``infotext`` field (it fills what the payload leaves unset).
_INFOTEXT_FIELDS = (("Steps", "steps"), ("Sampler", "sampler_name"), ("Schedule type", "scheduler"),
                    ("CFG scale", "cfg_scale"), ("Seed", "seed"), ("Denoising strength", "denoising_strength"),
                    ("Tiling", "tiling"), ("Variation seed", "subseed"),
                    ("Variation seed strength", "subseed_strength"), ("Refiner", "refiner_checkpoint"),
                    ("Refiner switch at", "refiner_switch_at"), ("Noise multiplier", "initial_noise_multiplier"),
                    (NGMS.key, NGMS.field))


def apply_infotext(payload: Txt2ImgPayload) -> Txt2ImgPayload:
    """The payload with the fields it did not set taken from its ``infotext``, as A1111 1.9+ does."""
    if not payload.infotext:
        return payload
    prompt, negative, params = parse_infotext(payload.infotext)
    with_foreign_keys(params)
    values: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative}
    values.update({field: params[key] for key, field in _INFOTEXT_FIELDS if key in params})
    for key, (width, height) in (("Size", ("width", "height")),
                                 ("Seed resize from", ("seed_resize_from_w", "seed_resize_from_h"))):
        if key in params:
            values[width], _, values[height] = params[key].lower().partition("x")
    given = payload.model_fields_set
    update = {key: value for key, value in values.items() if key not in given}
    override = dict(payload.override_settings or {})
    for key, option in (("Model", "sd_model_checkpoint"), ("Clip skip", "CLIP_stop_at_last_layers"),
                        ("Step cache", "step_cache"), (SAMPLER_KEYS[NOISE_SCHEDULE], "sd_noise_schedule"),
                        (NGMS_ALL_KEY, NGMS_ALL), (SKIP_EARLY.key, SKIP_EARLY.field),
                        (EXTRA_NOISE.key, EXTRA_NOISE.field),
                        *((SAMPLER_KEYS[name], name) for name in (*(s.field for s in SAMPLER_SETTINGS), *UNI_PC,
                                                                  ENSD))):
        if key in params:  # an option that is on or off, from the infotext's words for it
            override.setdefault(option, {"True": True, "False": False}.get(params[key], params[key]))
    if override:
        update["override_settings"] = override
    scripts = dict(payload.alwayson_scripts)  # A1111 fills an always-on script's arguments from the infotext too
    for script in (SOFT_INPAINTING_ARGS, FREEU_ARGS, RESCALE_ARGS):
        args = _infotext_args(params, script)
        if args and not _always_on_args(payload, script.name):
            scripts[script.name] = {"args": args}
    for key, given in ((PAG.key, (PAG_ARGS,)), (SAG.key, SAG_ARGS)):
        if key in params and not any(_always_on_args(payload, script.name) for script in given):
            scripts[given[0].name] = {"args": [True, *(params.get(s.key, s.default) for s in given[0].settings)]}
    regional = regional_values(params)
    if regional and not _always_on_args(payload, REGIONAL_SCRIPT):
        scripts[REGIONAL_SCRIPT] = {"args": [True, False, DIVIDE_MODE, regional.get("rp_splitting"), None, None,
                                             regional.get("rp_ratios"), regional.get("rp_base_ratios"),
                                             regional.get("rp_use_base"), regional.get("rp_use_common")]}
    for read, defaults, given in ((thresholding_infotext(params), DT_DEFAULTS, (DT_ARGS,)),
                                  (shrink_infotext(params), DS_DEFAULTS, DEEP_SHRINK_ARGS)):
        if read and not any(_always_on_args(payload, script.name) for script in given):
            script = given[-1]
            scripts[script.name] = {"args": [True, *(read.get(name, defaults[name]) for name in script.fields[1:])]}
    tiled = tiled_values(params)
    if tiled and not _always_on_args(payload, TILED_SCRIPT):  # at the infotext's size unless it kept the input's
        scripts[TILED_SCRIPT] = {"args": [True, tiled.get("td_method", TILED_METHODS[0]), False,
                                          tiled.get("td_keep_input_size", False), 1024, 1024,
                                          *(tiled.get(number.field, number.default) for number in TILED_NUMBERS),
                                          tiled.get("td_upscaler", NO_UPSCALER),
                                          tiled.get(TILED_SCALE_FACTOR.field, TILED_SCALE_FACTOR.default)]}
    if scripts != payload.alwayson_scripts:
        update["alwayson_scripts"] = scripts
    try:
        return type(payload).model_validate({**payload.model_dump(), **update})
    except ValidationError as exc:
        raise PayloadError("infotext", f"The infotext holds an unusable value: {exc.errors()[0]['msg']}.") from None


def _scheduler_name(value: str | None) -> str:
    """A1111 accepts a schedule type's label ("SGM Uniform") or its name ("sgm_uniform")."""
    return (value or "Automatic").replace("_", " ")


def _checkpoint(value: str | None, options) -> str:
    """A second checkpoint's name (refiner, hires checkpoint: title, name or hash); the request reads A1111's
    words for none."""
    return options.checkpoint_name(value) if value else ""


def _hires_values(payload: Txt2ImgPayload, options) -> dict[str, Any]:
    """Hires fix fields; A1111's "Use same ..." choices are the request's empty values."""
    sampler = "" if payload.hr_sampler_name in (None, "", "Use same sampler") else payload.hr_sampler_name
    scheduler = "" if payload.hr_scheduler in (None, "", "Use same scheduler") else payload.hr_scheduler
    if scheduler and not sampler:  # a hires schedule type alone: with the first pass's sampler
        sampler = payload.sampler_name or payload.sampler_index
    if sampler:
        sampler, scheduler = normalize(sampler, _scheduler_name(scheduler), ("hr_sampler_name", "hr_scheduler"))
    return {"enable_hr": payload.enable_hr, "hr_scale": payload.hr_scale,
            "hr_upscaler": payload.hr_upscaler or "Latent", "hr_second_pass_steps": payload.hr_second_pass_steps,
            "hr_resize_x": payload.hr_resize_x, "hr_resize_y": payload.hr_resize_y, "hr_sampler_name": sampler,
            "hr_scheduler": scheduler if sampler else "", "hr_prompt": payload.hr_prompt,
            "hr_negative_prompt": payload.hr_negative_prompt,
            "hr_checkpoint_name": _checkpoint(payload.hr_checkpoint_name, options)}


def _option(given: Any, option: str, options, override: dict) -> Any:
    """A request default A1111 keeps as an option: the payload's own value, else its ``override_settings``', else
    the server's option."""
    return override.get(option, options.services.config[option]) if given is None else given


def _sampler_values(payload: Txt2ImgPayload, options, override: dict) -> dict[str, Any]:
    """The sampler parameters: the payload's ``eta`` (for whichever eta the sampler reads, as A1111's) and sigma
    churn fields, else ``override_settings``', else the server's options (the schedule's sigmas, the noise schedule,
    UniPC's and ENSD are options only)."""
    if payload.eta is not None:
        number_between(payload.eta, "Eta", "eta", ETA_DDIM.low, ETA_DDIM.high)
    given = {ETA_DDIM.field: payload.eta, ETA_ANCESTRAL.field: payload.eta,
             **{name: getattr(payload, name) for name in CHURN}}
    return {**{setting.field: _option(given.get(setting.field), setting.field, options, override)
               for setting in SAMPLER_SETTINGS},
            NOISE_SCHEDULE: _option(None, "sd_noise_schedule", options, override),
            **{name: _option(None, name, options, override) for name in (*UNI_PC, ENSD)}}


# A1111's script names (any case): both tabs have the first three and the Asymmetric tiling extension's, img2img the
# others too
PROMPT_LIST_SCRIPT, PROMPT_MATRIX_SCRIPT, LOOPBACK_SCRIPT, SD_UPSCALE_SCRIPT, TILING_SCRIPT = (
    "prompts from file or textbox", "prompt matrix", "loopback", "sd upscale", "asymmetric tiling")
SCRIPTS = (PROMPT_LIST_SCRIPT, PROMPT_MATRIX_SCRIPT, XYZ_SCRIPT, TILING_SCRIPT, LOOPBACK_SCRIPT, SD_UPSCALE_SCRIPT)


def _script_values(payload: Txt2ImgPayload, options) -> dict[str, Any]:
    """A1111's ``script_args`` of the payload's script as the values of the tab's panel for it (``job_plan``).
    Prompts from file or textbox: [iterate seed, same seed, insert at "start"/"end", text] (before A1111 1.6:
    without the third). Prompt matrix: [put variable parts at start, different seeds, "positive"/"negative",
    "comma"/"space", grid margin in pixels] (the later ones may be left out). Loopback: [loops, final denoising
    strength, curve, append interrogated prompt ("None" only)] (the later ones may be left out). SD upscale: [its
    info text (unread), tile overlap, upscaler (an index into ``/upscalers``, or its name), scale factor]. X/Y/Z
    plot: ``xyz_script.plot_values``. Asymmetric tiling: [tile X, tile Y] (the Tiling field then unread, as there).
    """
    args, name = list(payload.script_args), (payload.script_name or "").lower()
    if name == XYZ_SCRIPT:
        return plot_values(args, "img2img" if isinstance(payload, Img2ImgPayload) else "txt2img",
                           options.checkpoint_name)
    if name == LOOPBACK_SCRIPT:
        if not 1 <= len(args) <= 4:
            raise PayloadError("script_args", "Loopback takes [loops, final denoising strength, denoising strength "
                                              "curve, append interrogated prompt].")
        loops, final, curve, interrogate = [*args, *(0.5, "Linear", "None")[len(args) - 1:]]
        if interrogate not in ("None", None):
            raise PayloadError("script_args", "Appending an interrogated prompt is not available on this server.")
        return {"loopback": True, "loopback_loops": loops, "loopback_final_strength": final, "loopback_curve": curve}
    if name == SD_UPSCALE_SCRIPT:
        if len(args) != 4:
            raise PayloadError("script_args", "SD upscale takes [info (unread), tile overlap, upscaler index or "
                                              "name, scale factor].")
        upscaler, names = args[2], options.upscalers()
        if isinstance(upscaler, int) and not isinstance(upscaler, bool):
            if not 0 <= upscaler < len(names):
                raise PayloadError("script_args", f"Upscaler index {upscaler} is not in /upscalers "
                                                  f"(0-{len(names) - 1}).")
            upscaler = names[upscaler]
        return {"sd_upscale": True, "sd_upscale_overlap": args[1], "sd_upscale_upscaler": upscaler,
                "sd_upscale_scale": args[3]}
    if name == PROMPT_LIST_SCRIPT:
        if len(args) == 3:
            args.insert(2, "start")
        if len(args) != 4 or not isinstance(args[3], str):
            raise PayloadError("script_args", "Prompts from file or textbox takes [iterate seed every line, use same "
                                              "random seed for all lines, insert prompts at (start or end), the text].")
        return {"prompt_lines": args[3], "lines_iterate_seed": bool(args[0]), "lines_same_seed": bool(args[1]),
                "lines_position": str(args[2])}
    if name == TILING_SCRIPT:
        if len(args) != 2:
            raise PayloadError("script_args", "Asymmetric tiling takes [tile X, tile Y].")
        axes = axes_of(*map(bool, args))
        return {"tiling": axes is not None, "tiling_axes": axes or "both"}
    if name == PROMPT_MATRIX_SCRIPT:
        if not 2 <= len(args) <= 5:
            raise PayloadError("script_args", "Prompt matrix takes [put variable parts at start, use different seed "
                                              "for each picture, prompt type (positive or negative), joining char "
                                              "(comma or space), grid margin].")
        start, different, kind, joiner, margin = [*args, *("positive", "comma", 0)[len(args) - 2:]]
        return {"prompt_matrix": True, "matrix_position": "start" if start else "end",
                "matrix_negative": kind == "negative", "matrix_joiner": str(joiner),
                "matrix_different_seeds": bool(different), "matrix_margin": margin}
    return {}


def to_requests(payload: Txt2ImgPayload, options) -> tuple[Plan, list[GenerationRequest]]:
    """The plan of ``payload`` (``job_plan``: one job, or with a script a job per line or combination) and its
    validated requests, to run one after another (an X/Y/Z plot's cells are made from the one, ``Plan.xyz``);
    raises RequestError (PayloadError naming the field)."""
    payload = apply_infotext(payload)
    _refuse_unimplemented(payload)
    override = payload.override_settings or {}
    values: dict[str, Any] = {
        "prompt": payload.prompt,
        "negative_prompt": payload.negative_prompt,
        "sampler": payload.sampler_name or payload.sampler_index,
        "scheduler": _scheduler_name(payload.scheduler),
        "steps": payload.steps,
        "cfg_scale": payload.cfg_scale,
        "width": payload.width,
        "height": payload.height,
        "seed": payload.seed,
        "subseed": payload.subseed,
        "subseed_strength": payload.subseed_strength,
        "seed_resize_from_w": max(payload.seed_resize_from_w, 0),  # A1111's -1: off
        "seed_resize_from_h": max(payload.seed_resize_from_h, 0),
        "batch_size": payload.batch_size,
        "batch_count": payload.n_iter,
        "clip_skip": _option(None, "CLIP_stop_at_last_layers", options, override),
        NGMS.field: _option(payload.s_min_uncond, NGMS.field, options, override),
        **{name: _option(None, name, options, override) for name in (NGMS_ALL, SKIP_EARLY.field, EXTRA_NOISE.field)},
        **_sampler_values(payload, options, override),
        "model": options.checkpoint_name(override.get("sd_model_checkpoint")),
        "task": "txt2img",
        "denoising_strength": 0.75 if payload.denoising_strength is None else payload.denoising_strength,
        "controlnets": control_units(payload),
        **regional_prompter_values(payload),
        **dynamic_prompts_values(payload),
        **freeu_values(payload),
        **setting_values(payload, RESCALE_ARGS),
        **scale_values(payload, (PAG_ARGS,)),
        **scale_values(payload, SAG_ARGS),
        **list_values(payload, (DT_ARGS,)),
        **list_values(payload, DEEP_SHRINK_ARGS),
        "mix": mix_items(payload),
        "step_cache": override.get("step_cache", 0),  # Easel's fast mode (pipelines/step_cache.py)
        "tiling": bool(payload.tiling),
        "styles": tuple(payload.styles or ()),  # the engine writes them into the prompts (pipelines/styles.py)
        "refiner_checkpoint": _checkpoint(payload.refiner_checkpoint, options),
        "refiner_switch_at": 0.8 if payload.refiner_switch_at is None else payload.refiner_switch_at,
        # hires fix's first pass given, not run (the request refuses it without hires fix)
        "firstpass_image": decode_image(payload.firstpass_image, "firstpass_image") if payload.firstpass_image
        else None,
    }
    if payload.enable_hr:
        values.update(_hires_values(payload, options))
    if isinstance(payload, Img2ImgPayload):
        images = payload.init_images or []
        if not images:
            raise PayloadError("init_images", "img2img needs an init image (init_images: [base64 image]).")
        if len(images) > 1:
            raise PayloadError("init_images", "Only one init image per request is supported.")
        values.update(
            task="inpaint" if payload.mask else "img2img",
            init_image=decode_image(images[0], "init_images"),
            mask=decode_image(payload.mask, "mask") if payload.mask else None,
            resize_mode=payload.resize_mode,
            mask_blur=payload.mask_blur_x if payload.mask_blur is None else payload.mask_blur,
            inpainting_fill=payload.inpainting_fill,
            inpaint_full_res=payload.inpaint_full_res,
            inpaint_full_res_padding=payload.inpaint_full_res_padding,
            inpainting_mask_invert=payload.inpainting_mask_invert,
            initial_noise_multiplier=_option(payload.initial_noise_multiplier, "initial_noise_multiplier", options,
                                             override),
            color_correction=_option(None, "img2img_color_correction", options, override),
            **setting_values(payload, SOFT_INPAINTING_ARGS),
        )
    values.update(tiled_diffusion_values(payload, values.get("init_image")))
    planned = plan({**values, **_script_values(payload, options)})  # an empty prompt list is no list: the one job
    return planned, [GenerationRequest.from_values(job) for job in planned.jobs]


def echo(payload: Txt2ImgPayload) -> dict[str, Any]:
    """The request as A1111 echoes it in ``parameters``: every field, init images only when asked for."""
    values = payload.model_dump()
    if isinstance(payload, Img2ImgPayload) and not payload.include_init_images:
        values.update(init_images=None, mask=None)
    return values


def processed_info(results: list, grid_infotexts: list[str] = ()) -> str:
    """A1111's ``Processed.js()``: the JSON string in a generation response's ``info``, for the results of one
    response (several for a script: their pictures' lists joined, the rest the first's; the infotexts of grids,
    which come first among the images, lead ``infotexts``); the model's hash and the VAE as the first picture's
    infotext names them."""
    request = results[0].request
    seeds = [seed for result in results for seed in result.seeds]
    infotexts = [text for result in results for text in result.infotexts]
    pictures = [parse_infotext(text) for text in infotexts]  # each picture's own prompts (Dynamic Prompts')
    written = pictures[0][2] if pictures else {}
    subseeds = [result.request.subseed_for(seed) if result.request.subseed_strength else -1
                for result in results for seed in result.seeds]

    return json.dumps({
        "prompt": request.prompt,
        "all_prompts": [prompt for prompt, _, _ in pictures],
        "negative_prompt": request.negative_prompt,
        "all_negative_prompts": [negative for _, negative, _ in pictures],
        "seed": request.seed,
        "all_seeds": seeds,
        "subseed": subseeds[0] if subseeds else -1,
        "all_subseeds": subseeds,
        "subseed_strength": request.subseed_strength,
        "width": request.width,
        "height": request.height,
        "sampler_name": request.sampler,
        "cfg_scale": request.cfg_scale,
        "steps": request.steps,
        "batch_size": request.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": request.model,
        "sd_model_hash": written.get("Model hash"),
        "sd_vae_name": written.get("VAE"),
        "sd_vae_hash": written.get("VAE hash"),
        "seed_resize_from_w": request.seed_resize_from_w or -1,
        "seed_resize_from_h": request.seed_resize_from_h or -1,
        "denoising_strength": request.denoising_strength if request.task != "txt2img" or request.enable_hr else None,
        "extra_generation_params": {"Schedule type": request.scheduler} if request.scheduler != "Automatic" else {},
        "index_of_first_image": len(grid_infotexts),
        "infotexts": [*grid_infotexts, *infotexts],
        "styles": [],
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": request.clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": VERSION,
    })
