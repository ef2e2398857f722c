"""IP-Adapter (Ye et al., 2023): a picture as a prompt, in a ControlNet unit as sd-webui-controlnet runs it.

A unit whose model is an IP-Adapter file in ``models/ControlNet`` (h94/IP-Adapter's layout: ``image_proj.*`` and
``ip_adapter.*`` weights) and whose preprocessor is an ``ip-adapter_clip_*`` module hands its picture to a CLIP image
encoder (``models/clip_vision``); the adapter projects the encoding into a few extra tokens, which each
cross-attention layer of the UNet attends to beside the text, by the unit's weight, from its starting to its ending
control step. Plain adapters read the encoder's image embedding, the Plus and Full ones its penultimate hidden states.

The parts are diffusers' own (its image projections, ``IPAdapterAttnProcessor2_0``), built once per file and set on
the UNet for one pass only (``applied``), its own processors put back after: the shared UNet never keeps them. The
embeddings go to the pipeline as ``ip_adapter_image_embeds``, so every UNet pipeline (txt2img, img2img, inpaint,
ControlNet, SDXL) runs them as diffusers' ``load_ip_adapter`` would. A unit's effective region mask
(``region_mask``) goes to the processors as diffusers' ``ip_adapter_masks``, at the latent size of each UNet call.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .errors import ModelError, RequestError
from .region_mask import RegionMask

KIND = "ip-adapter"  # a ``ModelInfo.kind``: an adapter file in models/ControlNet
ENCODER_KIND = "image encoder"
ENCODER_DIR = "clip_vision"
# An encoder's names on disk: the extension's, then ComfyUI's file names for the same weights.
ENCODER_NAMES = {
    "clip_h": ("clip_h", "CLIP-ViT-H-14-laion2B-s32B-b79K"),
    "clip_g": ("clip_g", "CLIP-ViT-bigG-14-laion2B-39B-b160k"),
}
HUB_FOLDERS = {"clip_h": "models/image_encoder", "clip_g": "sdxl_models/image_encoder"}
_HEADS = {768: 12, 1024: 16, 1280: 16, 1664: 16}  # OpenAI's and LAION's ViTs; other widths: 64 per head


def encoder_path(models_dir: str | Path, encoder: str) -> Path | None:
    """The CLIP image encoder ``encoder`` on disk: a transformers folder (``config.json``, as h94/IP-Adapter's
    ``models/image_encoder``) or one ``.safetensors`` file of its weights, under any of its names."""
    root = Path(models_dir) / ENCODER_DIR
    for stem in ENCODER_NAMES[encoder]:
        if (root / stem / "config.json").is_file():
            return root / stem
        if (root / f"{stem}.safetensors").is_file():
            return root / f"{stem}.safetensors"
    return None


def read_encoder(path: Path, dtype) -> Any:
    """A ``CLIPVisionModelWithProjection`` from a folder, or from a file of its weights, its shape read from theirs."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if path.is_dir():
        return CLIPVisionModelWithProjection.from_pretrained(path, dtype=dtype, local_files_only=True)
    from safetensors.torch import load_file

    state = load_file(path)
    try:
        hidden = state["vision_model.embeddings.class_embedding"].shape[0]
        patch = state["vision_model.embeddings.patch_embedding.weight"].shape[-1]
        positions = state["vision_model.embeddings.position_embedding.weight"].shape[0]
        config = CLIPVisionConfig(
            hidden_size=hidden, patch_size=patch, image_size=patch * round((positions - 1) ** 0.5),
            intermediate_size=state["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
            num_hidden_layers=1 + max(int(key.split(".")[3]) for key in state
                                      if key.startswith("vision_model.encoder.layers.")),
            num_attention_heads=_HEADS.get(hidden, max(1, hidden // 64)),
            projection_dim=state["visual_projection.weight"].shape[0], hidden_act="gelu")
    except KeyError as missing:
        raise ModelError(f"{path.name} is not a CLIP image encoder (no {missing} among its weights).") from None
    encoder = CLIPVisionModelWithProjection(config)
    missing = encoder.load_state_dict(state, strict=False).missing_keys  # some files hold the position ids too
    if missing:
        raise ModelError(f"{path.name} lacks {len(missing)} of a CLIP image encoder's weights ({missing[0]}...).")
    return encoder.to(dtype)


def is_adapter_file(path: Path) -> bool:
    """Whether a file in ``models/ControlNet`` is an IP-Adapter (its weights say so) rather than a ControlNet."""
    return path.is_file() and _is_adapter(str(path), path.stat().st_mtime_ns)


@lru_cache(maxsize=256)
def _is_adapter(path: str, modified: int) -> bool:
    if path.lower().endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as weights:
            return any(key.startswith("ip_adapter.") for key in weights.keys())
    return "ip_adapter" in _read_pickle(path)


def _read_pickle(path: str) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a plain tensor file: not an adapter (its loader says what it is)
        return {}


def read_adapter(path: Path, dtype) -> "IPAdapter":
    """An IP-Adapter file as h94 writes it: one ``.safetensors`` of ``image_proj.*`` and ``ip_adapter.*`` tensors, or
    a ``.bin`` of the two dicts."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        state = nested(load_file(path))
    else:
        state = _read_pickle(str(path))
    return IPAdapter(state, path.stem).to(dtype)


def nested(flat: dict[str, torch.Tensor]) -> dict[str, dict]:
    """A ``.safetensors`` adapter's tensors (``image_proj.*``, ``ip_adapter.*``) as the two dicts of a ``.bin`` one,
    the form diffusers' ``load_ip_adapter`` takes too."""
    state: dict[str, dict] = {"image_proj": {}, "ip_adapter": {}}
    for key, value in flat.items():
        part, _, name = key.partition(".")
        state.setdefault(part, {})[name] = value
    return state


class IPAdapter(torch.nn.Module):
    """One adapter's image projection and, per cross-attention layer of the UNet (in the UNet's order), the key and
    value projections of the image tokens."""

    def __init__(self, state: dict, name: str):
        from diffusers.loaders.unet import UNet2DConditionLoadersMixin
        from diffusers.models.embeddings import ImageProjection

        super().__init__()
        projection, layers = state.get("image_proj", {}), state.get("ip_adapter", {})
        if "perceiver_resampler.proj_in.weight" in projection or ("norm.weight" in projection
                                                                   and "proj.weight" not in projection):
            raise ModelError(f"{name} is an IP-Adapter FaceID, which reads face embeddings (insightface) rather than "
                             "a CLIP encoding: not supported; use a plain, Plus or Full IP-Adapter.")
        ids = sorted(int(key.split(".")[0]) for key in layers if key.endswith(".to_k_ip.weight"))
        if not projection or not ids:
            raise ModelError(f"{name} is not an IP-Adapter: it has no image projection or no image key weights.")
        # diffusers' conversion of the image projection (the unbound method reads no UNet state without low memory)
        self.projection = UNet2DConditionLoadersMixin._convert_ip_adapter_image_proj_to_diffusers(
            None, projection, low_cpu_mem_usage=False)
        self.keys = torch.nn.ModuleList(_linear(layers[f"{i}.to_k_ip.weight"]) for i in ids)
        self.values = torch.nn.ModuleList(_linear(layers[f"{i}.to_v_ip.weight"]) for i in ids)
        self.name = name
        self.hidden_states = not isinstance(self.projection, ImageProjection)  # Plus and Full: the hidden states
        self.tokens = (projection["latents"].shape[1] if "latents" in projection else
                       self.projection.num_image_text_embeds if not self.hidden_states else 257)
        self.width = (projection["proj.weight"].shape[-1] if "proj.weight" in projection else
                      projection["proj.0.weight"].shape[-1] if "proj.0.weight" in projection else
                      projection["proj_in.weight"].shape[-1])

    def check(self, unet, model: str) -> None:
        """Refuse a UNet whose cross-attention layers are not those this adapter was made for."""
        layers = cross_attentions(unet)
        if len(layers) != len(self.keys) or any(key.weight.shape != (layer.to_k.out_features, layer.to_k.in_features)
                                                for key, (_, layer) in zip(self.keys, layers)):
            raise RequestError(f"IP-Adapter {self.name!r} was made for another kind of model than {model!r}: its "
                               f"{len(self.keys)} cross-attention layers read text {self.keys[0].in_features} wide, "
                               f"the model's {len(layers)} read {layers[0][1].to_k.in_features if layers else 0}. "
                               "Pick the IP-Adapter of its family (SD 1.5 or SDXL).", "controlnets")

    def check_encoder(self, encoder, module: str) -> None:
        """Refuse an encoder whose encodings are not as wide as this adapter's projection reads."""
        config = encoder.config
        gives = config.hidden_size if self.hidden_states else config.projection_dim
        if gives != self.width:
            raise RequestError(f"IP-Adapter {self.name!r} reads CLIP image encodings {self.width} wide, and "
                               f"{module}'s encoder gives {gives}: pick the other ip-adapter_clip preprocessor "
                               "(clip_h for SD 1.5 and the SDXL vit-h adapters, clip_g for SDXL's own).",
                               "controlnets")


def _linear(weight: torch.Tensor) -> torch.nn.Linear:
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    layer.weight = torch.nn.Parameter(weight)
    return layer


def cross_attentions(unet) -> list[tuple[str, Any]]:
    """The UNet's cross-attention layers in the order IP-Adapter files number them (diffusers' ``attn_processors``)."""
    modules = dict(unet.named_modules())
    return [(name, modules[name.removesuffix(".processor")]) for name in unet.attn_processors
            if not name.endswith("attn1.processor")]


@torch.no_grad()
def encode(encoder, adapter: IPAdapter, image) -> tuple[torch.Tensor, torch.Tensor]:
    """The (unprompted, prompted) image encodings of ``image`` for ``adapter``, each one row of one picture, as
    diffusers' ``encode_image`` makes them: a plain adapter's unprompted embedding is zeros, a Plus adapter's the
    encoding of a black picture."""
    from transformers import CLIPImageProcessor

    size = encoder.config.image_size
    pixels = CLIPImageProcessor(size=size, crop_size=size)(image.convert("RGB"), return_tensors="pt").pixel_values
    pixels = pixels.to(encoder.device, encoder.dtype)
    if adapter.hidden_states:
        prompted = encoder(pixels, output_hidden_states=True).hidden_states[-2]
        unprompted = encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
    else:
        prompted = encoder(pixels).image_embeds
        unprompted = torch.zeros_like(prompted)
    return unprompted[None], prompted[None]


@dataclass(frozen=True)
class ImagePrompt:
    """One enabled IP-Adapter unit of a job: its adapter, its picture's encodings (``encode``), and its weight over
    the control steps."""
    adapter: IPAdapter
    unprompted: torch.Tensor
    prompted: torch.Tensor
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    mask: RegionMask | None = None  # where the adapter acts; None: everywhere

    def embeds(self, guided: bool) -> torch.Tensor:
        """The pipeline's ``ip_adapter_image_embeds`` entry: with CFG the unprompted row first."""
        return torch.cat([self.unprompted, self.prompted]) if guided else self.prompted

    def weight_at(self, step: int, steps: int) -> float:
        """The weight at ``step`` of ``steps``: 0 outside the control steps, by diffusers' ControlNet rule."""
        steps = max(1, steps)
        return 0.0 if step / steps < self.start or (step + 1) / steps > self.end else self.weight


@lru_cache(maxsize=None)  # one class: a compiled UNet guards on its processors' type
def _masked_processor():
    """diffusers' IP-Adapter processor reading its ``masks`` (one per adapter, None for none) as ``ip_adapter_masks``
    where the call passes none (pipelines pass them only through ``cross_attention_kwargs``)."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0

    class Masked(IPAdapterAttnProcessor2_0):
        masks = None

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                     scale=1.0, ip_adapter_masks=None):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, scale,
                                    self.masks if ip_adapter_masks is None else ip_adapter_masks)

    return Masked


@contextmanager
def applied(unet, prompts: tuple[ImagePrompt, ...], progress: Callable[[], tuple[int, int]]) -> Iterator[None]:
    """``unet`` with the prompts' adapters for one pass: each cross-attention layer's processor becomes diffusers'
    IP-Adapter one over the adapters' layers (no copy of their weights), the image projection is set, and before each
    UNet call every adapter gets its weight for the step ``progress`` gives (step, steps), and its region mask at the
    call's latent size. All is put back after."""
    if not prompts:
        yield
        return
    from accelerate import init_empty_weights
    from diffusers.models.embeddings import MultiIPAdapterImageProjection

    unet = getattr(unet, "_orig_mod", unet)  # a compiled UNet: its module
    if unet.encoder_hid_proj is not None:
        raise RequestError("This model's UNet projects its text itself and takes no IP-Adapter.", "controlnets")
    kept = unet.attn_processors
    processors, made, processor = dict(kept), [], _masked_processor()
    for index, (name, layer) in enumerate(cross_attentions(unet)):
        with init_empty_weights():  # the layers' own weights are the adapters'
            made.append(processor(layer.to_k.out_features, layer.to_k.in_features,
                                  num_tokens=[p.adapter.tokens for p in prompts]))
        made[-1].to_k_ip = torch.nn.ModuleList(p.adapter.keys[index] for p in prompts)
        made[-1].to_v_ip = torch.nn.ModuleList(p.adapter.values[index] for p in prompts)
        processors[name] = made[-1]
    masked = any(prompt.mask is not None for prompt in prompts)

    def weights(module, args, kwargs):
        scales = [prompt.weight_at(*progress()) for prompt in prompts]
        sample = args[0] if args else kwargs["sample"]  # the call's latents: (batch, channels, height, width)
        masks = [None if p.mask is None else p.mask.at(sample.shape[-2:], sample) for p in prompts] if masked else None
        for made_processor in made:
            made_processor.scale, made_processor.masks = scales, masks

    kind = unet.config.encoder_hid_dim_type
    unet.set_attn_processor(processors)
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([p.adapter.projection for p in prompts])
    unet.config.encoder_hid_dim_type = "ip_image_proj"
    hook = unet.register_forward_pre_hook(weights, with_kwargs=True)
    try:
        yield
    finally:
        hook.remove()
        unet.config.encoder_hid_dim_type = kind
        unet.encoder_hid_proj = None
        unet.set_attn_processor(kept)
