"""Which array module, which default dtype, which kernels: the few global choices tinyllm makes.

The array module is never a global switch: it is read off the arrays themselves (Chainer's
``get_array_module`` idea), so NumPy and CuPy arrays can flow through the same code. Importing
tinyllm changes nothing process-wide; ``tune_for_training()`` is the one explicit call that does.
This module imports nothing from the rest of tinyllm.
"""
import contextlib
import os

import numpy as np

try:  # CuPy is an optional extra; without it every array is a NumPy array.
    import cupy as _cupy
except Exception:  # pragma: no cover - depends on the machine
    _cupy = None




# ---------------------------------------------------------------------------------------------
# devices: 'cpu' (NumPy arrays) and 'cuda' (CuPy arrays). A tensor's device is its array's module;
# ``device(...)`` only chooses where *new* tensors (factories, parameters) are made.
# ---------------------------------------------------------------------------------------------
DEVICES = ("cpu", "cuda")
_device = "cpu"


def cuda_available():
    """True when CuPy imports and sees at least one CUDA GPU."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # pragma: no cover - driver or runtime missing
        return False


def _check_device(name):
    """The device's canonical name ('cpu' or 'cuda') from a name or a ``device`` object; one clear
    error for anything else."""
    name = str(name).lower()
    if name == "cpu:0":  # torch's spelling of the one CPU
        name = "cpu"
    if name.startswith("cuda:"):  # one GPU for now: cuda:0 is cuda
        if name != "cuda:0":
            raise ValueError(f"device {name!r}: only one CUDA device (cuda or cuda:0) is supported")
        name = "cuda"
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r} (expected one of {DEVICES})")
    if name == "cuda" and not cuda_available():
        why = "CuPy is not installed (pip install 'tinyllm[gpu]')" if _cupy is None else "CuPy sees no CUDA GPU"
        raise RuntimeError(f"device 'cuda' is not available: {why}")
    return name


def dtype_and_device(args, kwargs):
    """The ``(dtype, device)`` of a torch-style ``.to(...)`` call: positional strings other than float
    dtype names are devices, anything else a dtype; ``dtype=`` / ``device=`` keywords win."""
    dtype, where = None, None
    for a in args:
        if isinstance(a, device) or (isinstance(a, str) and a not in ("float16", "float32", "float64")):
            where = a
        else:
            dtype = a
    return kwargs.get("dtype", dtype), kwargs.get("device", where)


def device_of(array):
    """'cuda' for a CuPy array, 'cpu' for anything else."""
    return "cuda" if _cupy is not None and isinstance(array, _cupy.ndarray) else "cpu"


def to_device(array, device):
    """``array`` on ``device`` (a copy when it moves, the array itself when it is already there)."""
    device = _check_device(device)
    if device == device_of(array):
        return array
    return _cupy.asarray(array) if device == "cuda" else _cupy.asnumpy(array)


def get_device():
    """Where new tensors are made: 'cpu' unless inside ``with tinyllm.device('cuda')``."""
    return _device


class device:
    """A device, as ``torch.device``: ``tl.device('cpu')`` can be passed wherever a device name can
    (``device=`` of the factories, ``.to(...)``). ``with tl.device('cuda'):`` makes factories
    (``zeros``, ``randn``, ...) and new parameters create their arrays on that device. Random numbers
    are drawn on the host from tinyllm's generator and then moved, so a seed gives the same values on
    every device."""

    def __init__(self, name):
        self.name = _check_device(name)

    type = property(lambda self: self.name)  # torch.device('cpu').type == 'cpu'

    def __str__(self):
        return self.name

    def __repr__(self):
        return f"device(type={self.name!r})"

    def __eq__(self, other):
        return isinstance(other, (device, str)) and str(other) == self.name

    def __hash__(self):
        return hash(self.name)

    def __enter__(self):
        global _device
        self.previous, _device = _device, self.name
        return self

    def __exit__(self, *exc):
        global _device
        _device = self.previous


def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def to_array(data, dtype=None, legacy_constructor=False):
    """Convert user data (not a Tensor) to a backing array, following the dtype rules of the design card.

    Floating arrays keep their dtype, integer and bool arrays stay as they are, and Python scalars
    and lists become the default dtype (as ``torch.Tensor(...)`` does). ``tl.tensor`` instead
    infers ints from int-only lists, as ``torch.tensor`` does (``legacy_constructor=False``).
    """
    xp = get_array_module(data)
    if dtype is not None:
        return xp.asarray(data, dtype=np.dtype(dtype) if xp is np else dtype)
    if hasattr(data, "dtype") and hasattr(data, "shape") and not isinstance(data, np.generic):
        return data if isinstance(data, xp.ndarray) else xp.asarray(data)
    if isinstance(data, np.generic):
        return np.asarray(data)
    array = np.asarray(data)
    if array.dtype.kind == "f" or array.dtype.kind == "c" or (legacy_constructor and array.dtype.kind in "iub"):
        if array.dtype.kind == "b" and not legacy_constructor:
            return array
        return array.astype(get_default_dtype())
    if array.dtype == object:
        raise TypeError(f"cannot build a tensor from {type(data).__name__} data with ragged or mixed contents")
    return array


def cupy_available():
    return _cupy is not None


# ---------------------------------------------------------------------------------------------
# default dtype: what Python scalars, lists and new parameters become
# ---------------------------------------------------------------------------------------------
_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_default_dtype = np.dtype(np.float32)


def _as_float_dtype(dtype):
    d = np.dtype(dtype)
    if d not in _FLOAT_DTYPES:
        raise TypeError(f"default dtype must be a floating dtype (float16/32/64), got {d}")
    return d


def set_default_dtype(dtype):
    """Set the dtype given to Python scalars, Python lists and newly created parameters."""
    global _default_dtype
    _default_dtype = _as_float_dtype(dtype)


def get_default_dtype():
    return _default_dtype


@contextlib.contextmanager
def default_dtype(dtype):
    """Context manager: ``with default_dtype(np.float64): ...``."""
    previous = _default_dtype
    set_default_dtype(dtype)
    try:
        yield
    finally:
        set_default_dtype(previous)


def is_floating(dtype):
    return np.dtype(dtype).kind == "f"


def finfo(dtype=None):
    """Like ``torch.finfo``: NumPy's machine limits (``eps``, ``max``, ``min``, ``tiny``) of a floating
    dtype, the default dtype when none is given."""
    d = get_default_dtype() if dtype is None else np.dtype(dtype)
    if d.kind != "f":
        raise TypeError(f"finfo: expected a floating dtype, got {d}")
    return np.finfo(d)


def iinfo(dtype):
    """Like ``torch.iinfo``: NumPy's limits (``min``, ``max``, ``bits``) of an integer dtype."""
    d = np.dtype(dtype)
    if d.kind not in "iu":
        raise TypeError(f"iinfo: expected an integer dtype, got {d}")
    return np.iinfo(d)


