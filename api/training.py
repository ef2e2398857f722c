"""A1111's training endpoints: ``/sdapi/v1/create/embedding`` and ``/sdapi/v1/train/embedding``, on the Train tab's
code (``pipelines.embedding_training``), answered as A1111 answers them (``{"info": ...}``). A value the trainer
cannot use is a 422 naming the field, as everywhere in this API (A1111 answers 200 with the error in ``info``).
The training call returns when the run ends, as A1111's does; it runs on the device like a job."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, get_type_hints

from fastapi import Depends
from pydantic import BaseModel, ConfigDict, create_model

from pipelines.embedding_training import CreateRequest, TrainRequest, create_embedding, train_embedding

from .encoding import PayloadError


class CreateEmbeddingPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = ""
    init_text: str = "*"
    num_vectors_per_token: int = 1
    overwrite_old: bool = False


def _train_fields() -> dict[str, Any]:
    """The Train tab's fields under A1111's names (``TrainRequest``'s), the model left to the current checkpoint; the
    schedules also as numbers, as A1111's clients send them; and the A1111 fields Easel refuses (``_NOT_HERE``)."""
    hints = get_type_hints(TrainRequest)
    found: dict[str, Any] = {f.name: (hints[f.name], ... if f.default is MISSING else f.default)
                             for f in fields(TrainRequest) if f.name != "model"}
    found.update(learn_rate=(str | float, "0.005"), clip_grad_value=(str | float, "0.1"))
    return {**found, **{name: (bool, False) for name in _NOT_HERE}}


# A1111 features of training this server does not have: asked for, they are refused rather than ignored
_NOT_HERE = {"use_weight": "Using the PNG alpha channel as loss weight is not available on this server.",
             "preview_from_txt2img": "Previews from txt2img's parameters are not available on this server: previews "
                                     "use the latest caption."}
# A1111's arguments of ``train_embedding`` (its clients send them all); ``seed`` is Easel's (-1: random)
TrainEmbeddingPayload = create_model("TrainEmbeddingPayload", __config__=ConfigDict(extra="ignore"), **_train_fields())


class InfoResponse(BaseModel):
    info: str


def add_routes(router, engine, auth) -> None:
    @router.post("/create/embedding", response_model=InfoResponse)
    def create(payload: CreateEmbeddingPayload):
        """A1111's *Create embedding*, with the current checkpoint."""
        path = create_embedding(engine, CreateRequest(**payload.model_dump()))
        return {"info": f"create embedding filename: {path}"}

    @router.post("/train/embedding", response_model=InfoResponse)
    def train(payload: TrainEmbeddingPayload, owner: str = Depends(auth)):
        """A1111's *Train Embedding* with the current checkpoint, to its end (or the caller's ``interrupt``)."""
        for field, message in _NOT_HERE.items():
            if getattr(payload, field):
                raise PayloadError(field, message)
        values = payload.model_dump(exclude=set(_NOT_HERE))
        result = train_embedding(engine, TrainRequest(**{**values, "learn_rate": str(payload.learn_rate),
                                                         "clip_grad_value": str(payload.clip_grad_value)}),
                                 owner=owner)
        return {"info": f"train embedding complete: filename: {result.path} error: None"}
