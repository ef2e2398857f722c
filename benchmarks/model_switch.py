"""Model switch time through the registry: between two resident models, with an eviction, and cold loads.

    .venv/bin/python -m benchmarks.model_switch [--runs 5] [--full-size]

Default (CPU): the embedded model as a diffusers folder, a copy of it under another name, and the same weights
as a single-file checkpoint in the original SD layout, in a temp models dir. With a GPU, or ``--full-size``:
random-weight SD 1.5 and SDXL at full size (fp16 on the GPU), each as a single file and as a diffusers folder.

- *switch, both resident*: a request for the other model when both are loaded (lease + task pipeline);
- *switch with eviction*: the budget holds one model, so each switch drops one and loads the other;
- *cold load*: from disk (files already in the OS page cache after the first run) onto the device.
Medians of ``--runs``; every timing ends with a device synchronize.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn, calls: int, device: str) -> float:
    """Median seconds of ``fn(i)`` over ``calls`` calls."""
    times = []
    for i in range(calls):
        started = time.perf_counter()
        fn(i)
        _sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def embedded_models(root: Path) -> list[str]:
    """The embedded model, a copy under another name, and a single-file copy with its config folder."""
    from pipelines.services import DEFAULT_MODEL
    from training.single_file import save_config_folder, save_single_file

    source = ROOT / "models" / "Stable-diffusion" / DEFAULT_MODEL
    models = root / "Stable-diffusion"
    shutil.copytree(source, models / DEFAULT_MODEL)
    shutil.copytree(source, models / f"{DEFAULT_MODEL}-copy")
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(source, local_files_only=True)
    save_config_folder(pipe, root / "configs" / "sd15")  # the file's tiny architecture, under its kind
    save_single_file(pipe, models / f"{DEFAULT_MODEL}-file.safetensors", "sd1")
    return [DEFAULT_MODEL, f"{DEFAULT_MODEL}-copy", f"{DEFAULT_MODEL}-file"]


def full_size_models(root: Path) -> list[str]:
    """Random-weight SD 1.5 and SDXL (fp16) from the shipped config folders, as single files and folders."""
    import torch

    from pipelines.checkpoints import CONFIGS_DIR, load_checkpoint
    from training.single_file import meta_pipeline, to_original

    models = root / "Stable-diffusion"
    models.mkdir(parents=True)
    names = []
    for kind, layout in (("sd15", "sd1"), ("sdxl", "sdxl")):
        from safetensors.torch import save_file

        state = to_original(meta_pipeline(CONFIGS_DIR / kind), layout)
        file = models / f"{kind}-random-file.safetensors"
        save_file({k: torch.randn(v.shape, dtype=torch.float16) * 0.02 for k, v in state.items()}, str(file))
        load_checkpoint(file, root, torch.float16).save_pretrained(models / f"{kind}-random")
        names += [f"{kind}-random", f"{kind}-random-file"]
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--full-size", action="store_true", help="full-size random models even without a GPU")
    args = parser.parse_args()

    import torch

    from pipelines.registry import Registry

    device = "cuda" if torch.cuda.is_available() else "cpu"
    full = device == "cuda" or args.full_size
    dtype = torch.float16 if full else torch.float32  # as the files are stored: the registry estimates from them
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = full_size_models(root) if full else embedded_models(root)
        registry = Registry(root, device=device, dtype=dtype, memory_mode="normal")

        def use(name: str) -> None:
            with registry.lease(name) as model:
                model.pipeline("txt2img")

        def switch(first: str, second: str) -> float:
            """Median time of a request for the other model, alternating second, first, second, ..."""
            return median_seconds(lambda i: use((second, first)[i % 2]), 2 * args.runs, device)

        def cold(name: str) -> float:
            def load(_):
                registry.unload(name)
                use(name)

            return median_seconds(load, args.runs, device)

        first, second = (names[0], names[2]) if full else (names[0], names[1])  # two different models
        use(first)
        use(second)
        rows = [(f"{first} <-> {second}", "switch, both resident", switch(first, second))]
        sizes = sorted(e["bytes"] for e in registry.resident())
        budget, registry.memory_budget = registry.memory_budget, sizes[-1] + sizes[0] // 2  # either, not both
        registry.unload(second)
        rows.append((f"{first} <-> {second}", "switch with eviction", switch(first, second)))
        registry.memory_budget = budget
        for name in names:
            kind = "single file" if name.endswith("-file") else "folder"
            rows.append((name, f"cold load ({kind})", cold(name)))

    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nModel switch times on {where} ({dtype}), median of {args.runs}\n")
    print(f"| {'models':<44} | {'operation':<26} | {'time':>10} |")
    print(f"|{'-' * 46}|{'-' * 28}|{'-' * 12}|")
    for models, operation, seconds in rows:
        value = f"{seconds * 1e3:.3f} ms" if seconds < 0.01 else f"{seconds:.3f} s"
        print(f"| {models:<44} | {operation:<26} | {value:>10} |")


if __name__ == "__main__":
    main()
