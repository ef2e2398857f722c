"""What the Train tab's two trainers share (A1111's: textual inversion in ``embedding_training``, hypernetworks in
``hypernetwork_training``): the request's common fields, the dataset folder read as latents with captions, prompt
templates, schedules, the log folder and the optimisation loop, in which the model stays frozen and only the
trainee's parameters learn. SD 1.x/2.x models (one text encoder), as A1111 trains.

As A1111's: a picture's caption is the ``.txt`` file beside it, else its file name without a leading number; each use
of a picture takes a random line of the prompt template (``textual_inversion_templates/``), ``[name]`` standing for
what is trained and ``[filewords]`` for the caption (its tags shuffled, or some dropped, when asked). The learning
rate is A1111's schedule text (``0.005``, or ``0.05:100, 0.005:1000, 0.0005``); training goes on from the step the
file notes and ends at ``steps`` (or the schedule's last step).

What a run leaves, as A1111's: the trained file itself (saved whenever a picture is made and at the end, an
interrupted run too), and a log folder ``<outputs>/<log directory>/<date>/<name>/`` holding a copy of the file every
``save_*_every`` steps (``embeddings/<name>-<step>.pt`` or ``hypernetworks/...``), a picture made through the engine
with the latest caption every ``create_image_every`` steps (``images/<name>-<step>.png``, with its parameters), the
loss every ``training_write_csv_every`` steps and at the end (``textual_inversion_loss.csv`` or
``hypernetwork_loss.csv``) and the run's settings (``settings-<time>.json``). Files there are never written over (a
second run the same day adds ``-1``). A1111's Training settings (``SETTINGS``) are fields of the request, which the
tab and the API fill from the Settings tab.
"""

from __future__ import annotations

import csv
import datetime
import itertools
import json
import math
import pickle
import random
import re
import statistics
import threading
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar, ContextManager, Iterator

import numpy as np
import torch
from diffusers.utils.torch_utils import get_module_execution_device
from PIL import Image

from .atomic import replace_file
from .diffusion_loss import noised, target, training_schedule
from .engine import Run
from .errors import RequestError
from .hashing import short_hash
from .networks.files import KINDS, LABELS, NetworkFile, list_files
from .outputs import OutputWriter
from .request import MAX_SEED, GenerationRequest, number_between, whole_between
from .text_encoding import encode_captions

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "textual_inversion_templates"
# A1111's latent sampling: one sample per picture for the whole run, the mean, a new sample at each use
LATENT_SAMPLING = ("once", "deterministic", "random")
CLIP_GRAD = ("disabled", "value", "norm")
PICTURES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_SIZE = 2048
MAX_REPEATS = 1000
# A1111's Training settings that runs read, by their option keys (``pipelines.config``), and the Easel fields of a
# ``TrainRequest`` that hold them
SETTINGS = ("training_write_csv_every", "training_image_repeats_per_epoch", "save_training_settings_to_txt",
            "dataset_filename_word_regex", "dataset_filename_join_string", "save_optimizer_state")
_NAME = re.compile(r"^[\w][\w .+-]{0,99}$")  # a file stem that tokenizes to itself: no path, no brackets
_LEADING_NUMBER = re.compile(r"^[-\d]+\s*")  # A1111 drops "00012-" from "00012-a red car.png"
# a preview's request field -> the training request's (A1111's API names)
PREVIEW_FIELDS = {"prompt": "preview_prompt", "negative_prompt": "preview_negative_prompt", "steps": "preview_steps",
                   "sampler": "preview_sampler_name", "cfg_scale": "preview_cfg_scale", "seed": "preview_seed",
                   "width": "preview_width", "height": "preview_height"}


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


def configured(config) -> dict[str, Any]:
    """The Training settings of the Settings tab (``pipelines.config``), as a request's fields."""
    return {key: config[key] for key in SETTINGS}


