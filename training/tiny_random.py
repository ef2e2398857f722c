"""Tiny random-weight Stable Diffusion and SDXL pipelines, built in code for tests and benchmarks.

They have the real components (CLIP tokenizer with the full BPE vocabulary, CLIPTextModel, UNet with
cross-attention, AutoencoderKL) at toy widths, so every SD / SDXL code path runs in well under a second.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipelines.clip_tokenizer import BOS_TOKEN_ID, EOS_TOKEN_ID, VOCAB_SIZE, load_tokenizer


def _text_encoder(hidden: int, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=VOCAB_SIZE, bos_token_id=BOS_TOKEN_ID, eos_token_id=EOS_TOKEN_ID, pad_token_id=EOS_TOKEN_ID,
        hidden_size=hidden, intermediate_size=2 * hidden, num_attention_heads=2, num_hidden_layers=2,
        max_position_embeddings=77, projection_dim=hidden,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _vae(levels: int = 2):
    """A tiny AutoencoderKL; each level past the first halves the latent size."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[8] * levels, in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels,
    )


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  steps_offset=1, timestep_spacing="leading")


def build_tiny_sd(seed: int = 0, inpainting: bool = False):
    """A StableDiffusionPipeline with ~0.5 M parameters; native size 64x64. ``inpainting`` makes it a dedicated
    inpainting checkpoint (a 9-channel UNet: latents, mask, masked-image latents)."""
    import diffusers

    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=9 if inpainting else 4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8, norm_num_groups=2,
        attention_head_dim=2,
    )
    cls = diffusers.StableDiffusionInpaintPipeline if inpainting else diffusers.StableDiffusionPipeline
    return cls(
        vae=_vae(), text_encoder=_text_encoder(8), tokenizer=load_tokenizer(), unet=unet,
        scheduler=_scheduler(), safety_checker=None, feature_extractor=None, image_encoder=None,
        requires_safety_checker=False,
    )


def _sdxl_unet(text_width: int, size_ids: int):
    """An SDXL-style UNet at toy size: text of ``text_width`` and ``size_ids`` size ids beside the pooled text."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=text_width, norm_num_groups=2, attention_head_dim=2, transformer_layers_per_block=1,
        addition_embed_type="text_time", addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=8 + size_ids * 4, use_linear_projection=True,
    )


def build_tiny_sdxl(seed: int = 0):
    """A StableDiffusionXLPipeline (two text encoders, pooled + time ids) at toy size; native 64x64."""
    from diffusers import StableDiffusionXLPipeline

    torch.manual_seed(seed)
    unet = _sdxl_unet(text_width=16, size_ids=6)  # both encoders' 8 wide; pooled 8 + (size, crop, target) ids
    tokenizer = load_tokenizer()
    return StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=_text_encoder(8), text_encoder_2=_text_encoder(8, projection=True),
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=_scheduler(),
    )


def build_tiny_sdxl_refiner(seed: int = 0):
    """An SDXL refiner as stabilityai's is laid out, at toy size: an img2img pipeline with the second text encoder
    only, and an aesthetic score in place of the target size among its UNet's size ids (5 of them, not 6)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline

    torch.manual_seed(seed)
    unet = _sdxl_unet(text_width=8, size_ids=5)  # one encoder; pooled 8 + (size, crop, aesthetic score) ids
    return StableDiffusionXLImg2ImgPipeline(
        vae=_vae(), text_encoder=None, text_encoder_2=_text_encoder(8, projection=True), tokenizer=None,
        tokenizer_2=load_tokenizer(), unet=unet, scheduler=_scheduler(), requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )


def build_tiny_upscaler(kind: str, seed: int = 0):
    """diffusers' SD x4 upscaler ("x4": 7-channel UNet, noise-level class embedding, VAE /4) or latent x2
    upscaler ("latent x2": 8 channels in, 5 out, a timestep condition of 128 + pooled text), at toy size."""
    import diffusers

    torch.manual_seed(seed)
    shape = dict(block_out_channels=(8, 16), layers_per_block=1, sample_size=32, norm_num_groups=2,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), attention_head_dim=2,
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8)
    text = {"text_encoder": _text_encoder(8), "tokenizer": load_tokenizer()}
    if kind == "x4":
        unet = diffusers.UNet2DConditionModel(in_channels=7, out_channels=4, num_class_embeds=351, **shape)
        return diffusers.StableDiffusionUpscalePipeline(
            vae=_vae(levels=3), unet=unet, low_res_scheduler=diffusers.DDPMScheduler(),
            scheduler=diffusers.DDIMScheduler(prediction_type="v_prediction"), max_noise_level=350, **text)
    unet = diffusers.UNet2DConditionModel(in_channels=8, out_channels=5, time_cond_proj_dim=128 + 8, **shape)
    return diffusers.StableDiffusionLatentUpscalePipeline(
        vae=_vae(), unet=unet, scheduler=diffusers.EulerDiscreteScheduler(prediction_type="sample"), **text)


