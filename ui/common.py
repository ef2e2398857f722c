"""Widgets shared by the generation tabs, and the mapping from widget values to a request.

A ``FieldSet`` names each widget after the request field it fills; handlers receive a dict keyed by those
names rather than a long positional list, while the API keeps a stable parameter order.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import gradio as gr
from PIL import Image

from pipelines import extras, job_plan, prompt_lines, prompt_matrix
from pipelines.cfg_rescale import RESCALE
from pipelines.clip_tokenizer import load_tokenizer
from pipelines.config import batch_layout
from pipelines.freeu import PRESETS as FREEU_PRESETS, SETTINGS as FREEU_SETTINGS
from pipelines.grid import MAX_MARGIN
from pipelines.negative_guidance import NGMS, NGMS_ALL, NGMS_ALL_LABEL, SKIP_EARLY
from pipelines.sampler_parameters import (ENSD, MAX_UNI_PC_ORDER, NOISE_SCHEDULES, SETTINGS as SAMPLER_SETTINGS, UNI_PC,
                                         UNI_PC_VARIANTS)
from pipelines.pag import PAG, PAG_SCHEDULE
from pipelines.sag import SAG, SAG_SETTINGS
from pipelines.samplers import sampler_names, schedule_type_names
from pipelines.script_settings import Setting
from pipelines.step_cache import MAX_INTERVAL as MAX_STEP_CACHE
from pipelines.text_encoding import CHUNK, token_count

DICE, RECYCLE, SWAP, REFRESH, SPARKLES = "\U0001f3b2", "\u267b\ufe0f", "\u21c5", "\U0001f504", "\u2728"
# A1111's buttons under Generate: read generation parameters from the prompt, clear the prompts
READ, CLEAR = "\u2199\ufe0f", "\U0001f5d1\ufe0f"
SAVE, ZIP = "\U0001f4be", "\U0001f5c3\ufe0f"
GRID = "Grid"  # the caption of a grid in a gallery
GPU_QUEUE = "gpu"  # the concurrency id every GPU event shares: one job at a time, across tabs
FIT = ["easel-fit"]  # a picture scaled to its panel, small ones up too (the page's CSS: ui/layout.py)
PROMPT_LABELS = {"prompt": "Prompt", "negative_prompt": "Negative prompt"}


class FieldSet:
    def __init__(self, prefix: str):
        self.prefix = prefix
        self.components: dict[str, gr.components.Component] = {}

    def add(self, name: str, component):
        self.components[name] = component
        return component

    @property
    def inputs(self) -> list:
        return list(self.components.values())

    def named(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap the generator ``fn(values: dict, ...)`` as a streaming Gradio handler over ``self.inputs``."""
        names = list(self.components)
        extra = list(inspect.signature(fn).parameters.values())[1:]

        def handler(*args, **kwargs):  # a generator function itself: Gradio streams only from those
            yield from fn(dict(zip(names, args[: len(names)])), *args[len(names):], **kwargs)

        # Gradio reads parameter names (the API's keywords) and special arguments (gr.Request, gr.Progress)
        # from the signature and annotations, so the wrapper presents the fields as named parameters. A default of
        # None makes a widget without a value (an empty picture slot) optional for API clients too.
        plain = inspect.Parameter.POSITIONAL_OR_KEYWORD
        extra = [p if p.default is not p.empty else p.replace(default=None) for p in extra]
        handler.__signature__ = inspect.Signature([inspect.Parameter(n, plain, default=None) for n in names] + extra)
        handler.__annotations__ = {k: v for k, v in fn.__annotations__.items() if k in {p.name for p in extra}}
        handler.__name__ = fn.__name__
        return handler


def prompt_boxes(services, fields: FieldSet) -> None:
    """Prompt, negative prompt (each label with its token counter: ``wire_token_counters``) and the styles to write
    into them, with A1111's style editor (``ui/styles.py``: the lists are read again when they open)."""
    from . import styles  # it uses this module's fields

    p = fields.prefix
    for name, elem_id in (("prompt", f"{p}_prompt"), ("negative_prompt", f"{p}_neg_prompt")):
        fields.add(name, gr.Textbox("", label=_counted(name, 0, CHUNK), lines=3 if name == "prompt" else 2,
                                    placeholder=PROMPT_LABELS[name], elem_id=elem_id))
    styles.build(services, fields)


