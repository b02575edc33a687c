"""Parallel text for the encoder-decoder: a seeded synthetic translation task between two made-up
languages, and a user's own pair of aligned files.

The source language ("Ala") has subject-verb-object sentences::

    DET ADJ* NOUN [PL]  VERB  DET ADJ* NOUN [PL]  [ADV]        e.g.  "ko vemi taru s lipo na dasu"

The target language ("Bem") differs in three ways a translator has to learn:

- **vocabulary**: every source word maps to its own target stem (a seeded one-to-one lexicon);
- **order**: subject-object-verb, adjectives after their noun, the adverb first;
- **agreement**: each noun has a gender; determiners and adjectives take the noun's gender and number
  suffix, and the verb takes the subject's number.

Sentences are drawn from a seeded generator, so ``prepare translation`` needs no download. Files are one
sentence per line, space-separated words: ``train.src``, ``train.tgt``, ``val.src``, ``val.tgt``, plus
``vocab.src.json`` / ``vocab.tgt.json`` (word -> id, with <pad> <bos> <eos> <unk> first).
"""
import json
import os

import numpy as np

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
ONSETS = ["k", "t", "p", "m", "n", "s", "l", "r", "v", "d", "g", "b", "z", "f", "h"]
VOWELS = ["a", "e", "i", "o", "u"]
GENDER_SUFFIX = {("m", "sg"): "o", ("m", "pl"): "os", ("f", "sg"): "a", ("f", "pl"): "as"}
SIZES = {"det": 3, "adj": 24, "noun": 60, "verb": 30, "adv": 12}


class TranslationTask:
    """The two languages of one seed: ``sample(rng)`` draws an aligned (source, target) sentence."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        words = self._words(rng, sum(SIZES.values()) * 2)
        src, tgt = words[: len(words) // 2], words[len(words) // 2:]
        self.lexicon, self.pos = {}, {}
        i = 0
        for pos, n in SIZES.items():
            for _ in range(n):
                self.lexicon[src[i]] = tgt[i]
                self.pos[src[i]] = pos
                i += 1
        self.by_pos = {pos: [w for w in self.lexicon if self.pos[w] == pos] for pos in SIZES}
        self.gender = {w: ("m" if rng.random() < 0.5 else "f") for w in self.by_pos["noun"]}

    @staticmethod
    def _words(rng, n):
        seen, out = set(), []
        while len(out) < n:
            w = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(int(rng.integers(1, 4))))
            if w not in seen:
                seen.add(w)
                out.append(w)
        return out

    def _phrase(self, rng):
        n_adj = int(rng.choice([0, 0, 1, 2]))
        return {"det": rng.choice(self.by_pos["det"]), "adjs": list(rng.choice(self.by_pos["adj"], n_adj, replace=False)),
                "noun": rng.choice(self.by_pos["noun"]), "number": "pl" if rng.random() < 0.4 else "sg"}

    def sample(self, rng):
        subj, obj = self._phrase(rng), self._phrase(rng)
        verb = rng.choice(self.by_pos["verb"])
        adv = rng.choice(self.by_pos["adv"]) if rng.random() < 0.3 else None

        def src_np(p):  # Ala: det adj* noun [s]
            return [p["det"]] + p["adjs"] + [p["noun"]] + (["s"] if p["number"] == "pl" else [])

        def tgt_np(p):  # Bem: det-agr noun adj-agr*  (gender and number on the det and the adjectives)
            suffix = GENDER_SUFFIX[(self.gender[p["noun"]], p["number"])]
            noun = self.lexicon[p["noun"]] + ("i" if p["number"] == "pl" else "")
            return [self.lexicon[p["det"]] + suffix, noun] + [self.lexicon[a] + suffix for a in p["adjs"]]

        source = src_np(subj) + [verb] + src_np(obj) + ([adv] if adv else [])
        target = ([self.lexicon[adv]] if adv else []) + tgt_np(subj) + tgt_np(obj) + \
            [self.lexicon[verb] + ("n" if subj["number"] == "pl" else "")]
        return " ".join(source), " ".join(target)

    def pairs(self, n, seed=0):
        rng = np.random.default_rng(seed)
        return [self.sample(rng) for _ in range(n)]


def build_vocab(lines):
    words = sorted({w for line in lines for w in line.split()})
    return {w: i for i, w in enumerate(SPECIALS + words)}


def write_parallel(pairs, out_dir, val_fraction=0.1, source="synthetic"):
    """Split aligned (source, target) sentences 90/10 and write them with their vocabularies."""
    if not pairs:
        raise ValueError("write_parallel: no sentence pairs")
    n_train = max(1, int(len(pairs) * (1 - val_fraction)))
    os.makedirs(out_dir, exist_ok=True)
    for split, chunk in (("train", pairs[:n_train]), ("val", pairs[n_train:])):
        for side, k in (("src", 0), ("tgt", 1)):
            with open(os.path.join(out_dir, f"{split}.{side}"), "w", encoding="utf-8") as f:
                f.writelines(p[k] + "\n" for p in chunk)
    for side, k in (("src", 0), ("tgt", 1)):
        with open(os.path.join(out_dir, f"vocab.{side}.json"), "w") as f:
            json.dump(build_vocab([p[k] for p in pairs[:n_train]]), f)
    meta = {"pairs": len(pairs), "train_pairs": n_train, "val_pairs": len(pairs) - n_train, "source": source}
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return meta


def prepare_synthetic(out_dir, n_pairs=20000, seed=0):
    task = TranslationTask(seed)
    return write_parallel(task.pairs(n_pairs, seed + 1), out_dir, source=f"synthetic Ala->Bem, seed {seed}")


def prepare_pair(src_file, tgt_file, out_dir):
    """A user's aligned files (one sentence per line, same number of lines)."""
    with open(src_file, encoding="utf-8") as f:
        src = [line.strip() for line in f]
    with open(tgt_file, encoding="utf-8") as f:
        tgt = [line.strip() for line in f]
    if len(src) != len(tgt):
        raise ValueError(f"{src_file} has {len(src)} lines but {tgt_file} has {len(tgt)}: the files must be aligned")
    pairs = [(s, t) for s, t in zip(src, tgt) if s and t]
    return write_parallel(pairs, out_dir, source=f"{src_file} / {tgt_file}")
