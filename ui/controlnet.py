"""The ControlNet panel of every generation tab: N units as the sd-webui-controlnet extension lays them out.

Each unit's widgets are fields named ``cn{i}_{setting}``; ``collect_units`` turns them into the request's
``controlnets`` (the enabled units only), so the engine sees the same unit dicts the REST API sends.
"""

from __future__ import annotations

import gradio as gr

from pipelines.controlnet import CONTROL_MODES, NO_MODEL, RESIZE_MODES, ControlUnit
from pipelines.errors import EaselError
from pipelines.preprocessors import PREPROCESSORS, pixel_perfect_resolution, unavailable_reason

from .common import FIT, REFRESH, FieldSet

SETTINGS = ("enabled", "image", "module", "model", "weight", "guidance_start", "guidance_end", "resize_mode",
            "pixel_perfect", "processor_res", "threshold_a", "threshold_b", "control_mode", "effective_region_mask")
_DEFAULT = ControlUnit(enabled=False)


def _threshold_updates(module: str) -> tuple:
    """Threshold sliders follow the module: its labels and ranges, hidden when it has none."""
    spec = PREPROCESSORS.get(module)
    return tuple(
        gr.update(visible=False) if slider is None else
        gr.update(visible=True, label=slider.label, minimum=slider.minimum, maximum=slider.maximum, step=slider.step,
                  value=slider.value)
        for slider in ((spec.threshold_a, spec.threshold_b) if spec else (None, None))
    )