@lru_cache(maxsize=1)
def _tokenizer():
    return load_tokenizer()  # CLIP's: every SD and SDXL model's (the counter loads no model)


def _counted(name: str, count: int, room: int) -> str:
    return f"{PROMPT_LABELS[name]} ({count}/{room})"


def wire_token_counters(services, fields: FieldSet) -> None:
    """A1111's token counters, in the prompts' labels: each prompt's tokens (the most any step's text holds, an
    embedding's name counting as its vectors) out of the room of the 75-token chunks they fill, counted as the
    prompt changes, off the GPU queue. The tokenizer loads now: importing transformers in an event thread while a
    job's thread imports it too can fail."""
    _tokenizer()
    embeddings = services.engine.embeddings
    for name in PROMPT_LABELS:
        box = fields.components[name]

        def count(text: str, steps: int | None, name=name) -> gr.Textbox:  # a steps box being typed in is empty
            return gr.Textbox(label=_counted(name, *token_count(_tokenizer(), text or "", steps or 1, embeddings)))

        box.change(count, [box, fields.components["steps"]], box, show_progress="hidden", trigger_mode="always_last",
                   api_visibility="private")


def checkpoint_picker(services, fields: FieldSet, name: str, label: str, elem_id: str) -> gr.Dropdown:
    """A second checkpoint for the job (refiner, hires checkpoint): A1111's word for none, or a model; the models on
    disk are read again when the list opens. A name from an infotext that is not here stays, to be refused by name."""
    from pipelines.request import NO_CHECKPOINT

    def choices() -> list[str]:
        return [NO_CHECKPOINT[name], *services.registry.names()]

    picker = fields.add(name, gr.Dropdown(choices(), value=NO_CHECKPOINT[name], label=label, allow_custom_value=True,
                                          elem_id=elem_id))
    picker.focus(lambda: gr.Dropdown(choices=choices()), None, picker, api_visibility="private")
    return picker


def _text_of(data: bytes | None) -> str:
    try:
        return (data or b"").decode("utf-8-sig")
    except UnicodeDecodeError:
        raise gr.Error("The prompt file is not UTF-8 text.", print_exception=False) from None


def prompt_list_controls(fields: FieldSet) -> None:
    """A1111's "Prompts from file or textbox" (``pipelines/prompt_lines.py``): one job per line of the list."""
    p = fields.prefix
    with gr.Accordion("Prompts from file or textbox", open=False, elem_id=f"{p}_prompt_list"):
        with gr.Row():
            fields.add("lines_iterate_seed", gr.Checkbox(False, label="Iterate seed every line",
                                                         elem_id=f"{p}_lines_iterate_seed"))
            fields.add("lines_same_seed", gr.Checkbox(False, label="Use same random seed for all lines",
                                                      elem_id=f"{p}_lines_same_seed"))
            fields.add("lines_position", gr.Radio(list(prompt_lines.POSITIONS), value="start",
                                                  label="Insert prompts at the", elem_id=f"{p}_lines_position"))
        text = fields.add("prompt_lines", gr.Textbox("", label="List of prompt inputs (a job per line; empty: off)",
                                                     lines=4, placeholder='a red circle\n--prompt "a blue square" '
                                                     "--steps 30 --seed 5", elem_id=f"{p}_prompt_lines"))
        upload = gr.File(label="Upload prompt inputs", file_types=[".txt"], type="binary", height=120,
                         elem_id=f"{p}_prompt_lines_file")
    upload.upload(_text_of, upload, text, api_visibility="private")


def prompt_matrix_controls(fields: FieldSet) -> None:
    """A1111's "Prompt matrix" (``pipelines/prompt_matrix.py``): a picture per combination of the parts after "|"."""
    p = fields.prefix
    with gr.Accordion("Prompt matrix", open=False, elem_id=f"{p}_prompt_matrix_panel"):
        fields.add("prompt_matrix", gr.Checkbox(False, label='Prompt matrix: a picture for every combination of the '
                                                'prompt\'s parts after "|"', elem_id=f"{p}_prompt_matrix"))
        with gr.Row():
            fields.add("matrix_position", gr.Radio(list(prompt_matrix.POSITIONS), value="end",
                                                   label="Place variable parts at", elem_id=f"{p}_matrix_position"))
            fields.add("matrix_negative", gr.Radio(list(prompt_matrix.PROMPT_TYPES), value="positive", type="index",
                                                   label="Prompt type", elem_id=f"{p}_matrix_negative"))
            fields.add("matrix_joiner", gr.Radio(list(prompt_matrix.JOINERS), value="comma", label="Joining char",
                                                 elem_id=f"{p}_matrix_joiner"))
        with gr.Row():
            fields.add("matrix_different_seeds", gr.Checkbox(False, label="Use different seed for each picture",
                                                             elem_id=f"{p}_matrix_different_seeds"))
            fields.add("matrix_margin", gr.Slider(0, MAX_MARGIN, value=0, step=2, label="Grid margins (px)",
                                                  elem_id=f"{p}_matrix_margin"))


