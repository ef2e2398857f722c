"""Which SDPA kernel is fastest for each model's attention: torch's flash, memory-efficient and cuDNN backends.

    .venv/bin/python -m benchmarks.attention_backends [--models sd15 sdxl koala_700m kandinsky22] [--tiny]

One UNet forward (CFG batch of 2, bf16, random weights of the real architecture from ``random_pipelines``) is run
with ``scaled_dot_product_attention`` watched, which records every call's query and key/value shapes; each distinct
shape is then timed alone with each backend that accepts it. Per model the table gives each shape's calls per
forward and milliseconds per backend, and a last row with the attention time of one whole forward per backend
(a backend that refuses a shape is counted at the default choice's time there). What ``speed.py`` prefers on a
card follows from these rows. ``--tiny`` runs the tiny configs on the CPU (math backend only): a harness check.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from contextlib import nullcontext
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

from benchmarks.gpu_speed import median, to, unet_inputs  # noqa: E402
from benchmarks.random_pipelines import SPECS, TINY_SIZE, architectures, build  # noqa: E402

CUDA_BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                 "cudnn": SDPBackend.CUDNN_ATTENTION}


@torch.no_grad()
def attention_shapes(unet, inputs: dict) -> Counter:
    """(query shape, key shape) of each SDPA call in one forward, counted."""
    calls, real = Counter(), F.scaled_dot_product_attention

    def watched(query, key, value, *args, **kwargs):
        calls[(tuple(query.shape), tuple(key.shape))] += 1
        return real(query, key, value, *args, **kwargs)

    with mock.patch.object(F, "scaled_dot_product_attention", watched):
        unet(**inputs)
    return calls


def time_shape(query_shape, key_shape, backend, device: str, dtype: torch.dtype, repeats: int) -> float | None:
    """Milliseconds of one call with ``backend`` alone (None: the default choice), or None where it refuses."""
    q = torch.randn(query_shape, device=device, dtype=dtype)
    k, v = (torch.randn(key_shape, device=device, dtype=dtype) for _ in range(2))
    try:
        with sdpa_kernel(backend) if backend is not None else nullcontext():
            F.scaled_dot_product_attention(q, k, v)
            calls = 20
            seconds = median(lambda: [F.scaled_dot_product_attention(q, k, v) for _ in range(calls)], repeats,
                             device)
    except RuntimeError:  # "No available kernel": this backend does not take the shape
        return None
    return 1000 * seconds / calls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(SPECS), default=["sd15", "sdxl", "koala_700m",
                                                                            "kandinsky22"])
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (a harness check)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    device = "cpu" if args.tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    backends = {"default": None, **(CUDA_BACKENDS if device == "cuda" else {"math": SDPBackend.MATH})}
    arch = architectures()
    names = " | ".join(backends)
    print(f"SDPA per backend on {torch.cuda.get_device_name() if device == 'cuda' else 'the CPU'}, {dtype}, "
          f"milliseconds per call (-: refused)\n")
    print(f"| model | query | key/value | calls | {names} |\n|{'---|' * (4 + len(backends))}")
    for name in args.models:
        spec = SPECS[name]
        size = TINY_SIZE if args.tiny else spec.size
        pipe = build(spec, args.tiny, device, arch)
        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # its note on casting a built model
        pipe.unet.to(dtype)
        diffusers_logging.set_verbosity(verbosity)
        shapes = attention_shapes(pipe.unet, to(unet_inputs(pipe, spec, size, batch=2), device, dtype))
        del pipe
        totals = dict.fromkeys(backends, 0.0)
        for (query, key), calls in shapes.items():
            times = {label: time_shape(query, key, backend, device, dtype, args.repeats)
                     for label, backend in backends.items()}
            for label, ms in times.items():
                totals[label] += calls * (ms if ms is not None else times["default"])
            cells = " | ".join("-" if ms is None else f"{ms:.3f}" for ms in times.values())
            print(f"| {name} {size}² | {query} | {key} | {calls} | {cells} |", flush=True)
        cells = " | ".join(f"**{ms:.2f}**" for ms in totals.values())
        print(f"| {name} {size}² | one forward | all | {sum(shapes.values())} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
