"""Perturbed-Attention Guidance (Ahn et al., 2024, "Self-Rectifying Diffusion Sampling with Perturbed-Attention
Guidance"): each step the UNet also predicts with the self-attention of its middle block made the identity (each
place attends only to itself, so the structure it would gather is lost), and the prediction is pushed away from
that one by the scale: ``+ scale x (prompted - perturbed)``, on top of CFG, or alone without it. Sharper structure
and fewer broken shapes, for the prompted pictures predicted once more each step. diffusers' PAG pipelines,
ComfyUI's PerturbedAttentionGuidance node and Forge's *PerturbedAttentionGuidance Integrated* have it; the layers
are theirs (every self-attention of the middle block), the rule diffusers' (its ``pag_applied_layers=["mid"]``).

``composable.ComposedUNet`` makes the perturbed prediction (``perturbed``) and adds the push to the prompted prediction
it hands the pipeline, divided by the CFG scale that the pipeline's guidance multiplies it by. As in diffusers, the
perturbed rows join the UNet's call (the prompted rows again, at the end of the batch) rather than a call of their own:
on a launch-bound GPU a second call costs nearly a whole step.

Forge's later *PerturbedAttentionGuidance Integrated* also attenuates and bounds it: the scale loses a share of
itself after each call it pushed (``attenuation``, % of the scale) and pushes only the calls from its start to its
end (shares of the pass, a call's place counted from 0 to the last); ``scale_at`` is that rule. A call outside the
span, or at a scale worn down to 0, makes no perturbed rows, so it costs what a plain call costs.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from .script_settings import ForeignKeys, Setting

PAG = Setting("pag_scale", "PAG scale", "PAG scale", 0.0, 0.0, 100.0, 0.1, "0 = off; 3 is usual")
PAG_ATTENUATION = Setting("pag_attenuation", "PAG attenuation", "PAG attenuation", 0.0, 0.0, 100.0, 0.1,
                          "% of the scale lost per step guided")
PAG_START = Setting("pag_start", "PAG start", "PAG start", 0.0, 0.0, 1.0, 0.01, "share of the steps")
PAG_END = Setting("pag_end", "PAG end", "PAG end", 1.0, 0.0, 1.0, 0.01, "share of the steps")
PAG_SCHEDULE = (PAG_ATTENUATION, PAG_START, PAG_END)
PAG_SETTINGS = (PAG, *PAG_SCHEDULE)
FORGE_KEYS = ForeignKeys("pagi_enabled", ("pagi_scale", "pagi_attenuation", "pagi_start_step", "pagi_end_step"),
                         PAG_SETTINGS)  # Forge's script writes its own keys


def scale_at(scale: float, attenuation: float, span: tuple[float, float], share: float, pushed: int) -> float:
    """PAG's scale for a UNet call at ``share`` of the pass (0 the first call, 1 the last) after ``pushed`` calls
    were pushed by it: Forge's rule, the scale less ``attenuation`` % of itself per call pushed, never below 0, and
    0 outside ``span`` (its start and end)."""
    if not span[0] <= share <= span[1]:
        return 0.0
    return max(scale * (1 - pushed * attenuation / 100), 0.0)


class _PerturbedRows:
    """A self-attention processor for a batch whose rows from ``first`` on are perturbed: theirs has the identity
    for its attention map (each place's value, projected out: diffusers' ``PAGIdentitySelfAttnProcessor2_0``'s
    perturbed path); the rows before go through the layer's own processor (``kept``)."""

    def __init__(self, kept, first: int):
        self.kept, self.first = kept, first

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None, temb=None,
                 **kwargs) -> torch.Tensor:
        rows = hidden_states[self.first:]
        perturbed = rows if attn.group_norm is None else attn.group_norm(rows.transpose(1, 2)).transpose(1, 2)
        perturbed = attn.to_out[1](attn.to_out[0](attn.to_v(perturbed)))
        if attn.residual_connection:
            perturbed = perturbed + rows
        perturbed = perturbed / attn.rescale_output_factor
        if not self.first:
            return perturbed
        kept = self.kept(attn, hidden_states[:self.first], encoder_hidden_states, attention_mask, temb, **kwargs)
        return torch.cat([kept, perturbed])


def self_attentions(unet) -> list:
    """The self-attention layers PAG perturbs: none where the UNet has no middle block (KOALA-700M's was cut) or
    none with attention."""
    from diffusers.models.attention_processor import Attention

    block = getattr(unet, "mid_block", None)
    return [module for module in block.modules() if isinstance(module, Attention) and not module.is_cross_attention
            ] if block is not None else []


@contextmanager
def perturbed(unet, first: int) -> Iterator[None]:
    """``unet`` for one call whose batch's rows from ``first`` on have their middle block's self-attention made the
    identity."""
    layers = self_attentions(unet)
    kept = [layer.processor for layer in layers]
    for layer in layers:
        layer.processor = _PerturbedRows(layer.processor, first)
    try:
        yield
    finally:
        for layer, processor in zip(layers, kept):
            layer.processor = processor