def upscaler_picker(services, fields: FieldSet, name: str, value: str, elem_id: str, **kwargs) -> gr.Dropdown:
    """A field that picks an Extras upscaler, its list read again when it opens (files added since are offered)."""
    models_dir = services.registry.models_dir
    picker = fields.add(name, gr.Dropdown(extras.names(models_dir), value=value, label="Upscaler", elem_id=elem_id,
                                          **kwargs))
    picker.focus(lambda: gr.Dropdown(choices=extras.names(models_dir)), None, picker, api_visibility="private")
    return picker


def setting_slider(fields: FieldSet, setting: Setting, elem_id: str) -> gr.Slider:
    """The slider of an extension's setting (``pipelines/script_settings.py``), under its label and help."""
    return fields.add(setting.field, gr.Slider(setting.low, setting.high, value=setting.default, step=setting.step,
                                               label=setting.label, info=setting.info, elem_id=elem_id))


def freeu_controls(fields: FieldSet) -> None:
    """FreeU's panel (``pipelines/freeu.py``): on, its four factors (a preset fills them), its start and end, its
    version."""
    p = fields.prefix
    *numbers, version = FREEU_SETTINGS
    with gr.Accordion("FreeU", open=False, elem_id=f"{p}_freeu"):
        fields.add("freeu", gr.Checkbox(False, label="Enabled", elem_id=f"{p}_freeu_enabled",
                                        info="more detail: the UNet's backbone amplified, its skip connections' "
                                             "low frequencies damped"))
        sliders = []
        for pair in (numbers[:2], numbers[2:4], numbers[4:]):  # the backbone's, the skip connections', the steps
            with gr.Row():
                sliders += [setting_slider(fields, setting, f"{p}_{setting.field}") for setting in pair]
        with gr.Row():
            fields.add(version.field, gr.Radio([1, 2], value=version.default, label=version.label,
                                               info=version.info, elem_id=f"{p}_{version.field}"))
            preset = gr.Dropdown(list(FREEU_PRESETS), value=None, label="Preset", elem_id=f"{p}_freeu_preset",
                                 info="B1, B2, S1 and S2 for a model, as FreeU's authors give them")
    preset.input(lambda name: FREEU_PRESETS[name], preset, sliders[:4], show_progress="hidden")


def refiner_controls(services, fields: FieldSet) -> None:
    """A1111's Refiner panel: a model that takes over the pass once "switch at" of its steps are done."""
    p = fields.prefix
    with gr.Accordion("Refiner", open=False, elem_id=f"{p}_refiner"):
        with gr.Row():
            checkpoint_picker(services, fields, "refiner_checkpoint", "Checkpoint", f"{p}_refiner_checkpoint")
            fields.add("refiner_switch_at", gr.Slider(0.01, 1.0, value=0.8, step=0.01, label="Switch at",
                                                      info="share of the steps before the refiner takes over",
                                                      elem_id=f"{p}_refiner_switch_at"))


