"""A1111's Train tab for textual inversion: an embedding made from words, then its vectors trained on a folder of
pictures with the model frozen. SD 1.x/2.x models (one text encoder), as A1111 trains.

As A1111's: a picture's caption is the ``.txt`` file beside it, else its file name without a leading number; each use
of a picture takes a random line of the prompt template (``textual_inversion_templates/``), ``[name]`` standing for
the embedding and ``[filewords]`` for the caption (its tags shuffled, or some dropped, when asked). The learning rate
is A1111's schedule text (``0.005``, or ``0.05:100, 0.005:1000, 0.0005``); training goes on from the step the file
notes and ends at ``steps`` (or the schedule's last step). Captions are encoded exactly as prompts are
(``text_encoding.encode_captions``), so the vectors mean at generation what they meant in training.

What a run leaves, as A1111's: the embedding file itself (saved whenever a picture is made and at the end, an
interrupted run too), and a log folder ``<outputs>/textual_inversion/<date>/<name>/`` holding a copy of the embedding
every ``save_embedding_every`` steps (``embeddings/<name>-<step>.pt``), a picture made through the engine with the
latest caption every ``create_image_every`` steps (``images/<name>-<step>.png``, with its parameters), the loss
(``textual_inversion_loss.csv``) and the run's settings (``settings-<time>.json``). Files there are never written over (a second run the same day adds ``-1``).
"""

from __future__ import annotations

import csv
import datetime
import itertools
import json
import math
import random
import re
import statistics
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from diffusers.utils.torch_utils import get_module_execution_device
from PIL import Image

from .atomic import replace_file
from .diffusion_loss import noised, target, training_schedule
from .embeddings import MAX_VECTORS, Embedding
from .errors import RequestError
from .networks.files import KINDS, NetworkError, NetworkFile, list_files
from .outputs import OutputWriter
from .request import MAX_SEED, GenerationRequest, number_between, whole_between
from .text_encoding import encode_captions

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "textual_inversion_templates"
# A1111's latent sampling: one sample per picture for the whole run, the mean, a new sample at each use
LATENT_SAMPLING = ("once", "deterministic", "random")
CLIP_GRAD = ("disabled", "value", "norm")
PICTURES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
LOSS_FILE = "textual_inversion_loss.csv"
MAX_SIZE = 2048
_NAME = re.compile(r"^[\w][\w .+-]{0,99}$")  # a file stem that tokenizes to itself: no path, no brackets
_LEADING_NUMBER = re.compile(r"^[-\d]+\s*")  # A1111 drops "00012-" from "00012-a red car.png"
STAR_TOKEN = 265  # the token id of "*" in CLIP's vocabulary, which A1111's .pt files name their vectors by


def template_names() -> list[str]:
    return sorted(path.name for path in TEMPLATES_DIR.glob("*.txt"))


def _template_lines(name: str) -> list[str]:
    if name not in template_names():
        raise RequestError(f"Unknown prompt template {name!r}. Choose one of: {', '.join(template_names())}.",
                           "template_filename")
    lines = [line.strip() for line in (TEMPLATES_DIR / name).read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if line] or ["[name]"]


def schedule(text: str, steps: int, label: str, field_name: str) -> list[tuple[float, int]]:
    """A1111's schedule text as (value, until step) pairs: ``0.005`` is 0.005 up to ``steps``; ``0.05:100, 0.005``
    is 0.05 up to step 100, then 0.005. A piece without a step runs to ``steps``; nothing after it is read."""
    pairs: list[tuple[float, int]] = []
    for piece in (p.strip() for p in str(text).split(",")):
        if not piece:
            continue
        value, colon, until = piece.partition(":")
        try:
            rate, end = float(value), int(until) if colon else steps
        except ValueError:
            raise RequestError(f"{label} {text!r} is not A1111's schedule text: a number, or numbers with the step "
                               "each lasts until (0.05:100, 0.005:1000, 0.0005).", field_name) from None
        if not (math.isfinite(rate) and rate > 0) or (pairs and end <= pairs[-1][1]) or end < 1:
            raise RequestError(f"{label} {text!r}: each value must be above 0 and each step after the one before.",
                               field_name)
        pairs.append((rate, min(end, steps)))
        if not colon or end >= steps:
            break
    if not pairs:
        raise RequestError(f"{label} is empty: give a number such as 0.005.", field_name)
    return pairs


