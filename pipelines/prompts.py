"""A1111's prompt syntax, parsed by our own code (compel reads a different grammar).

``extract_networks`` takes the extra-network tags out of a prompt: ``<lora:name:w>``,
``<lora:name:te_w:unet_w>`` (or named ``te=``/``unet=``; ``<lyco:...>`` is the same tag) and ``<hypernet:name:w>``,
weight 1 when left out, as A1111's ``extra_networks.parse_prompt`` does; a LoRA's ``lbw=`` (or a third part that is
no number) is its block weights, as the LoRA Block Weight extension reads them. Other ``<...>`` text stays in the
prompt.

``parse_prompt_attention`` follows A1111's ``prompt_parser.parse_prompt_attention``: ``(x)`` multiplies the
weight by 1.1, ``[x]`` divides it by 1.1, ``(x:1.5)`` multiplies it by 1.5; brackets nest and multiply;
``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are literal characters; brackets left open are closed at the end;
neighbouring pieces of equal weight are merged; ``BREAK`` (a whole word, in capitals) starts a new chunk. One
deliberate difference: a ``BREAK`` inside brackets stays a break (A1111 multiplies its marker's weight and
then reads the word ``BREAK`` as text).

``composable_parts`` splits a prompt into A1111's composable-diffusion parts: ``AND`` (a whole word, in capitals)
separates them, and a part ending in ``:number`` has that weight (1 otherwise); ``composable.py`` guides by each.

``regional_prompt`` reads the Regional Prompter extension's keywords (``regions.py`` lays the parts out): the text
before ``ADDCOMM`` goes in front of every part, the text before ``ADDBASE`` guides the whole picture, and the rest
is split into cells by ``ADDROW`` and ``ADDCOL`` or, without those, by ``BREAK``; ``AND`` counts as ``BREAK``, as
the extension converts it.

``is_template`` says whether a prompt has the Dynamic Prompts extension's syntax (``{a|b}``, ``__wildcard__``), which
its library reads (``dynamic_prompts.py``) before any of the above; ``matrix_parts`` splits a prompt matrix's prompt
around it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

BREAK = "BREAK"  # a parsed piece ``(BREAK, BREAK_WEIGHT)`` marks a forced chunk boundary
BREAK_WEIGHT = -1.0

_NETWORK_TAG = re.compile(r"<(lora|lyco|hypernet):([^>]+)>")  # "lyco": A1111's old name for LyCORIS files
_ATTENTION = re.compile(r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|   # escapes (a lone backslash vanishes, as in A1111)
\(|\[|
:\s*([+-]?[.\d]+)\s*\)|       # the end of (text:weight)
\)|]|
[^\\()\[\]:]+|
:
""", re.X)
_BREAK_WORD = re.compile(r"\s*\bBREAK\b\s*", re.S)
ROUND, SQUARE = 1.1, 1 / 1.1


@dataclass(frozen=True)
class NetworkUse:
    """One extra-network tag of a prompt. A hypernetwork's strength is in both weights."""
    kind: Literal["lora", "hypernet"]
    name: str
    te_weight: float = 1.0
    unet_weight: float = 1.0
    blocks: str = ""  # LoRA Block Weight's ``lbw=``: a preset's name or a list of weights (``networks.block_weights``)


