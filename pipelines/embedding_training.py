"""A1111's textual inversion (the Train tab's *Create embedding* and *Train Embedding*): an embedding made from words,
then its vectors trained on a folder of pictures with the model frozen (the run itself: ``training_run``). Captions
are encoded exactly as prompts are (``text_encoding.encode_captions``), so the vectors mean at generation what they
meant in training. The file is A1111's ``.pt`` (or a ``.safetensors`` with the same notes in its metadata).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from .atomic import replace_file
from .embeddings import MAX_VECTORS, Embedding
from .errors import RequestError
from .networks.files import NetworkError, NetworkFile
from .request import whole_between
from .text_encoding import encode_captions
from .training_run import (Trainee, TrainProgress, TrainRequest, TrainResult, check_model, check_name, find_file,
                           new_file, run)

STAR_TOKEN = 265  # the token id of "*" in CLIP's vocabulary, which A1111's .pt files name their vectors by


def _a1111_data(vectors: torch.Tensor, name: str, step: int, checkpoint: tuple[str, str]) -> dict[str, Any]:
    """A1111's ``.pt`` embedding: the vectors under ``*``, with the step and the checkpoint it was trained on."""
    return {"string_to_token": {"*": STAR_TOKEN}, "string_to_param": {"*": vectors.detach().float().cpu()},
            "name": name, "step": step, "sd_checkpoint": checkpoint[0], "sd_checkpoint_name": checkpoint[1]}


def save_embedding(path: Path, vectors: torch.Tensor, name: str, step: int, checkpoint: tuple[str, str]) -> None:
    """An embedding file in A1111's layout, atomically: a ``.pt`` (``.bin``) as ``_a1111_data``; a ``.safetensors``
    holds ``emb_params`` with the notes in its metadata. ``checkpoint``: the model's (short hash, name)."""
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save

        notes = {"name": name, "step": str(step), "sd_checkpoint": checkpoint[0], "sd_checkpoint_name": checkpoint[1]}
        tensors = {"emb_params": vectors.detach().float().cpu().contiguous()}
        replace_file(path, lambda file: file.write(save(tensors, metadata=notes)))
    else:
        data = _a1111_data(vectors, name, step, checkpoint)
        replace_file(path, lambda file: torch.save(data, file))


@dataclass(frozen=True)
class CreateRequest:
    """A1111's *Create embedding*: ``num_vectors_per_token`` vectors started from the words of ``init_text``."""

    name: str
    init_text: str = "*"
    num_vectors_per_token: int = 1
    overwrite_old: bool = False
    model: str = ""

    def __post_init__(self):
        object.__setattr__(self, "name", check_name(self.name, "embedding"))
        object.__setattr__(self, "num_vectors_per_token", whole_between(
            self.num_vectors_per_token, "Number of vectors per token", "num_vectors_per_token", 1, MAX_VECTORS))


def create_embedding(engine, request: CreateRequest) -> Path:
    """The new file (``embeddings/<name>.pt``, or the file of that name when overwriting). Each vector starts from
    the init text's token at the same place along it (A1111's rule); no init text: zeros."""
    path = new_file(engine.registry.models_dir, "embedding", request.name, request.overwrite_old)
    with engine.holding(request.model) as model:
        encoder = check_model(model.pipe, model.info.name, "Embeddings")
        ids = model.pipe.tokenizer(request.init_text, add_special_tokens=False).input_ids if request.init_text else []
        table = encoder.get_input_embeddings().weight.detach().float().cpu()
        count = request.num_vectors_per_token
        vectors = (table[[ids[i * len(ids) // count] for i in range(count)]] if ids
                   else torch.zeros(count, table.shape[1]))
        save_embedding(path, vectors, request.name, 0, (model.hash or "", model.info.name))
    return path


@dataclass(frozen=True, kw_only=True)
class TrainEmbeddingRequest(TrainRequest):
    """A1111's *Train Embedding* (its API's ``/sdapi/v1/train/embedding``)."""

    NAME_FIELD: ClassVar[str] = "embedding_name"
    SAVE_FIELD: ClassVar[str] = "save_embedding_every"
    KIND: ClassVar[str] = "embedding"

    embedding_name: str
    save_embedding_every: int = 500


class _EmbeddingTrainee(Trainee):
    """The embedding's vectors, standing for its name in every caption."""

    kind, loss_file, weight_decay = "embedding", "textual_inversion_loss.csv", 0.0

    def __init__(self, item: NetworkFile, step: int, vectors: torch.Tensor):
        self.vectors = torch.nn.Parameter(vectors)
        self.trained = Embedding(item.name, (self.vectors,), "")
        super().__init__(item.name, item.path, step, [self.vectors])

    def context(self, pipe, captions: list[str], library) -> torch.Tensor:
        return encode_captions(pipe, captions, self.trained, library)

    def data(self, step: int, checkpoint: tuple[str, str]) -> dict[str, Any]:
        return _a1111_data(self.vectors, self.name, step, checkpoint)

    def save(self, step: int, checkpoint: tuple[str, str]) -> None:
        save_embedding(self.path, self.vectors, self.name, step, checkpoint)


def train_embedding(engine, request: TrainEmbeddingRequest,
                    on_progress: Callable[[TrainProgress], None] | None = None,
                    cancel: threading.Event | None = None, owner: Any = None) -> TrainResult:
    """Train the named embedding (``training_run.run``)."""
    item = find_file(engine.registry.models_dir, "embedding", request.embedding_name)
    if item is None:
        raise RequestError(f"No embedding named {request.embedding_name!r} in the embeddings folder: make one under "
                           "Create embedding.", "embedding_name")

    def begin(pipe, device) -> _EmbeddingTrainee:
        try:
            start = engine.embeddings.load(item, [("", pipe.text_encoder)]).vectors[0]
        except NetworkError as exc:
            raise RequestError(str(exc), "embedding_name") from None
        return _EmbeddingTrainee(item, engine.embeddings.notes(item)["step"] or 0, start.clone().to(device))

    return run(engine, request, begin, on_progress, cancel, owner)
