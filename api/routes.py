"""The ``/sdapi/v1`` routes: A1111's endpoints on Easel's engine.

Generations go through ``Services.stream``, the same path as the UI's, so they wait for the same device lock
(never two jobs on one device) and save images and infotexts the same way. Progress, interrupt and skip see
only the caller's own job. Every error is JSON: 422 naming the field for bad values (the UI's own checks and
messages), 401 for wrong credentials, 413 for a body over ``MAX_BODY_BYTES`` (refused from its
Content-Length before it is read, or cut off once a streamed body passes the limit).
"""

from __future__ import annotations

import datetime
import logging
import time
from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, Body, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelines.checkpoints import VAE_DIR, vae_names
from pipelines.config import batch_layout
from pipelines.embeddings import expected_shape
from pipelines.engine import GenerationResult
from pipelines.errors import EaselError, ModelError, RequestError
from pipelines.grid import MAX_MARGIN
from pipelines.img2img_scripts import CURVES, MAX_LOOPS, MAX_OVERLAP, MAX_SCALE
from pipelines.infotext import parse_infotext, read_infotext
from pipelines.memory import usage
from pipelines.networks import metadata
from pipelines.job_plan import grids as grids_of, shown as shown_grids
from pipelines.prompt_lines import POSITIONS
from pipelines.prompt_matrix import JOINERS, PROMPT_TYPES
from pipelines.samplers import SAMPLERS, SCHEDULE_TYPES
from pipelines.upscalers import LATENT_UPSCALERS, MODEL_UPSCALERS
from pipelines.xyz import Plot, PlotResult, plan as plan_plot, run_plot

from . import PREFIX
from .auth import ApiAuth
from .encoding import decode_image, encode_png
from .options import Options
from .payloads import (LOOPBACK_SCRIPT, PROMPT_LIST_SCRIPT, PROMPT_MATRIX_SCRIPT, SCRIPTS, SD_UPSCALE_SCRIPT,
                       TILING_SCRIPT, ExtrasBatchImagesPayload, ExtrasBatchImagesResponse, ExtrasSingleImagePayload,
                       ExtrasSingleImageResponse, Img2ImgPayload, ImageResponse, PNGInfoPayload, PNGInfoResponse,
                       ProgressResponse, Txt2ImgPayload, echo, extras_requests, field_of, processed_info, to_requests)
from .training import add_routes as add_training_routes
from .xyz_script import XYZ_SCRIPT, axis_names

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 2**20


class BodyTooLarge(HTTPException):
    def __init__(self):
        super().__init__(413, f"The request body is larger than {MAX_BODY_BYTES // 2**20} MiB.")


def error_response(status: int, error: str, detail: str, field: str | None = None, **extra) -> JSONResponse:
    """A1111-style error JSON; ``detail`` starts with the field it is about, which ``field`` also names."""
    body = {"error": error, "detail": f"{field}: {detail}" if field else detail, "field": field, **extra}
    return JSONResponse(body, status_code=status)


def _capped(receive: Callable) -> Callable:
    """``receive`` that stops a body (e.g. chunked, without Content-Length) once it passes the limit."""
    seen = 0

    async def receive_capped():
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > MAX_BODY_BYTES:
            raise BodyTooLarge()
        return message

    return receive_capped


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
    first = errors[0] if errors else {"loc": [], "msg": "Invalid request.", "type": ""}
    if first["type"] == "json_invalid":
        return error_response(422, "RequestValidationError", "The body is not valid JSON.", errors=errors)
    field = ".".join(str(part) for part in first["loc"] if part != "body") or None
    return error_response(422, "RequestValidationError", first["msg"], field, errors=errors)


