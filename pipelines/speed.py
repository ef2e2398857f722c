"""The fast path: what the registry does to a pipeline it places on a CUDA device (``--fast``, on by default).

It applies to every pipeline of a UNet and an autoencoder (``autoencoder``): SD 1.x/2.x, SDXL, KOALA, the upscalers,
and Kandinsky 2.2's decoder (UNet and MoVQ; its prior runs as loaded).

- **bf16** (``preferred_dtype``) where the card has it: as fast as fp16 with fp32's range, so SDXL's VAE decodes
  without NaNs and needs no fp32 upcast (diffusers and ``generate.decode_latents`` upcast only fp16 VAEs).
  Cards without bf16 keep fp16 and diffusers' upcast of that VAE.
- **SDPA** attention: torch 2's default in diffusers, with torch's own kernel order (flash first). cuDNN's kernel
  is faster on an H100 (one SDXL forward's attention 6.21 ms against 6.48, Kandinsky's 1.33 against 1.64:
  ``benchmarks/attention_backends.py``), but eager SDXL was no faster with it (14 % slower, within eager's
  run-to-run noise), so SDPA tries it first only with CUDA graphs (below), where nothing is launched from Python
  (``attention_order``).
- **channels-last** UNet and autoencoder: the memory layout cuDNN's fastest convolutions want.
- **fused QKV**: one matmul for the query, key and value projections (key and value in cross-attention). The old
  projections become views of the fused weight (no second copy), so PEFT can still wrap them: while a LoRA is
  active on them the processor runs the unfused path through them, and the fused one otherwise. Kandinsky's
  attention layers, which also project added keys and values from the image embedding, are left as they are.
- **TF32** matmuls for whatever still runs in float32.
- ``--compile`` (off by default): regional ``torch.compile`` (``regions``) of the UNet's and the autoencoder
  decoder's transformer blocks, resnets and other attention layers, compiling each distinct block shape once
  (seconds, not minutes). ``dynamic=False`` makes one static graph per block shape and picture size; the recompile
  limit is raised so the common sizes each compile once instead of falling back to eager. For many different sizes,
  mark the latents' height and width dynamic instead (``torch._dynamo.mark_dynamic(latents, 2)`` and ``3``, or
  ``dynamic=None``): one graph for all sizes, a little slower per step. ``compile_sizes`` (``--compile-sizes``) has
  the registry compile the common sizes while the model loads (``generate.warm_up``), so the first picture of each
  does not wait; inductor keeps the compiled kernels on disk (``app.keep_compiled_kernels``), so a later launch reads
  them back instead of compiling again. Prompt and seed are tensors, so they never recompile (a prompt past 75 tokens
  is longer, and compiles once). Nor does a change of LoRA: PEFT's layers guard on their active adapters and their
  scales (Python floats), so switching them the usual way recompiles every new combination (and past the recompile
  limit falls back to eager). On a compiled UNet ``networks.lora`` instead keeps every loaded adapter active, the
  unused ones at weight 0, with 0-d tensor scales changed in place: the graph never changes, and a LoRA file compiles
  its layers once, when first loaded. diffusers' ``enable_lora_hotswap``/``hotswap=True`` was not taken: it swaps one
  file's weights into one adapter slot (a file read and copied per switch, one LoRA at a time, the first file fixing
  the layers later ones may touch), where Easel keeps several LoRAs resident and mixes them per request. The cost:
  each loaded LoRA's small matmuls run on every step, used or not, and fused QKV's processor takes the unfused path
  once a LoRA is loaded.
- ``--compile-mode reduce-overhead``: the whole UNet compiled as one graph and replayed as a CUDA graph (static
  shapes: one graph per picture size), the autoencoder decoder's regions as above, cuDNN's attention first.
  Measured on an H100, diffusers' UNets at batch 1 are launch-bound (SD 1.5 at 512² ran at 17x its FLOP floor in
  eager mode), which only a graph of the whole step removes: SDXL 1.15 s a picture (2.9x plain diffusers), at a
  cold compile of 157 s (26 s from the kept kernels) when every block was traced. Regions cannot take CUDA
  graphs: instances of one block class share one compiled graph, so the next block's replay overwrites the
  previous block's output while it is still in use. Instead the transformer blocks are nested compile regions of
  the whole graph (``nest``, ``nested_regions``): Dynamo traces each distinct block shape once and stamps it out
  for the others (SDXL's 70 blocks are of 2 shapes), and inductor compiles each once (hierarchical compilation).
  On the CPU (``benchmarks/compile_time.py``: inductor, an empty cache, ``--fast``, 128²) SDXL's UNet compiled
  whole in 48 s instead of 95 s and SD 1.5's in 50 s instead of 56 s, each call within 2 % of the unnested
  graph's; nesting the resnets too gained no compile time and cost more per call (they are few and of many
  shapes, and a region's edges stop inductor fusing across them). Not yet measured on a GPU:
  ``benchmarks/gpu_speed.py --with nested_regions=false`` gives the rows without. On the CPU the UNet is compiled
  whole without CUDA graphs (the app compiles only on CUDA; the tests use it).
- ``--weights int8|fp8|int8-fast|fp8-fast`` (``quantize.py``), fast modes that are not exact: the UNet's weights
  stored in 8 bits, dequantised as used (``-fast``: its Linear layers multiply in 8 bits); applied on any device,
  as they are asked for explicitly, and labelled in the infotext (``infotext_params``). They replace fused QKV,
  whose views would keep the full-precision weights alive.

Offloaded models (``medvram``, ``lowvram``) get channels-last only: offloading moves weights module by module,
which would copy the fused weights' views and move weights under compiled blocks (and quantised ones).

On the CPU (and MPS) nothing else is changed, so CPU pictures stay exactly as they were. Step caching, the other
fast mode, is per request (``step_cache.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from inspect import signature
from weakref import WeakSet

import torch
from torch.nn.attention import SDPBackend
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, FusedAttnProcessor2_0

from .quantize import LABELS, MODES, mode_of, quantize

log = logging.getLogger(__name__)

RECOMPILE_LIMIT = 64  # graphs per compiled block: its shapes times the picture sizes in use; shapes per nested one
_compiled: WeakSet = WeakSet()  # UNets compiled by compile_unet
_CUDNN = int(SDPBackend.CUDNN_ATTENTION)
_TORCH_ATTENTION_ORDER = tuple(torch._C._get_sdp_priority_order())  # torch's own (no public getter or setter)


COMPILE_MODES = ("default", "reduce-overhead")  # reduce-overhead: CUDA graphs
WEIGHTS = ("full", *MODES)  # "int8", "fp8", "int8-fast", "fp8-fast": pipelines/quantize.py


@dataclass(frozen=True)
class SpeedOptions:
    channels_last: bool = False
    fuse_qkv: bool = False
    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str = "default"
    weights: str = "full"
    compile_sizes: tuple[tuple[int, int], ...] = ()  # (width, height): compiled when a model loads (warm_up)
    cudnn_attention: bool = False  # SDPA tries cuDNN's kernel first (CUDA only; set for the process)
    nested_regions: bool = True  # a whole-UNet compile traces each distinct transformer block shape once

    @classmethod
    def from_flags(cls, fast: bool, compile: bool = False, compile_mode: str = "default",
                   weights: str = "full", compile_sizes: tuple[tuple[int, int], ...] = ()) -> "SpeedOptions":
        compile = compile or compile_mode != "default" or bool(compile_sizes)  # each of them implies --compile
        return cls(channels_last=fast, fuse_qkv=fast, compile=compile, compile_mode=compile_mode, weights=weights,
                   compile_sizes=compile_sizes, cudnn_attention=fast and compile_mode == "reduce-overhead")


def preferred_dtype(device: str, fast: bool) -> torch.dtype | None:
    """bf16 on a CUDA card that has it when ``fast``; None leaves the usual choice (fp16 on GPUs)."""
    if fast and torch.device(device).type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def apply(pipe, options: SpeedOptions, device: str, mode: str = "normal") -> list[str]:
    """The fast path for a freshly placed pipeline on a CUDA device, and the weights mode, an explicit choice, on
    any device; nothing else off CUDA. Returns what was done."""
    if autoencoder(pipe) is None:  # not a latent diffusion pipeline of a UNet and an autoencoder
        return []
    if mode != "normal":
        options = SpeedOptions(channels_last=options.channels_last)
    if torch.device(device).type != "cuda":
        options = SpeedOptions(weights=options.weights)
    if options == SpeedOptions():
        return []
    done = []
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        if options.cudnn_attention:  # for the process: left so when an offloaded model (without) loads
            attention_order(True)
            done.append("cuDNN attention")
    done += optimise(pipe, options)
    log.info("fast path: %s", ", ".join(done) or "nothing")
    return done


def optimise(pipe, options: SpeedOptions) -> list[str]:
    """``options`` on ``pipe`` on any device (the benchmark uses it on the CPU to check its correctness)."""
    done = []
    if options.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        autoencoder(pipe).to(memory_format=torch.channels_last)
        done.append("channels-last")
    if options.weights != "full":
        quantize(pipe.unet, options.weights)
        done.append(f"{options.weights} weights")
    elif options.fuse_qkv and fuse_qkv(pipe.unet):  # the fused weights' views would keep the unquantised storage
        done.append("fused QKV")
    if options.compile:
        whole = options.compile_mode == "reduce-overhead"
        cuda_graphs = whole and pipe.unet.device.type == "cuda"
        compile_unet(pipe, options.compile_backend, whole, options.nested_regions, cuda_graphs)
        done.append("compile with CUDA graphs" if cuda_graphs else "compile")
    return done


def attention_order(cudnn_first: bool) -> None:
    """SDPA's kernel order for the whole process: cuDNN's kernel first, or torch's own order (flash first). A
    compiled graph keeps the kernel chosen when it was traced."""
    order = [backend for backend in _TORCH_ATTENTION_ORDER if backend != _CUDNN or not cudnn_first]
    torch._C._set_sdp_priority_order([_CUDNN, *order] if cudnn_first else order)


def autoencoder(pipe):
    """The pipeline's autoencoder beside its UNet: SD's and SDXL's VAE, Kandinsky 2.2's MoVQ; None for others."""
    return (getattr(pipe, "vae", None) or getattr(pipe, "movq", None)) if hasattr(pipe, "unet") else None


def infotext_params(pipe) -> dict[str, str]:
    """The infotext's label for a fast mode applied at load time (quantised weights)."""
    mode = mode_of(pipe.unet) if hasattr(pipe, "unet") else None
    return {"Weights": LABELS[mode]} if mode else {}


