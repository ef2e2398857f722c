"""The Train tab (A1111's): *Create embedding* and *Create hypernetwork*, then *Train* either on a folder of pictures
with the page's checkpoint, on the GPU queue, with its loss and preview pictures as they come. The two trainings share
every field but the file's name and learning rate, as in A1111's tab."""

from __future__ import annotations

import time

import gradio as gr

from pipelines.embedding_training import CreateRequest, TrainEmbeddingRequest, create_embedding, train_embedding
from pipelines.embeddings import MAX_VECTORS
from pipelines.engine import streamed
from pipelines.errors import EaselError
from pipelines.hypernetwork_training import (DEFAULT_SIZES, SIZES, CreateHypernetworkRequest,
                                             TrainHypernetworkRequest, create_hypernetwork, model_widths,
                                             train_hypernetwork)
from pipelines.networks.hypernetwork import ACTIVATION_NAMES, WEIGHT_INITS
from pipelines.training_run import (CLIP_GRAD, LATENT_SAMPLING, PREVIEW_FIELDS, TrainProgress, TrainResult,
                                   configured, template_names)

from .common import FIT, GPU_QUEUE, REFRESH, FieldSet

PROGRESS_PERIOD = 0.25  # seconds between two progress lines shown

DEFAULT_TEMPLATE = "style_filewords.txt"


def _names(services, kind: str) -> list[str]:
    """The files of ``kind`` ("embedding", "hypernet") by name, read from disk now."""
    return [item.name for item in services.engine.networks.files(kind)]


def _modules(services, model_name: str | None) -> dict:
    """*Modules*' choices and ticks: A1111's widths, then the checkpoint's own widths when they differ (ticked)."""
    extra = [w for w in model_widths(services.engine.registry, model_name or "") if w not in SIZES]
    return {"choices": [str(w) for w in (*SIZES, *extra)], "value": [str(w) for w in (*DEFAULT_SIZES, *extra)]}


