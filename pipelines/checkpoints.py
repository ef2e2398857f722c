"""Single-file checkpoints (A1111 / civitai original layout) and VAE overrides, loaded offline.

diffusers' ``from_single_file`` needs a diffusers config tree and downloads one from the Hub unless it is given a
local folder, so Easel ships config-only folders per kind in ``models/configs/<kind>`` (a folder of the same name in
``<models dir>/configs`` wins, which is how tests pair tiny files with tiny configs). The kind comes from the file's
key names and shapes, read from the safetensors header (or a memory-mapped ``.ckpt``) without loading a tensor: SDXL
has two text encoders under ``conditioner.embedders``; KOALA is SDXL with one resnet per down level (KOALA-700M
without a mid block); SD2 uses OpenCLIP (``cond_stage_model.model``), SD1 CLIP (``cond_stage_model.transformer``); a
9-channel UNet input is an inpainting model. v-prediction is marked by a ``v_pred`` key, a sidecar
``<name>.easel.json`` (``"prediction_type"``) or A1111's ``<name>.yaml`` (``parameterization: "v"``); an unmarked SD2
file is probed as A1111 does. A ``ztsnr`` key marks a model trained with zero terminal SNR, whose requests' schedulers
then rescale the betas where they can. Pickled ``.ckpt``/``.pt`` files are only ever read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .clip_tokenizer import load_tokenizer
from .errors import ModelError
from .hashing import short_hash

log = logging.getLogger(__name__)

SUFFIXES = (".safetensors", ".ckpt", ".pt")
CONFIGS_DIR = Path(__file__).resolve().parent.parent / "models" / "configs"
VAE_DIR = "VAE"
AUTOMATIC = "Automatic"  # A1111's word for the checkpoint's own VAE
OWN_VAE = ("", "None", AUTOMATIC)  # A1111's choices that keep it
_UNET = "model.diffusion_model."
_DOWNSAMPLE = re.compile(re.escape(_UNET) + r"input_blocks\.(\d+)\.0\.op\.")


@dataclass(frozen=True)
class Checkpoint:
    kind: str  # the config folder: sd15, sd2, sd2-v, sdxl, koala-700m, koala-1b, or <base>-inpainting
    prediction: str | None  # "v_prediction" or "epsilon" when the file or a sidecar says; None: unknown
    options: dict  # the sidecar <name>.easel.json (per-model defaults, "vae", "prediction_type")
    zero_snr: bool = False  # trained with zero terminal SNR: a ``ztsnr`` key (NoobAI-XL's v-prediction files)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@lru_cache(maxsize=64)
def _shapes(path: str, size: int, mtime: int) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes, cached per file version (size, mtime)."""
    if path.endswith(".safetensors"):
        try:
            with open(path, "rb") as f:
                header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
            return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{Path(path).name} is not a readable safetensors file ({exc}).") from exc
    import torch

    try:  # memory-mapped: the tensors stay on disk
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # a pickle that needs more than tensors (code) is refused, never executed
        reason = str(exc).partition("WeightsUnpickler error: ")[2].split(". ")[0] or str(exc).splitlines()[0]
        raise ModelError(f"{Path(path).name} cannot be read safely ({reason}); convert it to .safetensors.") from exc
    while isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return {k: tuple(getattr(v, "shape", ())) for k, v in state.items()}


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    stat = path.stat()
    return _shapes(str(path), stat.st_size, stat.st_mtime_ns)


def _sidecar_prediction(path: Path, options: dict) -> str | None:
    if options.get("prediction_type"):
        return options["prediction_type"]
    yaml_file = path.with_suffix(".yaml")
    if not yaml_file.is_file():
        return None
    import yaml

    try:
        params = yaml.safe_load(yaml_file.read_text())["model"]["params"]
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise ModelError(f"{yaml_file.name} is not an LDM config: {exc}") from exc
    return "v_prediction" if params.get("parameterization") == "v" else "epsilon"


