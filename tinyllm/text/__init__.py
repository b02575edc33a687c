"""Tokenizers: characters (:class:`CharTokenizer`), a trainable byte-level BPE (:class:`BPETokenizer`),
GPT-2's own BPE from Hugging Face files (:class:`GPT2Tokenizer`), and :func:`load_tokenizer` for any
of them saved as JSON."""
import json
import os

from .bpe import BPETokenizer
from .char import CharTokenizer
from .gpt2 import GPT2Tokenizer
from .pretokenize import Splitter

__all__ = ["BPETokenizer", "CharTokenizer", "GPT2Tokenizer", "Splitter", "load_tokenizer"]

_TYPES = {"char": CharTokenizer, "bpe": BPETokenizer, "gpt2": GPT2Tokenizer}


def load_tokenizer(path):
    """The tokenizer saved at ``path`` by any ``.save``, whatever its class (the JSON records its
    ``"type"``). A directory is read as its ``tokenizer.json``, or else as a Hugging Face GPT-2
    directory holding ``vocab.json`` and ``merges.txt``."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "tokenizer.json")):
            path = os.path.join(path, "tokenizer.json")
        elif all(os.path.isfile(os.path.join(path, f)) for f in ("vocab.json", "merges.txt")):
            return GPT2Tokenizer.from_files(os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt"))
        else:
            raise FileNotFoundError(f"load_tokenizer: {path} holds neither tokenizer.json nor vocab.json + merges.txt")
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    kind = d.get("type") if isinstance(d, dict) else None
    if kind not in _TYPES:
        raise ValueError(f"load_tokenizer: {path} records type {kind!r}; expected one of {sorted(_TYPES)} "
                         f"(a file written by CharTokenizer/BPETokenizer/GPT2Tokenizer.save)")
    return _TYPES[kind].from_dict(d)
