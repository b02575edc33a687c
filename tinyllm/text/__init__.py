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
    directory holding ``vocab.json`` and ``merges.txt``. A Hugging Face ``tokenizer.json`` is read
    when it is one tinyllm can run exactly: what ``tinyllm.export.to_hf`` writes, or GPT-2's."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "tokenizer.json")):
            path = os.path.join(path, "tokenizer.json")
        elif all(os.path.isfile(os.path.join(path, f)) for f in ("vocab.json", "merges.txt")):
            return GPT2Tokenizer.from_files(os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt"))
        else:
            raise FileNotFoundError(f"load_tokenizer: {path} holds neither tokenizer.json nor vocab.json + merges.txt")
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    if isinstance(d, dict) and "model" in d and "type" not in d:  # Hugging Face's tokenizer.json
        return _from_hf_json(d, path)
    kind = d.get("type") if isinstance(d, dict) else None
    if kind not in _TYPES:
        raise ValueError(f"load_tokenizer: {path} records type {kind!r}; expected one of {sorted(_TYPES)} "
                         f"(a file written by CharTokenizer/BPETokenizer/GPT2Tokenizer.save)")
    return _TYPES[kind].from_dict(d)


def _hf_split_pattern(pre):
    """"gpt2", "gpt4" or None: which of tinyllm's byte-level splits a tokenizer.json pre-tokenizer is."""
    from .pretokenize import PATTERNS
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    types = [p.get("type") for p in steps]
    if types == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt2" if not steps[0].get("add_prefix_space") else None  # ByteLevel's regex is GPT-2's
    if types == ["Split", "ByteLevel"] and not steps[1].get("use_regex") and not steps[1].get("add_prefix_space"):
        split = steps[0]
        if split.get("behavior") == "Isolated" and not split.get("invert"):
            regex = split.get("pattern", {}).get("Regex")
            return next((name for name, p in PATTERNS.items() if p == regex), None)
    return None


def _from_hf_json(d, path):
    """A tinyllm tokenizer that encodes exactly as the Hugging Face tokenizer.json ``d``; ValueError for
    the kinds tinyllm cannot run exactly."""
    from .gpt2 import bytes_to_unicode
    model, pre = d.get("model") or {}, d.get("pre_tokenizer") or {}
    special = {t["content"]: t["id"] for t in d.get("added_tokens", []) if t.get("special")}
    kind = model.get("type")
    if d.get("normalizer") is None and kind == "WordLevel" and pre == {
            "type": "Split", "pattern": {"Regex": r"[\s\S]"}, "behavior": "Isolated", "invert": False}:
        by_id = {i: ch for ch, i in model["vocab"].items()}
        if sorted(by_id) == list(range(len(by_id))) and all(len(ch) == 1 for ch in by_id.values()):
            return CharTokenizer([by_id[i] for i in range(len(by_id))])
    pattern = _hf_split_pattern(pre)
    if d.get("normalizer") is None and kind == "BPE" and pattern is not None and not model.get("byte_fallback"):
        vocab = model["vocab"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        byte = bytes_to_unicode()
        # tinyllm's own BPE (bytes are ids 0..255, merge k makes id 256 + k) comes back as a BPETokenizer
        ordinary = {s: i for s, i in vocab.items() if s not in special}
        if (all(vocab.get(byte[b]) == b for b in range(256)) and len(ordinary) == 256 + len(merges)
                and all(vocab.get(a + b) == 256 + k for k, (a, b) in enumerate(merges))):
            tok = BPETokenizer(pattern)
            tok._set_merges({(vocab[a], vocab[b]): 256 + k for k, (a, b) in enumerate(merges)})
            tok.register_special_tokens(special)
            return tok
        if pattern == "gpt2":
            return GPT2Tokenizer({**vocab, **special}, merges, special_tokens=list(special))
    raise ValueError(f"load_tokenizer: {path} is a Hugging Face tokenizer.json of a kind tinyllm cannot run "
                     f"exactly (model {kind!r}, pre-tokenizer {pre.get('type')!r}); load it with "
                     f"transformers.AutoTokenizer or tokenizers.Tokenizer.from_file")