def build(services, model: gr.Dropdown, txt2img: dict) -> None:
    """The tab; ``txt2img``: that tab's fields by name, which previews can read (A1111's *Read parameters*)."""
    engine = services.engine

    with gr.Tabs():
        with gr.Tab("Create embedding", id="train_create"):
            name = gr.Textbox(label="Name", elem_id="train_embedding_name")
            init_text = gr.Textbox("*", label="Initialization text", elem_id="train_initialization_text",
                                   info="Each vector starts from a word of this text (empty: zeros).")
            vectors = gr.Slider(1, MAX_VECTORS, value=1, step=1, label="Number of vectors per token",
                                elem_id="train_nvpt")
            overwrite = gr.Checkbox(False, label="Overwrite Old Embedding", elem_id="train_overwrite_old_embedding")
            create = gr.Button("Create embedding", variant="primary", elem_id="train_create_embedding")
            created = gr.Textbox(label="Result", interactive=False, elem_id="train_create_result")
        with gr.Tab("Create hypernetwork", id="train_create_hypernetwork_tab"):
            new_hypernetwork = gr.Textbox(label="Name", elem_id="train_new_hypernetwork_name")
            sizes = gr.CheckboxGroup(label="Modules", elem_id="train_new_hypernetwork_sizes",
                                     info="The text's width (768 SD 1.x, 1024 SD 2.x) and the UNet's channels; then "
                                          "the checkpoint's own when they differ",
                                     **_modules(services, model.value))
            layer_structure = gr.Textbox("1, 2, 1", label="Enter hypernetwork layer structure",
                                         elem_id="train_new_hypernetwork_layer_structure",
                                         placeholder="1st and last digit must be 1. ex:'1, 2, 1'")
            with gr.Row():
                activation = gr.Dropdown(list(ACTIVATION_NAMES), value="linear", label="Select activation function "
                                         "of hypernetwork. Recommended : Swish / Linear(none)",
                                         elem_id="train_new_hypernetwork_activation_func")
                weight_init = gr.Dropdown(list(WEIGHT_INITS), value="Normal",
                                          label="Select Layer weights initialization. Recommended: Kaiming for relu-"
                                                "like, Xavier for sigmoid-like, Normal otherwise",
                                          elem_id="train_new_hypernetwork_weight_init")
            with gr.Row():
                layer_norm = gr.Checkbox(False, label="Add layer normalization",
                                         elem_id="train_new_hypernetwork_add_layer_norm")
                use_dropout = gr.Checkbox(False, label="Use dropout", elem_id="train_new_hypernetwork_use_dropout")
            dropout_structure = gr.Textbox("0, 0, 0", label="Enter hypernetwork Dropout structure (or empty). "
                                           "Recommended : 0~0.35 incrementing sequence: 0, 0.05, 0.15",
                                           elem_id="train_new_hypernetwork_dropout_structure")
            overwrite_hypernetwork = gr.Checkbox(False, label="Overwrite Old Hypernetwork",
                                                 elem_id="train_overwrite_old_hypernetwork")
            create_hypernetwork_button = gr.Button("Create hypernetwork", variant="primary",
                                                   elem_id="train_create_hypernetwork")
            hypernetwork_created = gr.Textbox(label="Result", interactive=False,
                                              elem_id="train_create_hypernetwork_result")
        with gr.Tab("Train", id="train_train"):
            with gr.Row():
                with gr.Column():
                    with gr.Row():
                        embedding = gr.Dropdown(_names(services, "embedding"), label="Embedding",
                                                elem_id="train_embedding", allow_custom_value=True, scale=4)
                        refresh = gr.Button(REFRESH, elem_id="train_refresh_embeddings", scale=0, min_width=48)
                    with gr.Row():
                        hypernetwork = gr.Dropdown(_names(services, "hypernet"), label="Hypernetwork",
                                                   elem_id="train_hypernetwork", allow_custom_value=True, scale=4)
                        refresh_hypernetworks = gr.Button(REFRESH, elem_id="train_refresh_hypernetworks", scale=0,
                                                          min_width=48)
                    with gr.Row():
                        learn_rate = gr.Textbox("0.005", label="Embedding Learning rate",
                                                elem_id="train_embedding_learn_rate",
                                                info="A number, or rates with the step each lasts until: "
                                                     "0.05:100, 0.005")
                        hypernetwork_rate = gr.Textbox("0.00001", label="Hypernetwork Learning rate",
                                                       elem_id="train_hypernetwork_learn_rate")
                    with gr.Row():
                        clip_mode = gr.Dropdown(list(CLIP_GRAD), value="disabled", label="Gradient Clipping",
                                                elem_id="train_clip_grad_mode")
                        clip_value = gr.Textbox("0.1", label="Clipping value", elem_id="train_clip_grad_value")
                    with gr.Row():
                        batch_size = gr.Number(1, label="Batch size", precision=0, elem_id="train_batch_size")
                        gradient_step = gr.Number(1, label="Gradient accumulation steps", precision=0,
                                                  elem_id="train_gradient_step")
                    data_root = gr.Textbox(label="Dataset directory", elem_id="train_dataset_directory",
                                           placeholder="A folder on the server: pictures, each with an optional .txt "
                                                       "caption beside it")
                    log_directory = gr.Textbox("textual_inversion", label="Log directory",
                                               elem_id="train_log_directory", info="A folder inside the outputs folder")
                    template = gr.Dropdown(template_names(), value=DEFAULT_TEMPLATE, label="Prompt template",
                                           elem_id="train_template_file")
                    with gr.Row():
                        width = gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id="train_training_width")
                        height = gr.Slider(64, 2048, value=512, step=8, label="Height", elem_id="train_training_height")
                    varsize = gr.Checkbox(False, label="Do not resize images", elem_id="train_varsize")
                    with gr.Row():
                        steps = gr.Number(100000, label="Max steps", precision=0, elem_id="train_steps")
                        seed = gr.Number(-1, label="Seed", precision=0, elem_id="train_seed")
                    with gr.Row():
                        image_every = gr.Number(500, label="Save an image to log directory every N steps, 0 to disable",
                                                precision=0, elem_id="train_create_image_every")
                        save_every = gr.Number(500, precision=0, elem_id="train_save_embedding_every",
                                               label="Save a copy of embedding to log directory every N steps, "
                                                     "0 to disable", info="(of the hypernetwork, when training one)")
                    shuffle = gr.Checkbox(False, label="Shuffle tags by ',' when creating prompts",
                                          elem_id="train_shuffle_tags")
                    drop_out = gr.Slider(0.0, 1.0, value=0.0, step=0.1, label="Drop out tags when creating prompts",
                                         elem_id="train_tag_drop_out")
                    sampling = gr.Radio(list(LATENT_SAMPLING), value="once", label="Choose latent sampling method",
                                        elem_id="train_latent_sampling_method")
                    use_weight = gr.Checkbox(False, label="Use PNG alpha channel as loss weight",
                                             elem_id="train_use_weight",
                                             info="transparent parts of a picture teach nothing")
                    from_txt2img = gr.Checkbox(False, label="Read parameters (prompt, etc...) from txt2img tab when "
                                               "making previews", elem_id="train_preview_from_txt2img")
                    with gr.Row():
                        interrupt = gr.Button("Interrupt", elem_id="train_interrupt")
                        train_hypernetwork_button = gr.Button("Train Hypernetwork", variant="primary",
                                                              elem_id="train_train_hypernetwork")
                        train = gr.Button("Train Embedding", variant="primary", elem_id="train_train_embedding")
                with gr.Column():
                    status = gr.Textbox(label="Progress", interactive=False, lines=2, elem_id="train_progress")
                    preview = gr.Image(label="Latest preview", type="pil", format="png", interactive=False,
                                       elem_id="train_preview", height=360, elem_classes=FIT)

    def lister(kind: str):
        return lambda: gr.Dropdown(choices=_names(services, kind))

    def make(new_name, init, count, replace_old, model_name):
        try:
            path = create_embedding(engine, CreateRequest(new_name, init or "", count, replace_old, model_name or ""))
        except EaselError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return f"Created: {path}", gr.Dropdown(choices=_names(services, "embedding"), value=path.stem)

    create.click(make, [name, init_text, vectors, overwrite, model], [created, embedding], api_name="create_embedding",
                 concurrency_id=GPU_QUEUE, concurrency_limit=1)
    refresh.click(lister("embedding"), None, embedding, api_visibility="private")
    refresh_hypernetworks.click(lister("hypernet"), None, hypernetwork, api_visibility="private")

    def make_hypernetwork(new_name, modules, layers, activation_func, init, norm, dropout, dropouts, replace_old):
        try:
            path = create_hypernetwork(engine, CreateHypernetworkRequest(
                new_name, tuple(modules or ()), replace_old, layers or "", activation_func, init, norm, dropout,
                dropouts or ""))
        except EaselError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        return f"Created: {path}", gr.Dropdown(choices=_names(services, "hypernet"), value=path.stem)

    model.change(lambda name: gr.CheckboxGroup(**_modules(services, name)), model, sizes, api_visibility="private")
    create_hypernetwork_button.click(
        make_hypernetwork, [new_hypernetwork, sizes, layer_structure, activation, weight_init, layer_norm,
                            use_dropout, dropout_structure, overwrite_hypernetwork],
        [hypernetwork_created, hypernetwork], api_name="create_hypernetwork")

    shared = {"clip_grad_mode": clip_mode, "clip_grad_value": clip_value, "batch_size": batch_size,
              "gradient_step": gradient_step, "data_root": data_root, "log_directory": log_directory,
              "template_filename": template, "training_width": width, "training_height": height, "varsize": varsize,
              "steps": steps, "seed": seed, "create_image_every": image_every, "shuffle_tags": shuffle,
              "tag_drop_out": drop_out, "latent_sampling_method": sampling, "use_weight": use_weight,
              "preview_from_txt2img": from_txt2img, "model": model,
              **{field: txt2img[name] for name, field in PREVIEW_FIELDS.items()}}

    def runner(request_class, train_file, picked: gr.Dropdown, rate: gr.Textbox) -> tuple:
        """The click of *Train Embedding* or *Train Hypernetwork*: the picked file at its rate, the shared fields
        (by the request's field names)."""
        fields = FieldSet("train")
        for name, component in {request_class.NAME_FIELD: picked, "learn_rate": rate,
                                request_class.SAVE_FIELD: save_every, **shared}.items():
            fields.add(name, component)

        def run(values: dict, request: gr.Request):
            owner = request.session_hash if request else None
            try:
                train_request = request_class(**{k: "" if v is None else v for k, v in values.items()},
                                              **configured(services.config))
                shown = 0.0
                for event in streamed(lambda on_progress, cancel: train_file(engine, train_request, on_progress,
                                                                             cancel, owner)):
                    if isinstance(event, TrainResult):
                        yield event.message, gr.update()
                    elif isinstance(event, TrainProgress):
                        # a small model's steps come faster than a page can draw them: a few a second, and previews
                        if event.preview is None and time.monotonic() - shown < PROGRESS_PERIOD:
                            continue
                        shown = time.monotonic()
                        text = (f"Step {event.step} of {event.steps}: loss {event.loss:.4f}, "
                                f"learning rate {event.learn_rate:g}")
                        yield text, event.preview if event.preview is not None else gr.update()
            except EaselError as exc:
                raise gr.Error(str(exc), print_exception=False) from None

        return fields.named(run), fields.inputs

    for button, (handler, inputs), api_name in (
            (train, runner(TrainEmbeddingRequest, train_embedding, embedding, learn_rate), "train_embedding"),
            (train_hypernetwork_button, runner(TrainHypernetworkRequest, train_hypernetwork, hypernetwork,
                                               hypernetwork_rate), "train_hypernetwork")):
        button.click(handler, inputs, [status, preview], api_name=api_name, concurrency_id=GPU_QUEUE,
                     concurrency_limit=1)

    def stop(request: gr.Request) -> None:  # the caller's own run, as the generation tabs' Interrupt
        engine.interrupt(owner=request.session_hash if request else None)

    interrupt.click(stop, None, None, api_name="train_interrupt", queue=False)
