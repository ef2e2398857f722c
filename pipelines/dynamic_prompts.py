"""Dynamic Prompts (adieyal's sd-dynamic-prompts for A1111, on its ``dynamicprompts`` library, which InvokeAI uses
too): the prompt and the negative prompt are templates from which each picture of a job gets prompts of its own.

``{red|blue|green}`` picks one, ``{2$$a|b|c}`` two joined by ",", ``{0.5::a|2::b}`` by weight; ``__colors__`` a
line of ``colors.txt`` in the models folder's ``wildcards`` (``__animals/cats__`` from a sub-folder, ``__animals/*__``
from any there; YAML and JSON files too; the library sorts a file's lines), nested as deep as wanted.

Random mode (the extension's default): the job's pictures take the prompts a generator seeded with the job's seed
draws, in order, so a seed gives the same prompts again (*Unlink seed from prompt*: drawn unseeded); the negative
prompt's are drawn after them. *Combinatorial generation*: every combination in order instead (at most *Max
generations*, 0 for all, each *Combinatorial batches* times), and the batch count follows; where the negative
prompt makes another count, the shorter list is repeated. A prompt without ``{`` or ``__`` is no template: nothing
here touches it, so A1111's syntax and escapes pass as they are. A template that does not parse and a wildcard no
file holds are refused with a message (the extension writes the wildcard into the prompt).
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from itertools import cycle, islice
from pathlib import Path

from dynamicprompts.generators import CombinatorialPromptGenerator, RandomPromptGenerator
from dynamicprompts.wildcards import WildcardManager
from pyparsing import ParseBaseException

from .errors import RequestError
from .infotext import LINE_KEYS
from .prompts import is_template
from .request import MAX_BATCH_COUNT, GenerationRequest

FOLDER = "wildcards"  # in the models folder
_UNRESOLVED = re.compile(r"__([^_\s][^\s]*?)__")  # a wildcard the library found no values for, left as it was


def templates(request: GenerationRequest) -> dict[str, str]:
    """The extension's infotext keys of a job whose templates were resolved (``Wildcards.resolved``)."""
    if not request.all_prompts:
        return {}
    return {key: text for key, text in zip(LINE_KEYS, (request.prompt, request.negative_prompt)) if text}


class Wildcards:
    """The wildcard files (read afresh for every job, so edits need no restart) and the templates resolved by them."""

    def __init__(self, models_dir: str | Path):
        self.folder = Path(models_dir) / FOLDER
        self.ignore_whitespace = False  # the Settings tab's: newlines, tabs and runs of spaces become one space

    def _manager(self) -> WildcardManager:
        """A manager of the files as they are now (it caches what it reads; a folder not made yet holds none)."""
        return WildcardManager(self.folder if self.folder.is_dir() else None)

    def names(self) -> list[str]:
        """Every wildcard's name, as a prompt writes it between ``__``."""
        return sorted(self._manager().get_collection_names())

    def resolved(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` (its seed drawn) with every picture's prompts when they are templates and Dynamic Prompts is
        on, its batch count the combinations' in combinatorial mode; else ``request`` itself."""
        if not request.templated:
            return request
        per_batch = request.pictures_per_batch
        batches = request.dp_combinatorial_batches if request.combinatorial else 1
        if request.combinatorial:
            generator = CombinatorialPromptGenerator(self._manager(), ignore_whitespace=self.ignore_whitespace)
            room = MAX_BATCH_COUNT * per_batch // batches
            count = min(request.dp_max_generations or room + 1, room + 1)
        else:
            generator = RandomPromptGenerator(self._manager(), seed=request.seed,
                                              unlink_seed_from_prompt=request.dp_unlink_seed,
                                              ignore_whitespace=self.ignore_whitespace)
            room = count = request.batch_count * per_batch
        made = [_made(generator, text, count, field) * batches
                for text, field in ((request.prompt, "prompt"), (request.negative_prompt, "negative_prompt"))]
        if max(map(len, made)) > room * batches:
            raise RequestError(f"Combinatorial generation makes more than {MAX_BATCH_COUNT} batches of {per_batch} "
                               "here: set Max generations, or raise the batch size.", "dp_max_generations")
        count = max(map(len, made))
        prompts, negatives = (tuple(islice(cycle(texts), count)) for texts in made)
        self._check_found(prompts + negatives)
        return replace(request, all_prompts=prompts, all_negative_prompts=negatives,
                       batch_count=math.ceil(count / per_batch))

    def _check_found(self, texts: tuple[str, ...]) -> None:
        missing = sorted({name for text in texts for name in _UNRESOLVED.findall(text)})
        if missing:
            known = ", ".join(f"__{name}__" for name in self.names()) or "none yet"
            raise RequestError(f"No wildcard file holds __{missing[0]}__: put {missing[0]}.txt (a value a line) in "
                               f"{self.folder}. Known: {known}.", "prompt")


def _made(generator, text: str, count: int, field: str) -> list[str]:
    """The prompts ``generator`` makes of ``text`` (``count`` at most); a text that is no template stays as it is."""
    if not is_template(text):
        return [text]
    try:
        return generator.generate(text, count)
    except ParseBaseException as exc:
        where = "negative prompt" if field == "negative_prompt" else "prompt"
        raise RequestError(f"Dynamic Prompts cannot read the {where} at character {exc.loc + 1} ({exc.msg}): each "
                           "{ needs its }, as in {red|blue}. Turn Dynamic Prompts off to keep braces as they are.",
                           field) from None
