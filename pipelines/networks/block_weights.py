"""LoRA Block Weight (hako-mikan's extension, also in ComfyUI's Inspire pack): a LoRA's strength set block by block,
by its tag: ``<lora:name:1:lbw=OUTD>``, ``<lora:name:1:1:lbw=1,0,0,...>`` or the extension's first form
``<lora:name:1:OUTD>``.

The blocks are those of Stability's UNet, numbered as the extension numbers them: ``BASE`` (the text encoders),
``IN00``-``IN11`` (``conv_in``, then each down block's layers, its downsampler after them), ``M00`` (the middle
block) and ``OUT00``-``OUT11`` (each up block's layers, its upsampler with the last). Here they are counted on the
layer names of the model's family, as its full UNet counts them (2 layers a down block, 3 an up block: SD 1.x/2.x's
and SDXL's, the extension's numbers), so KOALA, which keeps SDXL's names for the layers it keeps, has SDXL's blocks;
a UNet of no known family (the embedded model) is counted as it is. A list gives 26 weights (every block), 17
(SD 1.x/2.x: BASE and the blocks holding attention), 12 (SDXL's) or 20 (SDXL's every block); a block the list leaves
out gets 0, as in the extension, and a layer in no block (the time embedding, ``conv_out``) keeps the tag's weight.
A name is a preset: the extension's own, and the lines ``NAME:w,w,...`` of ``lbwpresets.txt`` in the LoRA folder
(its file's format), which add to or redefine them.

The text encoders take the tag's text-encoder weight times BASE's; each UNet layer its UNet weight times its block's
(``Strength``), on LoRA adapters and LyCORIS layers alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..atomic import replace_text
from .files import FAMILIES

IDS = ("BASE", *(f"IN{i:02}" for i in range(12)), "M00", *(f"OUT{i:02}" for i in range(12)))
LISTS = {
    26: IDS,
    17: ("BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00", *(f"OUT{i:02}" for i in range(3, 12))),
    12: ("BASE", "IN04", "IN05", "IN07", "IN08", "M00", *(f"OUT{i:02}" for i in range(6))),
    20: ("BASE", *(f"IN{i:02}" for i in range(9)), "M00", *(f"OUT{i:02}" for i in range(9))),
}
_ON = {  # the extension's presets of 17 weights: the blocks each sets to 1
    "NONE": (), "ALL": LISTS[17], "INS": ("BASE", "IN01", "IN02", "IN04"),
    "IND": ("BASE", "IN05", "IN07", "IN08"), "INALL": LISTS[17][:7],
    "MIDD": ("BASE", "IN05", "IN07", "IN08", "M00", "OUT03", "OUT04", "OUT05", "OUT06"),
    "OUTD": ("BASE", "OUT03", "OUT04", "OUT05", "OUT06"), "OUTS": ("BASE", *(f"OUT{i:02}" for i in range(7, 12))),
    "OUTALL": ("BASE", *LISTS[17][8:]),
}
PRESETS = {name: ",".join("1" if block in on else "0" for block in LISTS[17]) for name, on in _ON.items()}
PRESETS["ALL0.5"] = ",".join(["0.5"] * 17)
PRESETS_FILE = "lbwpresets.txt"
_LAYER = re.compile(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)(?:\.|$)")


def weights(spec: str, presets: dict[str, str]) -> tuple[float, ...]:
    """The 26 weights (in ``IDS``' order) a tag's ``lbw=`` names, or a ValueError saying what it is not."""
    name = spec.strip()
    if name not in presets and "," not in name:
        raise ValueError(f"lbw={name} is not a preset ({', '.join(presets)}) nor a list of weights")
    try:
        return _listed(presets.get(name, name))
    except ValueError as exc:
        raise ValueError(f"lbw={name}: {exc}") from None


def _listed(text: str) -> tuple[float, ...]:
    values = [value.strip() for value in text.split(",")]
    if len(values) not in LISTS:
        raise ValueError(f"{len(values)} weights, where a list has 12, 17, 20 or 26")
    numbers = []
    for value in values:
        try:
            numbers.append(float(value))
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
    given = dict(zip(LISTS[len(values)], numbers))
    return tuple(given.get(block, 0.0) for block in IDS)


def presets(folder: Path) -> dict[str, str]:
    """The extension's presets, with those of ``lbwpresets.txt`` in ``folder`` (lines that are no preset are passed
    over, as the extension passes them over)."""
    found = dict(PRESETS)
    path = folder / PRESETS_FILE
    for _, name, values in _entries(path.read_text(encoding="utf-8") if path.is_file() else ""):
        if name and values.count(",") + 1 in LISTS:
            found[name] = values
    return found


def _entries(text: str):
    """(line number, name, weights) of each line of a presets file that is not blank or a ``#`` comment."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, values = line.partition(":")
            yield number, name.strip(), values.strip()


