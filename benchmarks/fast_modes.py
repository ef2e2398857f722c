"""The fast modes on the embedded model, on this machine: what each one gains and how far it moves the picture.

    .venv/bin/python -m benchmarks.fast_modes [--model easel-shapes] [--steps 20] [--repeats 3]

Rows: the exact path, step cache 2 to 5 (``step_cache.py``), ``--weights int8``, ``fp8``, ``int8-fast`` and
``fp8-fast`` (``quantize.py``), each through Easel's Registry and ``run_pipeline`` (64x64, Euler a, CFG 7, one
seed). Per row: median seconds per picture, speed-up, the final latents' relative error against the exact path's,
the mean absolute pixel difference (0-255) of the decoded pictures, and the UNet's stored bytes.
``benchmarks/gpu_speed.py`` has the same modes as rows for the GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.gpu_speed import median, relative_error  # noqa: E402
from pipelines.generate import decode_latents, run_pipeline  # noqa: E402
from pipelines.quantize import MODES as WEIGHT_MODES, tensor_bytes  # noqa: E402
from pipelines.registry import Registry  # noqa: E402
from pipelines.request import GenerationRequest  # noqa: E402
from pipelines.samplers import make_scheduler  # noqa: E402
from pipelines.speed import SpeedOptions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODES = [("exact", 0, "full"), *((f"step cache {n}", n, "full") for n in (2, 3, 4, 5)),
         *((f"--weights {mode}", 0, mode) for mode in WEIGHT_MODES)]


def measure(args) -> list[dict]:
    rows, reference = [], None
    for label, interval, weights in MODES:
        registry = Registry(args.models_dir, device="cpu", speed=SpeedOptions(weights=weights), offline=True)
        request = GenerationRequest(prompt="a red circle on a blue background", steps=args.steps, width=64, height=64,
                                    seed=1, model=args.model, step_cache=interval)
        with registry.lease(args.model) as model:
            pipe = model.pipeline("txt2img")

            def denoise():
                pipe.scheduler = make_scheduler(request.sampler, request.scheduler, model.pipe.scheduler.config, [1])
                return run_pipeline(pipe, request, [1], latent_output=True)

            latents = denoise()
            seconds = median(denoise, args.repeats, "cpu")
            picture = np.asarray(decode_latents(pipe, latents)[0], dtype=np.float32)
            unet_bytes = tensor_bytes(pipe.unet)
        reference = reference or {"latents": latents, "picture": picture, "seconds": seconds}
        rows.append({"mode": label, "seconds": seconds, "speedup": reference["seconds"] / seconds,
                     "rel_err": relative_error(latents, reference["latents"]),
                     "pixel_diff": float(np.abs(picture - reference["picture"]).mean()),
                     "unet_mib": unet_bytes / 2**20, "ok": bool(torch.isfinite(latents).all())})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="easel-shapes")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows = measure(args)
    print(f"\n{args.model}, 64x64, {args.steps} steps, Euler a, CFG 7, CPU {torch.get_num_threads()} thread(s), "
          f"median of {args.repeats}\n")
    print("| mode | s/picture | speed-up | latents rel. err | mean pixel diff (0-255) | UNet MiB | ok |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['seconds']:.3f} | {r['speedup']:.2f}x | {r['rel_err']:.3f} | "
              f"{r['pixel_diff']:.1f} | {r['unet_mib']:.1f} | {'yes' if r['ok'] else 'FAIL'} |")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
