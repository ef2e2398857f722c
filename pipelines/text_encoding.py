"""Prompt embeddings as A1111 makes them, computed here and handed to the pipeline as ``prompt_embeds``.

diffusers truncates prompts at 77 tokens and reads no weights, so we follow A1111 (``sd_hijack_clip.py``):

- the prompt's tags are removed (``prompts.extract_networks``) and its attention syntax parsed
  (``prompts.parse_prompt_attention``); each piece is tokenized on its own;
- tokens fill chunks of 75; when a chunk is full and its last comma is at most 20 tokens back, the text after
  the comma moves to the next chunk; ``BREAK`` starts a new chunk; a textual-inversion embedding is never split;
- each chunk is wrapped in BOS/EOS, padded to 77 and encoded on its own; the token vectors are multiplied by
  their weights and the chunk is rescaled to its mean before weighting (A1111's default "Original" emphasis);
- the chunks are concatenated; prompt and negative prompt are padded with empty-prompt chunks to the same
  count. SDXL: both encoders' penultimate hidden states side by side, pooled output of ``text_encoder_2`` from
  the first chunk; an empty negative prompt on a ``force_zeros_for_empty_prompt`` model is zeros, as diffusers
  makes it.

Clip skip (A1111's N): SD 1.x/2.x take the hidden state N-1 layers before the last through the final layer norm.
diffusers 0.42.1 does that through ``text_encoder.text_model``, which transformers 5's ``CLIPTextModel`` no
longer has, so its own clip skip crashes; ours does not. SDXL takes hidden state ``-(N+1)`` without the norm, as
diffusers does. A prompt without weights, tags or embeddings and within 75 tokens gives exactly diffusers' tensors.

Encodings are cached per text encoder by (text, clip skip, embeddings on disk, the PEFT/LoRA adapters active on
the encoders and their scales, device, dtype, a version). Code that changes a text encoder's weights in another
way (fusing a LoRA into them) must call ``text_encoders_changed(pipe)``, which bumps the version.

The Train tab's captions (``encode_captions``) are made the same way, uncached, with gradients flowing to the vectors
of the embedding in training.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from diffusers.utils.torch_utils import get_module_execution_device

from .embeddings import Embedding, EmbeddingLibrary
from .errors import RequestError
from .infotext import NameHashes
from .networks.files import NetworkError, NetworkFile
from .prompts import (BREAK, BREAK_WEIGHT, composable_parts, extract_networks, parse_prompt_attention,
                      prompt_schedule)

CHUNK = 75
COMMA_BACKTRACK = 20
_CACHE_SIZE = 64
_caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # first text encoder -> OrderedDict


@dataclass
class _Chunk:
    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    fixes: list[tuple[int, Embedding]] = field(default_factory=list)  # (offset in tokens, embedding)


@dataclass(frozen=True)
class _Encoded:
    embeds: torch.Tensor  # (1, 77 x chunks, width)
    pooled: torch.Tensor | None
    used: dict  # embedding name -> short hash
    warnings: tuple[str, ...]


Parts = tuple[tuple[Any, torch.Tensor, torch.Tensor | None], ...]  # composable parts: (weight, embeds, pooled)


@dataclass(frozen=True)
class PromptEmbeds:
    kwargs: dict  # prompt_embeds / negative_prompt_embeds (and pooled ones for SDXL) for the pipeline
    used: dict  # textual-inversion embeddings used: name -> short hash (A1111's "TI hashes")
    warnings: tuple[str, ...]  # embedding files named in the prompt that were refused
    # A1111's composable diffusion (``prompts.composable_parts``), when the prompt has parts or a weight: each
    # part's (weight, embeds, pooled or None), as long as the negative prompt's; kwargs hold the first part's
    parts: Parts = ()

    def record(self, extra_params: dict | None, warnings: list[str] | None) -> None:
        """Add the embeddings used to A1111's ``TI hashes`` infotext key (kept over a job's passes) and the
        refusals to ``warnings``, each once."""
        for name, digest in self.used.items() if extra_params is not None else ():
            extra_params.setdefault("TI hashes", NameHashes())[name.replace(":", "").replace(",", "")] = digest
        if warnings is not None:
            warnings.extend(w for w in self.warnings if w not in warnings)


def text_encoders_changed(pipe) -> None:
    """Forget the cached encodings of ``pipe``'s text encoders after a change to their weights that is not a
    PEFT adapter switch (those are seen by themselves): a LoRA fused into the weights, a patched layer."""
    for _, encoder in _encoders(pipe):
        encoder._easel_version = getattr(encoder, "_easel_version", 0) + 1


def _adapter_state(encoder) -> frozenset:
    """The PEFT (LoRA) adapters switched on in the encoder's layers, with their scales: switching a LoRA on, off
    or to another weight changes the encoding of the same text (a LoRA's tags are gone from the prompt by now)."""
    if not getattr(encoder, "peft_config", None):
        return frozenset()
    from peft.tuners.tuners_utils import BaseTunerLayer

    return frozenset((name, getattr(layer, "scaling", {}).get(name)) for layer in encoder.modules()
                     if isinstance(layer, BaseTunerLayer) and not layer.disable_adapters
                     for name in layer.active_adapters)


def _encoders(pipe) -> list[tuple[str, torch.nn.Module]]:
    """(embedding part, encoder) pairs: SD has one encoder; SDXL gives clip_l and clip_g parts to its two."""
    if not hasattr(pipe, "text_encoder_2"):
        return [("", pipe.text_encoder)]
    return [(part, e) for part, e in (("clip_l", pipe.text_encoder), ("clip_g", pipe.text_encoder_2)) if e is not None]


def _tokenizers(pipe) -> list:
    if not hasattr(pipe, "text_encoder_2"):
        return [pipe.tokenizer]
    return [t for t, e in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)) if e is not None]


