"""Step caching, DeepCache-style (Ma et al., 2023, the "uniform" schedule): an opt-in fast mode, not exact.

Between two neighbouring sampling steps a UNet's deep features change little; its shallow ones carry the detail.
With an interval N, every N-th UNet call runs in full and keeps the input of the last up block (what the deeper
blocks made of this step); the calls between run only ``conv_in``, the first down block, the last up block (fed the
kept deep features with the fresh skip connections of the first down block) and the output layers.

It is done with hooks on the UNet's own blocks, not a copy of its ``forward``: on the cheap calls the deeper
blocks (down blocks after the first, the mid block, up blocks before the last) answer at once with zeros shaped
like their last real output, which the UNet's forward carries along unused. So CFG batches, SDXL's added
conditions (the time embedding is computed every call) and ControlNet residuals work unchanged: ControlNet still
runs every step, its residuals for the first level reach the fresh skip connections, and those for the deeper
levels only matter on the full calls. ``cached`` removes every hook on leaving, so the next request computes
exactly the uncached picture. Second-order samplers count each UNet call as a step.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

from .errors import RequestError

if TYPE_CHECKING:
    import torch

MAX_INTERVAL = 10  # (torch is imported where used: the UI reads this without it)


@dataclass
class _State:
    interval: int
    calls: int = 0
    full: bool = True
    shape: tuple = ()
    deep: torch.Tensor | None = None  # the last up block's input at the last full call
    templates: dict = field(default_factory=dict)  # deep block -> zeros shaped like its last output


def supports(pipe) -> bool:
    from diffusers import UNet2DConditionModel

    return isinstance(getattr(pipe, "unet", None), UNet2DConditionModel) and len(pipe.unet.up_blocks) > 1


@contextmanager
def cached(pipe, interval: int) -> Iterator[None]:
    """The pipeline's UNet reusing its deep features between full calls every ``interval`` calls; 0 or 1: as is."""
    if interval < 2:
        yield
        return
    if not supports(pipe):
        raise RequestError("Step cache works on UNet models (SD, SDXL, KOALA) only; set it to 0 for this model.",
                           "step_cache")
    unet = pipe.unet
    state = _State(interval)
    deep = [*unet.down_blocks[1:], *([unet.mid_block] if unet.mid_block is not None else []), *unet.up_blocks[:-1]]
    handles = [unet.register_forward_pre_hook(lambda module, args, kwargs: _count(state, args, kwargs),
                                              with_kwargs=True),
               unet.up_blocks[-1].register_forward_pre_hook(lambda module, args, kwargs: _last_up(state, args, kwargs),
                                                            with_kwargs=True)]
    replaced = [(block, block.__dict__.get("forward")) for block in deep]
    try:
        for block, _ in replaced:
            block.forward = _skippable(block, state)
        yield
    finally:
        for handle in handles:
            handle.remove()
        for block, own in replaced:
            if own is None:
                block.__dict__.pop("forward", None)
            else:
                block.forward = own


def _count(state: _State, args, kwargs) -> None:
    """Decide whether this UNet call is a full one: every ``interval``-th, and whenever the input changes shape."""
    sample = args[0] if args else kwargs["sample"]
    state.full = state.calls % state.interval == 0 or state.deep is None or tuple(sample.shape) != state.shape
    if state.full:
        state.calls, state.shape = 0, tuple(sample.shape)
    state.calls += 1


def _last_up(state: _State, args, kwargs):
    if state.full:
        state.deep = kwargs["hidden_states"].clone()  # a copy: compiled (CUDA-graph) outputs get overwritten
        return None
    return args, {**kwargs, "hidden_states": state.deep}


def _skippable(block, state: _State):
    import torch
    from torch.utils._pytree import tree_map

    run = block.forward  # the block's own forward (or what an offload hook made of it)

    def forward(*args, **kwargs):
        if state.full:
            output = run(*args, **kwargs)
            state.templates[block] = tree_map(torch.zeros_like, output)
            return output
        return state.templates[block]

    return forward