def extract_networks(prompt: str) -> tuple[str, list[NetworkUse]]:
    """The prompt without its ``<lora:...>``/``<hypernet:...>`` tags, and the tags in order of appearance.
    A weight that is not a number raises ``ValueError`` naming the tag."""
    uses: list[NetworkUse] = []

    def take(match: re.Match) -> str:
        kind, args = match.group(1), match.group(2).split(":")
        positional = [a for a in args if "=" not in a]
        named = dict(a.split("=", 1) for a in args if "=" in a)
        blocks = named.get("lbw", "").strip()
        if kind != "hypernet" and len(positional) > 2 and not _is_number(positional[2]):
            blocks = blocks or positional.pop(2).strip()  # LoRA Block Weight's first form: <lora:name:1:OUTD>
        try:
            te = float(named.get("te", positional[1] if len(positional) > 1 else 1.0))
            unet = float(named.get("unet", positional[2] if len(positional) > 2 else te))
        except ValueError:
            te = unet = math.nan
        if not (math.isfinite(te) and math.isfinite(unet)):  # "nan" and "inf" parse as floats
            raise ValueError(f"{match.group(0)}: the weight is not a number")
        if kind == "hypernet":
            unet = te
        uses.append(NetworkUse("lora" if kind == "lyco" else kind, positional[0].strip() if positional else "", te,
                               unet, "" if kind == "hypernet" else blocks))
        return ""

    return _NETWORK_TAG.sub(take, prompt), uses


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """``text`` as ``(piece, weight)`` pairs; ``(BREAK, BREAK_WEIGHT)`` marks a ``BREAK``."""
    pieces: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            if piece[1] != BREAK_WEIGHT:
                piece[1] *= factor

    for match in _ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(pieces))
        elif token == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open:
            multiply(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            multiply(round_open.pop(), ROUND)
        elif token == "]" and square_open:
            multiply(square_open.pop(), SQUARE)
        else:
            for i, part in enumerate(_BREAK_WORD.split(token)):
                if i:
                    pieces.append([BREAK, BREAK_WEIGHT])
                pieces.append([part, 1.0])
    for start in round_open:
        multiply(start, ROUND)
    for start in square_open:
        multiply(start, SQUARE)

    merged: list[list] = []
    for piece in pieces or [["", 1.0]]:
        if merged and merged[-1][1] == piece[1] != BREAK_WEIGHT:
            merged[-1][0] += piece[0]
        else:
            merged.append(piece)
    return [(piece, weight) for piece, weight in merged]


_AND = re.compile(r"\bAND\b")
_PART_WEIGHT = re.compile(r"^(.*?)(?:\s*:\s*([+-]?(?:\d+\.?\d*|\.\d+)))?\s*$", re.S)


def composable_parts(prompt: str) -> list[tuple[str, float]]:
    """(text, weight) of each part of ``prompt`` (A1111's ``get_multicond_prompt_list``): ``a castle AND a dragon:0.7``
    is ``[("a castle", 1.0), (" a dragon", 0.7)]``. As in A1111, a prompt without ``AND`` ending in ``:number`` is one
    part of that weight; ``(word:1.2)`` ends in ``)`` and stays emphasis."""
    parts = []
    for part in _AND.split(prompt):
        text, weight = _PART_WEIGHT.match(part).groups()
        parts.append((text, 1.0 if weight is None else float(weight)))
    return parts


REGION_WORDS = ("ADDCOMM", "ADDBASE", "ADDROW", "ADDCOL", BREAK, "AND")


def _word(word: str) -> re.Pattern:
    return re.compile(rf"\s*\b{word}\b\s*")


@dataclass(frozen=True)
class RegionalPrompt:
    """A Regional Prompter prompt's texts: ``cells`` by outer group (rows or columns, as the caller's ``outer``
    word says), each group's cells in order; ``flat`` when only ``BREAK`` separated them (one group)."""

    common: str
    base: str | None
    cells: tuple[tuple[str, ...], ...]
    flat: bool


WILDCARD_WRAP = "__"


def is_template(prompt: str) -> bool:
    """Whether Dynamic Prompts would read the prompt (it leaves one without braces or wildcards as it is)."""
    return "{" in prompt or WILDCARD_WRAP in prompt


def matrix_parts(prompt: str) -> list[str]:
    """The prompt split at each ``|`` for A1111's prompt matrix, but not inside Dynamic Prompts' braces: ``a
    {red|blue} house|at night`` has two parts (A1111 splits at every ``|``, which breaks such a template)."""
    parts, depth, start = [], 0, 0
    for at, char in enumerate(prompt):
        depth = max(depth + (char == "{") - (char == "}"), 0)
        if char == "|" and not depth:
            parts.append(prompt[start:at])
            start = at + 1
    return [*parts, prompt[start:]]


def has_regions(prompt: str) -> bool:
    """Whether the prompt has a keyword the extension acts on (it stays off for a prompt without one)."""
    return any(_word(word).search(prompt) for word in REGION_WORDS)


def regional_prompt(prompt: str, outer: str, inner: str, use_common: bool = False,
                    use_base: bool = False) -> RegionalPrompt:
    """The texts of ``prompt``: ``outer`` and ``inner`` are ``ADDROW`` and ``ADDCOL`` in the order the splitting
    nests them. *Use common prompt* and *Use base prompt* take the first ``BREAK`` part when the keyword is
    missing, as in the extension."""
    text = _word("AND").sub(f" {BREAK} ", prompt)
    taken = {}
    for word, wanted in (("ADDCOMM", use_common), ("ADDBASE", use_base)):
        for separator in (word, BREAK) if wanted else (word,):
            first, *rest = _word(separator).split(text, maxsplit=1)
            if rest:
                taken[word], text = first.strip(), rest[0]
                break
    flat = not _word(outer).search(text) and not _word(inner).search(text)
    groups = ([_word(BREAK).split(text)] if flat
              else [_word(inner).split(group) for group in _word(outer).split(text)])
    return RegionalPrompt(taken.get("ADDCOMM", ""), taken.get("ADDBASE"),
                          tuple(tuple(cell.strip() for cell in group) for group in groups), flat)


# -- prompt editing (A1111's scheduling: [from:to:when], [to:when], [from::when], [a|b]) --------------------------

_NUMBER = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*")


@dataclass(frozen=True)
class _Scheduled:
    before: tuple
    after: tuple
    when: str  # as written: with a "." a share of the steps, else a step number


@dataclass(frozen=True)
class _Alternate:
    options: tuple


def _parse_edits(text: str, start: int = 0, closing: str = "") -> tuple[list, int]:
    """Nodes (plain text, ``_Scheduled``, ``_Alternate``, nested lists) up to ``closing`` or the end; emphasis
    brackets stay text around their parsed insides, for ``parse_prompt_attention`` later."""
    nodes: list = []
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            nodes.append(text[i:i + 2])
            i += 2
        elif char in closing:
            return nodes, i
        elif char == "(":
            inner, end = _parse_edits(text, i + 1, ")")
            nodes.append(["(", inner, text[end:end + 1]])
            i = end + 1
        elif char == "[":
            node, i = _bracket(text, i)
            nodes.append(node)
        else:
            nodes.append(char)
            i += 1
    return nodes, i


def _bracket(text: str, start: int) -> tuple:
    """A ``[...]`` at ``start``: an edit, an alternation, or de-emphasis (kept as text); its end."""
    parts, seps, i = [], [], start + 1
    while True:
        part, i = _parse_edits(text, i, ":|]")
        parts.append(part)
        if i >= len(text) or text[i] == "]":
            break
        seps.append(text[i])
        i += 1
    end = i + 1
    if i < len(text) and seps and set(seps) == {"|"}:
        return _Alternate(tuple(tuple(p) for p in parts)), end
    if i < len(text) and seps and set(seps) == {":"} and len(parts) in (2, 3):
        when = _NUMBER.fullmatch(_render(parts[-1], 0, 0))
        if when:
            before = tuple(parts[0]) if len(parts) == 3 else ()
            return _Scheduled(before, tuple(parts[-2]), when.group(1)), end
    inner = [part if n == 0 else [seps[n - 1], part] for n, part in enumerate(parts)]
    return ["[", inner, text[i:i + 1]], end


def _when(written: str, steps: int) -> int:
    value = float(written) * steps if "." in written else float(written)
    return min(steps, int(value))


def _render(node, step: int, steps: int) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, _Scheduled):
        return _render(node.before if step <= _when(node.when, steps) else node.after, step, steps)
    if isinstance(node, _Alternate):
        return _render(node.options[(step - 1) % len(node.options)], step, steps)
    return "".join(_render(child, step, steps) for child in node)


