"""ControlNet preprocessors: a picture in, a control map out, under the sd-webui-controlnet module names.

Canny and content shuffle need no weights; the others (controlnet-aux detectors) are offered only when their
weight files are in ``models/ControlNet/annotators/`` (the layout of the ``lllyasviel/Annotators`` Hub repo):
a preprocessor whose files are missing is listed as unavailable with the folder to put them in, and never
triggers a Hub download. The IP-Adapter modules (``ip-adapter_clip_h``, ``ip-adapter_clip_g``) name a CLIP image
encoder in ``models/clip_vision`` instead (``ip_adapter``); what they show is the square the encoder reads. Results are
cached by input (picture bytes, module, resolution, thresholds).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .errors import RequestError
from .ip_adapter import ENCODER_DIR, ENCODER_NAMES, HUB_FOLDERS, encoder_path

ANNOTATOR_DIR = Path("ControlNet") / "annotators"
NONE = "none"
INVERT = "invert (from white bg & black line)"


@dataclass(frozen=True)
class Slider:
    """A module's threshold A or B, as the ControlNet extension shows it."""

    label: str
    value: float
    minimum: float
    maximum: float
    step: float = 1.0


@dataclass(frozen=True)
class Preprocessor:
    name: str
    detector: str | None = None  # controlnet_aux class; None: done here
    weights: tuple[str, ...] = ()  # files the detector reads from the annotators folder
    options: dict[str, Any] = field(default_factory=dict)  # the detector's own keyword arguments
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None
    takes_resolution: bool = True
    encoder: str = ""  # an IP-Adapter module's CLIP image encoder (``ip_adapter.ENCODER_NAMES``)


