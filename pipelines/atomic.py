"""Files rewritten in place that no reader ever sees half-written: written whole under a temporary name beside them,
then renamed over the old one (``os.replace`` is atomic within a filesystem)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def replace_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    """``path`` now holds ``text`` (its line ends as they are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(handle, "w", newline="", encoding=encoding) as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