def check_word_regex(text: str, field_name: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise RequestError(f"The filename word regex {text!r} is not a regular expression: {exc}.",
                           field_name) from None
    return text


def check_name(name: str, kind: str) -> str:
    """``name`` if it can name a new ``kind`` ("embedding", "hypernetwork") file: a plain file stem."""
    name = (name or "").strip()
    if not _NAME.match(name):
        raise RequestError(f"{name!r} cannot name the {kind}: start with a letter or digit, then use letters, "
                           "digits, spaces and '.', '+', '-', '_' (at most 100).", "name")
    return name


def find_file(models_dir: Path, kind: str, name: str) -> NetworkFile | None:
    """The file of ``kind`` (the networks' kinds: "embedding", "hypernet") named ``name``, if there is one."""
    return next((item for item in list_files(models_dir, kind) if item.name == name), None)


def new_file(models_dir: Path, kind: str, name: str, overwrite: bool) -> Path:
    """Where *Create embedding* or *Create hypernetwork* writes ``name`` (``kind``: "embedding", "hypernet"): a new
    ``.pt`` in the kind's folder, or the file of that name when ``overwrite`` (else it is refused)."""
    existing = find_file(models_dir, kind, name)
    if existing is None:
        return Path(models_dir) / KINDS[kind][0] / f"{name}.pt"
    noun = LABELS[kind]
    if not overwrite:
        raise RequestError(f"{'An' if noun[0] in 'AEIOU' else 'A'} {noun.lower()} named {name!r} exists "
                           f"({existing.path.name}); tick Overwrite Old {noun} to replace it.", "name")
    return existing.path


def check_model(pipe, model_name: str, what: str):
    """The model's one text encoder; other models are refused (SDXL's two, Kandinsky's prior)."""
    if hasattr(pipe, "text_encoder_2") or not hasattr(pipe, "unet") or getattr(pipe, "tokenizer", None) is None:
        raise RequestError(f"{what} are trained on SD 1.x and 2.x models (one CLIP text encoder, as A1111 trains "
                           f"them); {model_name} is not one.", "model")
    return pipe.text_encoder


@dataclass(frozen=True, kw_only=True)
class TrainRequest:
    """The fields of A1111's *Train* that both trainers take, under its API's names, and ``seed`` (-1: random) for a
    run that can be repeated. A trainer's request adds the name of what it trains (``NAME_FIELD``) and how often a
    copy of it is logged (``SAVE_FIELD``)."""

    NAME_FIELD: ClassVar[str]
    SAVE_FIELD: ClassVar[str]
    KIND: ClassVar[str]  # "embedding", "hypernetwork"

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
    template_filename: str = "style_filewords.txt"
    use_weight: bool = False  # the PNG alpha channel as the loss's weight
    # A1111's *Read parameters (prompt, etc...) from txt2img tab when making previews*, and those parameters
    preview_from_txt2img: bool = False
    preview_prompt: str = ""
    preview_negative_prompt: str = ""
    preview_steps: int = 20
    preview_sampler_name: str = "Euler a"
    preview_cfg_scale: float = 7.0
    preview_seed: int = -1
    preview_width: int = 512
    preview_height: int = 512
    seed: int = -1
    # A1111's Training settings (``SETTINGS``), which the tab and the API take from the Settings tab
    training_write_csv_every: int = 500
    training_image_repeats_per_epoch: int = 1
    save_training_settings_to_txt: bool = True
    dataset_filename_word_regex: str = ""
    dataset_filename_join_string: str = " "
    save_optimizer_state: bool = False  # the optimizer's state kept beside the file (``.optim``), and read back

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, self.NAME_FIELD, (self.name or "").strip())
        if not self.name:
            raise RequestError(f"Pick the {self.KIND} to train (make one under Create {self.KIND}).", self.NAME_FIELD)
        for name, label, low, high in (("batch_size", "Batch size", 1, 64),
                                       ("gradient_step", "Gradient accumulation steps", 1, 1024),
                                       ("training_width", "Width", 64, MAX_SIZE),
                                       ("training_height", "Height", 64, MAX_SIZE),
                                       ("steps", "Max steps", 1, 10**7),
                                       ("create_image_every", "Save an image every N steps", 0, 10**7),
                                       (self.SAVE_FIELD, f"Save a copy of {self.KIND} every N steps", 0, 10**7),
                                       ("seed", "Seed", -1, MAX_SEED),
                                       ("training_write_csv_every", "Save the loss every N steps", 0, 10**7),
                                       ("training_image_repeats_per_epoch", "Repeats per epoch", 1, MAX_REPEATS)):
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
        check_word_regex(self.dataset_filename_word_regex, "dataset_filename_word_regex")
        if self.preview_from_txt2img:
            self.preview("", "", 0)
        self.learn_rates()
        if self.clip_grad_mode != "disabled":
            self.clip_values()
        _template_lines(self.template_filename)

    @property
    def name(self) -> str:
        return getattr(self, self.NAME_FIELD)

    def preview(self, model: str, caption: str, seed: int) -> GenerationRequest:
        """The picture a run makes: of its latest caption with ``seed``, 20 steps at the training size, or from the
        preview parameters (txt2img's)."""
        if not self.preview_from_txt2img:
            return GenerationRequest(prompt=caption, model=model, width=self.training_width,
                                     height=self.training_height, steps=20, seed=seed)
        try:
            return GenerationRequest(model=model, **{name: getattr(self, field_name)
                                                     for name, field_name in PREVIEW_FIELDS.items()})
        except RequestError as exc:
            raise RequestError(f"Preview: {exc}", PREVIEW_FIELDS.get(exc.field, exc.field)) from None

    @property
    def save_every(self) -> int:
        return getattr(self, self.SAVE_FIELD)

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
    weight: torch.Tensor | None = None  # as ``mean``, averaging 1: the loss's weight per latent (``use_weight``)


