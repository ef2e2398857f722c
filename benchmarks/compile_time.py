"""Compile time of the UNet compiled three ways, on random-weight models of real size, on the CPU or CUDA.

    .venv/bin/python -m benchmarks.compile_time [--models sd15 sdxl] [--size 128] [--repeats 5] [--device cpu]
    .venv/bin/python -m benchmarks.compile_time --tiny --backend eager   # a harness check (tests run it)

The ways, each on the app's ``--fast`` and through ``speed.optimise`` as the registry applies it:

- ``regions``: ``--compile``, each transformer block, resnet and attention layer compiled apart;
- ``whole``: the whole UNet as one graph with every block traced inline (``--compile-mode reduce-overhead`` with
  ``nested_regions=False``, as before nested regions);
- ``whole, nested``: the app's ``--compile-mode reduce-overhead``: the whole UNet as one graph, its transformer
  blocks nested compile regions (each distinct block shape traced and compiled once).

On CUDA the whole ways replay as CUDA graphs (in bf16); on the CPU they run as compiled (in fp32). Per model and
way: the first UNet call (the cold compile: each way compiles into an empty inductor cache of its own), the median
of the later calls, and the output's relative error against the same UNet uncompiled. The decoder's regions are the
same in every way and are not called. The CPU's numbers are what the 2-core machine measures of Dynamo's and
inductor's work; only a GPU gives Triton's share and the CUDA graph's speed (``gpu_speed.py``).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir  # noqa: E402
from torch._inductor.utils import clear_caches  # noqa: E402

from benchmarks.gpu_speed import median, relative_error, timed, to, unet_inputs  # noqa: E402
from benchmarks.random_pipelines import SPECS, TINY_SIZE, architectures, build  # noqa: E402
from pipelines.speed import SpeedOptions, optimise  # noqa: E402

FAST = SpeedOptions(channels_last=True, fuse_qkv=True, compile=True)
WAYS = {"regions": FAST,
        "whole": replace(FAST, compile_mode="reduce-overhead", nested_regions=False),
        "whole, nested": replace(FAST, compile_mode="reduce-overhead")}


def measure(name: str, way: str, size: int, args, arch: dict) -> dict:
    """One way on a freshly built model (the same seeded weights every time), in an empty inductor cache."""
    spec, cuda = SPECS[name], args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    pipe = build(spec, args.tiny, args.device, arch)
    pipe.unet.to(dtype=dtype)  # only the UNet is called
    inputs = to(unet_inputs(pipe, spec, size, batch=2), args.device, dtype)  # CFG's batch

    def call():
        with torch.inference_mode():
            return pipe.unet(**inputs).sample

    eager = call()
    torch._dynamo.reset()
    clear_caches()
    with tempfile.TemporaryDirectory() as kernels, temporary_cache_dir(kernels):
        optimise(pipe, replace(WAYS[way], compile_backend=args.backend))
        first_s, out = timed(call, args.device)
        call_s = median(call, args.repeats, args.device)
    row = {"model": name, "way": way, "size": size, "first_call_s": first_s, "call_s": call_s,
           "rel_err": relative_error(out.float(), eager.float())}
    del pipe, eager, out
    torch._dynamo.reset()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return row


def table(rows: list[dict], header: bool = True) -> str:
    lines = ["| model | way | size | first call s | call s | rel err |", "|---|---|---|---|---|---|"] if header else []
    lines += [f"| {r['model']} | {r['way']} | {r['size']}² | {r['first_call_s']:.1f} | {r['call_s']:.3f} | "
              f"{r['rel_err']:.1e} |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=[name for name in SPECS if name != "kandinsky22"],
                        default=["sd15", "sdxl"])
    parser.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS))
    parser.add_argument("--size", type=int, help="picture size (default: 128 on the CPU, the model's own on CUDA; "
                                                 "tiny: 64)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (eager: Dynamo's share only)")
    parser.add_argument("--tiny", action="store_true", help="tiny configs of the same block layout")
    args = parser.parse_args(argv)
    diffusers_logging.set_verbosity_error()  # not the warning of casting a UNet built in fp16 to fp32
    arch, rows = architectures(), []
    for name in args.models:
        size = args.size or (TINY_SIZE if args.tiny else SPECS[name].size if args.device != "cpu" else 128)
        for way in args.ways:
            rows.append(measure(name, way, size, args, arch))
            print(table(rows[-1:], header=len(rows) == 1), flush=True)
    print(f"\nUNet compile time ({args.device}, {args.backend}, batch 2):\n{table(rows)}")
    return 0 if all(r["rel_err"] < (0.05 if args.device != "cpu" else 1e-4) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