PREPROCESSORS = {p.name: p for p in (
    Preprocessor(NONE, takes_resolution=False),
    Preprocessor(INVERT, takes_resolution=False),
    Preprocessor("canny", "CannyDetector", threshold_a=Slider("Canny Low Threshold", 100, 1, 255),
                 threshold_b=Slider("Canny High Threshold", 200, 1, 255)),
    Preprocessor("shuffle", "ContentShuffleDetector"),
    Preprocessor("mlsd", "MLSDdetector", ("mlsd_large_512_fp32.pth",),
                 threshold_a=Slider("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01),
                 threshold_b=Slider("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01)),
    Preprocessor("softedge_hed", "HEDdetector", ("ControlNetHED.pth",), {"scribble": False}),
    Preprocessor("scribble_hed", "HEDdetector", ("ControlNetHED.pth",), {"scribble": True}),
    Preprocessor("softedge_pidinet", "PidiNetDetector", ("table5_pidinet.pth",), {"scribble": False}),
    Preprocessor("scribble_pidinet", "PidiNetDetector", ("table5_pidinet.pth",), {"scribble": True}),
    Preprocessor("lineart_realistic", "LineartDetector", ("sk_model.pth", "sk_model2.pth"), {"coarse": False}),
    Preprocessor("lineart_coarse", "LineartDetector", ("sk_model.pth", "sk_model2.pth"), {"coarse": True}),
    Preprocessor("lineart_anime", "LineartAnimeDetector", ("netG.pth",)),
    Preprocessor("depth_midas", "MidasDetector", ("dpt_hybrid-midas-501f0c75.pt",)),
    Preprocessor("depth_zoe", "ZoeDetector", ("ZoeD_M12_N.pt",)),
    Preprocessor("openpose", "OpenposeDetector", ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
                 {"include_body": True, "include_hand": False, "include_face": False}),
    Preprocessor("openpose_full", "OpenposeDetector", ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
                 {"include_body": True, "include_hand": True, "include_face": True}),
    Preprocessor("normal_bae", "NormalBaeDetector", ("scannet.pt",)),
    Preprocessor("ip-adapter_clip_h", takes_resolution=False, encoder="clip_h"),
    Preprocessor("ip-adapter_clip_g", takes_resolution=False, encoder="clip_g"),
)}
# The extension's earlier names of the IP-Adapter modules, still in its users' API calls.
ALIASES = {"ip-adapter_clip_sd15": "ip-adapter_clip_h", "ip-adapter_clip_sdxl": "ip-adapter_clip_g",
           "ip-adapter_clip_sdxl_plus_vith": "ip-adapter_clip_h"}
CLIP_SIZE = 224  # the picture side CLIP image encoders read


def missing_weights(models_dir: Path, name: str) -> list[str]:
    folder, module = models_dir / ANNOTATOR_DIR, PREPROCESSORS[name]
    if module.encoder:
        return [] if encoder_path(models_dir, module.encoder) else [module.encoder]
    return [f for f in module.weights if not (folder / f).is_file()]


def available(models_dir: Path) -> list[str]:
    """Module names whose weights are on disk (all of them for weight-free modules)."""
    return [name for name in PREPROCESSORS if not missing_weights(models_dir, name)]


def unavailable_reason(models_dir: Path, name: str) -> str | None:
    missing = missing_weights(models_dir, name)
    if not missing:
        return None
    if encoder := PREPROCESSORS[name].encoder:
        return (f"Preprocessor {name!r} needs the CLIP image encoder {encoder} in {models_dir / ENCODER_DIR}: a "
                f"folder {encoder}/ with its config.json (h94/IP-Adapter's {HUB_FOLDERS[encoder]}), or "
                f"{' or '.join(f'{stem}.safetensors' for stem in ENCODER_NAMES[encoder])}.")
    return (f"Preprocessor {name!r} needs {', '.join(missing)} in {models_dir / ANNOTATOR_DIR} "
            "(from the lllyasviel/Annotators repository).")


def pixel_perfect_resolution(image: Image.Image, width: int, height: int, resize_mode: int) -> int:
    """The extension's pixel-perfect rule: the detector runs at the resolution the map is shown at."""
    k_h, k_w = height / image.height, width / image.width
    scale = min(k_h, k_w) if resize_mode == 2 else max(k_h, k_w)  # "Resize and Fill" fits inside
    return int(round(scale * min(image.width, image.height)))


class Preprocessors:
    """Runs modules, loading each detector once and caching recent results by input."""

    def __init__(self, models_dir: str | Path, cache_size: int = 32):
        self.models_dir = Path(models_dir)
        self._detectors: dict[str, Any] = {}
        self._cache: OrderedDict[tuple, Image.Image] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def run(self, name: str, image: Image.Image, resolution: int = 512,
            threshold_a: float | None = None, threshold_b: float | None = None) -> Image.Image:
        """The control map of ``image`` (RGB, at the detector's resolution; the caller resizes it)."""
        module = PREPROCESSORS.get(name)
        if module is None:
            raise RequestError(f"Unknown preprocessor {name!r}. Choose one of: {', '.join(PREPROCESSORS)}.", "module")
        reason = unavailable_reason(self.models_dir, name)
        if reason:
            raise RequestError(reason, "module")
        a = module.threshold_a.value if threshold_a is None and module.threshold_a else threshold_a
        b = module.threshold_b.value if threshold_b is None and module.threshold_b else threshold_b
        image = image.convert("RGB")
        key = (name, hashlib.sha256(image.tobytes()).hexdigest(), image.size, resolution, a, b)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            result = self._detect(module, image, resolution, a, b)
            self._cache[key] = result
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return result

    def _detect(self, module: Preprocessor, image: Image.Image, resolution: int, a, b) -> Image.Image:
        if module.name == NONE:
            return image
        if module.name == INVERT:
            return ImageOps.invert(image)
        if module.encoder:  # what the encoder sees (``ip_adapter.encode``): the picture's middle square
            return ImageOps.fit(image, (CLIP_SIZE, CLIP_SIZE), Image.BICUBIC)
        detector = self._detector(module)
        kwargs = dict(module.options, detect_resolution=resolution, image_resolution=resolution, output_type="pil")
        if module.name == "canny":
            kwargs.update(low_threshold=int(a), high_threshold=int(b))
        elif module.name == "mlsd":
            kwargs.update(thr_v=a, thr_d=b)
        elif module.name == "shuffle":
            np.random.seed(0)  # the detector draws its flow from numpy's global generator: same input, same map
        result = detector(image, **kwargs)
        return result.convert("RGB")

    def _detector(self, module: Preprocessor):
        if module.detector not in self._detectors:
            import controlnet_aux

            cls = getattr(controlnet_aux, module.detector)
            self._detectors[module.detector] = (
                cls.from_pretrained(str(self.models_dir / ANNOTATOR_DIR)) if module.weights else cls())
        return self._detectors[module.detector]