class LoraAwareFusedProcessor(FusedAttnProcessor2_0):
    """Fused projections unless a LoRA is active on the query, key or value projection (PEFT wraps those,
    not the fused one); then the plain SDPA processor through them."""

    _plain = AttnProcessor2_0()

    def __call__(self, attn, *args, **kwargs):
        if any(getattr(layer, "active_adapters", None) and not layer.disable_adapters
               for layer in (attn.to_q, attn.to_k, attn.to_v)):
            return self._plain(attn, *args, **kwargs)
        return super().__call__(attn, *args, **kwargs)


@torch.no_grad()
def fuse_qkv(model) -> int:
    """Fuse the projections of every attention layer that projects only its own inputs (not Kandinsky's, whose added
    keys and values its processor projects apart); the separate weights become views of the fused ones. Returns how
    many layers were fused."""
    processor, fused_layers = LoraAwareFusedProcessor(), 0
    for module in model.modules():
        if (not isinstance(module, Attention) or module.added_kv_proj_dim is not None
                or getattr(module, "fused_projections", False)):
            continue
        module.fuse_projections()
        fused = module.to_kv if module.is_cross_attention else module.to_qkv
        parts = (module.to_k, module.to_v) if module.is_cross_attention else (module.to_q, module.to_k, module.to_v)
        start = 0
        for layer in parts:  # plain tensors, not parameters: counted, moved and saved once, as to_qkv
            rows = layer.weight.shape[0]
            for name in ("weight", "bias"):
                if getattr(layer, name) is not None:
                    delattr(layer, name)
                    setattr(layer, name, getattr(fused, name).detach()[start:start + rows])
            start += rows
        module.set_processor(processor)
        fused_layers += 1
    return fused_layers


