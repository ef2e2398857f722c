"""Memory: the default budget from free memory, and A1111-style low-memory modes chosen per model.

- ``normal``: the whole pipeline on the device.
- ``medvram`` (A1111's ``--medvram``): diffusers' model CPU offload keeps one component (text encoder, UNet,
  VAE) on the device at a time; the VAE decodes a batch one image at a time (slicing) and large images in
  tiles (tiling, which leaves pictures up to the VAE's native size untouched).
- ``lowvram`` (``--lowvram``): sequential offload moves one layer at a time, plus VAE slicing and tiling and
  attention slicing: slowest, smallest.
- ``auto``: ``normal`` when the model fits the memory left under the budget, ``medvram`` when its largest
  component does, ``lowvram`` otherwise.

On the CPU the weights already live in RAM, so there is nothing to offload to and offloading is skipped; the
slicing and tiling still apply (they lower peak RAM too).
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

MODES = ("auto", "normal", "medvram", "lowvram")
HEADROOM = 0.8  # share of free memory given to resident models; the rest is for activations and others


def free_memory(device: str) -> int:
    """Bytes free now: on CUDA ``mem_get_info``'s free (not total, another process may hold some); on the CPU
    the kernel's MemAvailable."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def usage(device: str) -> dict:
    """A1111's ``/sdapi/v1/memory``: this process's RAM (``used`` is its resident set) and, on CUDA, the card's
    memory and torch's allocator counters (current and peak)."""
    import psutil
    import torch

    total, used = psutil.virtual_memory().total, psutil.Process().memory_info().rss
    report: dict = {"ram": {"free": total - used, "used": used, "total": total}, "cuda": {"error": "unavailable"}}
    if device.startswith("cuda") and torch.cuda.is_available():
        free, card = torch.cuda.mem_get_info(torch.device(device))
        stats = torch.cuda.memory_stats(torch.device(device))

        def counter(name: str) -> dict:
            return {"current": stats.get(f"{name}.all.current", 0), "peak": stats.get(f"{name}.all.peak", 0)}

        report["cuda"] = {
            "system": {"free": free, "used": card - free, "total": card},
            "active": counter("active_bytes"), "allocated": counter("allocated_bytes"),
            "reserved": counter("reserved_bytes"), "inactive": counter("inactive_split_bytes"),
            "events": {"retries": stats.get("num_alloc_retries", 0), "oom": stats.get("num_ooms", 0)},
        }
    return report


def default_budget(device: str) -> int:
    return int(free_memory(device) * HEADROOM)


def module_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def choose_mode(setting: str, total: int, largest: int, available: int) -> str:
    """The mode for a model of ``total`` bytes whose largest component has ``largest``, with ``available``
    bytes left under the budget."""
    if setting != "auto":
        return setting
    if total <= available:
        return "normal"
    return "medvram" if largest <= available else "lowvram"


def place(pipe, setting: str, device: str, available: int) -> str:
    """Put a freshly loaded (CPU) pipeline on ``device`` in the mode chosen for it, and return the mode. A lone
    model (a ControlNet) just moves: it runs inside a pipeline that is placed already."""
    import torch

    if not hasattr(pipe, "components"):
        pipe.to(device)
        return "normal"
    sizes = [module_bytes(m) for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    mode = choose_mode(setting, sum(sizes), max(sizes, default=0), available)
    if mode == "normal":
        pipe.to(device)
        return mode
    log.info("memory mode %s for a %.1f GiB model (%.1f GiB left in the budget)", mode, sum(sizes) / 2**30,
             available / 2**30)
    if torch.device(device).type != "cpu":
        if mode == "medvram":
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.enable_sequential_cpu_offload(device=device)
    if hasattr(pipe, "vae"):  # Kandinsky's MoVQ has neither
        pipe.vae.enable_slicing()
        pipe.vae.enable_tiling()
    if mode == "lowvram":
        pipe.enable_attention_slicing()
    return mode