def encode_prompts(pipe, prompt: str, negative_prompt: str, clip_skip: int = 1,
                   library: EmbeddingLibrary | None = None,
                   split: Callable[[str], list[tuple[str, Any]]] = composable_parts) -> PromptEmbeds:
    """The pipeline's text arguments for ``prompt`` and ``negative_prompt`` (A1111 ``Clip skip`` N); a prompt of
    composable parts (``a AND b:0.5``, or Regional Prompter's regions: ``split``) also gives each part's encoding
    (``PromptEmbeds.parts``)."""
    state = library.state() if library else None  # the embeddings on disk, read once per call
    parts = split(prompt)
    positives = [_cached(pipe, text, clip_skip, library, state) for text, _ in parts]
    positive = positives[0]
    negative = _cached(pipe, negative_prompt, clip_skip, library, state)
    sdxl = hasattr(pipe, "text_encoder_2")
    if sdxl and not negative_prompt and pipe.config.get("force_zeros_for_empty_prompt", False):
        negative = _Encoded(torch.zeros_like(positive.embeds), torch.zeros_like(positive.pooled), {}, ())
    length = max(encoded.embeds.shape[1] for encoded in (*positives, negative))
    empty = _cached(pipe, "", clip_skip, None, None).embeds
    kwargs = {"prompt_embeds": _pad(positive.embeds, length, empty),
              "negative_prompt_embeds": _pad(negative.embeds, length, empty)}
    if sdxl:
        kwargs.update(pooled_prompt_embeds=positive.pooled, negative_pooled_prompt_embeds=negative.pooled)
    composed = len(parts) > 1 or parts[0][1] != 1.0
    return PromptEmbeds(kwargs, {k: v for encoded in (negative, *positives) for k, v in encoded.used.items()},
                        tuple(dict.fromkeys(w for encoded in (*positives, negative) for w in encoded.warnings)),
                        tuple((weight, _pad(encoded.embeds, length, empty), encoded.pooled)
                              for (_, weight), encoded in zip(parts, positives)) if composed else ())


def _pad(embeds: torch.Tensor, length: int, empty: torch.Tensor) -> torch.Tensor:
    missing = (length - embeds.shape[1]) // empty.shape[1]
    return torch.cat([embeds, *[empty] * missing], dim=1) if missing else embeds


def _cached(pipe, prompt: str, clip_skip: int, library: EmbeddingLibrary | None, state: tuple | None) -> _Encoded:
    encoders = _encoders(pipe)
    first = encoders[0][1]
    key = (prompt, clip_skip, state, first.device, first.dtype,
           tuple((getattr(e, "_easel_version", 0), _adapter_state(e)) for _, e in encoders))
    cache = _caches.setdefault(first, OrderedDict())
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    with torch.no_grad():
        cache[key] = encoded = _encode(pipe, prompt, clip_skip, _matcher(pipe, library))
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
    return encoded