def save_tiny_esrgan(path: str | Path, seed: int = 0) -> Path:
    """An ESRGAN (RRDBNet) x4 upscaler file (random weights, toy width), as A1111's ``models/ESRGAN`` holds them."""
    import importlib

    from safetensors.torch import save_file

    rrdb = importlib.import_module("spandrel.architectures.ESRGAN.__arch.RRDB")
    torch.manual_seed(seed)
    net = rrdb.RRDBNet(num_filters=8, num_blocks=1, scale=4)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in net.state_dict().items()}, path)
    return path


def build_tiny_controlnet(pipe, seed: int = 0):
    """A ControlNet for ``pipe``'s UNet (``from_unet``, as real ControlNets start), with its zero convolutions
    made random so that, untrained, it still visibly steers the picture."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    levels = len(pipe.vae.config.block_out_channels)  # its hint encoder must shrink pictures as the VAE does
    net = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(4,) + (8,) * (levels - 1))
    with torch.no_grad():
        for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
            conv.weight.normal_(0, 0.5)
    return net


def build_tiny_image_encoder(seed: int = 0):
    """A CLIP image encoder (``CLIPVisionModelWithProjection``) at toy width that reads CLIP's 224 x 224 pictures."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1, image_size=224,
        patch_size=32, projection_dim=16, hidden_act="gelu"))


def tiny_ip_adapter(unet, encoder, plus: bool = False, seed: int = 0, inner: int = 64,
                    queries: int = 4) -> dict[str, torch.Tensor]:
    """A random IP-Adapter for ``unet`` reading ``encoder``'s encodings, in h94's file layout (``image_proj.*``,
    ``ip_adapter.<n>.to_k_ip``...): plain (4 tokens from the image embedding) or ``plus`` (a resampler of the hidden
    states, ``inner`` wide with ``queries`` queries; h94's SD 1.5 Plus is 768 and 16). Its image keys and values are
    large enough to steer a picture."""
    torch.manual_seed(seed)
    cross, width = unet.config.cross_attention_dim, encoder.config.projection_dim
    if plus:
        width = encoder.config.hidden_size
        shapes = {"latents": (1, queries, inner), "proj_in.weight": (inner, width), "proj_in.bias": (inner,),
                  "proj_out.weight": (cross, inner), "proj_out.bias": (cross,), "norm_out.weight": (cross,),
                  "norm_out.bias": (cross,)}
        for layer in range(4):  # diffusers builds the resampler 4 layers deep
            shapes.update({f"layers.{layer}.{key}": shape for key, shape in {
                "0.norm1.weight": (inner,), "0.norm1.bias": (inner,), "0.norm2.weight": (inner,),
                "0.norm2.bias": (inner,), "0.to_q.weight": (inner, inner), "0.to_kv.weight": (2 * inner, inner),
                "0.to_out.weight": (inner, inner), "1.0.weight": (inner,), "1.0.bias": (inner,),
                "1.1.weight": (4 * inner, inner), "1.3.weight": (inner, 4 * inner)}.items()})
    else:
        shapes = {"proj.weight": (4 * cross, width), "proj.bias": (4 * cross,), "norm.weight": (cross,),
                  "norm.bias": (cross,)}
    state = {f"image_proj.{key}": (torch.ones(shape) if "norm" in key and key.endswith("weight") else
                                   torch.randn(shape) * 0.2) for key, shape in shapes.items()}
    layers = [name for name in unet.attn_processors if not name.endswith("attn1.processor")]
    modules = dict(unet.named_modules())
    for index, name in enumerate(layers):
        inner_width = modules[name.removesuffix(".processor")].to_k.out_features
        for projection in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{2 * index + 1}.{projection}.weight"] = torch.randn(inner_width, cross) * 0.5
    return state


def save_tiny_models(models_dir: str | Path) -> dict[str, Path]:
    """Write both tiny pipelines as diffusers folders under ``models_dir/Stable-diffusion``, a ControlNet for each
    and an IP-Adapter for tiny-sd (``ip-adapter_tiny-sd.safetensors``) under ``models_dir/ControlNet``, the adapter's
    CLIP image encoder as ``models_dir/clip_vision/clip_h`` and an upscaler file,
    ``models_dir/ESRGAN/tiny-x4.safetensors``."""
    from safetensors.torch import save_file

    root, control = Path(models_dir) / "Stable-diffusion", Path(models_dir) / "ControlNet"
    paths = {"tiny-sd": root / "tiny-sd", "tiny-sdxl": root / "tiny-sdxl",
             "tiny-sd-control": control / "tiny-sd-control", "tiny-sdxl-control": control / "tiny-sdxl-control",
             "ip-adapter_tiny-sd": control / "ip-adapter_tiny-sd.safetensors",
             "clip_h": Path(models_dir) / "clip_vision" / "clip_h"}
    encoder = build_tiny_image_encoder()
    encoder.save_pretrained(paths["clip_h"])
    for name, build in (("tiny-sd", build_tiny_sd), ("tiny-sdxl", build_tiny_sdxl)):
        pipe = build()
        pipe.save_pretrained(paths[name])
        build_tiny_controlnet(pipe).save_pretrained(paths[f"{name}-control"])
        if name == "tiny-sd":
            save_file(tiny_ip_adapter(pipe.unet, encoder), paths["ip-adapter_tiny-sd"])
    paths["tiny-x4"] = save_tiny_esrgan(Path(models_dir) / "ESRGAN" / "tiny-x4.safetensors")
    return paths
