"""The Extras tab (A1111's): one picture, uploaded pictures or a server folder's, upscaled by one upscaler (optionally
blended with a second one's), then split, cropped and flipped as a training set needs (``pipelines.postprocessing``).
"""

from __future__ import annotations

import gradio as gr

from pipelines import extras
from pipelines.errors import EaselError, RequestError
from pipelines.postprocessing import FLIPS, OBJECTIVES

from .common import FIT, GPU_QUEUE, REFRESH, FieldSet

MODES = ("Single Image", "Batch Process", "Batch from Directory")  # A1111's extras_mode 0, 1, 2


def build(services) -> gr.Image:
    """The tab; returns its source picture (what "Send to extras" fills)."""
    models_dir = services.registry.models_dir
    fields = FieldSet("extras")
    add = fields.add

    def choices() -> gr.Dropdown:
        return gr.Dropdown(choices=extras.names(models_dir))

    mode = gr.State(0)
    with gr.Row():
        with gr.Column():
            with gr.Tabs(elem_id="extras_mode") as tabs:
                with gr.Tab(MODES[0], id=0, elem_id="extras_single_tab") as single:
                    image = add("image", gr.Image(label="Source", type="pil", sources=["upload", "clipboard"],
                                                  elem_id="extras_image", height=360, elem_classes=FIT,
                                                  image_mode="RGB", format="png"))
                with gr.Tab(MODES[1], id=1, elem_id="extras_batch_process_tab") as uploaded:
                    files = gr.File(label="Pictures (their file names name the results)", file_count="multiple",
                                    file_types=["image"], elem_id="extras_image_batch")
                with gr.Tab(MODES[2], id=2, elem_id="extras_batch_directory_tab") as directory:
                    input_dir = gr.Textbox(label="Input directory", placeholder="a folder on the server",
                                           elem_id="extras_batch_input_dir")
                    add("output_dir", gr.Textbox(label="Output directory", elem_id="extras_batch_output_dir",
                                                 placeholder=f"inside the outputs folder; empty: {extras.CATEGORY}"))
                    show = gr.Checkbox(True, label="Show result images", elem_id="extras_show_extras_results")
            run = gr.Button("Generate", variant="primary", elem_id="extras_generate")
            add("resize_mode", gr.Radio(list(extras.RESIZE_MODES), value=extras.RESIZE_MODES[0], type="index",
                                        label="Resize", elem_id="extras_resize_mode"))
            with gr.Row():
                add("upscaling_resize", gr.Slider(1.0, 8.0, value=2.0, step=0.05, label="Scale by",
                                                  elem_id="extras_upscaling_resize"))
                add("upscaling_resize_w", gr.Slider(64, 8192, value=512, step=8, label="Width",
                                                    elem_id="extras_upscaling_resize_w"))
                add("upscaling_resize_h", gr.Slider(64, 8192, value=512, step=8, label="Height",
                                                    elem_id="extras_upscaling_resize_h"))
                add("upscaling_crop", gr.Checkbox(True, label="Crop to fit", elem_id="extras_upscaling_crop"))
            with gr.Row():
                first = add("upscaler_1", gr.Dropdown(extras.names(models_dir), value=extras.NONE, label="Upscaler 1",
                                                      elem_id="extras_upscaler_1"))
                second = add("upscaler_2", gr.Dropdown(extras.names(models_dir), value=extras.NONE,
                                                       label="Upscaler 2", elem_id="extras_upscaler_2"))
                add("extras_upscaler_2_visibility", gr.Slider(0.0, 1.0, value=0.0, step=0.001,
                                                              label="Upscaler 2 visibility",
                                                              elem_id="extras_upscaler_2_visibility"))
                refresh = gr.Button(REFRESH, elem_id="extras_refresh", scale=0, min_width=48)
            _operations(add)
        with gr.Column():
            result = gr.Gallery(label="Result", columns=2, object_fit="contain", height=480, format="png",
                                elem_id="extras_result")
            info = gr.Textbox(label="Postprocessing", lines=2, interactive=False, elem_id="extras_info")

    def work(values: dict, extras_mode: int, paths: list | None, folder: str, show_results: bool):
        """Each source's pictures as they are made; a bad setting or source stops the batch with a message."""
        try:
            if extras_mode == 0:
                sources = [(values["image"], "", "")]
            elif extras_mode == 1:
                if not paths:
                    raise RequestError("Batch Process needs pictures: upload some first.", "image_folder")
                sources = extras.sources(paths)
            else:
                sources = extras.sources(extras.folder_files(folder))
            shown, notes, count, made = [], {}, 0, 0
            for picture, name, caption in sources:
                settings = extras.ExtrasRequest(**{**values, "image": picture, "image_name": name, "caption": caption,
                                                   "output_dir": values["output_dir"] if extras_mode == 2 else ""})
                done = services.engine.postprocess(settings)
                count, made = count + 1, made + len(done.images)
                notes.update(dict.fromkeys(done.notes))
                if extras_mode != 2 or show_results:
                    shown.extend(done.images)
                saved = [f"{made} pictures from {count} sources, saved in {done.paths[0].parent}"] \
                    if extras_mode and done.paths[0] else []
                yield shown, "\n".join([done.text, *notes, *saved])
            if not count:
                raise RequestError("The batch holds no pictures.", "input_dir")
        except EaselError as exc:
            raise gr.Error(str(exc), print_exception=False) from None

    handler = fields.named(work)
    run.click(handler, [*fields.inputs, mode, files, input_dir, show], [result, info], api_name="extras",
              concurrency_id=GPU_QUEUE, concurrency_limit=1)
    for index, tab in enumerate((single, uploaded, directory)):
        tab.select(lambda index=index: index, None, mode, api_visibility="private")
    image.change(lambda: (0, gr.Tabs(selected=0)), None, [mode, tabs], api_visibility="private")  # Send to too
    refresh.click(lambda: (choices(), choices()), None, [first, second], api_visibility="private")
    return image


