"""Prompt styles: A1111's ``styles.csv`` (columns ``name``, ``prompt``, ``negative_prompt``) in the models folder.

A request names styles; the engine writes them into its prompts before the job runs, as A1111 does: a style
text holding ``{prompt}`` has the prompt put there, any other is added after the prompt with ", ". The
infotext then shows the prompts as they ran. The file is read again when it changes, so edits need no restart.
The UI's style editor (A1111's) saves and deletes styles: the file is written whole, as A1111 writes it (a byte-order
mark, its three columns), to a temporary file first and then put in place, so a reader never sees half of it.
"""

from __future__ import annotations

import csv
import io
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from .atomic import replace_text
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
        self._writing = threading.Lock()  # one edit at a time: each rewrites the file from what it read

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

    def written(self, names, prompt: str, negative_prompt: str) -> tuple[str, str]:
        """The prompts with the styles ``names`` written into them, in order."""
        known = self.styles()
        unknown = [name for name in names if name not in known]
        if unknown:
            available = ", ".join(known) or f"none: there is no {self.path}"
            raise RequestError(f"Unknown style {unknown[0]!r}. Available: {available}.", "styles")
        for name in names:
            prompt = merge(known[name].prompt, prompt)
            negative_prompt = merge(known[name].negative_prompt, negative_prompt)
        return prompt, negative_prompt

    def apply(self, request):
        """``request`` with its styles written into its prompts (and none left to apply)."""
        if not request.styles:
            return request
        prompt, negative = self.written(request.styles, request.prompt, request.negative_prompt)
        return replace(request, prompt=prompt, negative_prompt=negative, styles=())

    def save(self, style: Style) -> None:
        """Add ``style``, or change the style of its name where it stands."""
        name = style.name.strip()
        if not name:
            raise RequestError("A style needs a name.", "name")
        with self._writing:
            self._write({**self.styles(), name: replace(style, name=name)})

    def delete(self, name: str) -> None:
        with self._writing:
            styles = dict(self.styles())
            if styles.pop(name, None) is None:
                raise RequestError(f"There is no style {name!r} to delete.", "name")
            self._write(styles)

    def _write(self, styles: dict[str, Style]) -> None:
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(("name", "prompt", "negative_prompt"))
        writer.writerows((style.name, style.prompt, style.negative_prompt) for style in styles.values())
        replace_text(self.path, text.getvalue(), encoding="utf-8-sig")
        self._read = ((), {})  # read afresh, even where the clock is too coarse to change the file's time
