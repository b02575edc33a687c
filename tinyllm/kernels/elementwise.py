"""Elementwise a + b, a += b and a *= b on both cores, for the large same-shape passes of a training
step: the residual adds, the engine's gradient sums and GELU's backward multiply.

Each is a memory-bound pass over 0.4-1.6 MB that NumPy runs on one thread, while the other core waits
for the next parallel kernel; split into one contiguous run per thread they take about half as long.
The NumPy twin is the plain operator. Anything else (broadcasting, mixed dtypes, non-contiguous
operands, operands that share memory, small arrays, CuPy) takes the twin, so the result is always
NumPy's: every element is computed on its own, in the same dtype, so the split changes nothing.
"""
import numpy as np
from numba import njit, prange

from .. import backend
from . import pool

PARALLEL_MIN_SIZE = 2 ** 15  # elements; below it one thread wins (the pool's start, see pool.py)
ADD, IADD, IMUL = 0, 1, 2  # out = a + b;  a += b;  a *= b


# -------------------------------------------------------------------------- NumPy reference twin
def add_numpy(a, b):
    return a + b


def add_inplace_numpy(a, b):
    a += b
    return a


def mul_inplace_numpy(a, b):
    a *= b
    return a


# -------------------------------------------------------------------------- numba twin
# One loop per operation, not one loop that branches on it. The in-place loops name only a and b: a
# loop writing into an output that aliases an input is not vectorised (LLVM's overlap check fails).
@njit(cache=True, error_model="numpy")
def _run(op, a, b, out):
    if op == ADD:
        for i in range(a.size):
            out[i] = a[i] + b[i]
    elif op == IADD:
        for i in range(a.size):
            a[i] += b[i]
    else:
        for i in range(a.size):
            a[i] *= b[i]


# The loop body is a call on slices: written inline in the prange body, numba's parfor lowering left
# the add unvectorised (0.38 ms against 0.03 ms at (768, 512), measured).
@njit(parallel=True, cache=True, error_model="numpy")
def _run_parallel(op, a, b, out, n_parts):
    # a, b, out: 1-d, C-contiguous, one size; runs start on 16-element (64-byte) boundaries, so no
    # two threads write into one cache line
    n = a.size
    for p in prange(n_parts):
        lo = (p * n // n_parts) // 16 * 16
        hi = n if p == n_parts - 1 else ((p + 1) * n // n_parts) // 16 * 16
        _run(op, a[lo:hi], b[lo:hi], out[lo:hi])


def _use_numba(a, b):
    # the size first: a decode step's small adds leave after one comparison
    return (type(a) is np.ndarray and a.size >= PARALLEL_MIN_SIZE and type(b) is np.ndarray
            and backend.kernels() == "numba" and a.shape == b.shape and a.dtype == b.dtype
            and a.dtype in (np.float32, np.float64) and a.flags.c_contiguous and b.flags.c_contiguous
            and pool.parallel(a.size, PARALLEL_MIN_SIZE, np.inf) and not np.may_share_memory(a, b))


def add_numba(a, b):
    out = np.empty_like(a)
    _run_parallel(ADD, a.reshape(-1), b.reshape(-1), out.reshape(-1), pool.threads())
    return out


def add_inplace_numba(a, b):
    flat = a.reshape(-1)
    _run_parallel(IADD, flat, b.reshape(-1), flat, pool.threads())
    return a


def mul_inplace_numba(a, b):
    flat = a.reshape(-1)
    _run_parallel(IMUL, flat, b.reshape(-1), flat, pool.threads())
    return a


# -------------------------------------------------------------------------- dispatch
def add(a, b):
    """a + b, a new array."""
    return add_numba(a, b) if _use_numba(a, b) else add_numpy(a, b)


def add_inplace(a, b):
    """a += b; returns a."""
    return add_inplace_numba(a, b) if _use_numba(a, b) and a.flags.writeable else add_inplace_numpy(a, b)


def mul_inplace(a, b):
    """a *= b; returns a."""
    return mul_inplace_numba(a, b) if _use_numba(a, b) and a.flags.writeable else mul_inplace_numpy(a, b)