def sampling_controls(fields: FieldSet, defaults: dict) -> dict[str, gr.Button]:
    """Sampler, steps, size, batch, CFG (with Rescale CFG, PAG and its schedule, SAG and its blur, NGMS and Skip Early
    CFG), the sampler parameters, seed (with a variation seed and seed resize), clip skip, step cache and tiling;
    returns the helper buttons."""
    p = fields.prefix
    with gr.Row():
        fields.add("sampler", gr.Dropdown(sampler_names(), value=defaults.get("sampler", "Euler a"), allow_custom_value=True,
                                          label="Sampling method", elem_id=f"{p}_sampler"))
        fields.add("scheduler", gr.Dropdown(schedule_type_names(), value=defaults.get("scheduler", "Automatic"),
                                            label="Schedule type", elem_id=f"{p}_scheduler"))
        fields.add("steps", gr.Slider(1, 150, value=defaults.get("steps", 20), step=1, label="Sampling steps",
                                      elem_id=f"{p}_steps"))
    with gr.Row():
        with gr.Column(scale=4):
            fields.add("width", gr.Slider(64, 2048, value=defaults.get("width", 512), step=8, label="Width",
                                          elem_id=f"{p}_width"))
            fields.add("height", gr.Slider(64, 2048, value=defaults.get("height", 512), step=8, label="Height",
                                           elem_id=f"{p}_height"))
        swap = gr.Button(SWAP, elem_id=f"{p}_swap_size", scale=0, min_width=48)
        with gr.Column(scale=2):
            fields.add("batch_count", gr.Slider(1, 100, value=1, step=1, label="Batch count",
                                                elem_id=f"{p}_batch_count"))
            fields.add("batch_size", gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id=f"{p}_batch_size"))
    fields.add("cfg_scale", gr.Slider(0.0, 30.0, value=defaults.get("cfg_scale", 7.0), step=0.5, label="CFG Scale",
                                      elem_id=f"{p}_cfg_scale"))
    with gr.Row():  # under CFG, as Forge Neo's Rescale CFG
        setting_slider(fields, RESCALE, f"{p}_rescale_cfg_scale")
        setting_slider(fields, PAG, f"{p}_pag_scale")
        setting_slider(fields, SAG, f"{p}_sag_scale")
    with gr.Row():
        # Forge's later script's
        with gr.Accordion("PAG attenuation and steps", open=False, elem_id=f"{p}_pag_schedule"):
            for setting in PAG_SCHEDULE:
                setting_slider(fields, setting, f"{p}_{setting.field}")
        with gr.Accordion("SAG blur and mask", open=False, elem_id=f"{p}_sag_options"):  # the extension's, Forge's
            for setting in SAG_SETTINGS[1:]:
                setting_slider(fields, setting, f"{p}_{setting.field}")
    with gr.Row():  # A1111's Optimizations and Sampler parameters settings set their defaults
        with gr.Column():
            setting_slider(fields, NGMS, f"{p}_s_min_uncond")
            fields.add(NGMS_ALL, gr.Checkbox(False, label=NGMS_ALL_LABEL, elem_id=f"{p}_s_min_uncond_all"))
        setting_slider(fields, SKIP_EARLY, f"{p}_skip_early_cond")
    with gr.Accordion("Sampler parameters", open=False, elem_id=f"{p}_sampler_parameters"):  # A1111's settings'
        eta_ddim, eta, churn, tmin, tmax, noise, *schedule = SAMPLER_SETTINGS
        for row in ((eta_ddim, eta), (churn, noise), (tmin, tmax), schedule):
            with gr.Row():
                for setting in row:
                    setting_slider(fields, setting, f"{p}_{setting.field}")
        with gr.Row():
            fields.add("noise_schedule", gr.Radio(list(NOISE_SCHEDULES), value=NOISE_SCHEDULES[0],
                                                  label="Noise schedule", elem_id=f"{p}_noise_schedule",
                                                  info="Zero Terminal SNR: for models trained so"))
            fields.add("uni_pc_variant", gr.Radio(list(UNI_PC_VARIANTS), value=UNI_PC["uni_pc_variant"][1],
                                                  label="UniPC variant", elem_id=f"{p}_uni_pc_variant"))
        with gr.Row():
            fields.add("uni_pc_order", gr.Slider(1, MAX_UNI_PC_ORDER, value=UNI_PC["uni_pc_order"][1], step=1,
                                                 label="UniPC order", info="must be < sampling steps",
                                                 elem_id=f"{p}_uni_pc_order"))
            fields.add("uni_pc_lower_order_final", gr.Checkbox(UNI_PC["uni_pc_lower_order_final"][1],
                                                               label="UniPC lower order final",
                                                               elem_id=f"{p}_uni_pc_lower_order_final"))
        fields.add(ENSD, gr.Number(0, precision=0, minimum=0, label="Eta noise seed delta", elem_id=f"{p}_{ENSD}",
                                   info="ENSD: the noise of samplers that draw it as they go (Euler a, DPM2 a, DDIM "
                                        "with eta...) from seed + this; 31337 reproduces NovelAI's pictures"))
    with gr.Row():
        fields.add("seed", gr.Number(value=-1, precision=0, label="Seed", elem_id=f"{p}_seed", scale=4))
        dice = gr.Button(DICE, elem_id=f"{p}_random_seed", scale=0, min_width=48)
        reuse = gr.Button(RECYCLE, elem_id=f"{p}_reuse_seed", scale=0, min_width=48)
    with gr.Accordion("Variation seed", open=False, elem_id=f"{p}_variation"):
        with gr.Row():
            fields.add("subseed", gr.Number(value=-1, precision=0, label="Variation seed (-1: random)",
                                            elem_id=f"{p}_subseed"))
            fields.add("subseed_strength", gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="Variation strength",
                                                     info="0: the seed's picture; 1: the variation seed's",
                                                     elem_id=f"{p}_subseed_strength"))
        with gr.Row():
            for side, label in (("w", "width"), ("h", "height")):
                fields.add(f"seed_resize_from_{side}", gr.Slider(0, 2048, value=0, step=8,
                                                                 label=f"Resize seed from {label} (0: off)",
                                                                 elem_id=f"{p}_seed_resize_from_{side}"))
    with gr.Row():
        fields.add("clip_skip", gr.Slider(1, 12, value=1, step=1, label="Clip skip", elem_id=f"{p}_clip_skip",
                                          scale=2))
        fields.add("step_cache", gr.Slider(0, MAX_STEP_CACHE, value=0, step=1, label="Step cache",
                                           info="full UNet every N steps: faster, not exact; 0 = off",
                                           elem_id=f"{p}_step_cache", scale=2))
        fields.add("tiling", gr.Checkbox(False, label="Tiling", info="seamless: the edges wrap around",
                                         elem_id=f"{p}_tiling", scale=1, min_width=120))
        fields.add("tiling_axes", gr.Dropdown([("both", "both"), ("X only", "x"), ("Y only", "y")], value="both",
                                              label="Tiling axes", info="which edges wrap",
                                              elem_id=f"{p}_tiling_axes", scale=1, min_width=120))
    return {"swap": swap, "dice": dice, "reuse": reuse}


