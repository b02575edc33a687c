"""GPT-2's tokenizer from Hugging Face-format files (``vocab.json`` + ``merges.txt``), encoding and
decoding exactly as GPT-2 does: the GPT-2 split pattern, then byte-level BPE by merge rank."""
import functools
import json

from .bpe import ByteLevelBPE

__all__ = ["GPT2Tokenizer", "bytes_to_unicode"]

ENDOFTEXT = "<|endoftext|>"


@functools.lru_cache(maxsize=None)
def bytes_to_unicode():
    """GPT-2's map from the 256 byte values to printable characters, so that vocab.json and
    merges.txt can hold any bytes as text: printable Latin-1 bytes stand for themselves, the other
    68 (controls, space, ...) are moved to U+0100 upward in order (space becomes 'Ġ')."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class GPT2Tokenizer(ByteLevelBPE):
    """``GPT2Tokenizer.from_files("gpt2/vocab.json", "gpt2/merges.txt")``; then ``encode(text)`` and
    ``decode(ids)`` match GPT-2 (and Hugging Face's ``GPT2TokenizerFast``) token for token.

    ``<|endoftext|>`` is a special token when the vocabulary has it. As in :class:`BPETokenizer`,
    ``encode`` raises if the text contains it unless ``allowed_special`` says how to treat it
    (``"all"`` gives its id, as Hugging Face does)."""

    def __init__(self, encoder, merges, special_tokens=None):
        """``encoder``: token string (in bytes_to_unicode's alphabet) -> id; ``merges``: ``(a, b)``
        token-string pairs in rank order; ``special_tokens``: vocabulary strings to treat as special
        (default: ``<|endoftext|>`` if present)."""
        super().__init__("gpt2")
        byte_decoder = {c: b for b, c in bytes_to_unicode().items()}
        if special_tokens is None:
            special_tokens = [ENDOFTEXT] if ENDOFTEXT in encoder else []
        missing = [s for s in special_tokens if s not in encoder]
        if missing:
            raise ValueError(f"GPT2Tokenizer: special tokens {missing} are not in the vocabulary")

        vocab = {}
        for token, i in encoder.items():
            if token in special_tokens:
                continue
            if not all(c in byte_decoder for c in token):
                raise ValueError(f"GPT2Tokenizer: vocabulary entry {token!r} (id {i}) is not in GPT-2's "
                                 f"byte-level alphabet; list it in special_tokens if it is one")
            if i in vocab:
                raise ValueError(f"GPT2Tokenizer: id {i} is given to two vocabulary entries")
            vocab[i] = bytes(byte_decoder[c] for c in token)
        byte_encoder = bytes_to_unicode()
        byte_ids = [encoder.get(byte_encoder[b]) for b in range(256)]

        rank_merges = []
        for rank, (a, b) in enumerate(merges):
            ids = [encoder.get(t) for t in (a, b, a + b)]
            if None in ids:
                absent = [t for t, i in zip((a, b, a + b), ids) if i is None]
                raise ValueError(f"GPT2Tokenizer: merge {rank} ({a!r} {b!r}) needs {absent}, which the "
                                 f"vocabulary does not have")
            rank_merges.append(tuple(ids))
        self.encoder = dict(encoder)
        self.bpe_merges = [tuple(m) for m in merges]
        self._set_model("gpt2", byte_ids, rank_merges, vocab)
        self.register_special_tokens({s: encoder[s] for s in special_tokens})

    @classmethod
    def from_files(cls, vocab_json_path, merges_txt_path, special_tokens=None):
        """Load Hugging Face / OpenAI GPT-2 files: ``vocab.json`` maps token strings to ids, and
        ``merges.txt`` lists one ``a b`` pair per line in rank order after an optional ``#version``
        header."""
        with open(vocab_json_path, encoding="utf-8") as f:
            encoder = json.load(f)
        with open(merges_txt_path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = []
        for k, line in enumerate(lines):
            if (k == 0 and line.startswith("#version")) or not line:
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"GPT2Tokenizer: {merges_txt_path} line {k + 1} should be two tokens "
                                 f"separated by one space, got {line!r}")
            merges.append(tuple(parts))
        return cls(encoder, merges, special_tokens)

    # ------------------------------------------------------------------ save / load
    def to_dict(self):
        return {"type": "gpt2", "version": 1, "encoder": self.encoder,
                "merges": [f"{a} {b}" for a, b in self.bpe_merges],
                "special_tokens": sorted(self.special_tokens)}

    @classmethod
    def from_dict(cls, d):
        if d.get("type") != "gpt2":
            raise ValueError(f"GPT2Tokenizer: expected a saved tokenizer of type 'gpt2', got {d.get('type')!r}")
        return cls(d["encoder"], [tuple(m.split(" ")) for m in d["merges"]], d.get("special_tokens"))

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=True)

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def __repr__(self):
        return f"GPT2Tokenizer(vocab_size={self.vocab_size}, merges={len(self.bpe_merges)})"
