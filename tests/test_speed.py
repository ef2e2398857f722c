"""The CUDA fast path (pipelines/speed.py) on the CPU: the app leaves CPU models untouched; applied by hand, fused
QKV gives the same latents without a second copy of the weights, and a LoRA still applies through it."""

import torch

import app
from pipelines import speed
from pipelines.networks import lora
from pipelines.registry import Registry
from pipelines.services import resolve_dtype
from training.tiny_random import build_tiny_sd


def latents(pipe, seed: int = 1) -> torch.Tensor:
    return pipe("a red circle", num_inference_steps=2, width=64, height=64, output_type="latent",
                generator=torch.Generator().manual_seed(seed)).images


def test_flags_and_cpu_models_untouched(models_dir):
    settings = app.settings_from_args(app.parse_args([]))
    assert settings.fast and not settings.compile
    settings = app.settings_from_args(app.parse_args(["--no-fast", "--compile"]))
    assert not settings.fast and settings.compile
    assert resolve_dtype("auto", "cpu", fast=True) == torch.float32
    registry = Registry(models_dir, device="cpu", speed=speed.SpeedOptions.from_flags(True, compile=True))
    with registry.lease("tiny-sd") as model:
        unet = model.pipe.unet
        assert not any(isinstance(p, speed.LoraAwareFusedProcessor) for p in unet.attn_processors.values())
        assert not hasattr(unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1, "to_qkv")
        assert unet.conv_in.weight.is_contiguous()  # not channels-last
    assert speed.apply(model.pipe, registry.speed, "cpu") == []


def test_fused_qkv_same_latents_without_a_copy():
    pipe = build_tiny_sd()
    pipe.set_progress_bar_config(disable=True)
    before, count = latents(pipe), sum(p.numel() for p in pipe.unet.parameters())
    assert speed.optimise(pipe, speed.SpeedOptions(channels_last=True, fuse_qkv=True)) == ["channels-last",
                                                                                            "fused QKV"]
    torch.testing.assert_close(latents(pipe), before, rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in pipe.unet.parameters()) == count
    block = pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0]

    def storage(tensor):
        return tensor.untyped_storage().data_ptr()

    assert storage(block.attn1.to_k.weight) == storage(block.attn1.to_qkv.weight)
    assert storage(block.attn2.to_v.weight) == storage(block.attn2.to_kv.weight)


def lora_weights(pipe, seed: int = 3) -> dict:
    """A PEFT-format LoRA on the UNet's query, key, value and output projections."""
    g = torch.Generator().manual_seed(seed)
    weights = {}
    for name, module in pipe.unet.named_modules():
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0")):
            weights[f"unet.{name}.lora_A.weight"] = torch.randn(2, module.in_features, generator=g) * 0.5
            weights[f"unet.{name}.lora_B.weight"] = torch.randn(module.out_features, 2, generator=g) * 0.5
    return weights


def test_lora_applies_through_fused_projections():
    plain, fused = build_tiny_sd(), build_tiny_sd()
    speed.optimise(fused, speed.SpeedOptions(fuse_qkv=True))
    weights = lora_weights(plain)
    results = {}
    for name, pipe in (("plain", plain), ("fused", fused)):
        pipe.set_progress_bar_config(disable=True)
        pipe.load_lora_weights(dict(weights), adapter_name="style")
        with lora.active(pipe, {"style": (1.0, 1.0)}):
            results[name] = latents(pipe)
        results[f"{name} off"] = latents(pipe)
    torch.testing.assert_close(results["fused"], results["plain"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results["fused off"], results["plain off"], rtol=1e-4, atol=1e-5)
    assert (results["fused"] - results["fused off"]).abs().max() > 1e-2  # the LoRA did something