def is_compiled(unet) -> bool:
    """Whether ``compile_unet`` compiled this UNet (its LoRAs are then switched without recompiling)."""
    return unet in _compiled


def compile_unet(pipe, backend: str = "inductor", whole: bool = False, nested: bool = True,
                 cuda_graphs: bool = False) -> None:
    """Regional compilation of the UNet and the autoencoder's decoder (``regions``); ``whole``: the whole UNet as one
    graph instead, its transformer blocks nested compile regions when ``nested``, replayed as a CUDA graph when
    ``cuda_graphs`` (static shapes only), and the decoder's regions."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    _compiled.add(pipe.unet)
    settings = {"fullgraph": True, "dynamic": False, "backend": backend}
    decoder = autoencoder(pipe).decoder
    if whole:
        if nested:
            from diffusers.models.attention import BasicTransformerBlock

            for block in pipe.unet.modules():
                if isinstance(block, BasicTransformerBlock):
                    nest(block)
        pipe.unet.compile(**settings, **({"mode": "reduce-overhead"} if cuda_graphs else {}))
        blocks = list(regions(decoder))
    else:
        blocks = [*regions(pipe.unet), *regions(decoder)]
    for block in blocks:
        block.compile(**settings)


_nested_classes: dict[type, type] = {}


def nest(block) -> None:
    """Make ``block`` a nested compile region (``torch.compiler.nested_compile_region``) by giving it a subclass of
    its class whose forward is marked: one marked function for every instance, the instance its first argument.
    Marking a bound method per instance instead (``block.forward = ...``) made torch 2.14 reuse the first block's
    weights for the others (wrong pictures, no error)."""
    cls = type(block)
    if cls in _nested_classes.values():
        return
    if cls not in _nested_classes:
        mark = torch.compiler.nested_compile_region  # older torch releases take no reuse cap
        cap = {"max_reuse_entries": RECOMPILE_LIMIT} if "max_reuse_entries" in signature(mark).parameters else {}
        forward = mark(cls.forward, **cap)
        _nested_classes[cls] = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                                          "__qualname__": cls.__qualname__})
    block.__class__ = _nested_classes[cls]


def regions(model):
    """The blocks compiled one by one, each distinct shape once: transformer blocks, resnets, and attention layers
    outside transformer blocks (Kandinsky's UNet's, the autoencoders')."""
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D, ResnetBlockCondNorm2D

    for child in model.children():
        if isinstance(child, (BasicTransformerBlock, ResnetBlock2D, ResnetBlockCondNorm2D, Attention)):
            yield child
        else:
            yield from regions(child)
