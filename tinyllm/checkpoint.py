"""Save and load a model and its optimizer as a checkpoint directory: safetensors + JSON, never pickle.

A checkpoint is a directory::

    model.safetensors      the model's state_dict (name -> array)
    optimizer.safetensors  optional: optimizer state arrays as ``state.{index}.{key}``; param_groups and
                           scalar state (``step``) as JSON in the file's metadata
    config.json            the user's config dict
    train_state.json       the user's training state (iteration, best val loss, RNG states, ...)
    manifest.json          size and sha256 of every file above, checked on load

Saving is atomic: everything is written and fsynced in a temporary sibling directory, then swapped into
place with renames, so a crash leaves either the old checkpoint or the new one (an interrupted swap leaves
the old one as ``.{name}.old-*``, which ``load_checkpoint`` falls back to). One writer per path.
"""
import glob
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
CONFIG_FILE = "config.json"
TRAIN_STATE_FILE = "train_state.json"
MANIFEST_FILE = "manifest.json"
FORMAT = "tinyllm-checkpoint"
VERSION = 1
_OPTIMIZER_META_KEY = "tinyllm.optimizer"


class CheckpointError(ValueError):
    """A checkpoint is missing a file, is truncated or corrupted, or does not fit what it is loaded into."""


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` read. Fields also work as keys: ``ck["config"]``."""

    path: str
    config: dict = field(default_factory=dict)
    train_state: dict = field(default_factory=dict)
    state_dict: dict = field(default_factory=dict)
    optimizer_state: dict = None  # torch-format optimizer state dict, or None if none was saved

    def __getitem__(self, key):
        return getattr(self, key)

    def keys(self):
        return ("path", "config", "train_state", "state_dict", "optimizer_state")


# ---------------------------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------------------------
def save_checkpoint(path, model, optimizer=None, config=None, train_state=None):
    """Write ``model`` (and ``optimizer``, ``config``, ``train_state``) to the directory ``path``, atomically.

    An existing checkpoint at ``path`` is replaced only once the new one is complete on disk. A directory
    at ``path`` that is not a checkpoint (no manifest.json, not empty) is never replaced.
    """
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    if os.path.exists(path) and not _is_replaceable(path):
        raise CheckpointError(f"{path} exists and is not a checkpoint directory (no {MANIFEST_FILE}); "
                              "refusing to replace it")
    # Serialise everything up front, so a bad config fails before anything touches the disk.
    model_arrays = {k: _to_host(v) for k, v in model.state_dict().items()}
    jsons = {CONFIG_FILE: _dumps(config or {}, CONFIG_FILE),
             TRAIN_STATE_FILE: _dumps(train_state or {}, TRAIN_STATE_FILE)}
    opt_arrays = opt_meta = None
    if optimizer is not None:
        opt_arrays, opt_meta = _pack_optimizer(optimizer)

    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    try:
        _write_safetensors(os.path.join(tmp, MODEL_FILE), model_arrays, {"format": "np"})
        if optimizer is not None:
            _write_safetensors(os.path.join(tmp, OPTIMIZER_FILE), opt_arrays, opt_meta)
        for fname, text in jsons.items():
            _write_bytes(os.path.join(tmp, fname), text.encode())
        files = {fname: _file_record(os.path.join(tmp, fname))
                 for fname in (MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE, TRAIN_STATE_FILE)
                 if os.path.exists(os.path.join(tmp, fname))}
        manifest = {"format": FORMAT, "version": VERSION, "files": files}
        _write_bytes(os.path.join(tmp, MANIFEST_FILE), json.dumps(manifest, indent=2).encode())
        _fsync_dir(tmp)
        _swap_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _remove_leftovers(parent, name)
    return path


def _swap_into_place(tmp, path):
    """Rename ``tmp`` to ``path``. An existing ``path`` is first moved aside, and deleted only after."""
    parent, name = os.path.split(path)
    old = None
    if os.path.exists(path):
        old = os.path.join(parent, f".{name}.old-{secrets.token_hex(4)}")
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        if old is not None and not os.path.exists(path):
            os.replace(old, path)  # put the previous checkpoint back
        raise
    _fsync_dir(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(parent, name):
    """Delete temp and old directories that crashed saves of this checkpoint left behind."""
    for kind in ("tmp", "old"):
        for leftover in glob.glob(os.path.join(glob.escape(parent), glob.escape(f".{name}.{kind}-") + "*")):
            shutil.rmtree(leftover, ignore_errors=True)


def _is_replaceable(path):
    return os.path.isdir(path) and (os.path.exists(os.path.join(path, MANIFEST_FILE)) or not os.listdir(path))


def _to_host(a):
    """A C-contiguous NumPy array from a NumPy/CuPy array or a Tensor (a state_dict's values: through
    ``Tensor.__array__``, which hands over the data without a copy)."""
    if not hasattr(a, "shape") and hasattr(a, "data"):
        a = a.data
    if hasattr(a, "get") and not isinstance(a, np.ndarray):  # CuPy -> host
        a = a.get()
    return np.asarray(a, order="C")


def _json_default(x):
    if isinstance(x, np.generic):  # NumPy scalars such as np.float32(0.1)
        return x.item()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def _dumps(obj, what):
    try:
        return json.dumps(obj, indent=2, default=_json_default)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what}: the value to save must be JSON-serialisable ({e})") from None


def _pack_optimizer(optimizer):
    """Split a torch-format optimizer state dict into arrays (for safetensors) and JSON (for its metadata)."""
    osd = optimizer.state_dict()
    arrays, scalars, array_keys = {}, {}, {}
    for idx, entry in osd["state"].items():
        for key, value in entry.items():
            if key != "step" and hasattr(value, "shape"):
                arrays[f"state.{idx}.{key}"] = _to_host(value)
                array_keys.setdefault(str(idx), []).append(key)
            else:
                scalars.setdefault(str(idx), {})[key] = value.item() if hasattr(value, "item") else value
    meta = {"optimizer": type(optimizer).__name__, "param_groups": osd["param_groups"],
            "scalars": scalars, "arrays": array_keys}
    return arrays, {"format": "np", _OPTIMIZER_META_KEY: _dumps(meta, "optimizer state")}


def _write_safetensors(filename, arrays, metadata):
    save_file(arrays, filename, metadata=metadata)
    with open(filename, "rb+") as f:
        os.fsync(f.fileno())


def _write_bytes(filename, data):
    with open(filename, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path):
    try:  # makes the renames durable on POSIX; directories cannot be opened this way on Windows
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _file_record(filename):
    return {"size": os.path.getsize(filename), "sha256": _sha256(filename)}


def _sha256(filename):
    h = hashlib.sha256()
    with open(filename, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def load_checkpoint(path, model=None, optimizer=None, strict=True, verify=True):
    """Read the checkpoint at ``path``; load it into ``model`` and ``optimizer`` when they are given.

    Every file is checked against the manifest first (size always, sha256 when ``verify``), so a truncated
    or corrupted file raises ``CheckpointError`` naming it. Returns a ``Checkpoint`` with ``config``,
    ``train_state``, ``state_dict`` (the model arrays) and ``optimizer_state``.
    """
    ckdir = _resolve(path)
    files = _check_files(ckdir, verify)
    state_dict = _read_safetensors(ckdir, MODEL_FILE)[0]
    config = _read_json(ckdir, CONFIG_FILE) if CONFIG_FILE in files else {}
    train_state = _read_json(ckdir, TRAIN_STATE_FILE) if TRAIN_STATE_FILE in files else {}
    optimizer_state, saved_class = None, None
    if OPTIMIZER_FILE in files:
        optimizer_state, saved_class = _unpack_optimizer(ckdir)

    if model is not None:
        model.load_state_dict(state_dict, strict=strict)
    if optimizer is not None:
        if optimizer_state is None:
            raise CheckpointError(f"{ckdir}: has no {OPTIMIZER_FILE} (it was saved without an optimizer), "
                                  f"so there is nothing to load into {type(optimizer).__name__}")
        if saved_class != type(optimizer).__name__:
            raise CheckpointError(f"{ckdir}/{OPTIMIZER_FILE}: holds {saved_class} state, but the optimizer to "
                                  f"load it into is a {type(optimizer).__name__}")
        optimizer.load_state_dict(optimizer_state)
    return Checkpoint(ckdir, config, train_state, state_dict, optimizer_state)


def read_config(path):
    """Just the ``config`` dict of the checkpoint at ``path`` (checked against the manifest)."""
    ckdir = _resolve(path)
    files = _read_manifest(ckdir)
    if CONFIG_FILE not in files:
        return {}
    _check_file(ckdir, CONFIG_FILE, files[CONFIG_FILE], verify=True)
    return _read_json(ckdir, CONFIG_FILE)


def _resolve(path):
    """The directory to read: ``path``, or the previous checkpoint an interrupted save left beside it."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise CheckpointError(f"{path}: is a file, but a checkpoint is a directory")
    parent, name = os.path.split(path)
    olds = glob.glob(os.path.join(glob.escape(parent), glob.escape(f".{name}.old-") + "*"))
    olds = [d for d in olds if os.path.isfile(os.path.join(d, MANIFEST_FILE))]
    if olds:
        old = max(olds, key=os.path.getmtime)
        warnings.warn(f"no checkpoint at {path}, but an interrupted save left the previous one at {old}; "
                      "loading that", RuntimeWarning, stacklevel=3)
        return old
    raise FileNotFoundError(f"no checkpoint at {path}: the directory does not exist")


def _read_manifest(ckdir):
    where = os.path.join(ckdir, MANIFEST_FILE)
    if not os.path.isfile(where):
        raise CheckpointError(f"{where}: missing, so {ckdir} is not a complete tinyllm checkpoint")
    try:
        with open(where, "rb") as f:
            manifest = json.loads(f.read().decode())
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError(f"format is {manifest.get('format')!r}, expected {FORMAT!r}")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{where}: not a valid manifest ({e})") from None
    if MODEL_FILE not in files:
        raise CheckpointError(f"{where}: lists no {MODEL_FILE}")
    return files


def _check_files(ckdir, verify):
    files = _read_manifest(ckdir)
    for fname, record in files.items():
        _check_file(ckdir, fname, record, verify)
    return files


def _check_file(ckdir, fname, record, verify):
    where = os.path.join(ckdir, fname)
    if not os.path.isfile(where):
        raise CheckpointError(f"{fname}: missing from {ckdir} (the manifest lists it)")
    size = os.path.getsize(where)
    if size != record["size"]:
        hint = " (truncated?)" if size < record["size"] else ""
        raise CheckpointError(f"{fname}: size {size} bytes, expected {record['size']}{hint} in {ckdir}")
    if verify and _sha256(where) != record["sha256"]:
        raise CheckpointError(f"{fname}: checksum mismatch (sha256 differs from the manifest): the file in "
                              f"{ckdir} is corrupted")


def _read_safetensors(ckdir, fname):
    """(arrays, metadata) of one safetensors file; any parse error becomes a CheckpointError naming it."""
    where = os.path.join(ckdir, fname)
    try:
        with safe_open(where, framework="np") as f:
            metadata = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own SafetensorError, OSError, ...
        raise CheckpointError(f"{fname}: cannot read it as safetensors ({type(e).__name__}: {e}) in {ckdir}") from e
    return arrays, metadata


def _read_json(ckdir, fname):
    try:
        with open(os.path.join(ckdir, fname), "rb") as f:
            return json.loads(f.read().decode())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{fname}: not valid JSON ({e}) in {ckdir}") from None


def _unpack_optimizer(ckdir):
    arrays, metadata = _read_safetensors(ckdir, OPTIMIZER_FILE)
    try:
        meta = json.loads(metadata[_OPTIMIZER_META_KEY])
        state = {}
        for idx, entry in meta["scalars"].items():
            state.setdefault(int(idx), {}).update(entry)
        for idx, keys in meta["arrays"].items():
            for key in keys:
                state.setdefault(int(idx), {})[key] = arrays[f"state.{idx}.{key}"]
        osd = {"state": dict(sorted(state.items())), "param_groups": meta["param_groups"]}
        return osd, meta["optimizer"]
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{OPTIMIZER_FILE}: its optimizer metadata is missing or malformed "
                              f"({type(e).__name__}: {e}) in {ckdir}") from None