def detect(path: Path) -> Checkpoint:
    """The kind of a single-file checkpoint from its keys and shapes, plus its sidecar settings."""
    shapes = read_shapes(path)
    conv_in = shapes.get(_UNET + "input_blocks.0.0.weight")
    if conv_in is None:
        raise ModelError(f"{path.name} is not a Stable Diffusion checkpoint in the original layout "
                         f"(no {_UNET}* UNet).")

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in shapes)

    if has("conditioner.embedders.1."):
        first_downsample = min((int(m.group(1)) for k in shapes if (m := _DOWNSAMPLE.match(k))), default=0)
        if first_downsample == 2:  # one resnet per down level: KOALA
            kind = "koala-1b" if has(_UNET + "middle_block.") else "koala-700m"
        else:
            kind = "sdxl"
    elif has("cond_stage_model.model."):
        kind = "sd2"
    elif has("cond_stage_model.transformer."):
        kind = "sd15"
    else:
        raise ModelError(f"{path.name}: no SD/SDXL text encoder in the file (a refiner or a UNet-only file?).")
    options = _read_json(path.with_suffix(".easel.json"))
    prediction = "v_prediction" if "v_pred" in shapes else _sidecar_prediction(path, options)
    if conv_in[1] == 9:
        kind += "-inpainting"
    elif kind == "sd2" and prediction == "v_prediction":
        kind = "sd2-v"
    return Checkpoint(kind, prediction, options, "ztsnr" in shapes)


def config_folder(models_dir: Path, kind: str) -> Path:
    for root in (Path(models_dir) / "configs", CONFIGS_DIR):
        if (root / kind / "model_index.json").is_file():
            return root / kind
    raise ModelError(f"No config folder for {kind} checkpoints (looked for {CONFIGS_DIR / kind}).")


def checkpoint_files(root: Path) -> dict[str, tuple[Path, Path]]:
    """Identified single-file checkpoints in ``root`` (``models/Stable-diffusion``) by model name -> (file,
    config folder). A model is named by its file stem as in A1111, or by its whole file name when a diffusers
    folder or another file already has that stem. Config folders are looked up in ``root``'s parent first."""
    if not root.is_dir():
        return {}
    entries = sorted(root.iterdir())
    taken = {p.name for p in entries if (p / "model_index.json").is_file()}
    found: dict[str, tuple[Path, Path]] = {}
    for path in entries:
        if path.suffix not in SUFFIXES or not path.is_file():
            continue
        try:
            config = config_folder(root.parent, detect(path).kind)
        except ModelError as exc:
            log.warning("skipping %s: %s", path.name, exc)
            continue
        name = path.name if path.stem in taken or path.stem in found else path.stem
        found[name] = (path, config)
    return found


def _predicts_v(unet) -> bool:
    """A1111's SD2 probe: at the last timestep an epsilon model returns about its input, a v model far less."""
    import torch

    x = torch.full((1, unet.config.in_channels, 8, 8), 0.5, dtype=unet.dtype, device=unet.device)
    cond = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, dtype=unet.dtype, device=unet.device)
    with torch.no_grad():
        out = unet(x, 999, encoder_hidden_states=cond).sample
    return (out - x).float().mean().item() < -1


def load_checkpoint(path: Path, models_dir: Path, dtype):
    """The pipeline of a single-file checkpoint, on the CPU, with no network access."""
    import diffusers

    found = detect(path)
    config = config_folder(models_dir, found.kind)
    index = _read_json(config / "model_index.json")
    # Tokenizers are built from the CLIP vocabulary Easel carries; the folder only says their padding token.
    tokenizers = {}
    for name in (k for k in index if k.startswith("tokenizer")):
        pad = _read_json(config / name / "tokenizer_config.json").get("pad_token", "<|endoftext|>")
        tokenizers[name] = load_tokenizer(pad_token=pad)
    pipe = getattr(diffusers, index["_class_name"]).from_single_file(
        str(path), config=str(config), local_files_only=True, dtype=dtype, **tokenizers)
    prediction = found.prediction
    if prediction is None and found.kind == "sd2":
        prediction = "v_prediction" if _predicts_v(pipe.unet) else "epsilon"
    if prediction and prediction != pipe.scheduler.config.get("prediction_type"):
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=prediction)
    if found.zero_snr:  # in the config every request's scheduler is built from, for those that can rescale betas
        pipe.scheduler.register_to_config(rescale_betas_zero_snr=True)
    return pipe


def vae_names(models_dir: Path) -> list[str]:
    """VAEs in ``models/VAE``: diffusers folders and single files."""
    root = Path(models_dir) / VAE_DIR
    if not root.is_dir():
        return []
    return [p.name for p in sorted(root.iterdir())
            if (p.is_file() and p.suffix in SUFFIXES) or (p / "config.json").is_file()]


