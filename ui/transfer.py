"""Links between tabs: pictures sent to img2img, inpaint, Extras or ControlNet, generation parameters sent to a
generation tab."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gradio as gr

from pipelines.cfg_rescale import RESCALE
from pipelines.deep_shrink import FIELDS as DS_FIELDS
from pipelines.errors import EaselError
from pipelines.dynamic_thresholding import FIELDS as DT_FIELDS
from pipelines.freeu import SETTINGS as FREEU_SETTINGS
from pipelines.negative_guidance import NGMS, NGMS_ALL, SKIP_EARLY
from pipelines.pag import PAG_SETTINGS
from pipelines.sag import SAG_SETTINGS
from pipelines.infotext import parse_infotext
from pipelines.registry import TITLE
from pipelines.sampler_parameters import ENSD, SETTINGS as SAMPLER_SETTINGS, UNI_PC
from pipelines.request import NO_CHECKPOINT, REGIONAL_FIELDS, GenerationRequest
from pipelines.soft_inpainting import SETTINGS as SOFT_SETTINGS
from pipelines.tiled_diffusion import FIELDS as TILED_FIELDS
from pipelines.variation import EXTRA_NOISE

from .common import GenerationTab, gallery_picture, opened_picture, size_multiple_of_8
from .txt2img import SAME

# Request fields that "Send to" fills where the tab has them, in the order of the handler's outputs (then model,
# picture, tab).
SENT_FIELDS = ("prompt", "negative_prompt", "sampler", "scheduler", "steps", "cfg_scale", "width", "height", "seed",
               "clip_skip", "enable_hr", "hr_scale", "hr_resize_x", "hr_resize_y", "hr_upscaler",
               "hr_second_pass_steps", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt",
               "denoising_strength", "step_cache", "tiling", "tiling_axes", "subseed", "subseed_strength",
               "seed_resize_from_w", "seed_resize_from_h", "hr_checkpoint_name", "refiner_checkpoint", "refiner_switch_at",
               "initial_noise_multiplier", EXTRA_NOISE.field, "color_correction", "soft_inpainting",
               *(setting.field for setting in SOFT_SETTINGS), *REGIONAL_FIELDS, RESCALE.field, NGMS.field,
               NGMS_ALL, SKIP_EARLY.field, "freeu",
               *(setting.field for setting in (*PAG_SETTINGS, *SAG_SETTINGS, *FREEU_SETTINGS, *SAMPLER_SETTINGS)),
               "noise_schedule",
               *UNI_PC, ENSD, *TILED_FIELDS, *DT_FIELDS, *DS_FIELDS)


def _shown(services, name: str, value):
    """A request value as txt2img's widget shows it: the pickers' words for none, a known checkpoint by its name
    (infotexts write A1111's "name [hash]" titles)."""
    if name in ("hr_sampler_name", "hr_scheduler") and not value:
        return SAME
    if name in NO_CHECKPOINT:
        if not value:
            return NO_CHECKPOINT[name]
        title = TITLE.match(value)
        return title["name"] if title and title["name"] in services.registry.names() else value
    return value


@dataclass(frozen=True)
class SendTarget:
    """Where a "Send to" button puts a picture: ``widget`` takes ``as_value(picture)``, the tab ``tab`` opens, and
    a generation tab's size (``size``: its width and height sliders) follows the picture."""

    widget: gr.components.Component
    tab: str
    as_value: Callable = lambda image: image
    size: tuple = ()


def _sent(target: GenerationTab) -> list[str]:
    """The request fields an infotext fills in ``target``."""
    return [name for name in SENT_FIELDS if name in target.fields.components]


def _filled(services, names: list[str], text: str) -> list:
    """The values of ``names`` in an infotext, then its model (left as it is when not one of ours); a text with no
    parameters is refused."""
    if not parse_infotext(text or "")[2]:
        raise gr.Error("No generation parameters to read: they are a prompt, then a line like \"Steps: 20, Sampler: "
                       "Euler a, Seed: 1, Size: 512x512\".", print_exception=False)
    try:
        request = GenerationRequest.from_infotext(text)
    except EaselError as exc:
        raise gr.Error(str(exc), print_exception=False) from None
    known_model = request.model if request.model in services.registry.names() else gr.update()
    return [*(_shown(services, name, getattr(request, name)) for name in names), known_model]


def wire_send_parameters(services, button: gr.Button, infotext: gr.components.Component, target: GenerationTab,
                         model: gr.Dropdown, tabs: gr.Tabs, picture: tuple | None = None,
                         api_name: str | None = None) -> None:
    """``button`` reads the infotext in ``infotext`` into the widgets ``target`` has and opens its tab: txt2img's,
    or with ``picture`` (a component holding a picture's path, and the ``SendTarget`` it goes to) that target's,
    which gets the picture too (its size is the infotext's)."""
    names, (source, to) = _sent(target), picture or (None, None)

    def send(text: str, path: str | None = None):
        sent = [to.as_value(opened_picture(path))] if to else []
        return [*_filled(services, names, text), *sent, gr.Tabs(selected=to.tab if to else "txt2img")]

    outputs = [target.fields.components[name] for name in names]
    button.click(send, [infotext, *([source] if to else [])], [*outputs, model, *([to.widget] if to else []), tabs],
                 api_name=api_name or False, api_visibility="public" if api_name else "private", show_progress="hidden")


def wire_read_parameters(services, tab: GenerationTab, model: gr.Dropdown) -> None:
    """A1111's ↙️ under Generate: generation parameters pasted into the prompt box (a picture's, from PNG Info or a
    website) fill the tab; with the prompt box empty, those of the picture the gallery shows."""
    names = _sent(tab)

    def read(text: str, shown: str):
        return _filled(services, names, text if (text or "").strip() else shown)

    tab.read.click(read, [tab.fields.components["prompt"], tab.panel.infotext],
                   [*(tab.fields.components[name] for name in names), model], api_visibility="private",
                   show_progress="hidden")  # a refusal is its message alone, not an error mark on every widget


def wire_send_picture(tabs: gr.Tabs, button: gr.Button, source: gr.components.Component, to: SendTarget) -> None:
    """``button`` puts the picture whose path ``source`` holds into ``to``."""
    button.click(lambda path: (to.as_value(opened_picture(path)), gr.Tabs(selected=to.tab)), source,
                 [to.widget, tabs], api_visibility="private")


def wire_send_images(tabs: gr.Tabs, sources: list[GenerationTab], targets: dict[str, SendTarget]) -> None:
    """"Send to img2img / inpaint / extras / controlnet" under every gallery: the picked picture (its parameters
    kept) becomes the target's input and the target's tab opens."""
    for source in sources:
        for target_id, button in source.panel.send.items():
            if target_id not in targets:
                continue
            target = targets[target_id]

            def send(gallery, index, target=target):
                image = gallery_picture(gallery, index)[0]
                size = size_multiple_of_8(image) if target.size else ()
                return target.as_value(image), *size, gr.Tabs(selected=target.tab)

            button.click(send, [source.panel.gallery, source.panel.selected], [target.widget, *target.size, tabs],
                         api_visibility="private")