# ---------------------------------------------------------------------------------------------
# random numbers: one seeded generator, so runs with the same seed are identical
# ---------------------------------------------------------------------------------------------
_rng = np.random.default_rng(0)


def manual_seed(seed):
    """Seed tinyllm's generator (parameter init, dropout, sampling)."""
    global _rng
    _rng = np.random.default_rng(seed)
    return _rng


def rng():
    return _rng


def get_rng_state():
    """The generator's state as a JSON-friendly dict (for checkpoints and exact resume)."""
    return _rng.bit_generator.state


def set_rng_state(state):
    _rng.bit_generator.state = state


# ---------------------------------------------------------------------------------------------
# kernels: numba (fast, default on CPU) or numpy (the readable reference twins)
# ---------------------------------------------------------------------------------------------
_KERNEL_CHOICES = ("numba", "numpy")
_kernels = os.environ.get("TINYLLM_KERNELS", "numba").strip().lower() or "numba"
if _kernels not in _KERNEL_CHOICES:
    raise ValueError(f"TINYLLM_KERNELS must be one of {_KERNEL_CHOICES}, got {_kernels!r}")


def kernels():
    """The kernel family in use: 'numba', or 'numpy' (the reference twins; always so in plain mode)."""
    return "numpy" if _plain else _kernels


def set_kernels(name):
    global _kernels
    name = str(name).lower()
    if name not in _KERNEL_CHOICES:
        raise ValueError(f"kernels must be one of {_KERNEL_CHOICES}, got {name!r}")
    _kernels = name


@contextlib.contextmanager
def use_kernels(name):
    previous = _kernels
    set_kernels(name)
    try:
        yield
    finally:
        set_kernels(previous)


# ---------------------------------------------------------------------------------------------
# plain mode: every fast path off, so the code that runs is the code a reader reads
# ---------------------------------------------------------------------------------------------
_plain = os.environ.get("TINYLLM_PLAIN", "0").strip() not in ("", "0")


def plain():
    """True in plain mode (``TINYLLM_PLAIN=1`` or ``use_plain()``): the engine copies and sums
    gradients without reusing buffers (``autograd/grad_buffers.py``), every kernel is its NumPy twin,
    and Linear's matmuls are NumPy's ``@``. Results match the fast paths (bitwise where the same
    kernels run: see tests/test_plain_mode.py)."""
    return _plain