def _at(pairs: list[tuple[float, int]], step: int) -> float:
    return next((value for value, end in pairs if step < end), pairs[-1][0])


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not _NAME.match(name):
        raise RequestError(f"{name!r} cannot be an embedding's name: start with a letter or digit, then use letters, "
                           "digits, spaces and '.', '+', '-', '_' (at most 100).", "name")
    return name


def _encoder(pipe, model_name: str):
    if hasattr(pipe, "text_encoder_2") or not hasattr(pipe, "unet") or getattr(pipe, "tokenizer", None) is None:
        raise RequestError(f"Embeddings are trained on SD 1.x and 2.x models (one CLIP text encoder, as A1111 "
                           f"trains them); {model_name} is not one.", "model")
    return pipe.text_encoder


def _a1111_data(vectors: torch.Tensor, name: str, step: int, checkpoint: tuple[str, str]) -> dict[str, Any]:
    """A1111's ``.pt`` embedding: the vectors under ``*``, with the step and the checkpoint it was trained on."""
    return {"string_to_token": {"*": STAR_TOKEN}, "string_to_param": {"*": vectors.detach().float().cpu()},
            "name": name, "step": step, "sd_checkpoint": checkpoint[0], "sd_checkpoint_name": checkpoint[1]}


def save_embedding(path: Path, vectors: torch.Tensor, name: str, step: int, checkpoint: tuple[str, str]) -> None:
    """An embedding file in A1111's layout, atomically: a ``.pt`` (``.bin``) as ``_a1111_data``; a ``.safetensors``
    holds ``emb_params`` with the notes in its metadata. ``checkpoint``: the model's (short hash, name)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save

        notes = {"name": name, "step": str(step), "sd_checkpoint": checkpoint[0], "sd_checkpoint_name": checkpoint[1]}
        tensors = {"emb_params": vectors.detach().float().cpu().contiguous()}
        replace_file(path, lambda file: file.write(save(tensors, metadata=notes)))
    else:
        data = _a1111_data(vectors, name, step, checkpoint)
        replace_file(path, lambda file: torch.save(data, file))


def _find(models_dir: Path, name: str) -> NetworkFile | None:
    return next((item for item in list_files(models_dir, "embedding") if item.name == name), None)


@dataclass(frozen=True)
class CreateRequest:
    """A1111's *Create embedding*: ``num_vectors_per_token`` vectors started from the words of ``init_text``."""

    name: str
    init_text: str = "*"
    num_vectors_per_token: int = 1
    overwrite_old: bool = False
    model: str = ""

    def __post_init__(self):
        object.__setattr__(self, "name", check_name(self.name))
        object.__setattr__(self, "num_vectors_per_token", whole_between(
            self.num_vectors_per_token, "Number of vectors per token", "num_vectors_per_token", 1, MAX_VECTORS))


