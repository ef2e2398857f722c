"""The real CLIP BPE tokenizer, built offline.

The vocabulary ships inside the open_clip_torch wheel as ``bpe_simple_vocab_16e6.txt.gz``; we convert it
into the ``vocab.json`` + ``merges.txt`` pair that transformers' ``CLIPTokenizer`` reads, so tiny test
pipelines and the embedded model use exactly the tokenizer of real Stable Diffusion checkpoints without
touching the Hub. ``open_clip`` itself is never imported (its ``__init__`` pulls in torchvision).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import tempfile
from functools import lru_cache
from pathlib import Path

MODEL_MAX_LENGTH = 77
VOCAB_SIZE = 49408
BOS_TOKEN_ID = 49406
EOS_TOKEN_ID = 49407
TOKENIZER_CACHE = Path(tempfile.gettempdir()) / "easel-clip-tokenizer"  # written once, shared by processes


def _bpe_file() -> Path:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip_torch is not installed: run the setup script (it installs it with --no-deps)")
    return Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


@lru_cache(maxsize=1)
def vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """The 49408-token vocabulary and 48894 merges, in OpenAI's order."""
    lines = gzip.open(_bpe_file()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    tokens = list(_bytes_to_unicode().values())
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer(out_dir: str | Path) -> Path:
    """Write a CLIPTokenizer folder (vocab.json, merges.txt, configs) and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocab_and_merges()
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out / "special_tokens_map.json").write_text(
        json.dumps({k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}, indent=2)
    )
    return out


def load_tokenizer(cache_dir: str | Path = TOKENIZER_CACHE, **options):
    """A CLIPTokenizer from ``cache_dir``, written there first if missing; ``options`` override its config
    (SD2's and SDXL's second tokenizer pad with ``pad_token="!"``)."""
    from transformers import CLIPTokenizer

    cache = Path(cache_dir)
    if not (cache / "merges.txt").exists():
        write_tokenizer(cache)
    return CLIPTokenizer.from_pretrained(str(cache), local_files_only=True, **options)