class ApiRoute(APIRoute):
    """Caps request bodies and turns every failure into a JSON answer (the server keeps serving)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                declared = int(request.headers.get("content-length") or 0)
            except ValueError:
                declared = 0
            try:
                if declared > MAX_BODY_BYTES:
                    raise BodyTooLarge()
                return await handler(Request(request.scope, _capped(request.receive)))
            except RequestValidationError as exc:
                return _validation_response(exc)
            except StarletteHTTPException as exc:  # FastAPI's HTTPException is a subclass
                error = "PayloadTooLarge" if exc.status_code == 413 else type(exc).__name__
                if exc.status_code == 401:
                    error = "Unauthorized"
                return JSONResponse({"error": error, "detail": exc.detail, "field": None},
                                    status_code=exc.status_code, headers=exc.headers)
            except RequestError as exc:
                return error_response(422, "RequestError", str(exc), field_of(exc))
            except EaselError as exc:
                return error_response(500, type(exc).__name__, str(exc))
            except Exception as exc:  # a bug: logged with its traceback, answered as JSON
                log.exception("API request %s failed", request.url.path)
                return error_response(500, type(exc).__name__, str(exc) or "Internal server error")

        return guarded


def create_router(services, users: list[tuple[str, str]] | None = None) -> APIRouter:
    auth = ApiAuth(users)
    options = Options(services)
    engine = services.engine
    router = APIRouter(prefix=PREFIX, route_class=ApiRoute, dependencies=[Depends(auth)], tags=["sdapi"])

    def run_jobs(requests: list, owner: str, save: bool) -> list[GenerationResult]:
        results = []
        for request in requests:
            result = None
            for event in services.stream(request, owner=owner, save=save):
                if isinstance(event, GenerationResult):
                    result = event
            if result is None:  # the stream always ends with its result; this guards a broken engine
                raise ModelError("The generation ended without a result.")
            results.append(result)
            if result.interrupted:
                break
        return results

    def run_xyz(plot: Plot, owner: str, save: bool) -> PlotResult:
        *_, result = run_plot(services.stream, plot, owner=owner, save=save)
        if not result.results:
            raise ModelError("The X/Y/Z plot ended before its first picture.")
        return result

    def run(payload: Txt2ImgPayload, owner: str) -> dict[str, Any]:
        planned, requests = to_requests(payload, options)  # all checked before the first runs
        plot = plan_plot(requests[0], *planned.xyz) if planned.xyz else None
        if plot is None:
            results = run_jobs(requests, owner, payload.save_images)
            # A1111: do_not_save_grid = not save_images; a batch's grid is answered when return_grid
            made = grids_of([planned], results, batch=payload.save_images, layout=batch_layout(services.config))
            grids, shown = shown_grids(made, services.config["return_grid"]), results
        else:  # A1111's answer: the grid (and the Z values' grids), then the cells' pictures when included
            plotted = run_xyz(plot, owner, payload.save_images)
            made = grids = plotted.grids()
            results = plotted.cells()
            shown = results if plot.options.sub_images else []
        if not payload.override_settings_restore_afterwards and (payload.override_settings or {}).get(
                "sd_model_checkpoint"):
            services.registry.set_default(results[0].request.model)
        if payload.save_images:
            engine.save_grids(made, results[0].request.task)
        images = engine.grid_pictures(grids) + [image for result in shown for image in result.images]
        return {
            "images": [encode_png(image) for image in images] if payload.send_images else [],
            "parameters": echo(payload),
            "info": processed_info(results, [grid.infotext for grid in grids]),
        }

    @router.post("/txt2img", response_model=ImageResponse)
    def txt2img(payload: Txt2ImgPayload, owner: str = Depends(auth)):
        """Text to image, with A1111's payload; ``info`` is a JSON string holding the infotexts and seeds."""
        return run(payload, owner)

    @router.post("/img2img", response_model=ImageResponse)
    def img2img(payload: Img2ImgPayload, owner: str = Depends(auth)):
        """Image to image; with a ``mask`` (white repaints) it inpaints."""
        return run(payload, owner)

    @router.get("/progress", response_model=ProgressResponse)
    async def progress(skip_current_image: bool = False, owner: str = Depends(auth)):
        """Progress of the caller's own running job or training run (nothing of other users')."""
        job = engine.current_job(owner)
        run = engine.current_run(owner) if job is None else None
        if run is not None:
            return _run_progress(run, skip_current_image)
        if job is None or job.progress is None:
            return {"progress": 0.0, "eta_relative": 0.0, "state": _state(job), "current_image": None,
                    "textinfo": None if job is None else "Waiting..."}
        fraction = job.progress.fraction
        elapsed = time.monotonic() - job.started
        image = job.preview if not skip_current_image else None
        return {"progress": fraction, "eta_relative": elapsed / fraction - elapsed if fraction > 0 else 0.0,
                "state": _state(job), "current_image": encode_png(image) if image is not None else None,
                "textinfo": None}

    @router.post("/interrupt")
    async def interrupt(owner: str = Depends(auth)):
        """Stop the caller's running job after its current step; its images so far are returned."""
        engine.interrupt(owner)
        return {}

    @router.post("/skip")
    async def skip(owner: str = Depends(auth)):
        """End the current batch of the caller's job and go on with the next one."""
        engine.skip(owner)
        return {}

    @router.get("/options")
    def get_options():
        return options.current()

    @router.post("/options")
    def set_options(values: dict[str, Any] = Body(...)):
        """Change options; ``sd_model_checkpoint`` (title, name or hash) loads that model and makes it current."""
        options.update(values)
        return None

    @router.get("/sd-models")
    def sd_models():
        return options.sd_models()

    @router.post("/refresh-checkpoints")
    def refresh_checkpoints():
        """The model list is read from the models folder on every call, so there is nothing to rescan."""
        return None

    @router.get("/samplers")
    def samplers():
        return [{"name": s.name, "aliases": list(s.aliases), "options": {k: str(v) for k, v in s.options.items()}}
                for s in SAMPLERS.values()]

    @router.get("/schedulers")
    def schedulers():
        return [{"name": label.lower().replace(" ", "_"), "label": label, "aliases": None, "default_rho": -1,
                 "need_inner_model": False} for label in SCHEDULE_TYPES]

    @router.get("/loras")
    def loras():
        """``models/Lora`` files as A1111 lists them; ``name`` is what ``<lora:name:weight>`` takes."""
        return [{"name": item.name, "alias": item.name, "path": str(item.path), "metadata": metadata(item)}
                for item in engine.networks.files("lora")]

    @router.post("/refresh-loras")
    def refresh_loras():
        """The LoRA list is read from its folder on every call, so there is nothing to rescan."""
        return None

    @router.get("/embeddings")
    def embeddings():
        """Textual-inversion files by name: ``loaded`` fit the current model's text encoders, ``skipped`` do not."""
        info = services.registry.resolve("")
        return engine.embeddings.listing(expected_shape(Path(info.source)) if info.local else None)

    @router.get("/upscalers")
    def upscalers():
        """None, pixel and model upscalers and upscaler files, for hires fix (``hr_upscaler``) and Extras; the
        latent ones are in ``latent-upscale-modes``."""
        return [{"name": name, "model_name": MODEL_UPSCALERS[name].hub_id if name in MODEL_UPSCALERS else None,
                 "model_path": None, "model_url": None,
                 "scale": MODEL_UPSCALERS[name].factor if name in MODEL_UPSCALERS else 4}
                for name in options.upscalers()]

    @router.get("/latent-upscale-modes")
    def latent_upscale_modes():
        return [{"name": name} for name in LATENT_UPSCALERS]

    @router.get("/hypernetworks")
    def hypernetworks():
        """``models/hypernetworks`` files; ``name`` is what ``<hypernet:name:strength>`` takes."""
        return [{"name": item.name, "path": str(item.path)} for item in engine.networks.files("hypernet")]

    @router.get("/sd-vae")
    def sd_vae():
        """``models/VAE``'s files and folders; ``sd_vae`` in ``options`` takes a ``model_name``."""
        root = services.registry.models_dir / VAE_DIR
        return [{"model_name": name, "filename": str(root / name)} for name in vae_names(services.registry.models_dir)]

    @router.post("/refresh-vae")
    def refresh_vae():
        """The VAE list is read from its folder on every call, so there is nothing to rescan."""
        return None

    @router.post("/unload-checkpoint")
    def unload_checkpoint():
        """Unload every model no job is using, freeing their memory (A1111 unloads its one current model)."""
        for model in services.registry.resident():
            services.registry.unload(model["name"])
        return {}

    @router.post("/reload-checkpoint")
    def reload_checkpoint():
        """Load the current model again (after ``unload-checkpoint``), so the next job does not wait for it."""
        engine.load(services.registry.default_name())
        return {}

    @router.get("/prompt-styles")
    def prompt_styles():
        """The models folder's ``styles.csv``; a request's ``styles`` takes these names."""
        return [{"name": style.name, "prompt": style.prompt, "negative_prompt": style.negative_prompt}
                for style in engine.styles.styles().values()]

    @router.get("/memory")
    def memory():
        return usage(services.registry.device)

    for path, listed in _LISTINGS.items():
        router.add_api_route(path, _listing(listed), methods=["GET"])

    @router.post("/refresh-embeddings")
    def refresh_embeddings():
        """Embeddings are read from their folder on every call (a changed file again), so there is nothing to
        rescan."""
        return None

    add_training_routes(router, engine, services.config, auth)

    @router.post("/extra-single-image", response_model=ExtrasSingleImageResponse)
    def extra_single_image(payload: ExtrasSingleImagePayload):
        """The Extras tab's upscale of one picture (not saved, as A1111's API); ``html_info`` is its
        postprocessing text."""
        (request,) = extras_requests(payload, [decode_image(payload.image, "image")])
        done = engine.postprocess(request, save=False)
        return {"html_info": done.text, "image": encode_png(done.images[0])}

    @router.post("/extra-batch-images", response_model=ExtrasBatchImagesResponse)
    def extra_batch_images(payload: ExtrasBatchImagesPayload):
        """The same for each picture of ``imageList`` (``{"data": base64, "name": ...}``)."""
        pictures = [decode_image(item.get("data"), f"imageList[{index}].data")
                    for index, item in enumerate(payload.imageList)]
        done = [engine.postprocess(request, save=False) for request in extras_requests(payload, pictures)]
        return {"html_info": done[0].text if done else "",
                "images": [encode_png(image) for made in done for image in made.images]}

    @router.post("/png-info", response_model=PNGInfoResponse)
    def png_info(payload: PNGInfoPayload):
        """The infotext an image carries, its other text chunks, and the infotext parsed as A1111 does."""
        if not payload.image.strip():
            return {"info": ""}
        image = decode_image(payload.image, "image")
        text = read_infotext(image) or ""
        return {"info": text, "items": _other_items(image), "parameters": _parameters(text) if text else {}}

    return router