# txt2img receives parameters, the others a picture ("controlnet": txt2img's first ControlNet unit)
SEND_TARGETS = ("txt2img", "img2img", "inpaint", "extras", "controlnet")


@dataclass
class OutputPanel:
    gallery: gr.Gallery
    preview: gr.Image
    infotext: gr.Textbox
    infotexts: gr.State
    last_seed: gr.State
    selected: gr.State  # index of the gallery image the user picked
    send: dict[str, gr.Button]  # target tab id -> its "Send to" button
    upscale: gr.Button | None  # txt2img's ✨: hires fix of the picked picture
    keep: dict[str, gr.Button]  # A1111's Save and Zip
    download: gr.File  # what Save or Zip wrote

    @property
    def outputs(self) -> list:
        """What a generation handler updates, in its order."""
        return [self.gallery, self.preview, self.infotext, self.infotexts, self.last_seed, self.selected,
                self.download]


def output_panel(prefix: str) -> OutputPanel:
    preview = gr.Image(label="Live preview", visible=False, interactive=False, elem_id=f"{prefix}_preview",
                       height=256, elem_classes=FIT)
    gallery = gr.Gallery(label="Output", columns=2, object_fit="contain", height=512, elem_id=f"{prefix}_gallery",
                         format="png")
    with gr.Row():
        send = {target: gr.Button(f"Send to {'ControlNet' if target == 'controlnet' else target}", size="sm",
                                  elem_id=f"{prefix}_send_to_{target}")
                for target in SEND_TARGETS if (prefix, target) != ("txt2img", "txt2img")}
        upscale = gr.Button(f"{SPARKLES} Hires fix", size="sm", elem_id=f"{prefix}_upscale") \
            if prefix == "txt2img" else None
        keep = {name: gr.Button(f"{icon} {name.title()}", size="sm", elem_id=f"{prefix}_{name}")
                for name, icon in (("save", SAVE), ("zip", ZIP))}
    download = gr.File(label="Saved", file_count="multiple", interactive=False, visible=False,
                       elem_id=f"{prefix}_download")
    infotext = gr.Textbox(label="Generation parameters", lines=4, interactive=False, elem_id=f"{prefix}_info")
    return OutputPanel(gallery, preview, infotext, gr.State([]), gr.State(-1), gr.State(-1), send, upscale, keep,
                       download)


