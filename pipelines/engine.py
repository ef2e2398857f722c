"""The engine: turns a request into saved, annotated images, one job at a time per device.

Every tab and the API go through ``Engine.generate`` (or ``stream``, its iterator form for live UIs), so
seeding, scheduler choice, metadata, outputs and interrupt behave the same everywhere.
"""

from __future__ import annotations

import contextvars
import datetime
import math
import queue
import threading
import time
import weakref
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from PIL import Image

from . import extras, postprocessing, sampler_parameters
from .controlnet import ControlUnit, Controls, check_family, check_module, control_map, control_source
from .dynamic_prompts import Wildcards, templates
from .embeddings import EmbeddingLibrary
from .errors import ModelError, RequestError
from .extras import ExtrasRequest, Postprocessed
from .filenames import Naming
from .generate import decode_latents, encode_pictures, run_pipeline, run_upscaler
from .grid import Grid
from .images import TaskImages
from .img2img_scripts import Tiles
from .infotext import parse_infotext, read_infotext
from .ip_adapter import KIND as IP_ADAPTER, ImagePrompt, encode
from .kandinsky import FAMILY as KANDINSKY, check_request as check_model_family
from .networks import Networks
from .outputs import OutputWriter
from .preprocessors import Preprocessors
from .preview import LatentPreviewer
from .refiner import check as check_refiner
from .registry import LoadedModel, Registry
from .request import MAX_SEED, MAX_SIDE, ORIGINAL, GenerationRequest
from .samplers import make_scheduler
from .stats import RunStats, clock, process_rss_peak
from .styles import StyleLibrary
from .tiling import tiled
from .upscalers import (PIXEL_UPSCALERS, check_name as check_upscaler, hires_names, is_latent, upscale_images,
                        upscale_latents)

# A1111 keeps inpainting results with img2img's.
_OUTPUT_CATEGORY = {"txt2img": "txt2img-images", "img2img": "img2img-images", "inpaint": "img2img-images"}


@dataclass
class Progress:
    """One finished sampling step of the running job."""

    step: int
    steps: int
    batch: int
    batch_count: int
    preview: Image.Image | None = None

    @property
    def fraction(self) -> float:
        return (self.batch * self.steps + self.step) / (self.steps * self.batch_count)


@dataclass
class GenerationResult:
    request: GenerationRequest  # with the concrete seed and model that were used
    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    paths: list[Path | None] = field(default_factory=list)
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)  # what was skipped or only partly applied (a bad LoRA file)
    stats: RunStats = field(default_factory=RunStats)  # times, memory and size (the Compare tab's columns)


@dataclass
class Job:
    """The running job as others may see it: whose it is, how far it got, and its stop switches."""

    owner: Any
    request: GenerationRequest
    interrupt: threading.Event = field(default_factory=threading.Event)
    skip: threading.Event = field(default_factory=threading.Event)  # end this batch, go on with the next
    started: float = field(default_factory=time.monotonic)
    progress: Progress | None = None
    preview: Image.Image | None = None  # the latest live preview
    extra_params: dict = field(default_factory=dict)  # A1111's extra_generation_params (infotext), e.g. Lora hashes
    warnings: list[str] = field(default_factory=list)
    stats: RunStats = field(default_factory=RunStats)
    save: bool = True  # its pictures go to the outputs folder
    naming: Naming = field(default_factory=Naming)  # what their file names can say of the job


@dataclass
class Run:
    """A run that is not a job (a training run), as others may see it: whose it is, its stop switch, how far it got
    (A1111's ``state``: ``job`` is "train-embedding" or "train-hypernetwork", counted in ``steps``)."""

    owner: Any
    stop: threading.Event
    job: str
    steps: int
    first: int = 0  # the step it started from (a file trained before goes on from its step)
    step: int = 0
    started: float = field(default_factory=time.monotonic)
    textinfo: str = ""
    preview: Image.Image | None = None  # the latest picture it made


def streamed(work: Callable[[Callable[[Any], None], threading.Event], Any]) -> Iterator[Any]:
    """``work(on_progress, cancel)`` in a worker thread, yielding each progress it reports and then what it returns
    (a job, a training run). If the consumer goes away early (a closed browser tab), ``cancel`` is set."""
    events: queue.Queue = queue.Queue()
    done, cancel = threading.Event(), threading.Event()

    def run() -> None:
        try:
            events.put(_Returned(work(events.put, cancel)))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            events.put(exc)
        finally:
            done.set()

    # The work runs in a copy of the caller's context, so what tracks progress there (Gradio's tqdm tracking of a
    # model download, say) sees the work's progress bars too.
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(run,), name="easel-worker", daemon=True).start()
    try:
        while True:
            item = events.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, _Returned):
                yield item.value
                return
            yield item
    finally:
        if not done.is_set():
            cancel.set()