def check_vae(models_dir: Path, name: str | None) -> str | None:
    """``name`` if it is a VAE in ``models/VAE`` (a name, never a path), None for the checkpoint's own VAE."""
    if name is None or name in OWN_VAE:
        return None
    if name not in vae_names(models_dir):
        available = ", ".join(vae_names(models_dir)) or "none"
        raise ModelError(f"Unknown VAE {name!r} in {Path(models_dir) / VAE_DIR}. Available: {available}.")
    return name


def override_vae(pipe, models_dir: Path, name: str | None) -> tuple[str | None, str | None]:
    """Replace the pipeline's VAE with ``models/VAE/<name>`` and return (name, short hash) for the infotext;
    (None, None) when the model keeps its own. A single file takes the model's own VAE config (its latent
    scaling), as A1111 loads VAE weights into the model's VAE."""
    if check_vae(models_dir, name) is None:
        return None, None
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint, load_single_file_checkpoint

    path = Path(models_dir) / VAE_DIR / name
    if path.is_dir():
        vae = AutoencoderKL.from_pretrained(path, local_files_only=True)
    else:
        state = load_single_file_checkpoint(str(path), local_files_only=True)  # torch.load(weights_only=True)
        vae = AutoencoderKL.from_config(pipe.vae.config)
        if set(state) != set(vae.state_dict()):
            state = convert_ldm_vae_checkpoint(state, vae.config)
        vae.load_state_dict(state)
    pipe.vae = vae.to(pipe.vae.dtype)
    return name, short_hash(path)


# ControlNet single files (lllyasviel's original layout, or a diffusers state dict in one file) carry no config:
# the family comes from the cross-attention width, and the ControlNet's config from that family's UNet config.
_CONTROLNET_FAMILIES = {768: "sd15", 1024: "sd2", 2048: "sdxl"}


def controlnet_family(path: Path) -> str:
    """The config folder whose UNet a single-file ControlNet copies: from a sidecar ``<name>.easel.json``
    (``"family"``) or the width of its cross-attention keys."""
    family = _read_json(path.with_suffix(".easel.json")).get("family")
    if family:
        return family
    widths = {shape[1] for key, shape in read_shapes(path).items() if key.endswith("attn2.to_k.weight")}
    found = {_CONTROLNET_FAMILIES.get(width) for width in widths}
    if len(found) != 1 or None in found:
        raise ModelError(f"{path.name} is not a ControlNet of a known family (cross-attention widths {sorted(widths)}"
                         f"); add {path.with_suffix('.easel.json').name} with {{\"family\": \"sd15\"}} (a folder in "
                         f"models/configs).")
    return found.pop()


def load_controlnet_file(path: Path, models_dir: Path, dtype):
    """A single-file ControlNet, built from its family's UNet config (as ``ControlNetModel.from_unet`` builds one)
    and filled with the file's weights, converted from the original layout when needed."""
    import inspect

    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint, load_single_file_checkpoint

    unet = _read_json(config_folder(models_dir, controlnet_family(path)) / "unet" / "config.json")
    accepted = inspect.signature(ControlNetModel.__init__).parameters
    config = {k: v for k, v in unet.items() if k in accepted and k != "in_channels"}
    state = load_single_file_checkpoint(str(path), local_files_only=True)  # torch.load(weights_only=True)
    hint = [state[k].shape[0] for k in sorted((k for k in state if k.startswith("controlnet_cond_embedding.blocks.")
                                               and k.endswith(".weight")), key=lambda k: int(k.split(".")[2]))]
    if "controlnet_cond_embedding.conv_in.weight" in state:  # diffusers layout: its hint encoder's own widths
        config["conditioning_embedding_out_channels"] = [state["controlnet_cond_embedding.conv_in.weight"].shape[0],
                                                         *hint[1::2]]
    net = ControlNetModel.from_config(config)
    try:
        net.load_state_dict(convert_controlnet_checkpoint(state, net.config))
    except RuntimeError as exc:
        raise ModelError(f"{path.name} does not fit a {controlnet_family(path)} ControlNet: "
                         f"{str(exc).splitlines()[0]}") from exc
    return net.to(dtype)
