"""A1111's settings: the options a user changes while Easel runs (the Settings tab, ``/sdapi/v1/options``), under
A1111's names, labels and sections, and kept in ``config.json`` (``--ui-settings-file``) so that they outlive a
restart.

The file is A1111's format (one JSON object), so A1111's own reads in: keys Easel does not know stay in the file as
they are, and a value Easel cannot use is passed over with a warning (its default used instead). Flags that decide an
option for a run (``--no-save``, ``--samples-format``) set it without writing it: the file holds only what a user
changed. ``Services.configure`` puts the values to work. The file also keeps the checkpoint and the VAE last picked
(``sd_model_checkpoint`` and ``sd_vae``, as A1111's), which the next start opens on unless ``--default-model`` or
``--vae`` names one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import filenames
from .atomic import read_json_object, write_json_object
from .errors import RequestError
from .grid import BatchLayout
from .negative_guidance import NGMS, NGMS_ALL, NGMS_ALL_LABEL, SKIP_EARLY
from .outputs import DIRECTORY_PATTERN, FORMATS, QUALITY
from .request import GenerationRequest, finite_number, whole_number
from .sampler_parameters import (ENSD, MAX_UNI_PC_ORDER, NOISE_SCHEDULES, SETTINGS as SAMPLER_SETTINGS, UNI_PC,
                                 UNI_PC_VARIANTS)
from .training_run import MAX_REPEATS, check_word_regex
from .variation import EXTRA_NOISE


@dataclass(frozen=True)
class Option:
    key: str  # A1111's name
    label: str  # A1111's label
    section: str
    default: Any  # its type is the option's: bool, int, float or str
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None  # none: no upper bound (a number field, not a slider)
    info: str = ""
    request_field: str | None = None  # the request field it is the default of (a number: checked as a request's)
    check_text: Callable[[str, str], str] | None = None  # a text's own check (value, key) -> value

    def check(self, value: Any) -> Any:
        """``value`` as this option holds it, or a RequestError naming the option."""
        if isinstance(self.default, bool):
            if not isinstance(value, bool):
                raise RequestError(f"{self.label} must be true or false, got {value!r}.", self.key)
            return value
        if self.request_field:
            try:
                return getattr(GenerationRequest(**{self.request_field: value}), self.request_field)
            except RequestError as exc:
                raise RequestError(str(exc), self.key) from None
        if isinstance(self.default, int):
            value = whole_number(value, self.label, self.key)
        elif isinstance(self.default, float):
            value = finite_number(value, self.label, self.key)
        elif not isinstance(value, str):
            raise RequestError(f"{self.label} must be text, got {value!r}.", self.key)
        if self.choices and value not in self.choices:
            raise RequestError(f"{self.label} must be one of {', '.join(self.choices)}, got {value!r}.", self.key)
        if self.high is None and self.low is not None and value < self.low:
            raise RequestError(f"{self.label} must be at least {self.low:g}, got {value!r}.", self.key)
        if self.high is not None and not self.low <= value <= self.high:
            raise RequestError(f"{self.label} goes from {self.low:g} to {self.high:g}, got {value!r}.", self.key)
        return self.check_text(value, self.key) if self.check_text else value


SAVING, DIRECTORIES, GALLERY, PREVIEWS, SD, IMG2IMG, OPTIMIZATIONS, SAMPLING, TRAINING, NETWORKS, DYNAMIC, UI = (
    "Saving images/grids", "Saving to a directory", "Gallery", "Live previews", "Stable Diffusion", "img2img",
    "Optimizations", "Sampler parameters", "Training", "Extra Networks", "Dynamic Prompts", "User interface")
SOUND = "notification.mp3"  # A1111's notification sound: beside the settings file (A1111's root, by default)
OPTIONS = (
    Option("samples_save", "Always save all generated images", SAVING, True),
    Option("samples_format", "File format for images", SAVING, "png", choices=tuple(FORMATS)),
    Option("samples_filename_pattern", "Images filename pattern", SAVING, "",
           info=f"after the number; empty: {filenames.DEFAULT} ({filenames.DEFAULT_UNSORTED} when not saved to a "
                "subdirectory). Tokens: " + ", ".join(f"[{name}]" for name in filenames.TOKENS)
                + "; [datetime<%Y%m%d_%H%M%S><Europe/Paris>] takes a format and a time zone, the hashes a length "
                  "([image_hash<8>]), [hasprompt<cat|dog><red>] words the prompt holds (or another's)",
           check_text=filenames.check),
    Option("save_images_add_number", "Add number to filename when saving", SAVING, True,
           info="off: a name already taken gets -1, -2 (nothing is written over)"),
    Option("save_images_before_highres_fix", "Save a copy of image before applying highres fix.", SAVING, False,
           info="the first pass's pictures too, named as the others with -before-highres-fix at the end"),
    Option("enable_pnginfo", "Save text information about generation parameters as chunks to png files", SAVING,
           True, info="also the EXIF of JPEG and WebP files; off: the gallery's and the API's pictures carry none"),
    Option("save_txt", "Create a text file next to every image with generation parameters", SAVING, False),
    Option("jpeg_quality", "Quality for saved jpeg and webp images", SAVING, QUALITY, low=1, high=100),
    Option("use_original_name_batch", "Use original name for output filename during batch process in extras tab",
           SAVING, True, info="the source's name, then -1, -2 for the pictures made of it (nothing is written over)"),
    Option("grid_save", "Always save all generated image grids", SAVING, True),
    Option("grid_format", "File format for grids", SAVING, "png", choices=tuple(FORMATS)),
    Option("grid_extended_filename", "Add extended info (seed, prompt) to filename when saving grid", SAVING, False,
           info="the images filename pattern after the grid's number; the X/Y/Z plot's and prompt matrix's always"),
    Option("grid_only_if_multiple", "Do not save grids consisting of one picture", SAVING, True,
           info="off: a job of one picture has a grid of it too, saved and shown"),
    Option("grid_prevent_empty_spots", "Prevent empty spots in grid (when set to autodetect)", SAVING, False),
    Option("n_rows", "Grid row count; use -1 for autodetect and 0 for it to be same as batch size", SAVING, -1,
           low=-1, high=16),
    Option("save_to_dirs", "Save images to a subdirectory", DIRECTORIES, True),
    Option("grid_save_to_dirs", "Save grids to a subdirectory", DIRECTORIES, True),
    Option("directories_filename_pattern", "Directory name pattern", DIRECTORIES, DIRECTORY_PATTERN,
           info="under txt2img-images and the others; / nests folders; empty: [prompt_words]. The images filename "
                "pattern's tokens", check_text=filenames.check),
    Option("return_grid", "Show grid in gallery", GALLERY, True),
    Option("live_previews_enable", "Show live previews of the created image", PREVIEWS, True),
    Option("show_progress_every_n_steps", "Live preview display period", PREVIEWS, 5, low=-1, high=32,
           info="in sampling steps; 0 or -1: no previews while a picture is made"),
    Option("CLIP_stop_at_last_layers", "Clip skip", SD, 1, low=1, high=12, request_field="clip_skip",
           info="the generation tabs' and the API's default"),
    Option("initial_noise_multiplier", "Noise multiplier for img2img", IMG2IMG, 1.0, low=0.0, high=1.5,
           request_field="initial_noise_multiplier", info="the img2img and inpaint tabs' and the API's default"),
    Option(EXTRA_NOISE.field, "Extra noise multiplier for img2img and hires fix", IMG2IMG, EXTRA_NOISE.default,
           low=EXTRA_NOISE.low, high=EXTRA_NOISE.high, request_field=EXTRA_NOISE.field,
           info="0 = disabled; should be lower than denoising strength. The img2img and inpaint tabs', txt2img's "
                "hires fix's and the API's default"),
    Option("img2img_color_correction", "Apply color correction to img2img results to match original colors.",
           IMG2IMG, False, request_field="color_correction",
           info="the img2img and inpaint tabs' and the API's default"),
    *(Option(setting.field, setting.label, OPTIMIZATIONS if setting is NGMS else SAMPLING, setting.default,
             low=setting.low, high=setting.high, request_field=setting.field,
             info="the generation tabs' and the API's default: " + setting.info)
      for setting in (NGMS, *SAMPLER_SETTINGS, SKIP_EARLY)),
    Option(NGMS_ALL, NGMS_ALL_LABEL, OPTIMIZATIONS, False, request_field=NGMS_ALL,
           info="off: every other step below it; the generation tabs' and the API's default"),
    Option("sd_noise_schedule", "Noise schedule for sampling", SAMPLING, NOISE_SCHEDULES[0], choices=NOISE_SCHEDULES,
           request_field="noise_schedule", info="for models trained with zero terminal SNR; the generation tabs' "
                                                "and the API's default"),
    Option("uni_pc_variant", "UniPC variant", SAMPLING, UNI_PC["uni_pc_variant"][1], choices=UNI_PC_VARIANTS,
           request_field="uni_pc_variant", info="the generation tabs' and the API's default"),
    Option("uni_pc_order", "UniPC order", SAMPLING, UNI_PC["uni_pc_order"][1], low=1, high=MAX_UNI_PC_ORDER,
           request_field="uni_pc_order", info="must be < sampling steps; the generation tabs' and the API's default"),
    Option("uni_pc_lower_order_final", "UniPC lower order final", SAMPLING, UNI_PC["uni_pc_lower_order_final"][1],
           request_field="uni_pc_lower_order_final", info="the generation tabs' and the API's default"),
    Option(ENSD, "Eta noise seed delta", SAMPLING, 0, low=0, request_field=ENSD,
           info="ENSD: the noise a sampler draws as it samples comes from seed + this (the start stays the seed's); "
                "changes only the samplers that draw noise (Euler a, DPM2 a, DDIM with eta...). 31337 reproduces "
                "NovelAI's pictures. The generation tabs' and the API's default"),
    Option("training_write_csv_every", "Save an csv containing the loss to log directory every N steps, 0 to disable",
           TRAINING, 500, low=0, info="and at a run's last step"),
    Option("training_image_repeats_per_epoch", "Number of repeats for a single input image per epoch; used only for "
           "displaying epoch number", TRAINING, 1, low=1, high=MAX_REPEATS),
    Option("save_training_settings_to_txt", "Save textual inversion and hypernet settings to a text file whenever "
           "training starts.", TRAINING, True, info="settings-<time>.json in the run's log folder"),
    Option("dataset_filename_word_regex", "Filename word regex", TRAINING, "", check_text=check_word_regex,
           info="a caption read from a file name is the words it finds (empty: the whole name)"),
    Option("dataset_filename_join_string", "Filename join string", TRAINING, " "),
    Option("save_optimizer_state", "Saves Optimizer state as separate *.optim file. Training of embedding or HN can "
           "be resumed with the matching optim file.", TRAINING, False,
           info="beside the trained file, each time it is saved; a run goes on from it while the file is unchanged"),
    Option("extra_networks_default_multiplier", "Default multiplier for extra networks", NETWORKS, 1.0, low=0.0,
           high=2.0, info="the weight a card's tag gets when its network has no preferred weight"),
    Option("dp_ignore_whitespace", "Ignore whitespace in prompts: All newlines, tabs, and multiple spaces are "
           "replaced by a single space", DYNAMIC, False, info="in the prompts Dynamic Prompts makes of templates"),
    Option("dp_write_raw_template", "Save template to metadata: Write prompt template into the PNG metadata", DYNAMIC,
           False, info="Template: and Negative Template: lines after the parameters of a picture made of templates"),
    Option("notification_audio", "Play notification sound after image generation", UI, True,
           info=f"{SOUND} should be beside the settings file (config.json); the pages opened after a change play it"),
    Option("notification_volume", "Notification sound volume", UI, 100, low=0, high=100, info="in %"),
)
BY_KEY = {option.key: option for option in OPTIONS}
CHECKPOINT = "sd_model_checkpoint"  # kept as the last one picked, the model the next start opens on
VAE = "sd_vae"  # kept as the last one picked, the VAE the next start uses (A1111's "Automatic": each model's own)
SECTIONS = tuple(dict.fromkeys(option.section for option in OPTIONS))


class Config:
    """The options' values: the defaults, then the file's, then ``overrides`` (a run's flags, never written)."""

    def __init__(self, path: Path | None = None, overrides: dict[str, Any] | None = None):
        self.path = Path(path) if path else None
        self.warnings: list[str] = []
        self._lock = threading.Lock()
        try:
            self._stored = read_json_object(self.path)  # every key, to be written back with the changes
        except ValueError as exc:
            self._stored = {}
            self.warnings.append(f"{exc}; using the defaults.")
        self._values = {option.key: option.default for option in OPTIONS}
        for key, value in self._stored.items():
            if key in BY_KEY:
                try:
                    self._values[key] = BY_KEY[key].check(value)
                except RequestError as exc:
                    self.warnings.append(f"{self.path}: {exc} Using {BY_KEY[key].default!r}.")
        self._values.update(self.check(overrides or {}))

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def kept(self, key: str) -> Any:
        """What the file holds under a key that is not an option (A1111's ``sd_model_checkpoint``), unchecked."""
        return self._stored.get(key)

    def keep(self, key: str, value: Any) -> None:
        """Write ``value`` under a key that is not an option."""
        with self._lock:
            if self._stored.get(key) != value:
                self._stored[key] = value
                if self.path:
                    write_json_object(self.path, self._stored)

    def values(self) -> dict[str, Any]:
        return dict(self._values)

    @staticmethod
    def check(values: dict[str, Any]) -> dict[str, Any]:
        """The options among ``values`` as they would be held (other keys left out); a RequestError for the first
        that cannot be."""
        return {key: BY_KEY[key].check(value) for key, value in values.items() if key in BY_KEY}

    def update(self, values: dict[str, Any]) -> list[str]:
        """Set the options among ``values`` (none when one is refused) and write the changed ones to the file; the keys
        whose value changed, in ``OPTIONS``' order."""
        checked = self.check(values)
        with self._lock:
            changed = [option.key for option in OPTIONS
                       if option.key in checked and checked[option.key] != self._values[option.key]]
            self._values.update(checked)
            if changed and self.path:
                self._stored.update({key: checked[key] for key in changed})
                write_json_object(self.path, self._stored)
        return changed


def batch_layout(config: Config) -> BatchLayout:
    """How the settings lay out the grid of a job's pictures."""
    return BatchLayout(config["n_rows"], config["grid_prevent_empty_spots"], not config["grid_only_if_multiple"])
