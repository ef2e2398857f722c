"""Textual-inversion embeddings from ``models/embeddings/``, used as words in prompts (the file's stem).

Formats: A1111 ``.pt`` (``string_to_param``), A1111 ``.safetensors`` (``emb_params``), diffusers' ``learned_embeds``
(one token -> its vectors) and SDXL files (``clip_l`` for ``text_encoder``, ``clip_g`` for ``text_encoder_2``).
Files are read by ``networks.files.read_weights`` (safetensors, or ``torch.load(weights_only=True)``), so a pickle
that would run code is refused; so are corrupt files and files made for another text-encoder width, each with a
message naming the file, and the prompt keeps the word as plain text.

diffusers' ``load_textual_inversion`` works on transformers 5, but it adds tokens to the model's shared
tokenizer and grows its text encoder, needs an unload before a changed file can be read again, and on configs
whose pooled output is taken at the highest token id it would pool at the new token. As A1111 does, we leave the
model alone: ``text_encoding`` finds an embedding's name among a prompt's tokens and writes its vectors over the
token embeddings there. A file is read once per change on disk and checked once per model's text encoders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .hashing import short_hash
from .networks.files import NetworkError, NetworkFile, list_files, metadata, read_weights

MAX_VECTORS = 75  # an embedding must fit in one chunk
# What A1111 notes in an embedding file beside its vectors: its training step and the checkpoint it was made on
NOTES = ("step", "sd_checkpoint", "sd_checkpoint_name")


@dataclass(frozen=True)
class Embedding:
    name: str
    vectors: tuple[torch.Tensor, ...]  # (vectors, width) for each text encoder of the model, in order
    hash: str  # A1111's short hash of the file (``TI hashes``)

    @property
    def length(self) -> int:
        return len(self.vectors[0])


def parts(data: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The vectors of a file's contents by text-encoder part: ``{"": v}``, or ``{"clip_l": .., "clip_g": ..}``."""
    if "clip_l" in data or "clip_g" in data:
        found = {k: data.get(k) for k in ("clip_l", "clip_g")}
    elif isinstance(data.get("string_to_param"), dict) and len(data["string_to_param"]) == 1:
        found = {"": next(iter(data["string_to_param"].values()))}
    elif len(data) == 1:  # A1111 safetensors ("emb_params") or diffusers ("<token>": vectors)
        found = {"": next(iter(data.values()))}
    else:
        raise ValueError("not a textual-inversion embedding (unknown layout)")
    vectors = {}
    for part, tensor in found.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point() or tensor.ndim not in (1, 2):
            raise ValueError(f"{part or 'the embedding'} is not a 1- or 2-dimensional float tensor")
        tensor = tensor.detach().float().reshape(-1, tensor.shape[-1])
        if not 0 < len(tensor) <= MAX_VECTORS or not torch.isfinite(tensor).all():
            raise ValueError(f"{part or 'the embedding'} has {len(tensor)} vectors or values that are not finite")
        vectors[part] = tensor
    if len({len(v) for v in vectors.values()}) > 1:
        raise ValueError("clip_l and clip_g have different numbers of vectors")
    return vectors


def _noted(text: dict[str, str]) -> dict[str, Any]:
    """A1111's notes from a .safetensors file's text metadata (the step a number again)."""
    notes: dict[str, Any] = {key: text[key] for key in NOTES if key in text}
    if str(notes.get("step", "")).isdigit():
        notes["step"] = int(notes["step"])
    return notes


class EmbeddingLibrary:
    """The embeddings folder: names for prompts, vectors per model, and A1111's listing for the API."""

    def __init__(self, models_dir: str | Path):
        self.models_dir = Path(models_dir)
        self._read: dict[tuple, tuple[dict, dict] | str] = {}  # file signature -> (parts, A1111 info) or error
        self._fitted: dict[tuple, Embedding] = {}  # (signature, encoder parts and widths) -> embedding

    def files(self) -> list[NetworkFile]:
        return list_files(self.models_dir, "embedding")

    def state(self) -> tuple:
        """Changes whenever a file is added, removed or replaced (part of the prompt-encoding cache key)."""
        return tuple(item.signature for item in self.files())

    def _contents(self, item: NetworkFile) -> tuple[dict, dict]:
        """(parts, A1111 info) of a file, read once per version of it; an unusable file raises NetworkError."""
        signature = item.signature
        if signature not in self._read:
            try:
                data = read_weights(item)
                vectors = parts(data)
                notes = {**data, **_noted(metadata(item))}  # a .safetensors file keeps them in its metadata
                step = notes.get("step")
                self._read[signature] = vectors, {
                    "step": step if isinstance(step, int) else None,
                    **{key: notes.get(key) if isinstance(notes.get(key), str) else None for key in NOTES[1:]},
                    "shape": sum(v.shape[-1] for v in vectors.values()),
                    "vectors": len(next(iter(vectors.values()))),
                }
            except NetworkError as exc:
                self._read[signature] = f"{exc} It was left out."
            except ValueError as exc:
                self._read[signature] = f"{item.label} was refused: {exc}."
        found = self._read[signature]
        if isinstance(found, str):
            raise NetworkError(found)
        return found

    def notes(self, item: NetworkFile) -> dict[str, Any]:
        """What A1111 notes beside a file's vectors (``NOTES``, None where it notes nothing), and their count and
        width; NetworkError when the file is unusable."""
        return self._contents(item)[1]

    def load(self, item: NetworkFile, encoders: list[tuple[str, torch.nn.Module]]) -> Embedding:
        """The embedding of ``item`` for a model's ``(part, encoder)`` pairs (see ``text_encoding``); NetworkError
        when it is unreadable or made for other text encoders. Vectors stay on the CPU in float32 (a few KB). No
        encoders: the file's own parts, as they are (for counting its vectors without a model)."""
        widths = tuple((part, e.get_input_embeddings().weight.shape[1]) for part, e in encoders)
        key = (item.signature, widths)
        if key not in self._fitted:
            vectors, _ = self._contents(item)
            if any(part not in vectors or vectors[part].shape[1] != width for part, width in widths):
                made_for = " + ".join(f"{p or 'one encoder'} {v.shape[1]}" for p, v in vectors.items())
                needs = " + ".join(f"{p or 'one encoder'} {w}" for p, w in widths)
                raise NetworkError(f"{item.label} was made for other text encoders ({made_for}; this model has "
                                   f"{needs}): it was left out.")
            chosen = tuple(vectors[part] for part, _ in widths) or tuple(vectors.values())
            self._fitted[key] = Embedding(item.name, chosen, short_hash(item.path))
        return self._fitted[key]

    def listing(self, expected_shape: int | None) -> dict[str, dict]:
        """A1111's ``/sdapi/v1/embeddings``: files that fit the current model (``expected_shape``, the sum of its
        text encoders' widths; None when unknown) under ``loaded``, the others under ``skipped``. Unreadable
        files are in neither."""
        result: dict[str, dict] = {"loaded": {}, "skipped": {}}
        for item in self.files():
            try:
                info = self._contents(item)[1]
            except NetworkError:
                continue
            fits = expected_shape is None or info["shape"] == expected_shape
            result["loaded" if fits else "skipped"][item.name] = info
        return result


def expected_shape(model_folder: Path) -> int | None:
    """The embedding width a diffusers model folder takes (768 for SD 1.x, 2048 for SDXL), from its configs."""
    widths = []
    for sub in ("text_encoder", "text_encoder_2"):
        try:
            widths.append(int(json.loads((model_folder / sub / "config.json").read_text())["hidden_size"]))
        except (OSError, ValueError, KeyError):
            continue
    return sum(widths) or None