def _argument(label: str, value: Any, choices: list | None = None, minimum=None, maximum=None,
              step=None) -> dict[str, Any]:
    return {"label": label, "value": value, "minimum": minimum, "maximum": maximum, "step": step, "choices": choices}


# The scripts (A1111's "Prompts from file or textbox", "Prompt matrix" and "X/Y/Z plot", in both tabs, "Loopback"
# and "SD upscale" in img2img) and their arguments, as A1111 lists them (SD upscale's upscaler: an index into
# ``/upscalers``).
_SCRIPT_ARGS = {
    PROMPT_LIST_SCRIPT: [_argument("Iterate seed every line", False),
                         _argument("Use same random seed for all lines", False),
                         _argument("Insert prompts at the", "start", list(POSITIONS)),
                         _argument("List of prompt inputs", "")],
    PROMPT_MATRIX_SCRIPT: [_argument("Put variable parts at start of prompt", False),
                           _argument("Use different seed for each picture", False),
                           _argument("Select prompt", "positive", list(PROMPT_TYPES)),
                           _argument("Select joining char", "comma", list(JOINERS)),
                           _argument("Grid margins (px)", 0, minimum=0, maximum=MAX_MARGIN, step=2)],
    LOOPBACK_SCRIPT: [_argument("Loops", 4, minimum=1, maximum=MAX_LOOPS, step=1),
                      _argument("Final denoising strength", 0.5, minimum=0, maximum=1, step=0.01),
                      _argument("Denoising strength curve", "Linear", list(CURVES)),
                      _argument("Append interrogated prompt at each iteration", "None", ["None"])],
    TILING_SCRIPT: [_argument("Tile X", True), _argument("Tile Y", False)],
    SD_UPSCALE_SCRIPT: [_argument("Info", None),
                        _argument("Tile overlap", 64, minimum=0, maximum=MAX_OVERLAP, step=16),
                        _argument("Upscaler", 1),
                        _argument("Scale Factor", 2.0, minimum=1, maximum=MAX_SCALE, step=0.05)],
}


