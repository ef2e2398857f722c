"""What the benchmarks on the embedded model share: their command line (seeds, timed runs, CPU threads) and the app's
engine over the repository's models, saving nothing."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent


def embedded_engine(doc: str, argv: list[str] | None, seeds: int, options=None):
    """(the parsed command line, the engine on its threads); ``doc``'s first paragraph describes the command, and
    ``options`` (given the parser) adds the benchmark's own."""
    import torch

    from pipelines.engine import Engine
    from pipelines.outputs import OutputWriter
    from pipelines.registry import Registry

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=seeds)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    if options is not None:
        options(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args, Engine(Registry(ROOT / "models"), OutputWriter(Path(tempfile.mkdtemp()), enabled=False))
