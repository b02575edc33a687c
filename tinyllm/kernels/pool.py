"""One thread pool for the hot path, numba's, and the table of sizes at which each kernel's parallel
driver pays for starting it.

Two thread pools on few cores fight: OpenBLAS's threads keep spinning for a while after each numpy
matmul, on the cores numba's parallel kernels want next. So in the one-pool setup the matmuls of a
training step run inside numba's pool too (``matmul.py``), through the BLAS that numba's ``np.dot``
calls: scipy's OpenBLAS, a separate library from numpy's, which ``backend.tune_for_training()`` sets
to one thread.
numpy's own BLAS keeps its threads for everything else a user does with numpy.

``active()`` is True once ``tinyllm.backend.tune_for_training()`` has set that up.
"""
import math


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


def active():
    """Whether the one-pool setup holds (``backend.tune_for_training()`` sets it up; never in plain mode)."""
    return backend._one_pool is not None and not backend.plain()


def blas_core():
    """The kernel family of the BLAS that numba's np.dot calls, lowercased, as OpenBLAS reports it
    ('skylakex', 'haswell', 'zen', ...); None outside the one-pool setup or when it says nothing."""
    return backend._one_pool["blas_core"] if active() else None
