"""Random-weight pipelines of real architectures (``benchmarks/architectures.json``), or tiny ones of the
same shape, built on the target device and saved once as diffusers folders.

Full size, their compute and memory equal the real checkpoints'. Weights are made where they will run
(modules constructed under ``torch.device(device)``), so building SDXL on a GPU takes seconds rather than the
minutes of a CPU initialisation; they are stored in fp16, as model cards ship them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

# A copy of the team's shared/reference/architectures.json, kept in the repository so a clean clone (CI) has it.
ARCHITECTURES = Path(__file__).resolve().parent / "architectures.json"


@dataclass(frozen=True)
class Spec:
    name: str
    unet: str  # key in architectures.json's "unet"
    family: str  # "sd" or "sdxl"
    size: int  # native picture size
    steps: int
    flops_key: str  # key in "flops_per_unet_forward_batch1_tflop"


# The targets: SD 1.5 at 512², 25 steps; SDXL 30 steps, KOALA 25 steps at 1024². Kandinsky 2.2 is not in
# the app yet.
SPECS = {
    "sd15": Spec("sd15", "sd15", "sd", 512, 25, "sd15_512"),
    "sdxl": Spec("sdxl", "sdxl", "sdxl", 1024, 30, "sdxl_1024"),
    "koala_1b": Spec("koala_1b", "koala_1b", "sdxl", 1024, 25, "koala_1b_1024"),
    "koala_700m": Spec("koala_700m", "koala_700m", "sdxl", 1024, 25, "koala_700m_1024"),
}
TINY_SIZE = 64


def architectures(path: Path = ARCHITECTURES) -> dict:
    return json.loads(Path(path).read_text())


def _shrink_unet(config: dict, family: str) -> dict:
    """The same block layout (levels, resnets per level, transformer depths up to 2, mid block or none) at toy
    widths, for a 64² picture."""
    levels = len(config["block_out_channels"])
    depth = config.get("transformer_layers_per_block", 1)
    tiny = {**config, "block_out_channels": [16, 32, 32, 32][:levels], "norm_num_groups": 4, "sample_size": 8,
            "attention_head_dim": 2 if isinstance(config["attention_head_dim"], int) else [2] * levels,
            "cross_attention_dim": 16}
    if isinstance(depth, list):
        tiny["transformer_layers_per_block"] = [min(d, 2) for d in depth]
    if family == "sdxl":
        tiny.update(addition_time_embed_dim=4, projection_class_embeddings_input_dim=16 + 6 * 4)
    return tiny


def _text_encoder(config: dict, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from pipelines.clip_tokenizer import BOS_TOKEN_ID, EOS_TOKEN_ID

    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
            "vocab_size", "max_position_embeddings", "projection_dim")
    text = CLIPTextConfig(bos_token_id=BOS_TOKEN_ID, eos_token_id=EOS_TOKEN_ID, pad_token_id=EOS_TOKEN_ID,
                          **{k: config[k] for k in keys if k in config})
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(text)


def configs(spec: Spec, tiny: bool, arch: dict) -> dict:
    """Constructor arguments of each component."""
    unet = arch["unet"][spec.unet]["config"]
    autoencoder = arch["vae"]["sd_sdxl_autoencoderkl"]
    vae = {**autoencoder["config"], "scaling_factor": autoencoder["scaling_factor"]["sdxl" if spec.family == "sdxl"
                                                                                    else "sd15"],
           "force_upcast": spec.family == "sdxl", "sample_size": spec.size}
    clip_l, big_g = arch["text_encoders"]["clip_l"], arch["text_encoders"]["openclip_bigg"]
    if tiny:
        unet = _shrink_unet(unet, spec.family)
        vae.update(block_out_channels=[8] * 4, norm_num_groups=2, layers_per_block=1, sample_size=TINY_SIZE)
        small = {"num_hidden_layers": 2, "num_attention_heads": 2}
        clip_l = {**clip_l, **small, "hidden_size": 16 if spec.family == "sd" else 8, "intermediate_size": 32}
        big_g = {**big_g, **small, "hidden_size": 8, "intermediate_size": 16, "projection_dim": 16}
    text = {"text_encoder": clip_l} if spec.family == "sd" else {"text_encoder": clip_l, "text_encoder_2": big_g}
    return {"unet": unet, "vae": vae, **text}


def build(spec: Spec, tiny: bool, device: str, arch: dict, seed: int = 0):
    """The pipeline with random weights made on ``device``, in fp16 (fp32 when tiny, for the CPU)."""
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline,
                           StableDiffusionXLPipeline, UNet2DConditionModel)

    from pipelines.clip_tokenizer import load_tokenizer

    parts = configs(spec, tiny, arch)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32 if tiny else torch.float16)  # made in fp16: half the memory, no cast
    try:
        with torch.device(device):
            made = {"unet": UNet2DConditionModel(**parts["unet"]), "vae": AutoencoderKL(**parts["vae"]),
                    "text_encoder": _text_encoder(parts["text_encoder"], projection=False)}
            if "text_encoder_2" in parts:
                made["text_encoder_2"] = _text_encoder(parts["text_encoder_2"], projection=True)
    finally:
        torch.set_default_dtype(previous)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    tokenizer = load_tokenizer()
    if spec.family == "sd":
        return StableDiffusionPipeline(**made, tokenizer=tokenizer, scheduler=scheduler, safety_checker=None,
                                       feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    return StableDiffusionXLPipeline(**made, tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler=scheduler)


def saved(spec: Spec, tiny: bool, device: str, models_dir: Path, arch: dict) -> Path:
    """The model's folder under ``models_dir/Stable-diffusion``, built and saved on the first call only (a
    fingerprint of its configs tells a stale folder)."""
    folder = Path(models_dir) / "Stable-diffusion" / f"{spec.name}{'-tiny' if tiny else ''}-random"
    fingerprint = hashlib.sha256(json.dumps(configs(spec, tiny, arch), sort_keys=True).encode()).hexdigest()
    marker = folder / "benchmark-fingerprint"
    if not (marker.is_file() and marker.read_text() == fingerprint):
        pipe = build(spec, tiny, device, arch)
        pipe.save_pretrained(folder)
        marker.write_text(fingerprint)
        del pipe
    return folder
