"""A1111's training endpoints: ``/sdapi/v1/create/embedding``, ``/create/hypernetwork``, ``/train/embedding`` and
``/train/hypernetwork``, on the Train tab's code (``pipelines.embedding_training``, ``hypernetwork_training``),
answered as A1111 answers them (``{"info": ...}``). A value the trainer cannot use is a 422 naming the field, as
everywhere in this API (A1111 answers 200 with the error in ``info``). A training call returns when the run ends, as
A1111's does; it runs on the device like a job."""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, Callable, get_type_hints

from fastapi import Depends
from pydantic import BaseModel, ConfigDict, create_model

from pipelines.embedding_training import CreateRequest, TrainEmbeddingRequest, create_embedding, train_embedding
from pipelines.hypernetwork_training import (DEFAULT_SIZES, CreateHypernetworkRequest, TrainHypernetworkRequest,
                                             create_hypernetwork, train_hypernetwork)
from pipelines.training_run import SETTINGS, TrainRequest, configured


class CreateEmbeddingPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = ""
    init_text: str = "*"
    num_vectors_per_token: int = 1
    overwrite_old: bool = False


class CreateHypernetworkPayload(BaseModel):
    """A1111's arguments of ``create_hypernetwork``; the structures as its text or as lists of numbers."""

    model_config = ConfigDict(extra="ignore")

    name: str = ""
    enable_sizes: list[int | str] = list(DEFAULT_SIZES)
    overwrite_old: bool = False
    layer_structure: str | list[float] | None = None
    activation_func: str | None = None
    weight_init: str | None = None
    add_layer_norm: bool = False
    use_dropout: bool = False
    dropout_structure: str | list[float] | None = None


def _train_payload(request_class: type[TrainRequest]) -> type[BaseModel]:
    """A1111's arguments of its ``train_embedding`` or ``train_hypernetwork`` (its clients send them all): the request's
    fields under A1111's names, the model left to the current checkpoint; the schedules also as numbers, as A1111's
    clients send them. ``seed`` is Easel's (-1: random); the Training settings come from the options
    (``/sdapi/v1/options``), as A1111's do; what else A1111 takes (``save_image_with_stored_embedding``) is ignored."""
    hints = get_type_hints(request_class)
    found: dict[str, Any] = {f.name: (hints[f.name], ... if f.default is MISSING else f.default)
                             for f in fields(request_class) if f.name != "model" and f.name not in SETTINGS}
    found.update(learn_rate=(str | float, found["learn_rate"][1]), clip_grad_value=(str | float, "0.1"))
    return create_model(f"{request_class.__name__}Payload", __config__=ConfigDict(extra="ignore"), **found)


class InfoResponse(BaseModel):
    info: str


def add_routes(router, engine, config, auth) -> None:
    @router.post("/create/embedding", response_model=InfoResponse)
    def create(payload: CreateEmbeddingPayload):
        """A1111's *Create embedding*, with the current checkpoint."""
        path = create_embedding(engine, CreateRequest(**payload.model_dump()))
        return {"info": f"create embedding filename: {path}"}

    @router.post("/create/hypernetwork", response_model=InfoResponse)
    def create_hyper(payload: CreateHypernetworkPayload):
        """A1111's *Create hypernetwork*; an absent setting takes the tab's default."""
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in payload.model_dump().items() if v is not None}
        path = create_hypernetwork(engine, CreateHypernetworkRequest(**values))
        return {"info": f"create hypernetwork filename: {path}"}

    def trainer(kind: str, request_class: type[TrainRequest], train: Callable):
        payload_class = _train_payload(request_class)

        def run(payload, owner: str = Depends(auth)):
            values = payload.model_dump()
            result = train(engine, request_class(**{**values, "learn_rate": str(payload.learn_rate),
                                                    "clip_grad_value": str(payload.clip_grad_value)},
                                                 **configured(config)), owner=owner)
            return {"info": f"train {kind} complete: filename: {result.path} error: None"}

        run.__annotations__["payload"] = payload_class  # a class made here, which FastAPI cannot find by its name
        run.__doc__ = f"A1111's *Train {kind.capitalize()}* with the current checkpoint, to its end (or the caller's " \
                      "``interrupt``)."
        router.post(f"/train/{kind}", response_model=InfoResponse)(run)

    trainer("embedding", TrainEmbeddingRequest, train_embedding)
    trainer("hypernetwork", TrainHypernetworkRequest, train_hypernetwork)
