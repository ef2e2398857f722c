"""Where one job's time and memory went: filled by the engine (load, total, memory) and by ``run_pipeline``
(denoising and decoding), so a comparison measures the same code path every generation takes.

Denoising runs from the pipeline call to its last step's end (for img2img that includes encoding the init
picture); decoding is what the call spends after that (VAE decode and post-processing). On CUDA the clock
waits for the device at those two moments only. Peak memory is CUDA's peak allocation during the job; on other
devices it is the process's resident-set peak since start (a lifetime figure, labelled so), as no per-job
figure exists there.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import asdict, dataclass

import torch


def clock() -> float:
    """Seconds, after the GPU has finished what it was given (so GPU work is counted where it happens)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def process_rss_peak() -> int:
    """The process's peak resident set in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@dataclass
class RunStats:
    load_s: float = 0.0  # what loading the model cost this job; 0 when it was resident
    denoise_s: float = 0.0
    decode_s: float = 0.0
    steps: int = 0  # sampling steps run, all passes together
    total_s: float = 0.0  # load + everything the job did while holding the device
    peak_memory: int | None = None  # bytes
    memory_kind: str = "n/a"  # "CUDA peak allocated" or "process RSS peak"
    parameters: int = 0  # of the whole pipeline (UNet, text encoders, VAE)
    latent_shape: tuple = ()  # (channels, height, width) of the initial noise

    @property
    def cold(self) -> bool:
        return self.load_s > 0

    @property
    def it_per_s(self) -> float:
        return self.steps / self.denoise_s if self.denoise_s else 0.0

    def add_pass(self, started: float, denoised: float | None, steps: int, ended: float) -> None:
        """One pipeline call: ``denoised`` is when its last step ended (None if it ran none)."""
        denoised = denoised or started
        self.denoise_s += denoised - started
        self.decode_s += ended - denoised
        self.steps += steps

    def as_dict(self) -> dict:
        return {**asdict(self), "cold": self.cold, "it_per_s": self.it_per_s, "latent_shape": list(self.latent_shape)}