def encode_captions(pipe, captions: list[str], trained: Embedding | None, library: EmbeddingLibrary | None = None,
                    clip_skip: int = 1) -> torch.Tensor:
    """Training captions as the UNet's context (batch, 77 x chunks, width), made exactly as a prompt is, with
    ``trained`` (whose vectors may need gradients) standing for its name, before any file of that name, and with
    gradients wherever they are needed: the Train tab's runs (``training_run``). SD 1.x/2.x only."""
    matcher = _matcher(pipe, library, trained)  # the embeddings folder read once for the batch
    encoded = [_encode(pipe, caption, clip_skip, matcher).embeds for caption in captions]
    length = max(embeds.shape[1] for embeds in encoded)
    empty = _cached(pipe, "", clip_skip, None, None).embeds
    return torch.cat([_pad(embeds, length, empty) for embeds in encoded])


def _matcher(pipe, library: EmbeddingLibrary | None, trained: Embedding | None = None) -> _Matcher:
    return _Matcher(library, _tokenizers(pipe)[0], _encoders(pipe), [], trained)


def _encode(pipe, prompt: str, clip_skip: int, matcher: _Matcher) -> _Encoded:
    """``prompt`` through the model's encoders, its embedding names found by ``matcher`` (whose refusals the
    encoding reports)."""
    encoders = _encoders(pipe)
    tokenizers = _tokenizers(pipe)
    chunks = tokenize(tokenizers[0], prompt, matcher)
    used = {embedding.name: embedding.hash for chunk in chunks for _, embedding in chunk.fixes}
    sdxl = hasattr(pipe, "text_encoder_2")
    per_encoder, pooled = [], None
    for index, ((_, encoder), tokenizer) in enumerate(zip(encoders, tokenizers)):
        encoded = [_encode_chunk(encoder, tokenizer, chunk, index, clip_skip, sdxl) for chunk in chunks]
        per_encoder.append(torch.cat([z for z, _ in encoded], dim=1))
        pooled = encoded[0][1]  # SDXL: text_encoder_2's (the last encoder's) first chunk; SD: None
    return _Encoded(torch.cat(per_encoder, dim=-1), pooled, used, tuple(matcher.warnings))


class _Matcher:
    """Finds textual-inversion embedding names among a prompt's tokens (longest name first); an embedding in training
    (``trained``) comes before the files."""

    def __init__(self, library, tokenizer, encoders, warnings: list[str], trained: Embedding | None = None):
        self.library, self.encoders, self.warnings = library, encoders, warnings
        self.by_first: dict[int, list[tuple[list[int], NetworkFile | Embedding]]] = {}
        found = [trained] if trained else []
        for item in [*found, *(library.files() if library else [])]:
            ids = tokenizer(item.name, add_special_tokens=False).input_ids
            if ids:
                self.by_first.setdefault(ids[0], []).append((ids, item))
        for candidates in self.by_first.values():
            candidates.sort(key=lambda c: -len(c[0]))  # stable: the trained one first among names of a length

    def at(self, tokens: list[int], position: int) -> tuple[Embedding, int] | None:
        """The embedding whose name starts at ``position`` and how many tokens its name takes."""
        for ids, item in self.by_first.get(tokens[position], ()):
            if tokens[position:position + len(ids)] == ids:
                if isinstance(item, Embedding):
                    return item, len(ids)
                try:
                    return self.library.load(item, self.encoders), len(ids)
                except NetworkError as exc:
                    self.warnings.append(str(exc))
        return None


