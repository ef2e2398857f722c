"""Prompt embeddings that the engine computes itself rather than through the pipeline.

diffusers 0.42.1 applies SD 1.x/2.x clip skip through ``text_encoder.text_model.final_layer_norm``, an attribute
transformers 5's ``CLIPTextModel`` no longer has (its layers sit on the model itself), so any clip skip
above 1 crashes inside the pipeline. We compute the same thing here: the hidden state ``clip_skip`` layers
before the last, passed through the encoder's final layer norm. SDXL pipelines index hidden states without
that attribute and are left to diffusers.
"""

from __future__ import annotations

import torch


def needs_own_encoding(pipe, clip_skip: int | None) -> bool:
    return bool(clip_skip) and not hasattr(pipe, "text_encoder_2")


@torch.no_grad()
def _encode(pipe, text: str, clip_skip: int) -> torch.Tensor:
    tokenizer, encoder = pipe.tokenizer, pipe.text_encoder
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(encoder.device)
    hidden = encoder(ids, output_hidden_states=True).hidden_states[-(clip_skip + 1)]
    norm = getattr(encoder, "text_model", encoder).final_layer_norm
    return norm(hidden).to(encoder.dtype)


def clip_skip_embeds(pipe, prompt: str, negative_prompt: str, clip_skip: int) -> dict:
    """``prompt_embeds`` and ``negative_prompt_embeds`` keyword arguments for an SD 1.x/2.x pipeline."""
    return {
        "prompt_embeds": _encode(pipe, prompt, clip_skip),
        "negative_prompt_embeds": _encode(pipe, negative_prompt, clip_skip),
    }