def _boundaries(node, steps: int) -> set[int]:
    if isinstance(node, _Scheduled):
        when = _when(node.when, steps)
        return ({when} if when >= 1 else set()) | _boundaries([node.before, node.after], steps)
    if isinstance(node, _Alternate):
        return set(range(1, steps + 1))
    if isinstance(node, list | tuple):
        return set().union(*(_boundaries(child, steps) for child in node))
    return set()


def prompt_schedule(prompt: str, steps: int) -> list[tuple[int, str]]:
    """A1111's prompt editing over ``steps`` sampling steps: ``(last step, text)`` pairs in order, each text used up
    to and including its step (1-based). ``[from:to:when]`` is ``from`` up to step ``when`` and ``to`` after it
    (``when`` with a decimal point is a share of the steps, 0.5 of 20 is 10); ``[to:when]`` adds, ``[from::when]``
    removes; ``[a|b]`` alternates every step. Anything else in brackets is the attention syntax, left as text."""
    tree, _ = _parse_edits(prompt)
    schedule: list[tuple[int, str]] = []
    for end in sorted(_boundaries(tree, steps) | {steps}):
        text = _render(tree, end, steps)
        if schedule and schedule[-1][1] == text:
            schedule[-1] = (end, text)
        else:
            schedule.append((end, text))
    return schedule