def _operations(add) -> None:
    """A1111's postprocessing panels after the upscale, each with its switch, under its labels and ranges."""
    with gr.Accordion("Split oversized images", open=False, elem_id="extras_split_panel"):
        add("split_oversized", gr.Checkbox(False, label="Split oversized images", elem_id="extras_split_oversized"))
        with gr.Row():
            add("split_threshold", gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Threshold",
                                             elem_id="postprocess_split_threshold"))
            add("overlap_ratio", gr.Slider(0.0, 0.9, value=0.2, step=0.05, label="Overlap ratio",
                                           elem_id="postprocess_overlap_ratio"))
    with gr.Accordion("Auto focal point crop", open=False, elem_id="extras_focal_panel"):
        add("focal_crop", gr.Checkbox(False, label="Auto focal point crop", elem_id="extras_focal_crop"))
        with gr.Row():
            add("focal_crop_entropy_weight", gr.Slider(0.0, 1.0, value=0.15, step=0.05,
                                                       label="Focal point entropy weight",
                                                       elem_id="postprocess_focal_crop_entropy_weight"))
            add("focal_crop_edges_weight", gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Focal point edges weight",
                                                     elem_id="postprocess_focal_crop_edges_weight"))
        add("focal_crop_debug", gr.Checkbox(False, label="Create debug image",
                                            elem_id="train_process_focal_crop_debug"))
    with gr.Accordion("Auto-sized crop", open=False, elem_id="extras_autosized_panel"):
        add("autosized_crop", gr.Checkbox(False, label="Auto-sized crop", elem_id="extras_autosized_crop"))
        gr.Markdown("Each picture is cut from its middle to a width and height chosen for it, then scaled to them.")
        with gr.Row():
            add("multicrop_mindim", gr.Slider(64, 2048, value=384, step=8, label="Dimension lower bound",
                                              elem_id="postprocess_multicrop_mindim"))
            add("multicrop_maxdim", gr.Slider(64, 2048, value=768, step=8, label="Dimension upper bound",
                                              elem_id="postprocess_multicrop_maxdim"))
        with gr.Row():
            add("multicrop_minarea", gr.Slider(64 * 64, 2048 * 2048, value=64 * 64, step=1, label="Area lower bound",
                                               elem_id="postprocess_multicrop_minarea"))
            add("multicrop_maxarea", gr.Slider(64 * 64, 2048 * 2048, value=640 * 640, step=1, label="Area upper bound",
                                               elem_id="postprocess_multicrop_maxarea"))
        with gr.Row():
            add("multicrop_objective", gr.Radio(list(OBJECTIVES), value=OBJECTIVES[0], label="Resizing objective",
                                                elem_id="postprocess_multicrop_objective"))
            add("multicrop_threshold", gr.Slider(0.0, 1.0, value=0.1, step=0.01, label="Error threshold",
                                                 elem_id="postprocess_multicrop_threshold"))
    with gr.Accordion("Create flipped copies", open=False, elem_id="extras_flip_panel"):
        add("flipped_copies", gr.Checkbox(False, label="Create flipped copies", elem_id="extras_flipped_copies"))
        add("flip_options", gr.CheckboxGroup(list(FLIPS), value=[FLIPS[0]], show_label=False,
                                             elem_id="extras_flip_options"))