def _xyz_args(tab: str) -> list[dict[str, Any]]:
    """The X/Y/Z plot's arguments as A1111 1.10 lists them: a type's choices are the tab's axes, which its index
    counts in."""
    def axis(letter: str, value: str) -> list[dict[str, Any]]:
        return [_argument(f"{letter} type", value, axis_names(tab)), _argument(f"{letter} values", ""),
                _argument(f"{letter} values", None)]

    return [*axis("X", "Seed"), *axis("Y", "Nothing"), *axis("Z", "Nothing"), _argument("Draw legend", True),
            _argument("Include Sub Images", False), _argument("Include Sub Grids", False),
            _argument("Keep -1 for seeds", False), *(_argument(f"Vary seeds for {letter}", False) for letter in "XYZ"),
            _argument("Grid margins (px)", 0, minimum=0, maximum=MAX_MARGIN, step=2),
            _argument("Use text inputs instead of dropdowns", False)]


_TAB_SCRIPTS = {"txt2img": (PROMPT_LIST_SCRIPT, PROMPT_MATRIX_SCRIPT, XYZ_SCRIPT, TILING_SCRIPT), "img2img": SCRIPTS}
# What ``/scripts`` and ``/script-info`` answer; A1111 features Easel does not have (face restorers, built-in
# Real-ESRGAN models: upscaler files are in ``upscalers``, extensions) are listed empty, so that a client asking for
# them sees none rather than a 404.
_LISTINGS = {"/scripts": {tab: list(names) for tab, names in _TAB_SCRIPTS.items()},
             "/script-info": [{"name": name, "is_alwayson": False, "is_img2img": tab == "img2img",
                               "args": _xyz_args(tab) if name == XYZ_SCRIPT else _SCRIPT_ARGS[name]}
                              for tab, names in _TAB_SCRIPTS.items() for name in names],
             "/face-restorers": [], "/realesrgan-models": [], "/extensions": []}