def set_plain(flag=True):
    global _plain
    _plain = bool(flag)


@contextlib.contextmanager
def use_plain(flag=True):
    previous = _plain
    set_plain(flag)
    try:
        yield
    finally:
        set_plain(previous)


# ---------------------------------------------------------------------------------------------
# tuning: process-wide settings that speed up training, made only when asked
# ---------------------------------------------------------------------------------------------
def tune_for_training():
    """Tune this process for training speed. Importing tinyllm never does this; the CLI, ``train()``
    and the benchmarks call it. Two process-wide changes, each skipped when its variable says so:

    - ``malloc``: glibc keeps freed memory for reuse instead of unmapping it (mmap threshold 32 MiB,
      trim threshold 1 GiB, top pad 64 MiB), so a step's activations reuse mapped pages instead of
      faulting in fresh ones. ``TINYLLM_MALLOC_TUNING=0`` skips it; a no-op away from glibc.
    - ``one_pool``: the BLAS that numba's ``np.dot`` calls (scipy's OpenBLAS) is set to one thread,
      so Linear's matmuls run inside numba's thread pool beside the other kernels instead of two
      pools fighting for the cores (``tinyllm/kernels/pool.py``). numpy's own BLAS is untouched.
      ``TINYLLM_ONE_POOL=0`` skips it, and it needs numba to have more than one thread.

    Returns ``{'malloc': bool, 'one_pool': bool}``: what applied. ``restore_defaults()`` undoes both.
    """
    return {"malloc": _set_malloc(tuned=True), "one_pool": _set_one_pool(tuned=True)}


def restore_defaults():
    """Undo ``tune_for_training()``: glibc's default allocator thresholds, and scipy's BLAS back
    to the thread count it had before. Returns what was undone, in the same form."""
    return {"malloc": _set_malloc(tuned=False), "one_pool": _set_one_pool(tuned=False)}


def tuning():
    """What ``tune_for_training()`` has applied and not undone: ``{'malloc': bool, 'one_pool': bool}``."""
    return {"malloc": _malloc_tuned, "one_pool": _one_pool is not None}


_one_pool = None  # while the one-pool setup holds: {'saved': [(controller, threads before)], 'blas_core'}


def _set_one_pool(tuned):
    global _one_pool
    if not tuned:
        if _one_pool is None:
            return False
        for controller, n in _one_pool["saved"]:
            controller.set_num_threads(n)
        _one_pool = None
        return True
    if _one_pool is not None:
        return True
    import numba
    if os.environ.get("TINYLLM_ONE_POOL", "1").strip() == "0" or numba.get_num_threads() < 2:
        return False
    ours = _numba_blas()
    if not ours:
        return False
    _one_pool = {"saved": [(c, c.num_threads) for c in ours],
                 "blas_core": str(getattr(ours[0], "architecture", None) or "").lower() or None}
    for c in ours:
        c.set_num_threads(1)
    return True


def _numba_blas():
    """threadpoolctl's controllers of the BLAS numba's np.dot calls (scipy's OpenBLAS), or [] when it
    cannot be found or is numpy's library too (a conda or system install, where limiting it would
    slow the user's numpy)."""
    try:
        import scipy
        import scipy.linalg.cython_blas  # noqa: F401  (loads the library numba's np.dot calls)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return []

    def inside(package, path):  # the package's folder, or the wheel's bundled '<package>.libs'
        root = os.path.dirname(os.path.abspath(package.__file__))
        return path.startswith(root + os.sep) or path.startswith(root + ".libs" + os.sep)

    blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    ours = [c for c in blas if inside(scipy, os.path.abspath(c.filepath))]
    if any(inside(np, os.path.abspath(c.filepath)) for c in ours):
        return []
    return ours


_malloc_tuned = False


def _set_malloc(tuned):
    global _malloc_tuned
    if tuned and os.environ.get("TINYLLM_MALLOC_TUNING", "1").strip() == "0":
        return False
    if tuned == _malloc_tuned:
        return tuned
    try:
        import ctypes
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
    # glibc's defaults are 128 KiB for both thresholds and 128 KiB of top pad
    mmap, trim, pad = (32 * 2**20, 2**30, 64 * 2**20) if tuned else (128 * 2**10, 128 * 2**10, 128 * 2**10)
    ok = bool(mallopt(M_MMAP_THRESHOLD, mmap) and mallopt(M_TRIM_THRESHOLD, trim))
    mallopt(M_TOP_PAD, pad)
    _malloc_tuned = tuned and ok
    return ok

