"""The txt2img tab: the shared generation body plus A1111's Hires. fix panel (and its ✨ button under the gallery)
and (Kandinsky 2.2) image mixing."""

from __future__ import annotations

import gradio as gr

from pipelines.samplers import sampler_names, schedule_type_names
from pipelines.upscalers import upscaler_names
from pipelines.variation import EXTRA_NOISE

from pipelines.errors import EaselError
from pipelines.request import GenerationRequest

from . import mixing
from .common import GPU_QUEUE, GRID, FieldSet, GenerationTab, checkpoint_picker, gallery_picture, generation_tab,\
    setting_slider, size_multiple_of_8

SAME = "Use same"  # "" in the request: the first pass's sampler or schedule type


def _hires_fix(services, fields: FieldSet) -> None:
    with gr.Accordion("Hires. fix", open=False):
        fields.add("enable_hr", gr.Checkbox(False, label="Enable hires. fix", elem_id="txt2img_enable_hr"))
        with gr.Row():
            fields.add("hr_upscaler", gr.Dropdown(upscaler_names(services.registry.models_dir), value="Latent",
                                                  label="Upscaler",
                                                  elem_id="txt2img_hr_upscaler"))
            fields.add("hr_second_pass_steps", gr.Slider(0, 150, value=0, step=1, label="Hires steps (0: same)",
                                                         elem_id="txt2img_hires_steps"))
            fields.add("denoising_strength", gr.Slider(0.0, 1.0, value=0.7, step=0.01, label="Denoising strength",
                                                       elem_id="txt2img_denoising_strength"))
            setting_slider(fields, EXTRA_NOISE, "txt2img_extra_noise")
        with gr.Row():
            fields.add("hr_scale", gr.Slider(1.0, 4.0, value=2.0, step=0.05, label="Upscale by",
                                             elem_id="txt2img_hr_scale"))
            fields.add("hr_resize_x", gr.Slider(0, 2048, value=0, step=8, label="Resize width to (0: by scale)",
                                                elem_id="txt2img_hr_resize_x"))
            fields.add("hr_resize_y", gr.Slider(0, 2048, value=0, step=8, label="Resize height to (0: by scale)",
                                                elem_id="txt2img_hr_resize_y"))
        with gr.Row():
            checkpoint_picker(services, fields, "hr_checkpoint_name", "Hires checkpoint", "txt2img_hr_checkpoint")
            fields.add("hr_sampler_name", gr.Dropdown([SAME, *sampler_names()], value=SAME, label="Hires sampler",
                                                      elem_id="txt2img_hr_sampler"))
            fields.add("hr_scheduler", gr.Dropdown([SAME, *schedule_type_names()], value=SAME,
                                                   label="Hires schedule type", elem_id="txt2img_hr_scheduler"))
        fields.add("hr_prompt", gr.Textbox("", label="Hires prompt (empty: same)", lines=2, elem_id="txt2img_hr_prompt"))
        fields.add("hr_negative_prompt", gr.Textbox("", label="Hires negative prompt (empty: same)", lines=2,
                                                    elem_id="txt2img_hr_neg_prompt"))


def prepare(values: dict) -> dict:
    values = mixing.collect(values)
    return {**values, **{key: "" for key in ("hr_sampler_name", "hr_scheduler") if values.get(key) == SAME}}


def _wire_upscale(tab: GenerationTab, model: gr.Dropdown) -> None:
    """A1111's ✨ under the gallery: hires fix of the picked picture, which stands for the first pass (the request's
    ``firstpass_image``), with the tab's settings and the picture's seeds; one picture, no script. The result takes
    the picked picture's place in the gallery, as in A1111."""
    panel = tab.panel

    def upscale(values: dict, model_name: str, gallery, index: int, infotexts: list[str], request: gr.Request,
                progress=gr.Progress(track_tqdm=True)):
        picture, caption, index = gallery_picture(gallery, index)
        if caption == GRID:
            raise gr.Error("Pick a picture, not the grid.", print_exception=False)
        try:
            made = GenerationRequest.from_infotext(infotexts[index] if index < len(infotexts) else "")
        except EaselError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        width, height = size_multiple_of_8(picture)
        for update in tab.generate({**values, "firstpass_image": picture, "enable_hr": True, "width": width,
                                    "height": height, "seed": made.seed, "subseed": made.subseed,
                                    "subseed_strength": made.subseed_strength, "batch_size": 1, "batch_count": 1,
                                    "prompt_lines": "", "prompt_matrix": False, "xyz": False}, model_name, request,
                                   progress):
            if len(update.get(panel.gallery) or ()) == 1 and len(infotexts) == len(gallery):  # the result
                update = {**update, panel.selected: index,
                          panel.gallery: [*gallery[:index], *update[panel.gallery], *gallery[index + 1:]],
                          panel.infotexts: [*infotexts[:index], *update[panel.infotexts], *infotexts[index + 1:]]}
            yield update

    panel.upscale.click(tab.fields.named(upscale),
                        [*tab.fields.inputs, model, panel.gallery, panel.selected, panel.infotexts], panel.outputs,
                        show_progress_on=panel.gallery, concurrency_id=GPU_QUEUE, concurrency_limit=1,
                        api_visibility="private")


def build(services, model: gr.Dropdown, defaults: dict) -> GenerationTab:
    registry = services.registry

    def task_inputs(fields: FieldSet) -> dict:
        _hires_fix(services, fields)
        return {"mixing": mixing.build(fields, visible=mixing.is_mixing_model(registry, model.value))}

    tab = generation_tab(services, model, defaults, "txt2img", task_inputs, prepare)
    mixing.wire_visibility(registry, model, tab.inputs["mixing"])
    _wire_upscale(tab, model)
    return tab
