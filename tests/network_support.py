"""LoRA and LyCORIS files for tests, built from a model's own layers: the same random low-rank changes in kohya's,
diffusers' and LyCORIS's formats, so each format's picture can be checked against another's; and a tiny-sd engine
that runs a prompt with them."""

import numpy as np
import torch

from pipelines.engine import Engine
from pipelines.outputs import OutputWriter
from pipelines.registry import Registry
from pipelines.request import GenerationRequest

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "q_proj", "k_proj", "v_proj", "out_proj")


def lora_layers(pipe, seed: int, rank: int = 2, scale: float = 0.5):
    """(component, module name, down, up) for every attention projection of the UNet and text encoders."""
    g = torch.Generator().manual_seed(seed)
    for component in ("unet", "text_encoder", "text_encoder_2"):
        model = getattr(pipe, component, None)
        for name, module in (model.named_modules() if model is not None else ()):
            if name.endswith(LORA_TARGETS) and isinstance(module, torch.nn.Linear):
                yield (component, name, torch.randn(rank, module.in_features, generator=g) * scale,
                       torch.randn(module.out_features, rank, generator=g) * scale)


def kohya_lora(pipe, seed: int) -> dict:
    """kohya/A1111 key names (``lora_unet_…``, ``lora_te_…``/``lora_te1_``/``lora_te2_``) with alpha = rank."""
    te_prefix = {"text_encoder": "lora_te1_" if hasattr(pipe, "text_encoder_2") else "lora_te_",
                 "text_encoder_2": "lora_te2_", "unet": "lora_unet_"}
    weights = {}
    for component, name, down, up in lora_layers(pipe, seed):
        # kohya names CLIP layers by their transformers-4 path (text_model.encoder...), which transformers 5's
        # CLIPTextModel no longer has
        path = name if component == "unet" or name.startswith("text_model.") else f"text_model.{name}"
        key = te_prefix[component] + path.replace(".", "_")
        weights.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                        f"{key}.alpha": torch.tensor(float(down.shape[0]))})
    return weights


def diffusers_lora(pipe, seed: int) -> dict:
    """diffusers/PEFT key names (``unet.….lora_A.weight``); no alpha, so the scale is 1 as with kohya's alpha =
    rank."""
    weights = {}
    for component, name, down, up in lora_layers(pipe, seed):
        weights.update({f"{component}.{name}.lora_A.weight": down, f"{component}.{name}.lora_B.weight": up})
    return weights


def lycoris_from_lora(weights: dict, algorithm: str) -> dict:
    """A kohya LoRA's layers as LyCORIS layers that make exactly the same changes: a LoHa whose second product is
    all ones, a LoKr whose first factor is [[1]], a full difference."""
    result = {}
    for key, down in weights.items():
        layer, _, part = key.partition(".")
        if part != "lora_down.weight":
            continue
        up, alpha = weights[f"{layer}.lora_up.weight"], weights.get(f"{layer}.alpha", torch.tensor(down.shape[0] * 1.0))
        up2d, down2d = up.flatten(1), down.flatten(1)
        if algorithm == "LoHa":
            parts = {"hada_w1_a": up2d, "hada_w1_b": down2d, "hada_w2_a": torch.ones(up2d.shape[0], 1),
                     "hada_w2_b": torch.ones(1, down2d.shape[1]), "alpha": alpha}
        elif algorithm == "LoKr":
            parts = {"lokr_w1": torch.ones(1, 1), "lokr_w2_a": up2d, "lokr_w2_b": down2d, "alpha": alpha}
        else:
            parts = {"diff": (up2d @ down2d * (alpha / down.shape[0])).reshape(up.shape[0], *down.shape[1:])}
        result.update({f"{layer}.{name}": value.contiguous() for name, value in parts.items()})
    return result


def kohya_from_peft(weights: dict) -> dict:
    """A UNet LoRA in diffusers/PEFT names (``unet.<path>.lora_A.weight``), without alphas, in kohya's."""
    names = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight"}
    result = {}
    for key, value in weights.items():
        path, side, suffix = key.removeprefix("unet.").rsplit(".", 2)
        result[f"lora_unet_{path.replace('.', '_')}.{names[f'{side}.{suffix}']}"] = value
    return result


def engine_for(root, tmp_path) -> Engine:
    """A new registry each time: its models have never seen a LoRA."""
    return Engine(Registry(root, device="cpu", default_model="tiny-sd"), OutputWriter(tmp_path / "out", enabled=False))


def run(engine, prompt: str, **values):
    """A 64 x 64, 3-step picture of ``prompt`` (tiny-sd unless ``values`` say) as int16 pixels, and the result."""
    request = GenerationRequest(**{"prompt": prompt, "model": "tiny-sd", "width": 64, "height": 64, "steps": 3,
                                   "seed": 11, "sampler": "Euler", **values})
    result = engine.generate(request, save=False)
    return np.asarray(result.images[0], dtype=np.int16), result
