"""Extra networks (A1111's name): LoRA (and LyCORIS) and hypernetworks, applied to a model around each sampling pass.

``Networks.applied(model, request, job)`` reads the ``<lora:name:w>``, ``<lora:name:te:unet>`` and
``<hypernet:name:w>`` tags of the pass's prompt (``pipelines.prompts.extract_networks``), loads LoRA files into
the model once (they stay, switched off, for later requests), switches on the ones this prompt names, adds the
changes of its LyCORIS files (LoHa, LoKr...) to the weights (``lycoris``), each layer at its tag's weight for its
block where the tag has ``lbw=`` (``block_weights``), installs its hypernetworks, and yields
the request with the tags removed from the prompt. On leaving, every LoRA is switched off, the weights and the
UNet's own attention processors are back, whatever happened inside. A file that cannot be
used is skipped with a warning naming it (``job.warnings``); the LoRAs that applied are listed with their hashes
under ``Lora hashes`` in ``job.extra_params`` (the infotext).

Files live in A1111's folders under the models folder (``Lora``, ``hypernetworks``; ``embeddings`` is listed
for the UI's cards) and are found by name only (``files``).
"""

from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator
from weakref import WeakKeyDictionary

from ..errors import RequestError
from ..hashing import network_hash
from ..infotext import NameHashes
from ..prompts import extract_networks
from . import block_weights, hypernetwork, lora, lycoris
from .block_weights import Strength
from .files import (KINDS, LABELS, USER_METADATA, NetworkError, NetworkFile, describe, family_name, find,
                    list_files, metadata, tensor_shapes)

__all__ = ["KINDS", "LABELS", "USER_METADATA", "NetworkError", "NetworkFile", "Networks", "describe", "metadata"]


class Networks:
    """The network files of one models folder, and what each resident model has loaded of them."""

    def __init__(self, models_dir: str | Path):
        self.models_dir = Path(models_dir)
        self._loras: WeakKeyDictionary = WeakKeyDictionary()  # pipeline -> {name: LoadedLora}
        self._hypernets: dict[str, tuple[tuple, hypernetwork.Hypernetwork]] = {}  # name -> (file signature, it)
        self._lock = threading.Lock()

    @property
    def lora_dir(self) -> Path:
        """The LoRA folder, which holds LoRA Block Weight's presets file too."""
        return self.models_dir / KINDS["lora"][0]

    def files(self, kind: str) -> list[NetworkFile]:
        """Files of ``kind`` ("lora", "hypernet", "embedding"), read from disk on every call."""
        return list_files(self.models_dir, kind)

    @contextmanager
    def applied(self, model, request, job) -> Iterator:
        """The request's networks on ``model`` for one pass; yields the request without the tags."""
        try:
            prompt, uses = extract_networks(request.prompt)
        except ValueError as exc:
            raise RequestError(str(exc), "prompt") from None
        pipe = model.pipe
        weights: dict[str, Strength] = {}
        patches: list[tuple[lycoris.LoadedLycoris, Strength]] = []
        hypernets: list[tuple[hypernetwork.Hypernetwork, float]] = []
        for use in uses:
            try:
                item = find(self.models_dir, use.kind, use.name)
                if use.kind == "lora":
                    strength = Strength.of(use.te_weight, use.unet_weight, self._blocks(use, item))
                    loaded = self._lora(pipe, item)
                    if isinstance(loaded, lycoris.LoadedLycoris):
                        patches.append((loaded, strength))
                    else:
                        weights[loaded.adapter] = strength
                    job.extra_params.setdefault("Lora hashes", NameHashes())[use.name] = network_hash(item.path)
                    if loaded.share < 0.995:
                        _warn(job, f"{item.label} applied to {loaded.share:.0%} of its layers: {loaded.shortfall}.")
                else:
                    hypernets.append((self._hypernet(pipe, item), use.unet_weight))
            except NetworkError as exc:
                _warn(job, str(exc))
        with ExitStack() as stack:
            stack.enter_context(lora.active(pipe, weights))
            stack.enter_context(lycoris.applied(pipe, patches))
            if hypernets:
                stack.enter_context(hypernetwork.installed(pipe.unet, hypernets))
            yield replace(request, prompt=prompt)

    def _blocks(self, use, item: NetworkFile) -> tuple[float, ...] | None:
        """The tag's block weights (None without ``lbw=``); one that names no preset or list is a NetworkError."""
        if not use.blocks:
            return None
        try:
            return block_weights.weights(use.blocks, block_weights.presets(self.lora_dir))
        except ValueError as exc:
            raise NetworkError(f"{item.label}: {exc}: skipped.") from None

    def _lora(self, pipe, item: NetworkFile) -> lora.LoadedLora | lycoris.LoadedLycoris:
        """The file's adapter in ``pipe`` (its layers matched to ``pipe``'s, for a LyCORIS file), loaded on first use
        and again when the file has changed."""
        with self._lock:
            loaded = self._loras.setdefault(pipe, {})
            known = loaded.get(item.name)
            if known is not None and known.signature == item.signature:
                return known
            if isinstance(known, lora.LoadedLora):
                lora.forget(pipe, known.adapter)
            loaded.pop(item.name, None)
            reader = lycoris if lycoris.is_lycoris(tensor_shapes(item)) else lora
            loaded[item.name] = reader.load(pipe, item)
            return loaded[item.name]

    def _hypernet(self, pipe, item: NetworkFile) -> hypernetwork.Hypernetwork:
        with self._lock:
            known = self._hypernets.get(item.name)
            if known is None or known[0] != item.signature:
                known = self._hypernets[item.name] = (item.signature, hypernetwork.Hypernetwork.load(item))
        network = known[1]
        width = pipe.unet.config.cross_attention_dim
        if width not in network.layers:
            raise NetworkError(f"{item.label} has no layers for this model's text context ({family_name(width)}, "
                               f"width {width}; it has {sorted(network.layers)}): skipped.")
        return network


def _warn(job, message: str) -> None:
    if message not in job.warnings:  # once per job, not once per batch or pass
        job.warnings.append(message)
