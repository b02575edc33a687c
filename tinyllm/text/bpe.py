"""Byte-level BPE in the style of GPT-2 and Karpathy's minbpe ``RegexTokenizer``: text is cut into
chunks by a regex (see pretokenize.py), each chunk's UTF-8 bytes are merged pair by pair, and any
Unicode string round-trips exactly.

Training is minbpe's algorithm made incremental, so the 5 MB Shakespeare corpus trains in seconds:

- The text is split once and identical chunks are counted (``Counter``): Shakespeare has 1.2 M chunks
  in 5 MB but only 36 k distinct ones, and all later work is per distinct chunk, weighted by count.
- Pair counts are kept up to date instead of recounted, together with an index pair -> ids of the
  chunks that contain it. A merge touches only the chunks in its index entry: their old pairs are
  subtracted, the merge is applied, their new pairs are added.
- The next merge is taken from a heap of ``(-count, pair)`` whose stale entries (the count has changed
  since they were pushed) are skipped when popped.

On Shakespeare this trains at about 0.3-0.7 s per MB (vocab 512-1024; benchmarks/bpe_train.py), a few
hundred times faster than the same merges found by recounting every pair before each merge.

Tie-breaking: the most frequent pair wins, and among equally frequent pairs the smallest ``(a, b)``
by token id (so byte pairs compare as bytes). This is deterministic, independent of dict order, and
is also the rule of Hugging Face's BPE trainer (applied to its own token ids). (minbpe instead takes the first pair seen, so the two
can differ where counts tie.)

Encoding applies the learned merges lowest rank first, each one left to right without overlap,
exactly as GPT-2 does; the result per distinct chunk is cached.
"""
import heapq
import json
import re
from collections import Counter, defaultdict
from itertools import chain, repeat

from .char import as_id_list
from .pretokenize import get_splitter

__all__ = ["BPETokenizer", "ByteLevelBPE", "merge_pair"]

_CACHE_MAX = 200_000     # distinct chunks remembered by encode before the cache is cleared
_LONG_CHUNK = 64         # chunks this long (in bytes) use the O(n log n) merge loop