def preset_text(folder: Path) -> str:
    """What the presets panel shows: ``lbwpresets.txt`` as it is, or the extension's presets in its format."""
    path = folder / PRESETS_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8")
    return "".join(f"{name}:{values}\n" for name, values in PRESETS.items())


def save_presets(folder: Path, text: str) -> int:
    """Write ``text`` as ``lbwpresets.txt`` once every line is a preset (or blank, or a ``#`` comment); returns
    how many it holds, or raises a ValueError naming the first line that is not one."""
    count = 0
    for number, name, values in _entries(text):
        if not name or not values:
            raise ValueError(f"Line {number} is not NAME:w,w,...")
        try:
            _listed(values)
        except ValueError as exc:
            raise ValueError(f"Line {number} ({name}): {exc}") from None
        count += 1
    replace_text(folder / PRESETS_FILE, text.rstrip() + "\n")
    return count


def block(unet, module: str) -> int | None:
    """The place in ``IDS`` of the block that holds ``unet``'s layer ``module`` (a path under the UNet), or None
    for a layer in no block."""
    if module.startswith("conv_in"):
        return IDS.index("IN00")
    if module.startswith("mid_block."):
        return IDS.index("M00")
    found = _LAYER.match(module)
    if not found:
        return None
    side, number, part, index = found.group(1), int(found.group(2)), found.group(3), int(found.group(4))
    blocks = unet.down_blocks if side == "down" else unet.up_blocks
    full = unet.config.cross_attention_dim in FAMILIES  # a LoRA file's layer names count the family's full UNet
    layers = [(2 if side == "down" else 3) if full else len(b.resnets) for b in blocks]
    if side == "down":  # conv_in, then each block's layers and its downsampler
        before = sum(count + bool(b.downsamplers) for count, b in zip(layers[:number], blocks))
        place = 1 + before + (layers[number] if part == "downsamplers" else index)
    else:  # each block's layers, its upsampler with the last
        place = sum(layers[:number]) + (layers[number] - 1 if part == "upsamplers" else index)
    name = f"{'IN' if side == 'down' else 'OUT'}{place:02}"
    return IDS.index(name) if name in IDS else None


@dataclass(frozen=True)
class Strength:
    """One tag's multipliers: the text encoders' (BASE's weight included), the UNet's, and its 26 block weights
    (None: every UNet layer at the UNet weight)."""

    te: float
    unet: float
    blocks: tuple[float, ...] | None = None

    @classmethod
    def of(cls, te: float, unet: float, blocks: tuple[float, ...] | None) -> "Strength":
        """A tag's strength, BASE's block weight folded into its text-encoder weight."""
        return cls(te * blocks[0] if blocks else te, unet, blocks)

    def layer(self, model, component: str, module: str) -> float:
        """The multiplier of ``component``'s layer ``module`` (``model``: the pipeline, whose UNet's blocks count)."""
        if component != "unet":
            return self.te
        place = block(model.unet, module) if self.blocks else None
        return self.unet if place is None else self.unet * self.blocks[place]
