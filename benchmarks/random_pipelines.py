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
    family: str  # "sd", "sdxl" or "kandinsky22"
    size: int  # native picture size
    steps: int
    flops_key: str  # key in "flops_per_unet_forward_batch1_tflop"
    sampler: str = "Euler"
    cfg: float = 7.0


# Kandinsky 2.2: the decoder (UNet and MoVQ) at 768², 50 steps, its model card's DDPM and CFG 4. architectures.json
# has no prior, so its prior is a small stand-in of the right widths (the decoder is what costs).
KANDINSKY22 = Spec("kandinsky22", "kandinsky22_decoder", "kandinsky22", 768, 50, "kandinsky22_decoder_768", "DDPM",
                   4.0)
# The targets: SD 1.5 at 512², 25 steps; SDXL 30 steps, KOALA 25 steps at 1024².
SPECS = {
    "sd15": Spec("sd15", "sd15", "sd", 512, 25, "sd15_512"),
    "sdxl": Spec("sdxl", "sdxl", "sdxl", 1024, 30, "sdxl_1024"),
    "koala_1b": Spec("koala_1b", "koala_1b", "sdxl", 1024, 25, "koala_1b_1024"),
    "koala_700m": Spec("koala_700m", "koala_700m", "sdxl", 1024, 25, "koala_700m_1024"),
    "kandinsky22": KANDINSKY22,
}
TINY_SIZE = 64


def architectures(path: Path = ARCHITECTURES) -> dict:
    return json.loads(Path(path).read_text())


def unet_benchmark_args(parser, argv: list[str] | None):
    """A UNet benchmark's command line: ``parser``'s own options and ``--unet``, ``--runs``, ``--threads`` (set here)
    and ``--device``."""
    parser.add_argument("--unet", default="sd15", choices=("sd15", "sdxl"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def random_unet(name: str, device: torch.device, dtype: torch.dtype = torch.float32):
    """architectures.json's UNet ``name`` with random weights (seed 0), for inference."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(**architectures()["unet"][name]["config"]).eval().to(device, dtype)


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


def _kandinsky_configs(spec: Spec, tiny: bool, arch: dict) -> dict:
    """The decoder UNet (shrunk like the others when tiny), the MoVQ described in architectures.json (its spatial
    norms need 32-channel groups, so the tiny one stays 32 wide) and the prior's stand-in parts."""
    unet = arch["unet"][spec.unet]["config"]
    levels = len(unet["block_out_channels"])
    movq = {"block_out_channels": [128, 256, 256, 512], "layers_per_block": 2, "num_vq_embeddings": 16384,
            "down_block_types": ["DownEncoderBlock2D"] * (levels - 1) + ["AttnDownEncoderBlock2D"],
            "up_block_types": ["AttnUpDecoderBlock2D"] + ["UpDecoderBlock2D"] * (levels - 1), "in_channels": 3,
            "out_channels": 3, "latent_channels": 4, "vq_embed_dim": 4, "norm_type": "spatial", "norm_num_groups": 32}
    if tiny:
        unet = {**_shrink_unet(unet, spec.family), "encoder_hid_dim": 16, "layers_per_block": 1}
        movq.update(block_out_channels=[32] * levels, layers_per_block=1, num_vq_embeddings=16)
    width = unet["encoder_hid_dim"]  # the CLIP image embedding the prior makes and the decoder reads
    text = {"hidden_size": width, "projection_dim": width, "intermediate_size": 2 * width, "num_attention_heads": 2,
            "num_hidden_layers": 2 if tiny else 1}
    vision = {**text, "image_size": 32, "patch_size": 8}
    prior = {"num_attention_heads": 2, "attention_head_dim": 8, "embedding_dim": width, "num_layers": 1}
    return {"unet": unet, "movq": movq, "text_encoder": text, "image_encoder": vision, "prior": prior}


def _build_kandinsky(parts: dict):
    """A KandinskyV22CombinedPipeline from ``_kandinsky_configs``' parts (made on the current device and dtype)."""
    from diffusers import (DDPMScheduler, KandinskyV22CombinedPipeline, PriorTransformer, UnCLIPScheduler,
                           UNet2DConditionModel, VQModel)
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from pipelines.clip_tokenizer import load_tokenizer

    prior = PriorTransformer(**parts["prior"])
    prior.clip_std.data.fill_(1.0)  # random statistics would scale the embedding by noise
    clip = {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
    size = parts["image_encoder"]["image_size"]
    return KandinskyV22CombinedPipeline(
        unet=UNet2DConditionModel(**parts["unet"]), movq=VQModel(**parts["movq"]),
        scheduler=DDPMScheduler(beta_schedule="linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                                steps_offset=1, timestep_spacing="leading"),
        prior_prior=prior, prior_text_encoder=_text_encoder(parts["text_encoder"], projection=True),
        prior_image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**parts["image_encoder"])),
        prior_tokenizer=load_tokenizer(),
        prior_scheduler=UnCLIPScheduler(variance_type="fixed_small_log", prediction_type="sample",
                                        clip_sample=True, clip_sample_range=10.0),
        prior_image_processor=CLIPImageProcessor(size=size, crop_size=size, resample=3, **clip),
    )


def configs(spec: Spec, tiny: bool, arch: dict) -> dict:
    """Constructor arguments of each component."""
    if spec.family == "kandinsky22":
        return _kandinsky_configs(spec, tiny, arch)
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
            if spec.family == "kandinsky22":
                return _build_kandinsky(parts)
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