def _caption(path: Path, request: TrainRequest) -> str:
    """The ``.txt`` beside the picture, else its file name: without its leading number, underscores read as
    spaces; with a word regex, the words it finds joined by the join string (A1111's filename settings)."""
    beside = path.with_suffix(".txt")
    if beside.is_file():
        return beside.read_text(encoding="utf-8", errors="replace").strip()
    text = _LEADING_NUMBER.sub("", path.stem).replace("_", " ").strip()
    if request.dataset_filename_word_regex:
        text = request.dataset_filename_join_string.join(re.findall(request.dataset_filename_word_regex, text))
    return text


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
                image = opened.convert("RGBA" if request.use_weight else "RGB")
        except (OSError, Image.DecompressionBombError) as exc:
            raise RequestError(f"{path.name} in the dataset cannot be read as a picture: {exc}", "data_root") from None
        if request.varsize:
            image = image.crop((0, 0, image.width // 8 * 8, image.height // 8 * 8))
        else:
            image = image.resize((request.training_width, request.training_height), Image.BICUBIC)
        with torch.no_grad():
            pixels = pipe.image_processor.preprocess(image.convert("RGB")).to(device, vae.dtype)
            dist = vae.encode(pixels).latent_dist
        mean, spread = dist.mean.float() * scale, dist.std.float() * scale
        if request.latent_sampling_method == "once":
            mean = mean + spread * torch.randn(mean.shape, generator=g).to(mean.device)
        weight = _weight(image.getchannel("A"), mean) if request.use_weight else None
        pictures.append(_Picture(_caption(path, request), mean, spread, weight))
    return pictures


def _weight(alpha: Image.Image, latents: torch.Tensor) -> torch.Tensor:
    """A1111's loss weight from a picture's alpha: the alpha at the latents' size, less its least value, over its
    mean (opaque pixels count, transparent ones do not); a picture without transparency weighs 1 everywhere."""
    small = alpha.resize((latents.shape[-1], latents.shape[-2]), Image.BICUBIC)
    weight = torch.tensor(np.asarray(small, dtype=np.float32))
    weight = weight - weight.min()
    weight = weight / weight.mean() if weight.max() > 0 else torch.ones_like(weight)
    return weight.to(latents.device).expand_as(latents[0])[None]


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
    kind: str  # "embedding", "hypernetwork"
    name: str
    path: Path  # the trained file
    step: int
    loss: float | None
    log_dir: Path
    interrupted: bool = False
    previews: list[tuple[Image.Image, Path]] = field(default_factory=list)
    copies: list[Path] = field(default_factory=list)  # the file's copies in the log folder
    notes: list[str] = field(default_factory=list)  # what the run says besides (the optimizer's state read back)

    @property
    def message(self) -> str:
        ended = "Training interrupted" if self.interrupted else "Training finished"
        loss = f", loss {self.loss:.4f}" if self.loss is not None else ""
        return " ".join([f"{ended} at {self.step} steps{loss}. {self.kind.capitalize()} saved to {self.path}.",
                         *self.notes])


def _batches(pictures: list[_Picture], size: int, rng: random.Random) -> Iterator[tuple[int, list[_Picture]]]:
    """(epoch, batch) without end: each epoch the pictures in a new order, a last batch short of ``size`` left out."""
    for epoch in itertools.count():
        order = rng.sample(pictures, len(pictures))
        for start in range(0, len(order) - size + 1, size):
            yield epoch, order[start:start + size]


class Trainee:
    """What one trainer trains, inside a run (``run``): its parameters, how captions become the UNet's context and
    how the UNet runs with it, and its file. The defaults suit a trainee outside the text encoder."""

    kind: str  # "embedding", "hypernetwork": the log's ``<kind>s`` folder of copies
    loss_file: str
    weight_decay: float = 0.01  # AdamW's default, as A1111 trains hypernetworks

    def __init__(self, name: str, path: Path, step: int, parameters: list[torch.Tensor]):
        self.name, self.path, self.step, self.parameters = name, path, step, parameters

    def context(self, pipe, captions: list[str], library) -> torch.Tensor:
        return encode_captions(pipe, captions, None, library)

    def applied(self, unet) -> ContextManager:
        return nullcontext()

    def data(self, step: int, checkpoint: tuple[str, str]) -> dict[str, Any]:
        """The file's contents in A1111's ``.pt`` layout at ``step``; ``checkpoint``: the model's (hash, name)."""
        raise NotImplementedError

    def save(self, step: int, checkpoint: tuple[str, str]) -> None:
        raise NotImplementedError

    def preview_prompt(self, caption: str) -> str:
        return caption

    def described(self) -> dict[str, Any]:
        """What the run's settings file notes of the trainee besides the request."""
        return {}


def _optimizer_file(path: Path) -> Path:
    """Where A1111 keeps a trained file's optimizer state: beside it, ``.optim`` after its whole name."""
    return path.with_name(path.name + ".optim")


def _resume(optimizer: torch.optim.Optimizer, path: Path) -> str:
    """The optimizer's state kept beside ``path`` loaded into ``optimizer``, when it was kept with the file as it
    is now (its hash); what happened, for the run's message."""
    kept = _optimizer_file(path)
    if not kept.is_file():
        return ""
    try:
        saved = torch.load(kept, map_location="cpu", weights_only=True)
        if saved.get("hash") != short_hash(path):
            return f"{kept.name} was kept with another state of {path.name}: the optimizer started afresh."
        optimizer.load_state_dict(saved["optimizer_state_dict"])
    except (OSError, RuntimeError, KeyError, ValueError, AttributeError, pickle.UnpicklingError) as exc:
        return f"{kept.name} cannot be read ({exc}): the optimizer started afresh."
    return f"The optimizer went on from the state in {kept.name}."


def _save(trainee: Trainee, optimizer: torch.optim.Optimizer, step: int, checkpoint: tuple[str, str],
          keep_optimizer: bool) -> None:
    """The trained file, and with ``keep_optimizer`` the optimizer's state beside it with the file's hash (A1111's
    ``save_optimizer_state``), each written atomically."""
    trainee.save(step, checkpoint)
    if keep_optimizer:
        state = {"hash": short_hash(trainee.path), "optimizer_name": type(optimizer).__name__,
                 "optimizer_state_dict": optimizer.state_dict()}
        replace_file(_optimizer_file(trainee.path), lambda file: torch.save(state, file))


class _Log:
    """A run's log folder: copies of the trained file, pictures and the loss, each file new (``-1``, ``-2`` after a
    taken name)."""

    def __init__(self, engine, request: TrainRequest, trainee: Trainee):
        day = datetime.date.today().isoformat()
        self.folder = engine.writer.root / request.log_directory / day / trainee.name
        self.writer = OutputWriter(self.folder, format=engine.writer.format)
        self.writer.add_number = self.writer.save_to_dirs = False
        self.trainee = trainee

    def copy(self, step: int, data: dict[str, Any]) -> Path:
        return self.writer.place(f"{self.trainee.kind}s", f"{self.trainee.name}-{step}", ".pt",
                                 lambda file: torch.save(data, file))

    def picture(self, step: int, image: Image.Image, infotext: str) -> Path:
        # no seed: the name is the suffix alone, as A1111 names previews
        return self.writer.save(image, infotext, None, "images", suffix=f"{self.trainee.name}-{step}")

    def settings(self, values: dict[str, Any]) -> Path:
        """A run's settings as it starts (A1111's ``settings-<time>.json``), to repeat or compare runs by."""
        stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
        text = json.dumps(values, indent=4, ensure_ascii=False).encode("utf-8")
        return self.writer.place("", f"settings-{stamp}", ".json", lambda file: file.write(text))

    def loss(self, step: int, epoch: int, loss: float, rate: float) -> None:
        path = self.folder / self.trainee.loss_file
        new = not path.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(path, "a", newline="", encoding="utf-8") as file:
            rows = csv.writer(file)
            if new:
                rows.writerow(["step", "epoch", "loss", "learn_rate"])
            rows.writerow([step, epoch, f"{loss:.7f}", f"{rate:g}"])


def _preview(engine, request: GenerationRequest) -> tuple[Image.Image, str]:
    """The picture with the trained file as it is now, made as txt2img makes one, not saved with the outputs."""
    made = engine.generate(request, save=False)
    return made.images[0], made.infotexts[0]


def run(engine, request: TrainRequest, begin: Callable[[Any, torch.device], Trainee],
        on_progress: Callable[[TrainProgress], None] | None = None, cancel: threading.Event | None = None,
        owner: Any = None) -> TrainResult:
    """Train what ``begin(pipe, device)`` makes of the request's file on the engine's device (no job runs meanwhile);
    ``cancel``, or the engine's ``interrupt`` for ``owner``, ends it after the current step, the file saved."""
    cancel = cancel or threading.Event()
    lines, rates = _template_lines(request.template_filename), request.learn_rates()
    last = rates[-1][1]  # ``request.last_step``, read once
    clips = request.clip_values() if request.clip_grad_mode != "disabled" else []
    seed = request.seed if request.seed >= 0 else random.randint(0, MAX_SEED)
    rng, g = random.Random(seed), torch.Generator().manual_seed(seed)
    status = Run(owner, cancel, f"train-{request.KIND}", last)
    with engine.holding(request.model) as model, engine.running(status):
        pipe, unet = model.pipe, model.pipe.unet
        encoder = check_model(pipe, model.info.name, f"{request.KIND.capitalize()}s")
        device = get_module_execution_device(unet)  # where it runs, even offloaded (low-memory modes)
        trainee = begin(pipe, device)
        step = status.first = status.step = trainee.step
        if step >= last:
            raise RequestError(f"{trainee.name} has been trained to step {step} already: raise Max steps above it.",
                               "steps")
        for module in (unet, pipe.vae, encoder):
            module.requires_grad_(False)  # only the trainee learns (elsewhere the model only makes pictures)
        pictures = _pictures(pipe, request, g)
        batches = _batches(pictures * request.training_image_repeats_per_epoch, request.batch_size, rng)
        optimizer = torch.optim.AdamW(trainee.parameters, lr=_at(rates, step), weight_decay=trainee.weight_decay)
        resumed = _resume(optimizer, trainee.path) if request.save_optimizer_state else ""
        scaler = torch.amp.GradScaler(device.type, enabled=unet.dtype == torch.float16)
        diffusion = training_schedule(pipe.scheduler.config)
        checkpoint = (model.hash or "", model.info.name)
        log = _Log(engine, request, trainee)
        if request.save_training_settings_to_txt:
            log.settings({**asdict(request), "seed": seed, "model": model.info.name, "model_hash": model.hash,
                          "initial_step": step, "pictures": len(pictures), **trainee.described()})
        result = TrainResult(request.KIND, trainee.name, trainee.path, step, None, log.folder,
                             notes=[resumed] if resumed else [])
        losses: list[float] = []
        epoch, logged = 0, False
        csv_every = request.training_write_csv_every
        while step < last and not cancel.is_set():
            rate = _at(rates, step)
            for group in optimizer.param_groups:
                group["lr"] = rate
            loss = 0.0
            for _ in range(request.gradient_step):
                epoch, batch = next(batches)
                captions = [_text(rng.choice(lines), trainee.name, _filewords(p.caption, request, rng)) for p in batch]
                latents = torch.cat([p.mean if request.latent_sampling_method != "random"
                                     else p.mean + p.spread * torch.randn(p.mean.shape, generator=g).to(p.mean.device)
                                     for p in batch]).to(device, unet.dtype)
                context = trainee.context(pipe, captions, engine.embeddings).to(unet.dtype)
                noisy, noise, t = noised(diffusion, latents, g)
                with trainee.applied(unet):
                    prediction = unet(noisy, t, context).sample
                squared = (prediction.float() - target(diffusion, latents, noise, t).float()) ** 2
                if request.use_weight:
                    squared = squared * torch.cat([p.weight for p in batch]).to(device)
                error = squared.mean()
                scaler.scale(error / request.gradient_step).backward()
                loss += error.item() / request.gradient_step
            if clips:
                scaler.unscale_(optimizer)
                clip = (torch.nn.utils.clip_grad_value_ if request.clip_grad_mode == "value"
                        else torch.nn.utils.clip_grad_norm_)
                clip(trainee.parameters, _at(clips, step))
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss)
            result.step, result.loss = step, statistics.fmean(losses[-32:])
            copy, picture = (every > 0 and step % every == 0
                             for every in (request.save_every, request.create_image_every))
            if copy:
                result.copies.append(log.copy(step, trainee.data(step, checkpoint)))
            preview = None
            if picture:
                _save(trainee, optimizer, step, checkpoint, request.save_optimizer_state)  # what the engine reads
                asked = request.preview(model.info.name, captions[0], rng.randint(0, MAX_SEED))
                preview, infotext = _preview(engine, replace(asked, prompt=trainee.preview_prompt(asked.prompt)))
                result.previews.append((preview, log.picture(step, preview, infotext)))
            logged = csv_every > 0 and step % csv_every == 0
            if logged:
                log.loss(step, epoch, result.loss, rate)
            status.step, status.preview = step, status.preview if preview is None else preview
            status.textinfo = f"Loss: {result.loss:.7f}, step: {step}, last prompt: {captions[0]}"
            if on_progress is not None:
                on_progress(TrainProgress(step, last, result.loss, rate, preview))
        result.interrupted = step < last
        _save(trainee, optimizer, step, checkpoint, request.save_optimizer_state)
        if csv_every > 0 and not logged and result.loss is not None:  # the last step's loss too
            log.loss(step, epoch, result.loss, rate)
    return result