def _unit(services, fields: FieldSet, index: int) -> dict:
    p, registry = f"{fields.prefix}_cn{index}", services.registry
    add = lambda name, widget: fields.add(f"cn{index}_{name}", widget)  # noqa: E731
    with gr.Row():
        add("enabled", gr.Checkbox(False, label="Enable", elem_id=f"{p}_enabled"))
        add("pixel_perfect", gr.Checkbox(False, label="Pixel Perfect", elem_id=f"{p}_pixel_perfect"))
    with gr.Row():
        add("image", gr.Image(label="Control image (none in img2img/inpaint: the init picture)", type="pil",
                              sources=["upload", "clipboard"], height=240, elem_id=f"{p}_image", elem_classes=FIT,
                              format="png"))
        preview = gr.Image(label="Preprocessor preview", interactive=False, height=240, elem_id=f"{p}_preview",
                           elem_classes=FIT, format="png")  # a map downloaded to reuse stays exact
    with gr.Accordion("Effective Region Mask", open=False, elem_id=f"{p}_region"):
        add("effective_region_mask", gr.Image(label="Where the unit acts: white fully, grey partly, black not at all "
                                                    "(stretched to the picture; none: everywhere)", type="pil",
                                              sources=["upload", "clipboard"], height=200, elem_classes=FIT,
                                              elem_id=f"{p}_effective_region_mask", format="png"))
    with gr.Row():
        module = add("module", gr.Dropdown(list(PREPROCESSORS), value="canny" if index == 0 else _DEFAULT.module,
                                           label="Preprocessor", elem_id=f"{p}_module"))
        model = add("model", gr.Dropdown([NO_MODEL, *registry.controlnet_names()], value=NO_MODEL, label="Model",
                                         allow_custom_value=True, elem_id=f"{p}_model"))
        refresh = gr.Button(REFRESH, scale=0, min_width=48, elem_id=f"{p}_refresh")
        run_preview = gr.Button("Preview", scale=0, min_width=90, elem_id=f"{p}_run_preview")
    note = gr.Markdown("", elem_id=f"{p}_note")
    with gr.Row():
        add("weight", gr.Slider(0.0, 2.0, value=_DEFAULT.weight, step=0.05, label="Control Weight",
                                elem_id=f"{p}_weight"))
        add("guidance_start", gr.Slider(0.0, 1.0, value=_DEFAULT.guidance_start, step=0.01,
                                        label="Starting Control Step", elem_id=f"{p}_guidance_start"))
        add("guidance_end", gr.Slider(0.0, 1.0, value=_DEFAULT.guidance_end, step=0.01, label="Ending Control Step",
                                      elem_id=f"{p}_guidance_end"))
    with gr.Row():
        add("processor_res", gr.Slider(64, 2048, value=_DEFAULT.processor_res, step=8,
                                       label="Preprocessor Resolution", elem_id=f"{p}_processor_res"))
        first = PREPROCESSORS[module.value]
        for name, spec in (("threshold_a", first.threshold_a), ("threshold_b", first.threshold_b)):
            add(name, gr.Slider(spec.minimum if spec else 0, spec.maximum if spec else 1,
                                value=spec.value if spec else 0, step=spec.step if spec else 1,
                                label=spec.label if spec else name, visible=spec is not None, elem_id=f"{p}_{name}"))
    add("control_mode", gr.Radio(list(CONTROL_MODES), value=CONTROL_MODES[0], type="index", label="Control Mode",
                                 elem_id=f"{p}_control_mode"))
    add("resize_mode", gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[_DEFAULT.resize_mode], type="index",
                                label="Resize Mode", elem_id=f"{p}_resize_mode"))
    widgets = {name: fields.components[f"cn{index}_{name}"] for name in SETTINGS}

    def module_changed(name: str):
        reason = unavailable_reason(registry.models_dir, name) if name in PREPROCESSORS else None
        return (*_threshold_updates(name), f"⚠️ {reason}" if reason else "")

    # a picture arriving (uploaded, or sent from a gallery) enables its unit, as in the extension
    widgets["image"].change(lambda image, on: on or image is not None, [widgets["image"], widgets["enabled"]],
                            widgets["enabled"], api_visibility="private")
    module.change(module_changed, module, [widgets["threshold_a"], widgets["threshold_b"], note],
                  api_visibility="private")
    refresh.click(lambda current: gr.Dropdown(choices=[NO_MODEL, *registry.controlnet_names()], value=current),
                  model, model, api_visibility="private")

    def detect(image, name, resolution, a, b, pixel_perfect, resize_mode, width, height):
        if image is None:
            raise gr.Error("Upload a control image to preview.", print_exception=False)
        if pixel_perfect:
            resolution = pixel_perfect_resolution(image, width, height, resize_mode)
        spec = PREPROCESSORS.get(name)
        try:
            return services.engine.preprocessors.run(name, image, int(resolution),
                                                     a if spec and spec.threshold_a else None,
                                                     b if spec and spec.threshold_b else None)
        except EaselError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    run_preview.click(detect, [widgets[k] for k in ("image", "module", "processor_res", "threshold_a", "threshold_b",
                                                    "pixel_perfect", "resize_mode")]
                      + [fields.components["width"], fields.components["height"]], preview,
                      api_name=f"{fields.prefix}_controlnet{index}_preview")
    return widgets


def build(services, fields: FieldSet, units: int) -> list[dict]:
    """The ControlNet accordion; call after the size widgets exist. Returns each unit's widgets by setting."""
    with gr.Accordion("ControlNet", open=False, elem_id=f"{fields.prefix}_controlnet"):
        widgets = []
        with gr.Tabs():
            for index in range(units):
                with gr.Tab(f"ControlNet Unit {index}", id=f"{fields.prefix}_cn_tab{index}"):
                    widgets.append(_unit(services, fields, index))
    return widgets


def collect_units(values: dict) -> dict:
    """Pop every unit's fields from ``values`` and add the enabled ones as ``controlnets``."""
    units, index = [], 0
    while f"cn{index}_enabled" in values:
        unit = {name: values.pop(f"cn{index}_{name}") for name in SETTINGS}
        if unit["enabled"]:
            spec = PREPROCESSORS.get(unit["module"])
            for key, slider in (("threshold_a", spec and spec.threshold_a), ("threshold_b", spec and spec.threshold_b)):
                unit[key] = unit[key] if slider else None  # hidden sliders keep another module's value
            units.append(unit)
        index += 1
    return {**values, "controlnets": units}
