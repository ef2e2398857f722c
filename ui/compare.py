"""The Compare tab: the same prompt, seed and settings (or each model's presets) across 2 to 9 models, with each
model's picture and cost, exports (CSV, JSON, labelled grid PNG); below it, the X/Y/Z plot over the same
settings. Both run through the shared GPU queue; the work itself is ``pipelines/compare.py`` and
``pipelines/xyz.py``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from pipelines.compare import COLUMNS, MAX_MODELS, CompareProgress, comparison_requests, run_comparison
from pipelines.errors import EaselError
from pipelines.infotext import png_metadata
from pipelines.request import TASKS, GenerationRequest
from pipelines.xyz import PlotProgress, from_values, plan, run_plot

from . import controlnet, xyz_panel
from .common import FIT, GPU_QUEUE, FieldSet, prompt_boxes, sampling_controls, wire_token_counters


def _export_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="easel-compare-"))


def _inputs(services, fields: FieldSet, defaults: dict, last_seed: gr.State) -> None:
    with gr.Row():
        fields.add("use_presets", gr.Checkbox(False, label="Each model's presets (size, steps, CFG, sampler)",
                                              elem_id="compare_use_presets"))
        fields.add("warmup", gr.Checkbox(False, label="Warm-up run (reported as the cold run, left out of medians)",
                                         elem_id="compare_warmup"))
        fields.add("repeats", gr.Slider(1, 10, value=1, step=1, label="Timed runs (median of N)",
                                        elem_id="compare_repeats"))
    buttons = sampling_controls(fields, defaults)
    wire_token_counters(services, fields)
    width, height = fields.components["width"], fields.components["height"]
    buttons["swap"].click(lambda w, h: (h, w), [width, height], [width, height], api_visibility="private")
    buttons["dice"].click(lambda: -1, None, fields.components["seed"], api_visibility="private")
    buttons["reuse"].click(lambda last: last, last_seed, fields.components["seed"], api_visibility="private")
    with gr.Accordion("img2img / inpaint inputs (the same for every model)", open=False):
        fields.add("task", gr.Radio(list(TASKS), value="txt2img", label="Task", elem_id="compare_task"))
        with gr.Row():
            fields.add("init_image", gr.Image(type="pil", label="Init image", sources=["upload", "clipboard"],
                                              height=240, elem_id="compare_init_image", elem_classes=FIT))
            fields.add("mask", gr.Image(type="pil", image_mode="L", label="Mask (white repaints)",
                                        sources=["upload", "clipboard"], height=240, elem_id="compare_mask",
                                        elem_classes=FIT))
        fields.add("denoising_strength", gr.Slider(0.0, 1.0, value=0.75, step=0.01, label="Denoising strength",
                                                   elem_id="compare_denoising_strength"))
    controlnet.build(services, fields, services.settings.controlnet_units)


def _base_request(values: dict, model: str = "") -> GenerationRequest:
    values = controlnet.collect_units(values)
    if values["task"] == "txt2img":
        values.update(init_image=None, mask=None)
    return GenerationRequest.from_values({**values, "model": model})


def build(services, model: gr.Dropdown, defaults: dict) -> None:
    registry = services.registry
    fields, last_seed = FieldSet("compare"), gr.State(-1)
    with gr.Row():
        with gr.Column(scale=5):
            fields.add("models", gr.Dropdown(registry.names(), value=[], multiselect=True, max_choices=MAX_MODELS,
                                             allow_custom_value=True, label=f"Models to compare (2 to {MAX_MODELS})",
                                             elem_id="compare_models"))
            prompt_boxes(services, fields)
        with gr.Column(scale=1, min_width=160):
            run = gr.Button("Compare", variant="primary", elem_id="compare_run")
            interrupt = gr.Button("Interrupt", variant="stop", elem_id="compare_interrupt")
    with gr.Row():
        with gr.Column():
            _inputs(services, fields, defaults, last_seed)
        with gr.Column():
            gallery = gr.Gallery(label="Pictures", columns=3, object_fit="contain", height=400, format="png",
                                 elem_id="compare_gallery")
            table = gr.Dataframe(headers=list(COLUMNS), interactive=False, elem_id="compare_table")
            note = gr.Markdown("", elem_id="compare_note")
            files = gr.File(label="Exports: CSV, JSON, grid PNG", file_count="multiple", elem_id="compare_files")
    with gr.Accordion("X/Y/Z plot (the settings above; the model picked at the top unless an axis names models)",
                      open=False, elem_id="xyz_plot"):
        xyz_panel.controls(fields, toggle=False)
        xyz_run = gr.Button("Run X/Y/Z plot", variant="primary", elem_id="xyz_run")
        grids = gr.Gallery(label="Grid (then each Z value's and each cell's, when included)", columns=1,
                           object_fit="contain", height=512, preview=True, format="png", elem_id="xyz_gallery")
        grid_files = gr.File(label="Grid PNGs", file_count="multiple", elem_id="xyz_files")

    def owner(request: gr.Request | None):
        return request.session_hash if request else None

    def compare(values: dict, request: gr.Request, progress=gr.Progress()):
        try:
            requests = comparison_requests(_base_request(values), values["models"] or [], registry,
                                           values["use_presets"])
            for event in run_comparison(services.stream, requests, repeats=values["repeats"],
                                        warmup=values["warmup"], owner=owner(request)):
                if isinstance(event, CompareProgress):
                    progress(event.fraction, desc=event.describe())
                else:
                    comparison = event
        except EaselError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        folder = _export_dir()
        (folder / "comparison.csv").write_text(comparison.csv())
        (folder / "comparison.json").write_text(comparison.json())
        comparison.grid().save(folder / "comparison-grid.png")
        rows = comparison.rows()
        groups = "; ".join(f"{g['latent_shape']}: {', '.join(g['models'])}" for g in comparison.shared_noise())
        memory = rows[0]["memory_kind"] if rows else "n/a"
        yield {
            gallery: [(run.result.images[0], run.result.request.model) for run in comparison.runs if run.result.images],
            table: [[row[c] for c in COLUMNS] for row in rows],
            note: (f"Seed {requests[0].seed}. Shared starting noise by latent shape: {groups}. Peak memory: {memory}."
                   + (" Interrupted: the models after the last row did not run." if comparison.interrupted else "")),
            files: [str(folder / name) for name in ("comparison.csv", "comparison.json", "comparison-grid.png")],
            last_seed: requests[0].seed,
        }

    def xyz_plot(values: dict, model_name: str, request: gr.Request, progress=gr.Progress()):
        try:
            plot = plan(_base_request(values, model_name or ""), *from_values({**values, "xyz": True}))
            for event in run_plot(services.stream, plot, owner=owner(request)):
                if isinstance(event, PlotProgress):
                    progress(event.fraction, desc=event.describe())
                else:
                    result = event
        except EaselError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        # saved as A1111 saves them (txt2img-grids or img2img-grids, with their parameters), and offered for download
        saved = result.grids()
        services.engine.save_grids(saved, next(iter(result.plot.cells.values())).task)
        folder, paths = _export_dir(), []
        for number, (grid, infotext, *_) in enumerate(saved):
            paths.append(str(folder / f"xyz-grid-{number}.png"))
            grid.save(paths[-1], pnginfo=png_metadata(infotext))
        cells = [cell.images[0] for cell in result.cells()] if plot.options.sub_images else []
        yield {grids: gr.update(value=paths + cells, selected_index=0), grid_files: paths}  # the grid opened

    run.click(fields.named(compare), fields.inputs, [gallery, table, note, files, last_seed], api_name="compare",
              concurrency_id=GPU_QUEUE, concurrency_limit=1)
    xyz_run.click(fields.named(xyz_plot), [*fields.inputs, model], [grids, grid_files],
                  api_name="xyz_plot", concurrency_id=GPU_QUEUE, concurrency_limit=1)

    def stop(request: gr.Request):
        services.engine.interrupt(owner=owner(request))

    interrupt.click(stop, None, None, api_name="compare_interrupt", queue=False)