def merge_pair(ids, pair, new_id):
    """``ids`` with each occurrence of ``pair``, scanned left to right without overlap, replaced by
    ``new_id``: ``merge_pair([1, 1, 1], (1, 1), 9) == [9, 1]``."""
    a, b = pair
    out, i, n = [], 0, len(ids)
    while i < n:
        if ids[i] == a and i + 1 < n and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class ByteLevelBPE:
    """Encoding and decoding shared by :class:`BPETokenizer` and ``GPT2Tokenizer``.

    A subclass fills in, through :meth:`_set_model`: the split pattern, the id of each of the 256
    bytes, the merges in rank order as ``(a, b, new_id)``, and the bytes of every token id.
    """

    def __init__(self, pattern="gpt4"):
        self.special_tokens = {}      # str -> id
        self._set_model(pattern, list(range(256)), [], {i: bytes([i]) for i in range(256)})

    # ------------------------------------------------------------------ model
    def _set_model(self, pattern, byte_ids, merges, vocab):
        self.pattern = pattern
        self.splitter = get_splitter(pattern)
        self._byte_ids = byte_ids                                   # byte value -> id (or None)
        self._ranks = {(a, b): r for r, (a, b, _) in enumerate(merges)}
        self._merged = {(a, b): new for a, b, new in merges}
        self._vocab = vocab                                         # id -> bytes
        self._n_tokens = max(vocab, default=-1) + 1
        self._cache = {}
        self._check_special_ids(self.special_tokens)

    @property
    def vocab_size(self):
        """One more than the largest id, special tokens included: the rows an embedding needs."""
        return max([self._n_tokens, *(i + 1 for i in self.special_tokens.values())])

    @property
    def vocab(self):
        """id -> bytes for every ordinary token (special tokens: see ``special_tokens``)."""
        return dict(self._vocab)

    # ------------------------------------------------------------------ special tokens
    def _check_special_ids(self, special):
        for s, i in special.items():
            if i in self._vocab:
                raise ValueError(f"special token {s!r} has id {i}, which is already the ordinary token "
                                 f"{self._vocab[i]!r}; use an id outside the {self._n_tokens} ordinary ids")

    def register_special_tokens(self, special_tokens):
        """Add special tokens, e.g. ``{"<|endoftext|>": 100257}``: strings that ``encode`` can map to
        one id of their own (see ``allowed_special``) and ``decode`` maps back."""
        special = dict(special_tokens)
        for s, i in special.items():
            if not isinstance(s, str) or not s:
                raise ValueError(f"special token must be a non-empty string, got {s!r}")
            if not isinstance(i, int) or isinstance(i, bool) or i < 0:
                raise ValueError(f"special token {s!r}: id must be a non-negative int, got {i!r}")
        self._check_special_ids(special)
        merged = {**self.special_tokens, **special}
        ids = Counter(merged.values())
        dup = [s for s, i in merged.items() if ids[i] > 1]
        if dup:
            raise ValueError(f"special tokens {dup} share the id {merged[dup[0]]}")
        self.special_tokens = merged

    def _allowed(self, allowed_special):
        if allowed_special == "all":
            return self.special_tokens
        if allowed_special in ("none", "none_raise"):
            return {}
        if isinstance(allowed_special, (set, frozenset, list, tuple)):
            unknown = [s for s in allowed_special if s not in self.special_tokens]
            if unknown:
                raise ValueError(f"allowed_special names {unknown}, which are not registered special tokens "
                                 f"(registered: {sorted(self.special_tokens)})")
            return {s: self.special_tokens[s] for s in allowed_special}
        raise ValueError(f"allowed_special must be 'all', 'none', 'none_raise' or a set of special "
                         f"tokens, got {allowed_special!r}")

    # ------------------------------------------------------------------ encode
    def _bpe(self, ids):
        return self._bpe_long(ids) if len(ids) >= _LONG_CHUNK else self._bpe_short(ids)

    def _bpe_short(self, ids):
        """Merge a chunk's byte ids: lowest-rank pair first, every occurrence left to right."""
        get, merged, inf = self._ranks.get, self._merged, float("inf")
        while len(ids) >= 2:
            pairs = list(zip(ids, ids[1:]))
            r = list(map(get, pairs, repeat(inf)))
            best = min(r)
            if best == inf:
                break
            pair = pairs[r.index(best)]
            ids = merge_pair(ids, pair, merged[pair])
        return ids

    def _bpe_long(self, ids):
        """The same merges in O(n log n) for long chunks (a long run of letters or spaces would make
        the loop above quadratic): a heap of (rank, position) over a linked list of tokens. Equal
        ranks are the same pair, and popping them by position merges them left to right."""
        ranks, merged = self._ranks, self._merged
        tok, n = list(ids), len(ids)
        nxt, prv = list(range(1, n + 1)), list(range(-1, n - 1))
        alive = [True] * n
        heap = [(ranks[p], i) for i, p in enumerate(zip(tok, tok[1:])) if p in ranks]
        heapq.heapify(heap)
        while heap:
            r, i = heapq.heappop(heap)
            j = nxt[i] if alive[i] else n
            if j >= n or ranks.get((tok[i], tok[j])) != r:
                continue                              # stale: i or its neighbour changed since
            tok[i] = merged[tok[i], tok[j]]
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] < n:
                prv[nxt[j]] = i
            for left, right in ((prv[i], i), (i, nxt[i])):
                if left >= 0 and right < n:
                    r2 = ranks.get((tok[left], tok[right]))
                    if r2 is not None:
                        heapq.heappush(heap, (r2, left))
        return [t for t, a in zip(tok, alive) if a]

    def _encode_chunk(self, chunk):
        byte_ids = self._byte_ids
        try:
            data = chunk.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"{type(self).__name__}.encode: the text contains the lone surrogate "
                             f"U+{ord(chunk[e.start]):04X} (in {chunk!r}), which has no UTF-8 encoding; "
                             f"expected valid Unicode text") from None
        ids = [byte_ids[b] for b in data]
        if None in ids:
            b = data[ids.index(None)]
            raise ValueError(f"{type(self).__name__}.encode: byte 0x{b:02x} (in {chunk!r}) has no token "
                             f"in this vocabulary")
        return self._bpe(ids)

    def encode_ordinary(self, text):
        """Token ids of ``text``, with special-token strings treated as plain text."""
        chunks = self.splitter.split(text)
        distinct = set(chunks)
        cache = self._cache
        if len(cache) + len(distinct) > _CACHE_MAX:
            cache.clear()
        table = cache if len(distinct) <= _CACHE_MAX else {}
        for chunk in distinct.difference(table):
            table[chunk] = self._encode_chunk(chunk)
        return list(chain.from_iterable(map(table.__getitem__, chunks)))

    def encode(self, text, allowed_special="none_raise"):
        """Token ids of ``text``. ``allowed_special`` says which registered special tokens found in
        the text become their special id: ``"all"``; a set of them (the others are plain text);
        ``"none"`` (all plain text); or ``"none_raise"``, the default, which raises ValueError if
        any special token occurs in the text (as minbpe and tiktoken do, so a document cannot smuggle
        in an ``<|endoftext|>``)."""
        special = self._allowed(allowed_special)
        if allowed_special == "none_raise":
            found = [s for s in self.special_tokens if s in text]
            if found:
                raise ValueError(f"{type(self).__name__}.encode: the text contains the special token(s) "
                                 f"{found}; pass allowed_special='all' (or a set) to encode them as special "
                                 f"tokens, or 'none' to encode them as plain text")
        if not special:
            return self.encode_ordinary(text)
        # longest first, so that a special token that is a prefix of another does not cut it
        alternatives = sorted(special, key=lambda s: (-len(s), s))
        parts = re.split("(" + "|".join(map(re.escape, alternatives)) + ")", text)
        out = []
        for k, part in enumerate(parts):
            if k % 2:
                out.append(special[part])
            elif part:
                out.extend(self.encode_ordinary(part))
        return out

    # ------------------------------------------------------------------ decode
    def decode_bytes(self, ids):
        """The exact bytes of ``ids`` (special tokens as their UTF-8)."""
        ids = as_id_list(ids, self.vocab_size, f"{type(self).__name__}.decode")
        vocab, special = self._vocab, {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        try:
            return b"".join([vocab[i] if i in vocab else special[i] for i in ids])
        except KeyError as e:
            raise ValueError(f"{type(self).__name__}.decode: token id {e.args[0]} is not in the "
                             f"vocabulary (no ordinary or special token has it)") from None

    def decode(self, ids):
        """The text of ``ids``. A sequence that ends inside a multi-byte character (as sampled text
        can) decodes with U+FFFD in place of the broken bytes, as GPT-2 does."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


class BPETokenizer(ByteLevelBPE):
    """A trainable byte-level BPE (minbpe's ``RegexTokenizer``)::

        tok = BPETokenizer()                 # GPT-4's split pattern; BPETokenizer("gpt2") for GPT-2's
        tok.train(text, vocab_size=512)      # ids 0..255 are bytes, 256.. are merges in order
        tok.register_special_tokens({"<|endoftext|>": 512})
        tok.decode(tok.encode("hello world")) == "hello world"
    """

    def __init__(self, pattern="gpt4"):
        super().__init__(pattern)
        self.merges = {}   # (a, b) -> new id, in the order learned

    def _set_merges(self, merges):
        vocab = {i: bytes([i]) for i in range(256)}
        for (a, b), new in merges.items():
            vocab[new] = vocab[a] + vocab[b]
        self.merges = dict(merges)
        self._set_model(self.pattern, list(range(256)), [(a, b, new) for (a, b), new in merges.items()], vocab)

    def train(self, text, vocab_size, verbose=False):
        """Learn ``vocab_size - 256`` merges from ``text`` (fewer if the text runs out of pairs)."""
        if not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(f"BPETokenizer.train: vocab_size must be an int >= 256 (the 256 byte tokens), "
                             f"got {vocab_size!r}")
        clash = {s: i for s, i in self.special_tokens.items() if i < vocab_size}
        if clash:
            raise ValueError(f"BPETokenizer.train: special tokens {clash} have ids below vocab_size={vocab_size}, "
                             f"where merges will go")
        # distinct chunks, as byte lists, with how often each occurs
        chunk_counts = Counter(self.splitter.split(text))
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
        freqs = list(chunk_counts.values())

        counts = defaultdict(int)     # pair -> occurrences in the text
        where = defaultdict(set)      # pair -> indices of the words that contain it
        for w, (word, f) in enumerate(zip(words, freqs)):
            for pair in zip(word, word[1:]):
                counts[pair] += f
                where[pair].add(w)
        heap = [(-c, pair) for pair, c in counts.items()]
        heapq.heapify(heap)

        merges, token_bytes = {}, [bytes([i]) for i in range(256)]
        for new_id in range(256, vocab_size):
            while heap:                                   # skip stale entries
                neg, pair = heapq.heappop(heap)
                if counts.get(pair) == -neg:
                    break
            else:
                if verbose:
                    print(f"no pairs left after {len(merges)} merges; vocab_size is {256 + len(merges)}")
                break
            merges[pair] = new_id
            token_bytes.append(token_bytes[pair[0]] + token_bytes[pair[1]])
            touched = set()
            for w in where.pop(pair):
                word, f = words[w], freqs[w]
                new_word = merge_pair(word, pair, new_id)
                old_pairs, new_pairs = list(zip(word, word[1:])), list(zip(new_word, new_word[1:]))
                for p in old_pairs:
                    counts[p] -= f
                for p in new_pairs:
                    counts[p] += f
                old_set, new_set = set(old_pairs), set(new_pairs)
                for p in old_set - new_set:
                    if p != pair:
                        where[p].discard(w)
                for p in new_set - old_set:
                    where[p].add(w)
                touched |= old_set | new_set
                words[w] = new_word
            for p in touched:
                c = counts[p]
                if c > 0:
                    heapq.heappush(heap, (-c, p))
                else:
                    del counts[p]
                    where.pop(p, None)
            if verbose:
                print(f"merge {new_id - 255}/{vocab_size - 256}: {pair} -> {new_id} "
                      f"{token_bytes[new_id]!r} had {-neg} occurrences")
        self._set_merges(merges)
        return self

    # ------------------------------------------------------------------ save / load
    def to_dict(self):
        return {"type": "bpe", "version": 1, "pattern": self.pattern,
                "merges": [[a, b] for (a, b) in self.merges],
                "special_tokens": dict(self.special_tokens)}

    @classmethod
    def from_dict(cls, d):
        if d.get("type") != "bpe":
            raise ValueError(f"BPETokenizer: expected a saved tokenizer of type 'bpe', got {d.get('type')!r}")
        tok = cls(d["pattern"])
        merges = {}
        for k, (a, b) in enumerate(d["merges"]):
            if not (0 <= a < 256 + k and 0 <= b < 256 + k):
                raise ValueError(f"BPETokenizer: merge {k} ({a}, {b}) uses an id not yet defined "
                                 f"(expected ids < {256 + k})")
            merges[(a, b)] = 256 + k
        if len(merges) != len(d["merges"]):
            raise ValueError("BPETokenizer: the saved merges repeat a pair")
        tok._set_merges(merges)
        tok.register_special_tokens(d.get("special_tokens", {}))
        return tok

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=True)

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def __repr__(self):
        return (f"BPETokenizer(pattern={self.pattern!r}, merges={len(self.merges)}, "
                f"special_tokens={len(self.special_tokens)}, vocab_size={self.vocab_size})")