def tokenize(tokenizer, prompt: str, matcher: _Matcher) -> list[_Chunk]:
    """A1111's ``tokenize_line``: the prompt's chunks of at most 75 tokens, with their weights (an embedding in
    text moved by the comma rule moves with it; A1111 leaves it behind)."""
    comma = tokenizer.get_vocab().get(",</w>")
    pieces = parse_prompt_attention(extract_networks(prompt)[0])
    texts = [text for text, _ in pieces]
    ids = tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False).input_ids
    chunks: list[_Chunk] = []
    chunk = _Chunk()
    last_comma = -1

    def next_chunk() -> None:
        nonlocal chunk, last_comma
        chunks.append(chunk)
        chunk, last_comma = _Chunk(), -1

    for tokens, (text, weight) in zip(ids, pieces):
        if text == BREAK and weight == BREAK_WEIGHT:
            next_chunk()
            continue
        position = 0
        while position < len(tokens):
            if tokens[position] == comma:
                last_comma = len(chunk.tokens)
            elif len(chunk.tokens) == CHUNK and last_comma != -1 and CHUNK - last_comma <= COMMA_BACKTRACK:
                cut = last_comma + 1
                moved = _Chunk(chunk.tokens[cut:], chunk.weights[cut:],
                               [(offset - cut, e) for offset, e in chunk.fixes if offset >= cut])
                chunk.tokens, chunk.weights = chunk.tokens[:cut], chunk.weights[:cut]
                chunk.fixes = [(offset, e) for offset, e in chunk.fixes if offset < cut]
                next_chunk()
                chunk = moved
            if len(chunk.tokens) == CHUNK:
                next_chunk()
            found = matcher.at(tokens, position)
            if found is None:
                chunk.tokens.append(tokens[position])
                chunk.weights.append(weight)
                position += 1
                continue
            embedding, name_length = found
            if len(chunk.tokens) + embedding.length > CHUNK:
                next_chunk()
            chunk.fixes.append((len(chunk.tokens), embedding))
            chunk.tokens += [0] * embedding.length
            chunk.weights += [weight] * embedding.length
            position += name_length
    if chunk.tokens or not chunks:
        next_chunk()
    return chunks


def token_count(tokenizer, prompt: str, steps: int, embeddings=None) -> tuple[int, int]:
    """A1111's token counter: the most tokens a step's text of a composable part of the prompt holds (prompt edits
    make several texts, ``AND`` several parts), and the room of the chunks they fill (75 a chunk). An embedding of
    the ``embeddings`` library counts as its vectors, as it fills the chunk (an unreadable file as its name's text)."""
    matcher = _Matcher(embeddings, tokenizer, [], [])
    counts = []
    for _, text in prompt_schedule(prompt, max(1, steps)):
        for part, _ in composable_parts(text):
            chunks = tokenize(tokenizer, part, matcher)
            counts.append((sum(len(chunk.tokens) for chunk in chunks), CHUNK * len(chunks)))
    return max(counts)


def _encode_chunk(encoder, tokenizer, chunk: _Chunk, index: int, clip_skip: int, sdxl: bool):
    """One chunk through one encoder: (weighted hidden states (1, 77, width), pooled output or None)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = [tokenizer.bos_token_id, *chunk.tokens, tokenizer.eos_token_id] + [pad] * (CHUNK - len(chunk.tokens))
    ids = torch.tensor([ids], device=get_module_execution_device(encoder))  # where it runs, even offloaded

    def put_embeddings(module, args, output):
        for offset, embedding in chunk.fixes:
            vectors = embedding.vectors[index].to(output.device, output.dtype)
            output[0, 1 + offset:1 + offset + len(vectors)] = vectors
        return output

    hook = encoder.get_input_embeddings().register_forward_hook(put_embeddings) if chunk.fixes else None
    try:
        out = encoder(ids, output_hidden_states=True)
    finally:
        if hook is not None:
            hook.remove()
    depth = clip_skip + 1 if sdxl else clip_skip
    if depth > len(out.hidden_states):
        raise RequestError(f"Clip skip {clip_skip} is deeper than this model's text encoder "
                           f"({len(out.hidden_states) - 1} layers).", "clip_skip")
    if sdxl:
        z = out.hidden_states[-depth]
    elif clip_skip > 1:
        z = getattr(encoder, "text_model", encoder).final_layer_norm(out.hidden_states[-depth])
    else:
        z = out.last_hidden_state
    z = _emphasis(z, chunk.weights)
    pooled = out[0] if sdxl and out[0].ndim == 2 else None
    return z.to(encoder.dtype), pooled


def _emphasis(z: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """Each token's vector times its weight, then the chunk scaled back to its mean (A1111's "Original")."""
    if all(w == 1.0 for w in weights):
        return z
    multipliers = torch.tensor([1.0, *weights] + [1.0] * (CHUNK + 1 - len(weights)), device=z.device)
    original = z.float()
    weighted = original * multipliers[None, :, None]
    return (weighted * (original.mean() / weighted.mean())).to(z.dtype)