def _listing(value):
    def listing():
        return value

    return listing


def _state(job) -> dict[str, Any]:
    """A1111's ``shared.state.dict()`` for the caller's job (an idle one when there is none)."""
    if job is None:
        return {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "", "job_count": 0,
                "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0}
    progress = job.progress
    started = datetime.datetime.now() - datetime.timedelta(seconds=time.monotonic() - job.started)
    return {
        "skipped": job.skip.is_set(),
        "interrupted": job.interrupt.is_set(),
        "stopping_generation": False,
        "job": f"Batch {progress.batch + 1} out of {progress.batch_count}" if progress else "",
        "job_count": job.request.batch_count,
        "job_timestamp": started.strftime("%Y%m%d%H%M%S"),
        "job_no": progress.batch if progress else 0,
        "sampling_step": progress.step if progress else 0,
        "sampling_steps": progress.steps if progress else job.request.steps,
    }


def _run_progress(run, skip_current_image: bool) -> dict[str, Any]:
    """A training run's progress as A1111 reports one: its steps counted as the state's jobs, the loss in
    ``textinfo``, the latest preview as the current image."""
    elapsed = time.monotonic() - run.started
    done = run.step - run.first  # this run's steps, which time the rest
    started = datetime.datetime.now() - datetime.timedelta(seconds=elapsed)
    state = {**_state(None), "interrupted": run.stop.is_set(), "job": run.job, "job_count": run.steps,
             "job_no": run.step, "job_timestamp": started.strftime("%Y%m%d%H%M%S")}
    image = run.preview if not skip_current_image else None
    return {"progress": run.step / run.steps, "eta_relative": elapsed * (run.steps - run.step) / done if done else 0.0,
            "state": state, "current_image": encode_png(image) if image is not None else None,
            "textinfo": run.textinfo or "Preparing the dataset..."}


_IGNORED_ITEMS = {"parameters", "exif", "icc_profile", "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi",
                  "loop", "background", "timestamp", "duration", "progressive", "progression", "chromaticity",
                  "photoshop"}


def _other_items(image: Image.Image) -> dict[str, str]:
    return {key: value for key, value in image.info.items()
            if isinstance(key, str) and isinstance(value, str) and key not in _IGNORED_ITEMS}


# Filled in when an infotext lacks them, as A1111's parse_generation_parameters does.
_PARAMETER_DEFAULTS = {"Clip skip": "1", "Schedule type": "Automatic", "RNG": "GPU"}


def _parameters(text: str) -> dict[str, Any]:
    """A1111's parsed form: Prompt, Negative prompt, each key, ``Size`` split into ``Size-1``/``Size-2``."""
    prompt, negative, params = parse_infotext(text)
    result: dict[str, Any] = {"Prompt": prompt, "Negative prompt": negative}
    for key, value in params.items():
        width, sep, height = value.partition("x")
        if sep and width.isdigit() and height.isdigit():
            result[f"{key}-1"], result[f"{key}-2"] = width, height
        else:
            result[key] = value
    for key, value in _PARAMETER_DEFAULTS.items():
        result.setdefault(key, value)
    return result