def create_embedding(engine, request: CreateRequest) -> Path:
    """The new file (``embeddings/<name>.pt``, or the file of that name when overwriting). Each vector starts from
    the init text's token at the same place along it (A1111's rule); no init text: zeros."""
    models_dir = engine.registry.models_dir
    existing = _find(models_dir, request.name)
    if existing and not request.overwrite_old:
        raise RequestError(f"An embedding named {request.name!r} exists ({existing.path.name}); tick Overwrite Old "
                           "Embedding to replace it.", "name")
    with engine.holding(request.model) as model:
        encoder = _encoder(model.pipe, model.info.name)
        ids = model.pipe.tokenizer(request.init_text, add_special_tokens=False).input_ids if request.init_text else []
        table = encoder.get_input_embeddings().weight.detach().float().cpu()
        count = request.num_vectors_per_token
        vectors = (table[[ids[i * len(ids) // count] for i in range(count)]] if ids
                   else torch.zeros(count, table.shape[1]))
        path = existing.path if existing else models_dir / KINDS["embedding"][0] / f"{request.name}.pt"
        save_embedding(path, vectors, request.name, 0, (model.hash or "", model.info.name))
    return path


@dataclass(frozen=True)
class TrainRequest:
    """A1111's *Train* (its API's ``/sdapi/v1/train/embedding`` names), and ``seed`` (-1: random) for a run that
    can be repeated."""

    embedding_name: str
    data_root: str
    model: str = ""
    learn_rate: str = "0.005"
    batch_size: int = 1
    gradient_step: int = 1
    log_directory: str = "textual_inversion"
    training_width: int = 512
    training_height: int = 512
    varsize: bool = False
    steps: int = 100000
    clip_grad_mode: str = "disabled"
    clip_grad_value: str = "0.1"
    shuffle_tags: bool = False
    tag_drop_out: float = 0.0
    latent_sampling_method: str = "once"
    create_image_every: int = 500
    save_embedding_every: int = 500
    template_filename: str = "style_filewords.txt"
    seed: int = -1

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "embedding_name", (self.embedding_name or "").strip())
        if not self.embedding_name:
            raise RequestError("Pick an embedding to train (make one under Create embedding).", "embedding_name")
        for name, label, low, high in (("batch_size", "Batch size", 1, 64),
                                       ("gradient_step", "Gradient accumulation steps", 1, 1024),
                                       ("training_width", "Width", 64, MAX_SIZE),
                                       ("training_height", "Height", 64, MAX_SIZE),
                                       ("steps", "Max steps", 1, 10**7),
                                       ("create_image_every", "Save an image every N steps", 0, 10**7),
                                       ("save_embedding_every", "Save a copy of embedding every N steps", 0, 10**7),
                                       ("seed", "Seed", -1, MAX_SEED)):
            set_(self, name, whole_between(getattr(self, name), label, name, low, high))
        for name, label in (("training_width", "Width"), ("training_height", "Height")):
            if getattr(self, name) % 8:
                raise RequestError(f"{label} must be a multiple of 8, got {getattr(self, name)}.", name)
        if self.varsize and self.batch_size != 1:
            raise RequestError("Pictures kept at their own sizes (Do not resize images) train one at a time: set "
                               "Batch size to 1.", "batch_size")
        set_(self, "tag_drop_out", number_between(self.tag_drop_out, "Drop out tags", "tag_drop_out", 0.0, 1.0))
        for name, value, choices in (("latent_sampling_method", self.latent_sampling_method, LATENT_SAMPLING),
                                     ("clip_grad_mode", self.clip_grad_mode, CLIP_GRAD)):
            if value not in choices:
                raise RequestError(f"{name} must be one of {', '.join(choices)}, got {value!r}.", name)
        log = Path(self.log_directory or "textual_inversion")
        if log.is_absolute() or ".." in log.parts:
            raise RequestError(f"The log directory {self.log_directory!r} must be a folder inside the outputs folder.",
                               "log_directory")
        set_(self, "log_directory", str(log))
        self.learn_rates()
        if self.clip_grad_mode != "disabled":
            self.clip_values()
        _template_lines(self.template_filename)

    def learn_rates(self) -> list[tuple[float, int]]:
        return schedule(self.learn_rate, self.steps, "Learning rate", "learn_rate")

    def clip_values(self) -> list[tuple[float, int]]:
        return schedule(self.clip_grad_value, self.steps, "Gradient clipping", "clip_grad_value")

    @property
    def last_step(self) -> int:
        """Where training ends: ``steps``, or the schedule's last step when every rate has one."""
        return self.learn_rates()[-1][1]


@dataclass
class _Picture:
    caption: str  # the tags of ``[filewords]``
    mean: torch.Tensor  # (1, 4, h/8, w/8), scaled
    spread: torch.Tensor  # the latent distribution's std, scaled ("random" sampling)


def _caption(path: Path) -> str:
    beside = path.with_suffix(".txt")
    if beside.is_file():
        return beside.read_text(encoding="utf-8", errors="replace").strip()
    return _LEADING_NUMBER.sub("", path.stem).replace("_", " ").strip()


def _pictures(pipe, request: TrainRequest, g: torch.Generator) -> list[_Picture]:
    """The dataset folder's pictures as latents (resized to the training size unless ``varsize``), with captions."""
    root = Path(request.data_root or "").expanduser()
    if not str(request.data_root or "").strip() or not root.is_dir():
        raise RequestError(f"The dataset directory {request.data_root!r} is not a folder on the server.", "data_root")
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in PICTURES and p.is_file())
    if len(paths) < request.batch_size:
        raise RequestError(f"{root} holds {len(paths)} picture(s) ({', '.join(PICTURES)}), fewer than the batch size "
                           f"{request.batch_size}.", "data_root")
    vae = pipe.vae
    device = get_module_execution_device(vae)
    scale = vae.config.scaling_factor
    pictures = []
    for path in paths:
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except (OSError, Image.DecompressionBombError) as exc:
            raise RequestError(f"{path.name} in the dataset cannot be read as a picture: {exc}", "data_root") from None
        if request.varsize:
            image = image.crop((0, 0, image.width // 8 * 8, image.height // 8 * 8))
        else:
            image = image.resize((request.training_width, request.training_height), Image.BICUBIC)
        with torch.no_grad():
            pixels = pipe.image_processor.preprocess(image).to(device, vae.dtype)
            dist = vae.encode(pixels).latent_dist
        mean, spread = dist.mean.float() * scale, dist.std.float() * scale
        if request.latent_sampling_method == "once":
            mean = mean + spread * torch.randn(mean.shape, generator=g).to(mean.device)
        pictures.append(_Picture(_caption(path), mean, spread))
    return pictures


def _filewords(caption: str, request: TrainRequest, rng: random.Random) -> str:
    tags = [tag.strip() for tag in caption.split(",") if tag.strip()]
    if request.shuffle_tags:
        rng.shuffle(tags)
    if request.tag_drop_out:
        tags = [tag for tag in tags if rng.random() >= request.tag_drop_out]
    return ", ".join(tags)


def _text(line: str, name: str, caption: str) -> str:
    return line.replace("[name]", name).replace("[filewords]", caption)


@dataclass
class TrainProgress:
    step: int
    steps: int
    loss: float  # the mean of the latest steps' losses
    learn_rate: float
    preview: Image.Image | None = None  # the picture made at this step, if one was


@dataclass
class TrainResult:
    name: str
    path: Path  # the embedding file
    step: int
    loss: float | None
    log_dir: Path
    interrupted: bool = False
    previews: list[tuple[Image.Image, Path]] = field(default_factory=list)
    copies: list[Path] = field(default_factory=list)  # the embedding's copies in the log folder

    @property
    def message(self) -> str:
        ended = "Training interrupted" if self.interrupted else "Training finished"
        loss = f", loss {self.loss:.4f}" if self.loss is not None else ""
        return f"{ended} at {self.step} steps{loss}. Embedding saved to {self.path}."


def _batches(pictures: list[_Picture], size: int, rng: random.Random) -> Iterator[tuple[int, list[_Picture]]]:
    """(epoch, batch) without end: each epoch the pictures in a new order, a last batch short of ``size`` left out."""
    for epoch in itertools.count():
        order = rng.sample(pictures, len(pictures))
        for start in range(0, len(order) - size + 1, size):
            yield epoch, order[start:start + size]


class _Log:
    """A run's log folder: copies of the embedding, pictures and the loss, each file new (``-1``, ``-2`` after a
    taken name)."""

    def __init__(self, engine, request: TrainRequest, name: str):
        day = datetime.date.today().isoformat()
        self.folder = engine.writer.root / request.log_directory / day / name
        self.writer = OutputWriter(self.folder, format=engine.writer.format)
        self.writer.add_number = self.writer.save_to_dirs = False
        self.name = name

    def copy(self, step: int, data: dict[str, Any]) -> Path:
        return self.writer.place("embeddings", f"{self.name}-{step}", ".pt", lambda file: torch.save(data, file))

    def picture(self, step: int, image: Image.Image, infotext: str) -> Path:
        # no seed: the name is the suffix alone, as A1111 names previews
        return self.writer.save(image, infotext, None, "images", suffix=f"{self.name}-{step}")

    def settings(self, values: dict[str, Any]) -> Path:
        """A run's settings as it starts (A1111's ``settings-<time>.json``), to repeat or compare runs by."""
        stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
        text = json.dumps(values, indent=4, ensure_ascii=False).encode("utf-8")
        return self.writer.place("", f"settings-{stamp}", ".json", lambda file: file.write(text))

    def loss(self, step: int, epoch: int, loss: float, rate: float) -> None:
        path = self.folder / LOSS_FILE
        new = not path.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(path, "a", newline="", encoding="utf-8") as file:
            rows = csv.writer(file)
            if new:
                rows.writerow(["step", "epoch", "loss", "learn_rate"])
            rows.writerow([step, epoch, f"{loss:.7f}", f"{rate:g}"])


def _preview(engine, request: TrainRequest, model: str, caption: str, seed: int) -> tuple[Image.Image, str]:
    """A picture of ``caption`` with the embedding as its file now holds it, made as txt2img makes one (20 steps,
    the training size), not saved with the outputs."""
    made = engine.generate(GenerationRequest(prompt=caption, model=model, width=request.training_width,
                                             height=request.training_height, steps=20, seed=seed), save=False)
    return made.images[0], made.infotexts[0]


def train_embedding(engine, request: TrainRequest, on_progress: Callable[[TrainProgress], None] | None = None,
                    cancel: threading.Event | None = None, owner: Any = None) -> TrainResult:
    """Train the named embedding on the engine's device (no job runs meanwhile); ``cancel``, or the engine's
    ``interrupt`` for ``owner``, ends it after the current step, the vectors saved."""
    cancel = cancel or threading.Event()
    item = _find(engine.registry.models_dir, request.embedding_name)
    if item is None:
        raise RequestError(f"No embedding named {request.embedding_name!r} in the embeddings folder: make one under "
                           "Create embedding.", "embedding_name")
    lines, rates = _template_lines(request.template_filename), request.learn_rates()
    last = rates[-1][1]  # ``request.last_step``, read once
    clips = request.clip_values() if request.clip_grad_mode != "disabled" else []
    seed = request.seed if request.seed >= 0 else random.randint(0, MAX_SEED)
    rng, g = random.Random(seed), torch.Generator().manual_seed(seed)
    with engine.holding(request.model) as model, engine.stoppable(owner, cancel):
        pipe, unet = model.pipe, model.pipe.unet
        encoder = _encoder(pipe, model.info.name)
        try:
            start = engine.embeddings.load(item, [("", encoder)]).vectors[0]
        except NetworkError as exc:
            raise RequestError(str(exc), "embedding_name") from None
        step = engine.embeddings.notes(item)["step"] or 0
        if step >= last:
            raise RequestError(f"{item.name} has been trained to step {step} already: raise Max steps above it.",
                               "steps")
        for module in (unet, pipe.vae, encoder):
            module.requires_grad_(False)  # only the vectors learn (elsewhere the model only makes pictures)
        pictures = _pictures(pipe, request, g)
        batches = _batches(pictures, request.batch_size, rng)
        device = get_module_execution_device(unet)  # where it runs, even offloaded (low-memory modes)
        vectors = torch.nn.Parameter(start.clone().to(device))
        trained = Embedding(item.name, (vectors,), "")
        optimizer = torch.optim.AdamW([vectors], lr=_at(rates, step), weight_decay=0.0)
        scaler = torch.amp.GradScaler(device.type, enabled=unet.dtype == torch.float16)
        diffusion = training_schedule(pipe.scheduler.config)
        checkpoint = (model.hash or "", model.info.name)
        log = _Log(engine, request, item.name)
        log.settings({**asdict(request), "seed": seed, "model": model.info.name, "model_hash": model.hash,
                      "initial_step": step, "pictures": len(pictures)})
        result = TrainResult(item.name, item.path, step, None, log.folder)
        losses: list[float] = []
        epoch, logged = 0, False
        while step < last and not cancel.is_set():
            rate = _at(rates, step)
            for group in optimizer.param_groups:
                group["lr"] = rate
            loss = 0.0
            for _ in range(request.gradient_step):
                epoch, batch = next(batches)
                captions = [_text(rng.choice(lines), item.name, _filewords(p.caption, request, rng)) for p in batch]
                latents = torch.cat([p.mean if request.latent_sampling_method != "random"
                                     else p.mean + p.spread * torch.randn(p.mean.shape, generator=g).to(p.mean.device)
                                     for p in batch]).to(device, unet.dtype)
                context = encode_captions(pipe, captions, trained, engine.embeddings).to(unet.dtype)
                noisy, noise, t = noised(diffusion, latents, g)
                error = torch.nn.functional.mse_loss(unet(noisy, t, context).sample.float(),
                                                     target(diffusion, latents, noise, t).float())
                scaler.scale(error / request.gradient_step).backward()
                loss += error.item() / request.gradient_step
            if clips:
                scaler.unscale_(optimizer)
                clip = (torch.nn.utils.clip_grad_value_ if request.clip_grad_mode == "value"
                        else torch.nn.utils.clip_grad_norm_)
                clip([vectors], _at(clips, step))
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss)
            result.step, result.loss = step, statistics.fmean(losses[-32:])
            copy, picture = (every > 0 and step % every == 0
                             for every in (request.save_embedding_every, request.create_image_every))
            if copy:
                result.copies.append(log.copy(step, _a1111_data(vectors, item.name, step, checkpoint)))
            preview = None
            if picture:
                save_embedding(item.path, vectors, item.name, step, checkpoint)  # what the engine reads
                preview, infotext = _preview(engine, request, model.info.name, captions[0], rng.randint(0, MAX_SEED))
                result.previews.append((preview, log.picture(step, preview, infotext)))
            logged = copy or picture
            if logged:
                log.loss(step, epoch, result.loss, rate)
            if on_progress is not None:
                on_progress(TrainProgress(step, last, result.loss, rate, preview))
        result.interrupted = step < last
        save_embedding(item.path, vectors, item.name, step, checkpoint)
        if not logged and result.loss is not None:
            log.loss(step, epoch, result.loss, rate)
    return result
