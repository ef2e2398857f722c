"""Files rewritten in place (settings, an embedding in training) that no reader ever sees half-written: written whole
under a temporary name beside them, then renamed over the old one (``os.replace`` is atomic within a filesystem).
Settings files (A1111's config.json and ui-config.json, which people edit and copy) are one JSON object each, read
leniently."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable


def replace_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    """``path`` now holds ``text`` (its line ends as they are)."""
    replace_file(path, lambda file: file.write(text.encode(encoding)))


def replace_file(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``path`` now holds what ``write`` writes to the open file it is given (an embedding in training, say)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_json_object(path: Path | None) -> dict[str, Any]:
    """The JSON object ``path`` holds ({} when there is no file), or a ValueError saying why it holds none."""
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} could not be read ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds {type(data).__name__}, not a JSON object")
    return data


def write_json_object(path: Path, data: dict[str, Any]) -> None:
    replace_text(path, json.dumps(data, indent=4, ensure_ascii=False) + "\n")
