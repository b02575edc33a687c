"""A character-level tokenizer: one id per distinct character of a corpus, ids in sorted order."""
import json
import operator

__all__ = ["CharTokenizer", "as_id_list"]


def as_id_list(ids, vocab_size, who):
    """``ids`` (a list, tuple, NumPy array, ...) as a list of Python ints, each in ``[0, vocab_size)``."""
    if hasattr(ids, "tolist"):  # NumPy/CuPy arrays and tensors: one C-level conversion
        ids = ids.tolist()
    if isinstance(ids, int):
        raise TypeError(f"{who}: expected a sequence of token ids, got the single int {ids}")
    ids = [operator.index(i) for i in ids]  # ints and NumPy ints; not floats
    bad = next((i for i in ids if not 0 <= i < vocab_size), None)
    if bad is not None:
        raise ValueError(f"{who}: token id {bad} is out of range (expected 0 <= id < {vocab_size})")
    return ids


def _describe(ch):
    return f"{ch!r} (U+{ord(ch):04X})"


class CharTokenizer:
    """``CharTokenizer.from_text("hello")`` has the vocabulary ``['e', 'h', 'l', 'o']``;
    ``encode("hole") == [1, 3, 2, 0]`` and ``decode([1, 3, 2, 0]) == "hole"``."""

    def __init__(self, chars):
        chars = list(chars)
        for ch in chars:
            if not isinstance(ch, str) or len(ch) != 1:
                raise ValueError(f"CharTokenizer: every vocabulary entry must be one character, got {ch!r}")
        if len(set(chars)) != len(chars):
            dup = next(c for i, c in enumerate(chars) if c in chars[:i])
            raise ValueError(f"CharTokenizer: character {_describe(dup)} appears twice in the vocabulary")
        self.chars = chars
        self.stoi = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def from_text(cls, text):
        return cls(sorted(set(text)))

    @property
    def vocab_size(self):
        return len(self.chars)

    def encode(self, text):
        stoi = self.stoi
        try:
            return [stoi[ch] for ch in text]
        except KeyError as e:
            ch = e.args[0]
            raise ValueError(f"CharTokenizer.encode: character {_describe(ch)} at index {text.index(ch)} "
                             f"is not in the vocabulary of {len(self.chars)} characters") from None

    def decode(self, ids):
        chars = self.chars
        return "".join([chars[i] for i in as_id_list(ids, len(chars), "CharTokenizer.decode")])

    def to_dict(self):
        return {"type": "char", "version": 1, "chars": self.chars}

    @classmethod
    def from_dict(cls, d):
        if d.get("type") != "char":
            raise ValueError(f"CharTokenizer: expected a saved tokenizer of type 'char', got {d.get('type')!r}")
        return cls(d["chars"])

    def save(self, path):
        # ensure_ascii keeps lone surrogates (legal in a Python str) writable as \udxxx escapes
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=True)

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size})"