def opened_picture(path: str | None) -> Image.Image:
    """A gallery's or upload's picture file, as RGB."""
    if not path:
        raise gr.Error("Generate or drop an image first.", print_exception=False)
    with Image.open(path) as image:
        return image.convert("RGB")  # its parameters (PNG text) kept


def size_multiple_of_8(image: Image.Image) -> tuple[int, int]:
    """The width and height a generation tab can take for a picture's size (multiples of 8, 64-2048)."""
    return tuple(min(2048, max(64, round(side / 8) * 8)) for side in image.size)


def gallery_items(gallery: list | None) -> list[tuple[str, str | None]]:
    """A gallery's value as (file, caption) pairs; an empty gallery is refused."""
    if not gallery:
        raise gr.Error("Generate an image first.", print_exception=False)
    pairs = [item if isinstance(item, (list, tuple)) else (item, None) for item in gallery]
    return [(path if isinstance(path, str) else path["path"], caption) for path, caption in pairs]


def gallery_picture(gallery: list | None, index: int) -> tuple[Image.Image, str | None, int]:
    """The picked picture of a gallery's value, its caption and its index; when none is picked (-1), the first that
    is not a grid."""
    items = gallery_items(gallery)
    if not 0 <= index < len(items):
        index = next((i for i, (_, caption) in enumerate(items) if caption != GRID), 0)
    path, caption = items[index]
    return opened_picture(path), caption, index


def wire_seed_buttons(buttons: dict[str, gr.Button], fields: FieldSet, panel: OutputPanel) -> None:
    width, height, seed = (fields.components[k] for k in ("width", "height", "seed"))
    buttons["swap"].click(lambda w, h: (h, w), [width, height], [width, height], api_visibility="private")
    buttons["dice"].click(lambda: -1, None, seed, api_visibility="private")
    buttons["reuse"].click(lambda last: last, panel.last_seed, seed, api_visibility="private")


