"""Diffusers pipelines written as single-file checkpoints in the original SD / SDXL layout, for tests and benchmarks.

diffusers reads these files (``from_single_file``) but has no writer, so this module reverses its conversion:
UNet blocks back to ``model.diffusion_model.{input,middle,output}_blocks``, the VAE to ``first_stage_model``,
CLIP text encoders to ``cond_stage_model.transformer`` / ``conditioner.embedders.0.transformer`` and OpenCLIP
ones (SD2, SDXL's second) to ``...model.transformer.resblocks`` with fused attention projections. Shapes work
on the meta device too, so full-size layouts can be written as header-only files for detection tests.

``write_tiny_checkpoints`` makes one tiny file per kind with a matching config-only folder in
``<models>/configs/<kind>``, which Easel prefers over the shipped full-size configs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from pipelines.clip_tokenizer import load_tokenizer

from .tiny_random import _scheduler, _text_encoder, _vae, build_tiny_sd

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_FIXED = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
               "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
               "add_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0", "conv_out": "out.2"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
# Text encoders per layout: (pipeline component, OpenCLIP?, key prefix in the original file).
TEXT_LAYOUTS = {
    "sd1": [("text_encoder", False, "cond_stage_model.transformer.")],
    "sd2": [("text_encoder", True, "cond_stage_model.model.")],
    "sdxl": [("text_encoder", False, "conditioner.embedders.0.transformer."),
             ("text_encoder_2", True, "conditioner.embedders.1.model.")],
}


def _resnet(rest: str) -> str:
    name, _, param = rest.partition(".")
    return f"{_RESNET[name]}.{param}"


def _unet_key(key: str, per_block: int, up_attention: list[bool]) -> str:
    step = per_block + 1
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        side, i, part, j, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
        block = f"input_blocks.{1 + i * step + j}" if side == "down" else f"output_blocks.{i * step + j}"
        return f"{block}.0.{_resnet(rest)}" if part == "resnets" else f"{block}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * step}.0.op.{m[2]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        i = int(m[1])
        return f"output_blocks.{i * step + per_block}.{2 if up_attention[i] else 1}.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    module, _, param = key.rpartition(".")
    return f"{_UNET_FIXED[module]}.{param}"


def _vae_item(key: str, tensor: torch.Tensor, levels: int) -> tuple[str, torch.Tensor]:
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}", tensor
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.{m[2]}", tensor
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}", tensor
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.upsample.{m[2]}", tensor
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}", tensor
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
        conv = tensor[:, :, None, None] if tensor.ndim == 2 else tensor  # 1x1 convolutions in the original
        return f"{m[1]}.mid.attn_1.{_VAE_ATTENTION[m[2]]}.{m[3]}", conv
    return key, tensor


def _open_clip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    state = {k.removeprefix("text_model."): v for k, v in state.items()}
    out = {}
    for key, tensor in state.items():
        if key == "text_projection.weight":
            out["text_projection"] = tensor.T
        elif key == "embeddings.position_embedding.weight":
            out["positional_embedding"] = tensor
        elif key.startswith(("embeddings.token_embedding.", "final_layer_norm.")):
            out[key.replace("embeddings.", "").replace("final_layer_norm", "ln_final")] = tensor
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.q_proj\.(weight|bias)", key):
            fused = [state[key.replace("q_proj", p)] for p in ("q_proj", "k_proj", "v_proj")]
            out[f"transformer.resblocks.{m[1]}.attn.in_proj_{m[2]}"] = torch.cat(fused)
        elif not re.search(r"self_attn\.[kv]_proj", key):
            block = re.sub(r"^encoder\.layers\.", "transformer.resblocks.", key)
            for old, new in (("self_attn", "attn"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                             ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                block = block.replace(old, new)
            out[block] = tensor
    return {prefix + k: v for k, v in out.items()}


def to_original(pipe, layout: str) -> dict[str, torch.Tensor]:
    """The pipeline's weights under the original checkpoint's key names (``layout``: sd1, sd2 or sdxl)."""
    unet = pipe.unet.config
    up_attention = ["CrossAttn" in t for t in unet.up_block_types]
    state = {"model.diffusion_model." + _unet_key(k, unet.layers_per_block, up_attention): v
             for k, v in pipe.unet.state_dict().items()}
    levels = len(pipe.vae.config.block_out_channels)
    state.update(("first_stage_model." + k, v) for k, v in
                 (_vae_item(k, t, levels) for k, t in pipe.vae.state_dict().items()))
    for component, open_clip, prefix in TEXT_LAYOUTS[layout]:
        weights = getattr(pipe, component).state_dict()
        if open_clip:
            state.update(_open_clip(weights, prefix))
        else:
            state.update((prefix + (k if k.startswith("text_model.") else "text_model." + k), v)
                         for k, v in weights.items())
    return state


def save_single_file(pipe, path: Path, layout: str, extra: dict[str, torch.Tensor] | None = None) -> Path:
    from safetensors.torch import save_file

    state = {**to_original(pipe, layout), **(extra or {})}
    save_file({k: v.contiguous().clone() for k, v in state.items()}, str(path))
    return path


def save_config_folder(pipe, folder: Path) -> Path:
    """A config-only diffusers folder for ``pipe``: its JSON files, no weights, and of the tokenizers only their
    config (Easel builds tokenizers from the CLIP vocabulary it carries)."""
    pipe.save_pretrained(folder)
    for f in Path(folder).rglob("*"):
        if f.is_file() and (f.suffix != ".json" or f.name in ("tokenizer.json", "vocab.json")):
            f.unlink()
    return Path(folder)


def build_tiny_sdxl_like(layers_per_block: int = 2, mid_block: bool = True, inpainting: bool = False, seed: int = 0):
    """A toy SDXL pipeline in the real SDXL shape (two resnets per level; ``layers_per_block=1`` is KOALA's,
    ``mid_block=False`` KOALA-700M's). Its text encoders differ in width (8, 16), as CLIP-L and OpenCLIP-G do,
    which is how diffusers tells them apart in a single file."""
    import diffusers

    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=layers_per_block, sample_size=32,
        in_channels=9 if inpainting else 4, out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn" if mid_block else None,
        cross_attention_dim=8 + 16, norm_num_groups=2, attention_head_dim=2, addition_embed_type="text_time",
        addition_time_embed_dim=4, projection_class_embeddings_input_dim=16 + 6 * 4, use_linear_projection=True,
    )
    cls = diffusers.StableDiffusionXLInpaintPipeline if inpainting else diffusers.StableDiffusionXLPipeline
    return cls(vae=_vae(), text_encoder=_text_encoder(8), text_encoder_2=_text_encoder(16, projection=True),
               tokenizer=load_tokenizer(), tokenizer_2=load_tokenizer(pad_token="!"), unet=unet,
               scheduler=_scheduler())


def tiny_checkpoint(kind: str):
    """(pipeline, layout, extra keys) of the tiny checkpoint of ``kind``."""
    if kind.startswith(("sd15", "sd2")):
        pipe = build_tiny_sd(inpainting=kind.endswith("-inpainting"))
        if kind == "sd2-v":
            pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type="v_prediction")
        extra = {"v_pred": torch.zeros(())} if kind == "sd2-v" else {}
        return pipe, "sd1" if kind.startswith("sd15") else "sd2", extra
    koala = kind.startswith("koala")
    pipe = build_tiny_sdxl_like(layers_per_block=1 if koala else 2, mid_block=kind != "koala-700m",
                                inpainting=kind.endswith("-inpainting"))
    return pipe, "sdxl", {}


TINY_KINDS = ("sd15", "sd15-inpainting", "sd2", "sd2-v", "sdxl", "sdxl-inpainting", "koala-700m", "koala-1b")


def write_tiny_checkpoints(models_dir: Path) -> dict[str, Path]:
    """``tiny-<kind>.safetensors`` in ``models_dir/Stable-diffusion`` and ``models_dir/configs/<kind>`` for each
    kind; returns the files by kind."""
    models_dir = Path(models_dir)
    (models_dir / "Stable-diffusion").mkdir(parents=True, exist_ok=True)
    files = {}
    for kind in TINY_KINDS:
        pipe, layout, extra = tiny_checkpoint(kind)
        save_config_folder(pipe, models_dir / "configs" / kind)
        files[kind] = save_single_file(pipe, models_dir / "Stable-diffusion" / f"tiny-{kind}.safetensors", layout,
                                       extra)
    return files


def meta_pipeline(config: Path):
    """A config folder's model components at full size on the meta device (no memory, no weights), as a namespace
    that ``to_original`` accepts."""
    import types

    import diffusers
    import transformers
    from accelerate import init_empty_weights

    index = json.loads((Path(config) / "model_index.json").read_text())
    parts = {}
    with init_empty_weights():
        for name, (_, cls) in ((k, v) for k, v in index.items() if isinstance(v, list) and v[0]):
            if name.startswith(("unet", "vae")):
                parts[name] = getattr(diffusers, cls).from_config(getattr(diffusers, cls).load_config(config / name))
            elif name.startswith("text_encoder"):
                model = getattr(transformers, cls)
                parts[name] = model(model.config_class.from_pretrained(config / name))
    return types.SimpleNamespace(**parts)


def header_only_file(state: dict[str, torch.Tensor], path: Path) -> Path:
    """A safetensors header for ``state`` (meta tensors welcome) without tensor data: enough for detection."""
    header = {k: {"dtype": "F16", "shape": list(v.shape), "data_offsets": [0, 0]} for k, v in state.items()}
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    return path

