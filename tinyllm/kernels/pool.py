"""One thread pool for the hot path, numba's, and the table of sizes at which each kernel's parallel
driver pays for starting it.

Two thread pools on few cores fight: OpenBLAS's threads keep spinning for a while after each numpy
matmul, on the cores numba's parallel kernels want next. So in the one-pool setup the matmuls of a
training step run inside numba's pool too (``matmul.py``), through the BLAS that numba's ``np.dot``
calls: scipy's OpenBLAS, a separate library from numpy's, which ``enable()`` sets to one thread.
numpy's own BLAS keeps its threads for everything else a user does with numpy.

``active()`` is True once ``tinyllm.backend.tune_for_training()`` has set that up: numba has more
than one thread, threadpoolctl can find scipy's OpenBLAS and it is not numpy's library too.
``TINYLLM_ONE_POOL=0`` refuses the setup.
"""
import math
import os

import numpy as np

from .. import backend

# kernel -> (the least work for its parallel driver in the one-pool setup, the same outside it).
# In it the bar is the pool's start, a few microseconds; outside it, BLAS threads that may still be
# spinning, so the bar is far higher (infinite where numpy's own threaded BLAS or operator is as good).
# Work is elements, except for the two kernels measured in flops.
PARALLEL_MIN = {
    "adam": (2 ** 14, 2 ** 20),
    "layernorm": (2 ** 14, 2 ** 20),
    "softmax": (2 ** 15, 2 ** 21),
    "cross_entropy": (2 ** 15, 2 ** 21),  # N * C
    "gelu": (2 ** 15, 2 ** 21),
    "elementwise": (2 ** 15, math.inf),
    "attention": (2 ** 20, 2 ** 27),  # flops, ~4 B H L S D a pass
    "matmul": (2 ** 21, math.inf),  # flops, 2 M K N; below it one BLAS call on the calling thread wins
}


def parallel(kernel, work):
    """Run ``kernel``'s parallel driver on ``work``? With more than one thread, when the work reaches
    the kernel's minimum in ``PARALLEL_MIN`` (the one-pool column when the setup holds)."""
    in_pool, shared = PARALLEL_MIN[kernel]
    if work < in_pool and work < shared:  # too small either way: the common case, answered cheaply
        return False
    return work >= (in_pool if active() else shared) and threads() > 1


def threads():
    """numba's thread count now (``numba.set_num_threads`` may change it). Asked before every kernel
    call, so it uses numba's ctypes getter, several times cheaper than ``numba.get_num_threads``."""
    global _get_threads
    if _get_threads is None:
        try:
            import numba
            numba.get_num_threads()  # starts numba's thread pool, which the getter needs
            from numba.np.ufunc.parallel import _get_num_threads
            _get_threads = _get_num_threads if _get_num_threads() > 0 else numba.get_num_threads
        except Exception:  # pragma: no cover - numba is a core dependency; a private name may move
            import numba
            _get_threads = numba.get_num_threads
    return _get_threads()


_get_threads = None


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


_active = False  # the one-pool setup holds: set by enable(), which tune_for_training() calls
_blas_core = None  # scipy's OpenBLAS kernel family ('skylakex', 'haswell', ...), found by enable()
_saved_threads = None  # [(controller, its thread count before enable())], for disable()


def enable():
    """Set up the one-pool design (see the module's docstring): scipy's BLAS on one thread, so the
    matmul drivers may run inside numba's pool. Returns whether it holds. Process-wide, so only
    ``tinyllm.backend.tune_for_training()`` calls it; ``TINYLLM_ONE_POOL=0`` refuses it."""
    global _active, _blas_core, _saved_threads
    if _active:
        return True
    if os.environ.get("TINYLLM_ONE_POOL", "1").strip() == "0" or threads() < 2:
        return False
    ours = _numba_blas()
    if not ours:
        return False
    _saved_threads = [(c, c.num_threads) for c in ours]
    for c in ours:
        c.set_num_threads(1)
    _blas_core = str(getattr(ours[0], "architecture", None) or "").lower() or None
    _active = True
    return True


def disable():
    """Undo ``enable()``: scipy's BLAS gets back its thread count. Returns whether there was a setup."""
    global _active, _saved_threads
    if not _active:
        return False
    for c, n in _saved_threads:
        c.set_num_threads(n)
    _active, _saved_threads = False, None
    return True


def active():
    """Whether the one-pool setup holds (never in plain mode)."""
    return _active and not backend.plain()


def blas_core():
    """The kernel family of the BLAS that numba's np.dot calls, lowercased, as OpenBLAS reports it
    ('skylakex', 'haswell', 'zen', ...); None outside the one-pool setup or when it says nothing."""
    return _blas_core if active() else None