def generation_handler(services, panel: OutputPanel, task: str,
                       prepare: Callable[[dict], dict | list[dict]] | None = None):
    """The streaming handler shared by every generation tab, ``generate(values, model_name, request, progress)``
    (``FieldSet.named`` makes it Gradio's).

    ``prepare`` turns the tab's widget values into request values (an image editor's layers into a mask, say),
    or into a list of them (a batch of init images); each runs as its plan says (``job_plan``: a job per line of a
    prompt list, per combination of a prompt matrix, per cell of an X/Y/Z plot; its grid, or a batch's, comes first
    in the gallery). The jobs run one after another in the same queue slot.
    It builds the request, streams the engine's progress (bar and live preview) and finishes with the gallery,
    the selected image's infotext, every image's infotext and the seed used. Bad input becomes a
    ``gr.Error`` with the engine's message, never a traceback.
    """
    from pipelines import xyz
    from pipelines.engine import GenerationResult
    from pipelines.errors import EaselError, RequestError
    from pipelines.request import GenerationRequest

    def run_jobs(jobs: list, owner, progress):
        """The jobs one after another (progress and previews as they come); their results."""
        done: list[GenerationResult] = []
        for number, job in enumerate(jobs, 1):
            for event in services.stream(job, owner=owner):
                if isinstance(event, GenerationResult):
                    done.append(event)
                    continue
                label = f"Batch {event.batch + 1}/{event.batch_count}, step {event.step}/{event.steps}"
                progress(event.fraction, desc=f"Image {number}/{len(jobs)}: {label}" if len(jobs) > 1 else label)
                if event.preview is not None:
                    yield {panel.preview: gr.update(visible=True, value=event.preview)}
            if done[-1].interrupted:
                break
        return done

    def run_plot(plot, owner, progress):
        """The X/Y/Z plot's cells (progress and previews as they come); its result."""
        for event in xyz.run_plot(services.stream, plot, owner=owner):
            if isinstance(event, xyz.PlotResult):
                return event
            progress(event.fraction, desc=event.describe())
            if event.step.preview is not None:
                yield {panel.preview: gr.update(visible=True, value=event.step.preview)}

    # track_tqdm: a model downloading from the Hub on first use shows its download bars in the tab's progress
    def generate(values: dict, model_name: str, request: gr.Request, progress=gr.Progress(track_tqdm=True)):
        owner = request.session_hash if request else None
        try:
            prepared = prepare(values) if prepare else values
            plans = [job_plan.plan(v) for v in (prepared if isinstance(prepared, list) else [prepared])]
            jobs = [GenerationRequest.from_values({"model": model_name, **job, "task": task})  # a line may name one
                    for each in plans for job in each.jobs]
            if plans[0].xyz is None:
                done = yield from run_jobs(jobs, owner, progress)
                made = job_plan.grids(plans, done, layout=batch_layout(services.config))
                grids, shown = job_plan.shown(made, services.config["return_grid"]), done
            else:  # the X/Y/Z plot: A1111's answer, its grid first, then each Z value's and each cell's when asked
                if len(plans) > 1:
                    raise RequestError("The X/Y/Z plot runs on one picture, not a batch folder.", "xyz")
                plot = xyz.plan(jobs[0], *plans[0].xyz)
                result = yield from run_plot(plot, owner, progress)
                made = grids = result.grids()
                done = result.cells()
                shown = done if plot.options.sub_images else []
        except EaselError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        services.engine.save_grids(made, task)
        images = services.engine.grid_pictures(grids) + [image for result in shown for image in result.images]
        infotexts = [grid.infotext for grid in grids] + [text for result in shown for text in result.infotexts]
        seeds = [seed for result in shown for seed in result.seeds]
        captions = [GRID] * len(grids) + [f"Seed {seed}" for seed in seeds]
        for warning in dict.fromkeys(w for result in done for w in result.warnings):  # files left out, once each
            gr.Warning(warning)
        yield {
            panel.gallery: list(zip(images, captions)),
            panel.preview: gr.update(visible=False, value=None),
            panel.infotext: infotexts[0] if infotexts else "",
            panel.infotexts: infotexts,
            panel.last_seed: done[0].seeds[0] if done and done[0].seeds else -1,
            panel.selected: -1,  # none picked
            panel.download: gr.update(visible=False, value=None),  # an earlier job's saved files
        }

    return generate


def wire_generation(services, fields: FieldSet, panel: OutputPanel, model: gr.Dropdown, task: str,
                    buttons: dict[str, gr.Button], generate: Callable) -> None:
    """Generate (on the GPU queue, and again while Generate forever is on); Interrupt and Skip (A1111's: the job
    stops, or its current batch ends and the next goes on, after the current step), which act on the caller's own
    job at once; the gallery's picking, Save and Zip."""
    # The progress bar covers the gallery only: over the live preview it would hide it.
    job = buttons["generate"].click(fields.named(generate), [*fields.inputs, model], panel.outputs, api_name=task,
                                    show_progress_on=panel.gallery, concurrency_id=GPU_QUEUE, concurrency_limit=1)
    # The page's scripts hear of the job's end, with the gallery it left: Generate forever presses Generate again or
    # stops (ui/forever.js), a notification tells a user whose page is in the background (ui/notify.js).
    for then, ok in ((job.success, "true"), (job.failure, "false")):
        then(None, panel.gallery, js=f"(gallery) => document.dispatchEvent(new CustomEvent('easel-job-end', "
                                     f"{{detail: {{tab: '{task}', ok: {ok}, gallery, grid: '{GRID}'}}}}))",
             queue=False, api_visibility="private")

    def on_own_job(stop: Callable[..., bool]) -> Callable[[gr.Request], None]:
        def act(request: gr.Request) -> None:  # Gradio hands the caller's session to a parameter of this type
            stop(owner=request.session_hash if request else None)
        return act

    for name, stop in (("interrupt", services.engine.interrupt), ("skip", services.engine.skip)):
        buttons[name].click(on_own_job(stop), None, None, api_name=f"{task}_{name}", queue=False)

    def show_selected(texts: list[str], evt: gr.SelectData):
        return (texts[evt.index] if 0 <= evt.index < len(texts) else ""), evt.index

    panel.gallery.select(show_selected, panel.infotexts, [panel.infotext, panel.selected], api_visibility="private")
    wire_keep(services, panel)


