"""Prompt styles: A1111's ``styles.csv`` (columns ``name``, ``prompt``, ``negative_prompt``) in the models folder.

A request names styles; the engine writes them into its prompts before the job runs, as A1111 does: a style
text holding ``{prompt}`` has the prompt put there, any other is added after the prompt with ", ". The
infotext then shows the prompts as they ran. The file is read again when it changes, so edits need no restart.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import RequestError

FILE = "styles.csv"


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


def merge(style_text: str, prompt: str) -> str:
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


class StyleLibrary:
    def __init__(self, models_dir: str | Path):
        self.path = Path(models_dir) / FILE
        self._read: tuple[tuple, dict[str, Style]] = ((), {})  # (file signature, styles by name)

    def styles(self) -> dict[str, Style]:
        """The file's styles by name, in its order; none without the file."""
        try:
            stat = self.path.stat()
        except OSError:
            return {}
        signature = (stat.st_mtime_ns, stat.st_size)
        if self._read[0] != signature:
            with open(self.path, newline="", encoding="utf-8-sig") as file:  # A1111 writes a byte-order mark
                rows = [row for row in csv.DictReader(file) if (row.get("name") or "").strip()]
            self._read = signature, {row["name"].strip(): Style(row["name"].strip(), row.get("prompt") or "",
                                                                row.get("negative_prompt") or "") for row in rows}
        return self._read[1]

    def apply(self, request):
        """``request`` with its styles written into its prompts (and none left to apply)."""
        if not request.styles:
            return request
        known = self.styles()
        unknown = [name for name in request.styles if name not in known]
        if unknown:
            available = ", ".join(known) or f"none: there is no {self.path}"
            raise RequestError(f"Unknown style {unknown[0]!r}. Available: {available}.", "styles")
        prompt, negative = request.prompt, request.negative_prompt
        for name in request.styles:
            prompt = merge(known[name].prompt, prompt)
            negative = merge(known[name].negative_prompt, negative)
        return replace(request, prompt=prompt, negative_prompt=negative, styles=())