@dataclass(frozen=True)
class _Returned:
    value: Any


class Engine:
    def __init__(self, registry: Registry, writer: OutputWriter, preview_every: int = 5):
        self.registry = registry
        self.writer = writer
        self.preview_every = preview_every
        self.grid_writer = OutputWriter(writer.root)  # A1111's grid_save, grid_format, grid_save_to_dirs (config.py)
        self.grid_extended = False  # A1111's grid_extended_filename: a job's grid named by the pattern too
        self.save_before_hires = False  # A1111's save_images_before_highres_fix
        self.pnginfo = True  # A1111's enable_pnginfo: pictures carry their parameters (the gallery's, the API's)
        self.original_names = True  # A1111's use_original_name_batch: Extras' batch results named by their sources
        self.write_templates = False  # Dynamic Prompts' dp_write_raw_template: the templates in the infotext
        self._device_lock = threading.RLock()  # reentrant: a training run makes previews with ``generate``
        self._job: Job | None = None
        self._runs: dict[int, Run] = {}  # runs other than jobs (training)
        self._previewers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # VAE -> its fitted previewer
        self.networks = Networks(registry.models_dir)
        self.embeddings = EmbeddingLibrary(registry.models_dir)  # textual inversion, words in prompts
        self.styles = StyleLibrary(registry.models_dir)  # styles.csv, written into prompts before a job
        self.wildcards = Wildcards(registry.models_dir)  # Dynamic Prompts: templates resolved after the styles
        self.preprocessors = Preprocessors(registry.models_dir)  # ControlNet modules, results cached

    def generate(self, request: GenerationRequest, *, owner: Any = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 cancel: threading.Event | None = None, save: bool = True) -> GenerationResult:
        """Run the whole job; ``cancel`` (set from any thread, even before the job starts) stops it.
        ``save=False`` keeps this job's images out of the outputs folder (A1111's API ``save_images``)."""
        typed, request = request, self.styles.apply(request)
        info = self.registry.resolve(request.model)
        if info.inpainting and request.task != "inpaint":
            raise RequestError(f"{info.name} is an inpainting model: use it for inpainting, or pick another model "
                               f"for {request.task}.", "model")
        check_model_family(request, info)  # what this model's family cannot do (Kandinsky 2.2), said up front
        if request.enable_hr:
            check_upscaler(request.hr_upscaler, hires_names(self.registry.models_dir), "hr_upscaler")
        refiner_info = self._partner(request.refiner_checkpoint, "refiner_checkpoint", "a refiner")
        hires_info = self._partner(request.hr_checkpoint_name if request.enable_hr else "", "hr_checkpoint_name",
                                   "the hires checkpoint")
        if request.sd_upscale:
            check_upscaler(request.sd_upscale_upscaler, extras.names(self.registry.models_dir), "sd_upscale_upscaler")
        if request.tiles is not None and request.tiles.upscaling:
            check_upscaler(request.td_upscaler, extras.names(self.registry.models_dir), "td_upscaler")
            request = self._tile_upscaled(request)
        request = self.wildcards.resolved(replace(request.with_seed(), model=info.name))
        result = GenerationResult(request=request)
        naming = Naming(typed.prompt, typed.styles, tuple(request.seeds()), request.batch_size, request.batch_count,
                        datetime.datetime.now())
        with self.holding(info.name) as model, ExitStack() as held:
            started = self._start_stats(model, request, result.stats)
            self._job = job = Job(owner, request, cancel or threading.Event(), warnings=result.warnings,
                                  stats=result.stats, save=save, naming=naming)
            job.warnings.extend(sampler_parameters.unapplied(request))
            if self.write_templates:
                job.extra_params.update(templates(request))
            try:
                controls = self._controls(held, model, request, job)
                pipe = model.pipeline(request.task, controls and list(controls.models))
                held.enter_context(tiled(model.pipe, request.tiled_axes))  # every pass and decode of the job
                refiner = refiner_info and self._lease_partner(held, refiner_info, request)
                hires = hires_info and self._lease_partner(held, hires_info, request)
                for image, seed, made_by in self._pictures(model, pipe, job, controls, hires, refiner, on_progress):
                    text = made_by.infotext(seed, model.info.name, model.hash, job.extra_params, model.vae)
                    if self.pnginfo:
                        image.info["parameters"] = text
                    result.paths.append(self._save(job, image, text, seed, index=len(result.images)))
                    result.images.append(image)
                    result.infotexts.append(text)
                    result.seeds.append(seed)
                result.interrupted = job.interrupt.is_set()
            except torch.OutOfMemoryError:
                self.registry.release_memory()
                raise ModelError(
                    f"Out of memory generating {request.image_count} image(s) of {request.width}x{request.height} "
                    f"with {info.name}. Memory was freed: try a smaller size or batch size, or start Easel with "
                    "--memory-mode medvram (or lowvram).") from None
            finally:
                self._job = None
                self._finish_stats(result.stats, started)
        return result

    def _save(self, job: Job, image: Image.Image, infotext: str, seed: int, index: int | None = None,
              suffix: str = "") -> Path | None:
        """A picture of ``job`` (the ``index``-th it made, None for another of its pictures) saved where its task's
        go, unless the job is not saved; where it went."""
        if not job.save:
            return None
        return self.writer.save(image, infotext, seed, _OUTPUT_CATEGORY[job.request.task],
                                naming=replace(job.naming, index=index), suffix=suffix)

    def postprocess(self, request: ExtrasRequest, save: bool = True) -> Postprocessed:
        """The Extras tab's work on one picture, the upscale on the device lock (upscaler files run on the device),
        then the operations after it (``ExtrasRequest.operations``): the pictures made with A1111's postprocessing
        text, where each was saved and what was left undone. Each picture keeps the source's parameters; saved in
        ``request.output_dir`` itself (no dated folder, as A1111's Extras), named by the source's file name in a
        batch with ``original_names``, with the source's caption beside it."""
        known = extras.names(self.registry.models_dir)
        for name, key in ((request.upscaler_1, "upscaler_1"), (request.upscaler_2, "upscaler_2")):
            check_upscaler(name, known, key)
        source = request.image.convert("RGB")
        with self._device_lock:
            made = [(self._upscaled(source, name, request.target(source.size)), name, share)
                    for name, share in request.upscalers]
        pictures = [(picture if name == extras.NONE else request.fit(picture), share) for picture, name, share in made]
        image = pictures[0][0]
        if len(pictures) > 1:
            image = Image.blend(image, pictures[1][0].resize(image.size, Image.LANCZOS), pictures[1][1])
        done = Postprocessed(request.infotext())
        pieces = postprocessing.apply(image, request.operations(done.notes))
        parameters = read_infotext(request.image) or ""
        stem = Path(request.image_name).stem if request.image_name and self.original_names else None
        for piece in pieces:
            if self.pnginfo:
                piece.image.info.update(parameters=parameters, postprocessing=done.text)
            tags = "-".join(piece.tags)
            path = self.writer.save(piece.image, parameters, None, request.output_dir, name=stem, dirs=False,
                                    suffix=f"-{tags}" if stem and tags else tags, postprocessing=done.text,
                                    text=request.caption if request.caption and not piece.final else None) \
                if save else None
            done.images.append(piece.image)
            done.paths.append(path)
        return done

    def save_grids(self, grids: list[Grid], task: str) -> list[Path | None]:
        """Grids of jobs' pictures (a prompt matrix's) with their infotexts, where A1111 keeps them:
        ``txt2img-grids`` or ``img2img-grids`` (none when the grid writer is off, A1111's ``grid_save``). As
        A1111's, a script's grid is named by the file name pattern after its number (with its first picture's seed),
        a job's grid with ``grid_extended`` only."""
        category = _OUTPUT_CATEGORY[task].replace("-images", "-grids")
        return [self.grid_writer.save(grid.image, grid.infotext, self._grid_seed(grid), category,
                                      basename=grid.basename) for grid in grids]

    def _grid_seed(self, grid: Grid) -> int | None:
        """The seed a grid's name says (its first picture's), or None for a name that is its number alone."""
        seed = parse_infotext(grid.infotext)[2].get("Seed", "")
        return int(seed) if (self.grid_extended or grid.named_in_full) and seed.isdigit() else None

    def grid_pictures(self, grids: list[Grid]) -> list[Image.Image]:
        """The grids' pictures as a gallery or the API shows them: each with its parameters, as A1111's, unless
        ``pnginfo`` is off."""
        for grid in grids if self.pnginfo else ():
            grid.image.info["parameters"] = grid.infotext
        return [grid.image for grid in grids]

    def _tile_upscaled(self, request: GenerationRequest) -> GenerationRequest:
        """Tiled Diffusion's img2img upscale (the extension's): the picture upscaled by its upscaler (on the device
        lock: upscaler files run on the device), the pass then made at that size."""
        size = request.tiles.upscaled_size(request.init_image.size, (request.width, request.height))
        if max(size) > MAX_SIDE:
            raise RequestError(f"Tiled Diffusion's upscale makes a {size[0]}x{size[1]} picture, over "
                               f"{MAX_SIDE}: lower the scale factor.", "td_scale_factor")
        with self._device_lock:
            picture = self._upscaled(request.init_image.convert("RGB"), request.td_upscaler, size)
        picture = picture if picture.size == size else picture.resize(size, Image.LANCZOS)
        picture.info.update(request.init_image.info)  # its parameters (outpainting's history reads them)
        return replace(request, init_image=picture, width=size[0], height=size[1])

    def _upscaled(self, image: Image.Image, name: str, size: tuple[int, int]) -> Image.Image:
        """``image`` by one upscaler; an upscaler file runs until the picture reaches ``size`` (x4 for 8x: twice)."""
        if name == extras.NONE:
            return image
        if name in PIXEL_UPSCALERS:
            return image.resize(size, PIXEL_UPSCALERS[name])
        with self.registry.lease(self.registry.resolve_upscaler(name)) as upscaler:
            image = upscaler.pipe.upscale(image)
            while upscaler.pipe.scale > 1 and (image.width < size[0] or image.height < size[1]):
                image = upscaler.pipe.upscale(image)
        return image

    def load(self, name: str) -> str:
        """Load a model now (the Models tab, A1111's ``sd_model_checkpoint``), on the device lock as a job is: a
        compiled model's load runs pictures (``--compile-sizes``), which must not share the device with a job."""
        with self.holding(name) as model:
            return model.info.name

    @contextmanager
    def holding(self, model: str) -> Iterator[LoadedModel]:
        """The device to oneself (a job, a model's load, a training run) with ``model`` loaded and pinned."""
        with self._device_lock, self.registry.lease(model) as loaded:
            yield loaded

    def set_vae(self, name: str | None) -> None:
        """``Registry.set_vae`` on the device lock, between jobs: no job holds a model it unloads."""
        with self._device_lock:
            self.registry.set_vae(name)

    def _start_stats(self, model, request: GenerationRequest, stats: RunStats) -> float:
        """What is known before the job runs; the start of its clock (CUDA's peak counter starts here too)."""
        stats.load_s, stats.parameters = model.load_seconds, model.parameters
        scale = model.latent_scale
        stats.latent_shape = (model.autoencoder.config.latent_channels, request.height // scale, request.width // scale)
        if self.registry.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.registry.device)
        return clock()

    def _finish_stats(self, stats: RunStats, started: float) -> None:
        stats.total_s = stats.load_s + clock() - started
        if self.registry.device.startswith("cuda"):
            stats.peak_memory = torch.cuda.max_memory_allocated(self.registry.device)
            stats.memory_kind = "CUDA peak allocated"
        else:
            stats.peak_memory, stats.memory_kind = process_rss_peak(), "process RSS peak"

    def _partner(self, name: str, field: str, role: str):
        """The ``ModelInfo`` of a second model the job names (refiner, hires checkpoint), checked before it runs;
        None when it names none."""
        if not name:
            return None
        try:
            info = self.registry.resolve(name)
        except RequestError as exc:
            raise RequestError(str(exc), field) from None
        if info.inpainting or info.family == KANDINSKY:
            raise RequestError(f"{info.name} cannot be {role}: pick an ordinary SD or SDXL model.", field)
        return info

    def _lease_partner(self, held: ExitStack, info, request: GenerationRequest):
        """A second model for the rest of the job, tiled as the job's model is."""
        partner = held.enter_context(self.registry.lease(info))
        held.enter_context(tiled(partner.pipe, request.tiled_axes))
        return partner

    def _pass(self, model, pipe, request: GenerationRequest, job: Job, seeds: list[int], on_step, refiner=None,
              **options):
        """One sampling pass over a batch, with a fresh scheduler for it; ``refiner`` (a leased model) takes over at
        the request's switch (its networks applied too, as A1111 applies them to whichever model runs)."""
        pipe.scheduler = make_scheduler(request.sampler, request.scheduler, model.pipe.scheduler.config, seeds,
                                        sampler_parameters.used(request))
        with self.networks.applied(model, request, job) as plain, ExitStack() as stack:  # tags out of the prompt
            if refiner is not None:
                check_refiner(model, refiner)
                stack.enter_context(self.networks.applied(refiner, request, job))
            return run_pipeline(pipe, plain, seeds, on_step=on_step,
                                should_stop=lambda: job.interrupt.is_set() or job.skip.is_set(),
                                embeddings=self.embeddings, extra_params=job.extra_params, warnings=job.warnings,
                                stats=job.stats, refiner=refiner, **options)

    def _controls(self, held: ExitStack, model, request: GenerationRequest, job: Job) -> Controls | None:
        """The job's enabled ControlNet units with their models (leased until the job ends) and maps, and its
        IP-Adapter units with their adapters and their pictures' encodings; each unit's infotext entry goes on the
        job."""
        units = request.active_controls
        if not units:
            return None
        nets, adapted = [], []
        for unit in units:
            info = self.registry.resolve_controlnet(unit.model)
            net = held.enter_context(self.registry.lease(info))
            if info.kind == IP_ADAPTER:
                adapted.append(self._image_prompt(unit, net.pipe, model, request))
            else:
                check_module(unit, adapter=False)
                check_family(net.pipe, model.pipe.unet, unit.model, model.info.name)
                nets.append((unit, net.pipe))
            job.extra_params[f"ControlNet {unit.index}"] = unit.infotext_value(net.hash)
        maps = [control_map(unit, request.init_image, request.output_size, self.preprocessors) for unit, _ in nets]
        return Controls(tuple(unit for unit, _ in nets), tuple(net for _, net in nets), tuple(maps), tuple(adapted))

    def _image_prompt(self, unit: ControlUnit, adapter, model, request: GenerationRequest) -> ImagePrompt:
        """An IP-Adapter unit's adapter, checked against the model, and its picture (the init picture when it has
        none) encoded by its preprocessor's CLIP image encoder (leased for the encoding only)."""
        check_module(unit, adapter=True)
        adapter.check(model.pipe.unet, model.info.name)
        with self.registry.lease(self.registry.resolve_image_encoder(unit.module)) as loaded:
            adapter.check_encoder(loaded.pipe, unit.module)
            unprompted, prompted = encode(loaded.pipe, adapter, control_source(unit, request.init_image))
        return ImagePrompt(adapter, unprompted, prompted, unit.weight, unit.guidance_start, unit.guidance_end,
                           unit.region())

    def _pictures(self, model, pipe, job: Job, controls: Controls | None, hires, refiner,
                  on_progress) -> Iterator[tuple[Image.Image, int, GenerationRequest]]:
        """The job's pictures as they are made: (picture, seed, the request it was made by: a Loopback loop's
        strength is its own). A batch is a pass (hires fix: two), a chain of Loopback's loops or SD upscale's tile
        passes; Skip ends the batch and the next goes on, Interrupt ends the job."""
        request = job.request
        passes = request.loopback_loops if request.loopback else 1
        if request.sd_upscale:
            tiles, crops = self._tiled(request)
            passes = math.ceil(len(crops) / request.batch_size)
        task_images = None if request.sd_upscale or request.loopback else TaskImages.prepare(request)
        seeds = request.seeds()
        for batch in range(request.batch_count):
            def on_step(index: int, batch=batch):  # the progress of pass ``index`` of this batch
                return self._step_reporter(model, job, batch * passes + index, request.batch_count * passes,
                                           on_progress)

            first = batch * request.pictures_per_batch
            if request.sd_upscale:
                seed = (request.seed + batch) % (MAX_SEED + 1)
                [(made_by, _)] = request.prompted(first, [seed])
                yield self._sd_upscale(model, pipe, job, made_by, tiles, crops, seed, on_step, refiner), seed, made_by
            elif request.loopback:
                [(made_by, _)] = request.prompted(first, [request.seed])
                yield from self._loopback(model, pipe, job, made_by, batch, on_step, controls, refiner)
            else:
                for made_by, run_seeds in request.prompted(first, seeds[first:first + request.batch_size]):
                    if request.enable_hr:
                        images = self._hires(model, pipe, job, made_by, run_seeds, on_step(0), controls, hires,
                                             refiner)
                    else:
                        images = self._pass(model, pipe, made_by, job, run_seeds, on_step(0), images=task_images,
                                            controls=controls, refiner=refiner)
                    yield from ((image, seed, made_by) for image, seed in zip(images, run_seeds))
                    if job.skip.is_set() or job.interrupt.is_set():
                        break
            job.skip.clear()
            if job.interrupt.is_set():
                return

    def _loopback(self, model, pipe, job: Job, request: GenerationRequest, batch: int, on_step,
                  controls: Controls | None, refiner) -> Iterator[tuple[Image.Image, int, GenerationRequest]]:
        """One chain of Loopback's loops (``request``: with the chain's prompts): each picture is the next loop's init
        image, at the loop's strength (colour correction keeps the first loop's colours, as A1111's does)."""
        picture = request.init_image
        for loop, strength in enumerate(request.loopback_strengths):
            made_by = replace(request, init_image=picture, denoising_strength=strength,
                              inpainting_fill=request.inpainting_fill if loop == 0 else ORIGINAL)
            seed = (request.seed + batch * request.loopback_loops + loop) % (MAX_SEED + 1)
            images = TaskImages.prepare(made_by)
            if loop == 0:
                colours = images.original
            [picture] = self._pass(model, pipe, made_by, job, [seed], on_step(loop),
                                   images=replace(images, colours=colours), controls=controls, refiner=refiner)
            yield picture, seed, made_by
            if job.interrupt.is_set() or job.skip.is_set():
                return

    def _tiled(self, request: GenerationRequest) -> tuple[Tiles, list[Image.Image]]:
        """SD upscale's tiles over the init picture upscaled to its size, and the tiles' pictures."""
        size = request.sd_upscale_size
        upscaled = self._upscaled(request.init_image.convert("RGB"), request.sd_upscale_upscaler, size)
        tiles = Tiles.cover(size, (request.width, request.height), request.sd_upscale_overlap)
        return tiles, tiles.crops(upscaled if upscaled.size == size else upscaled.resize(size, Image.LANCZOS))

    def _sd_upscale(self, model, pipe, job: Job, request: GenerationRequest, tiles: Tiles, crops: list[Image.Image],
                    seed: int, on_step, refiner) -> Image.Image:
        """One SD upscale picture (``request``: with its prompts): every tile repainted (batch size tiles a pass),
        then blended back."""
        size = request.batch_size
        painted = list(crops)
        for index, start in enumerate(range(0, len(crops), size)):
            part = crops[start:start + size]
            seeds = [(seed + start + k) % (MAX_SEED + 1) for k in range(len(part))]
            painted[start:start + size] = self._pass(model, pipe, request, job, seeds, on_step(index),
                                                     images=TaskImages(part, part), refiner=refiner)
            if job.interrupt.is_set() or job.skip.is_set():
                break
        return tiles.combine(painted)

    def _hires(self, model, pipe, job: Job, request: GenerationRequest, seeds: list[int], on_step,
               controls: Controls | None, hires, refiner) -> list[Image.Image]:
        """Hires fix: the first pass, an upscale (of latents or pictures), then an img2img pass over it (with the
        same ControlNets, their maps stretched to the new size), on the hires checkpoint when there is one (latents
        go over to its latent space through pictures when the two autoencoders differ). The refiner, as A1111's
        default, takes over the second pass only. A first-pass image (A1111's ``firstpass_image``, its ✨ button)
        stands for the first pass, at the request's size. ``request``: with the pictures' prompts."""
        latent = is_latent(request.hr_upscaler)
        if request.firstpass_image is not None:  # A1111's firstpass_image: the first pass given, for every seed
            given = [request.firstpass_image.convert("RGB").resize((request.width, request.height), Image.LANCZOS)
                     ] * len(seeds)
            first = encode_pictures(pipe, given) if latent else given
        else:
            first = self._pass(model, pipe, request, job, seeds, on_step, latent_output=latent, controls=controls)
            if self.save_before_hires and job.save:  # A1111's save_images_before_highres_fix: the first pass too
                for picture, seed in zip(decode_latents(pipe, first) if latent else first, seeds):
                    text = request.infotext(seed, model.info.name, model.hash, job.extra_params, model.vae)
                    self._save(job, picture, text, seed, suffix="-before-highres-fix")
        if job.interrupt.is_set() or job.skip.is_set():
            return decode_latents(pipe, first) if latent else first
        second = request.hires_pass()
        size = second.output_size
        if hires is not None:
            job.extra_params["Hires checkpoint"] = hires.title
            for unit, net in zip(controls.units if controls else (), controls.models if controls else ()):
                check_family(net, hires.pipe.unet, unit.model, hires.info.name)
            for prompt in controls.images if controls else ():
                prompt.adapter.check(hires.pipe.unet, hires.info.name)
            if latent and not model.shares_latents(hires):
                first = encode_pictures(hires.pipe, decode_latents(pipe, first))
            model = hires
        if latent:
            upscaled = upscale_latents(first, size, model.pipe.vae_scale_factor, request.hr_upscaler)
        elif request.hr_upscaler not in PIXEL_UPSCALERS:  # a model upscaler or an upscaler file
            with self.registry.lease(self.registry.resolve_upscaler(request.hr_upscaler)) as upscaler:
                upscaled = upscale_images(run_upscaler(upscaler.pipe, first, request, seeds), size, "Lanczos")
        else:
            upscaled = upscale_images(first, size, request.hr_upscaler)
        images = TaskImages(upscaled, upscaled)
        controls = controls and controls.at_size(size)
        return self._pass(model, model.pipeline("img2img", controls and list(controls.models)), second, job, seeds,
                          on_step, images=images, controls=controls, refiner=refiner)

    def _step_reporter(self, model, job: Job, batch: int, batch_count: int, on_progress):
        """Record each step of pass ``batch`` of ``batch_count`` on the job (for status polling) and pass it to
        ``on_progress``."""
        vae = model.autoencoder
        previewer = self._previewers.get(vae) or self._previewers.setdefault(vae, LatentPreviewer(vae))
        previews = previewer.pictures()

        def report(step: int, steps: int, latents) -> None:
            wants_preview = self.preview_every > 0 and step % self.preview_every == 0 and step < steps
            preview = previews(latents) if wants_preview else None
            job.progress = Progress(step, steps, batch, batch_count, preview)
            job.preview = preview or job.preview
            if on_progress is not None:
                on_progress(job.progress)

        return report

    def stream(self, request: GenerationRequest, *, owner: Any = None,
               save: bool = True) -> Iterator[Progress | GenerationResult]:
        """``generate`` in a worker thread, yielding its progress and then its result (``streamed``). A generator
        function itself: ZeroGPU's decorator (``Services``) runs those in its GPU context for as long as they yield."""
        yield from streamed(lambda on_progress, cancel: self.generate(request, owner=owner, on_progress=on_progress,
                                                                  cancel=cancel, save=save))

    def current_job(self, owner: Any = None) -> Job | None:
        """The running job; with ``owner``, only if that owner started it."""
        job = self._job
        return job if job is not None and (owner is None or job.owner == owner) else None

    def interrupt(self, owner: Any = None) -> bool:
        """Stop the running job or training run after its current step; with ``owner``, only that owner's."""
        job = self.current_job(owner)
        stops = [job.interrupt] if job is not None else []
        stops += [run.stop for run in self._owned_runs(owner)]
        for stop in stops:
            stop.set()
        return bool(stops)

    def _owned_runs(self, owner: Any) -> list[Run]:
        return [run for run in list(self._runs.values()) if owner is None or run.owner == owner]

    def current_run(self, owner: Any = None) -> Run | None:
        """The running training run; with ``owner``, only if that owner started it."""
        return next(iter(self._owned_runs(owner)), None)

    @contextmanager
    def running(self, run: Run) -> Iterator[Run]:
        """``run`` seen by ``current_run`` (the API's progress) and stopped by ``interrupt`` for its owner, as a job."""
        self._runs[id(run)] = run
        try:
            yield run
        finally:
            self._runs.pop(id(run), None)

    def skip(self, owner: Any = None) -> bool:
        """End the current batch of the running job after its current step and go on with the next."""
        job = self.current_job(owner)
        if job is not None:
            job.skip.set()
        return job is not None

    @property
    def busy(self) -> bool:
        return self._job is not None
