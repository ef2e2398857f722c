"""A1111's settings as API clients see them (``/sdapi/v1/options``, ``/sd-models``).

The current checkpoint (A1111's ``sd_model_checkpoint``) is the registry's default model, kept in that one
place: it is what a request that names no model runs on. Checkpoints are named the A1111 way, by title
(``name [hash]``), name or short hash; whatever else arrives goes to the registry, which refuses paths. ``sd_vae``
starts as ``--vae`` and changes it: models it changes load again with the new VAE when next used. The other options
are the Settings tab's (``pipelines/config.py``), changed and kept in ``config.json`` as A1111 keeps them; where
outputs go (``--outputs-dir``) and that their parameters are written are shown read-only.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from pipelines.checkpoints import AUTOMATIC
from pipelines.config import CHECKPOINT
from pipelines.errors import ModelError, RequestError
from pipelines.hashing import short_hash
from pipelines.registry import TITLE
from pipelines.upscalers import LATENT_UPSCALERS, upscaler_names

from .encoding import PayloadError

READ_ONLY = {"outdir_samples": ""}  # decided by --outputs-dir


class Options:
    def __init__(self, services):
        self.services = services
        self.registry = services.registry
        self._lock = threading.Lock()

    def upscalers(self) -> list[str]:
        """A1111's ``sd_upscalers`` (``/upscalers``, SD upscale's upscaler index): None, then the pixel and model
        upscalers and the upscaler files (the latent ones are ``/latent-upscale-modes``)."""
        return ["None", *(name for name in upscaler_names(self.registry.models_dir) if name not in LATENT_UPSCALERS)]

    # -- checkpoints ---------------------------------------------------------------------------------------
    def _hash(self, name: str) -> str | None:
        info = self.registry.resolve(name)
        return short_hash(info.source) if info.local else None

    def title(self, name: str) -> str:
        model_hash = self._hash(name)
        return f"{name} [{model_hash}]" if model_hash else name

    def sd_models(self) -> list[dict[str, Any]]:
        models = []
        for info in self.registry.list_models():
            model_hash = short_hash(info.source)  # cached by size and mtime: hashed once per file
            models.append({"title": f"{info.name} [{model_hash}]", "model_name": info.name, "hash": model_hash,
                           "sha256": None, "filename": info.source, "config": None})
        return models

    def checkpoint_name(self, value: Any) -> str:
        """A model name for an A1111 checkpoint reference (title, name or short hash); empty: the current one."""
        if value is None or not str(value).strip():
            return self.registry.default_name()
        text = str(value).strip()
        names = self.registry.names()
        if text in names:
            return text
        match = TITLE.match(text)
        if match and match["name"] in names:
            return match["name"]
        if re.fullmatch(r"[0-9a-f]{8,10}", text):
            for name in names:
                if (self._hash(name) or "").startswith(text):
                    return name
        return text  # not ours: the registry decides (a Hub id, or "Unknown model")

    def switch_model(self, value: Any) -> str:
        """Load the model and make it the current one (A1111 loads it at once, so the first job is not slow), which
        the next start opens on too."""
        name = self.services.engine.load(self.registry.resolve(self.checkpoint_name(value)).name)
        self.registry.set_default(name)
        self.services.config.keep(CHECKPOINT, name)
        return name

    # -- /options ------------------------------------------------------------------------------------------
    def current(self) -> dict[str, Any]:
        return {"sd_model_checkpoint": self.title(self.registry.default_name()),
                "sd_vae": self.registry.vae or AUTOMATIC, **self.services.config.values(), **READ_ONLY}

    def update(self, values: dict[str, Any]) -> None:
        """Apply A1111 options, none when one is refused; unknown keys are ignored (as A1111 does), read-only ones
        may only keep their value."""
        for key, value in values.items():
            if key in READ_ONLY and value != READ_ONLY[key]:
                raise PayloadError(key, f"{key} is set by a command-line flag and cannot be changed here.")
        try:
            settings = self.services.config.check(values)
        except RequestError as exc:
            raise PayloadError(exc.field, str(exc)) from None
        with self._lock:
            if values.get("sd_model_checkpoint") is not None:
                try:
                    self.switch_model(values["sd_model_checkpoint"])
                except RequestError as exc:
                    raise PayloadError("sd_model_checkpoint", str(exc)) from None
            if "sd_vae" in values:  # models/VAE's file or folder name for every model whose easel.json names none
                try:
                    self.services.set_vae(values["sd_vae"])
                except ModelError as exc:
                    raise PayloadError("sd_vae", str(exc)) from None
            self.services.configure(settings)