def wire_keep(services, panel: OutputPanel) -> None:
    """A1111's Save and Zip: the picked picture, or every one (the grid too) when none or a grid is picked, kept in
    outputs/log with their parameters (``SaveLog``), Zip also as one zip; the files offered for download."""
    def keep(make_zip: bool):
        def save(gallery, index: int, infotexts: list[str]):
            items = gallery_items(gallery)
            chosen = [index] if 0 <= index < len(items) and items[index][1] != GRID else range(len(items))
            paths = services.saved.keep([(opened_picture(items[i][0]), infotexts[i] if i < len(infotexts) else "")
                                         for i in chosen], make_zip)
            gr.Info(f"Saved: {paths[0].name}")
            return gr.update(visible=True, value=[str(path) for path in paths])
        return save

    for name, button in panel.keep.items():
        button.click(keep(name == "zip"), [panel.gallery, panel.selected, panel.infotexts], panel.download,
                     api_visibility="private")


@dataclass
class GenerationTab:
    fields: FieldSet
    panel: OutputPanel
    inputs: dict  # the task's own input widgets by name (init image, editor...)
    generate: Callable  # its handler (``generation_handler``), for another button that runs the tab's values
    read: gr.Button  # A1111's ↙️: the parameters in the prompt box fill the tab (ui/transfer.py wires it)

    @property
    def size(self) -> tuple:
        """Its width and height sliders."""
        return self.fields.components["width"], self.fields.components["height"]


def generation_tab(services, model: gr.Dropdown, defaults: dict, task: str,
                   task_inputs: Callable[[FieldSet], dict] | None = None,
                   prepare: Callable[[dict], dict | list[dict]] | None = None) -> GenerationTab:
    """The body every generation tab shares: prompts (with the Networks cards under them) and buttons, the task's
    own inputs above the sampling controls, and the output panel; wired to the engine."""
    # they use this module's icons and fields
    from . import (controlnet, deep_shrink, dynamic_prompts, dynamic_thresholding, img2img_scripts, networks,
                   regions, tiled_diffusion, xyz_panel)

    fields = FieldSet(task)
    with gr.Row():
        with gr.Column(scale=5):
            prompt_boxes(services, fields)
            networks.build(services, (fields.components["prompt"], fields.components["negative_prompt"]), task)
        with gr.Column(scale=1, min_width=160):
            actions = {"generate": gr.Button("Generate", variant="primary", elem_id=f"{task}_generate")}
            with gr.Row():
                for name in ("interrupt", "skip"):
                    actions[name] = gr.Button(name.title(), variant="stop" if name == "interrupt" else "secondary",
                                              elem_id=f"{task}_{name}", min_width=70)
            with gr.Row():
                read = gr.Button(READ, elem_id=f"{task}_read_parameters", min_width=48)
                clear = gr.Button(CLEAR, elem_id=f"{task}_clear_prompt", min_width=48)
    with gr.Row():
        with gr.Column():
            inputs = task_inputs(fields) if task_inputs else {}
            buttons = sampling_controls(fields, defaults)
            wire_token_counters(services, fields)
            refiner_controls(services, fields)
            freeu_controls(fields)
            deep_shrink.build(fields)
            dynamic_thresholding.build(fields)
            dynamic_prompts.build(services, fields)
            regions.build(fields)
            tiled_diffusion.build(services, fields)
            prompt_list_controls(fields)
            prompt_matrix_controls(fields)
            with gr.Accordion("X/Y/Z plot", open=False, elem_id=f"{task}_xyz_panel"):
                xyz_panel.controls(fields)
            if task != "txt2img":
                img2img_scripts.build(services, fields, task)
            inputs["controlnet"] = controlnet.build(services, fields, services.settings.controlnet_units)
        with gr.Column():
            panel = output_panel(task)
    wire_seed_buttons(buttons, fields, panel)
    prompts = [fields.components["prompt"], fields.components["negative_prompt"]]
    clear.click(None, prompts, prompts, js="(prompt, negative) => confirm('Clear the prompt and the negative prompt?') "
                                          "? ['', ''] : [prompt, negative]", api_visibility="private")
    generate = generation_handler(services, panel, task,
                                  lambda values: (prepare or dict)(controlnet.collect_units(values)))
    wire_generation(services, fields, panel, model, task, actions, generate)
    return GenerationTab(fields, panel, inputs, generate, read)
