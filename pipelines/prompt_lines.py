"""A1111's "Prompts from file or textbox": one job per line of a list, each line a prompt or ``--option value``s.

A line holding "--" is read as A1111 reads it (``--prompt "a cat" --steps 30 --seed 5``; ``--prompt`` and
``--negative_prompt`` take every word up to the next option); any other line is a prompt. A line's prompt and
negative prompt go before or after the tab's own (``position`` "start" or "end", joined by a space), or stand alone
where the tab's is empty. Seeds, as A1111's: each line draws its own when the seed is -1; ``iterate_seed`` gives
line i the seed + i x the images a line makes, ``same_seed`` gives every line the one seed (drawn once when -1); an
option on the line wins over both.
"""

from __future__ import annotations

import random
import shlex
from dataclasses import dataclass
from typing import Any, Callable

from .errors import RequestError
from .request import MAX_SEED, whole_number


def _whole(text: str) -> int:
    return int(text)


def _boolean(text: str) -> bool:
    return text == "true"  # A1111's reading: anything else is false


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


# A1111's options -> (request field, how its value reads).
OPTIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "sd_model": ("model", str), "styles": ("styles", _names), "seed": ("seed", _whole), "subseed": ("subseed", _whole),
    "subseed_strength": ("subseed_strength", float), "seed_resize_from_w": ("seed_resize_from_w", _whole),
    "seed_resize_from_h": ("seed_resize_from_h", _whole), "sampler_name": ("sampler", str),
    "sampler_index": ("sampler", str), "batch_size": ("batch_size", _whole), "n_iter": ("batch_count", _whole),
    "steps": ("steps", _whole), "cfg_scale": ("cfg_scale", float), "width": ("width", _whole),
    "height": ("height", _whole), "tiling": ("tiling", _boolean),
}
TEXTS = ("prompt", "negative_prompt")  # their values are every word up to the next option
# A1111's options that Easel does not take: where outputs go is the server's to say, and there is no face restorer.
NOT_TAKEN = ("outpath_samples", "outpath_grids", "prompt_for_display", "restore_faces", "do_not_save_grid",
             "do_not_save_samples")
POSITIONS = ("start", "end")


def read_line(line: str, number: int) -> dict[str, Any]:
    """A line's request values: its options, or the line as a prompt. Errors name the line (``number``)."""
    if "--" not in line:
        return {"prompt": line}

    def refused(message: str) -> RequestError:
        return RequestError(f"Line {number} of the prompt list: {message}", "prompt_lines")

    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise refused(f"{exc} ({line!r}).") from None
    values: dict[str, Any] = {}
    at = 0
    while at < len(words):
        word = words[at]
        option = word[2:]
        if not word.startswith("--"):
            raise refused(f"expected an option such as --steps, got {word!r}.")
        if option in TEXTS:
            end = next((i for i in range(at + 1, len(words)) if words[i].startswith("--")), len(words))
            values[option] = " ".join(words[at + 1:end])
            at = end
            continue
        if option in NOT_TAKEN:
            raise refused(f"--{option} is an A1111 option Easel does not take.")
        if option not in OPTIONS:
            raise refused(f"unknown option --{option}. Known: {', '.join(f'--{o}' for o in (*TEXTS, *OPTIONS))}.")
        if at + 1 >= len(words):
            raise refused(f"--{option} needs a value.")
        field, read = OPTIONS[option]
        try:
            values[field] = read(words[at + 1])
        except ValueError:
            raise refused(f"--{option} takes a number, got {words[at + 1]!r}.") from None
        at += 2
    return values


@dataclass(frozen=True)
class PromptLines:
    text: str
    iterate_seed: bool = False
    same_seed: bool = False
    position: str = "start"

    def jobs(self, values: dict[str, Any]) -> list[dict[str, Any]]:
        """One job's request values per line of the list, from the tab's ``values``."""
        if self.position not in POSITIONS:
            raise RequestError(f"Insert prompts at {self.position!r}? Choose start or end.", "prompt_lines")
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        seed = whole_number(values.get("seed", -1), "Seed", "seed")
        if seed == -1 and (self.iterate_seed or self.same_seed):
            seed = random.randint(0, MAX_SEED)
        per_line = (whole_number(values.get("batch_size", 1), "Batch size", "batch_size")
                    * whole_number(values.get("batch_count", 1), "Batch count", "batch_count"))
        jobs = []
        for index, line in enumerate(lines):
            own = read_line(line, index + 1)
            job = {**values, "seed": (seed + index * per_line) % (MAX_SEED + 1) if self.iterate_seed else seed, **own}
            for name in TEXTS:
                if own.get(name) and values.get(name):
                    parts = (own[name], values[name]) if self.position == "start" else (values[name], own[name])
                    job[name] = " ".join(parts)
            jobs.append(job)
        return jobs


def expand(values: dict[str, Any]) -> list[dict[str, Any]]:
    """A tab's jobs: one per line where its prompt list (``prompt_lines``, with ``lines_iterate_seed``,
    ``lines_same_seed`` and ``lines_position``) has any, else its values as they are."""
    text = values.get("prompt_lines") or ""
    if not text.strip():
        return [values]
    lines = PromptLines(text, bool(values.get("lines_iterate_seed")), bool(values.get("lines_same_seed")),
                        values.get("lines_position") or "start")
    return lines.jobs(values)
