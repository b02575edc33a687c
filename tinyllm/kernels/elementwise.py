"""Elementwise a + b, a += b and a *= b split between numba's threads, for the large same-shape passes
of a training step: the residual adds, the engine's gradient sums and GELU's backward multiply.

Each is a memory-bound pass that NumPy runs on one thread while the other cores wait for the next
parallel kernel; one contiguous run per thread puts every core's memory bandwidth to work. The
NumPy twin is the plain operator. Only the one-pool setup takes the numba version, and only for
large, same-shape, same-dtype, contiguous operands that do not share memory; every element is
computed on its own, in the same dtype, so the split changes nothing.
"""
import numpy as np
from numba import njit, prange

from . import pool
from .dispatch import Kernel

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


# -------------------------------------------------------------------------- numba version
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
# the add unvectorised.
@njit(parallel=True, cache=True, error_model="numpy")
def _run_parallel(op, a, b, out, n_parts):
    # a, b, out: 1-d, C-contiguous, one size; runs start on 16-element (64-byte) boundaries, so no
    # two threads write into one cache line
    n = a.size
    for p in prange(n_parts):
        lo = (p * n // n_parts) // 16 * 16
        hi = n if p == n_parts - 1 else ((p + 1) * n // n_parts) // 16 * 16
        _run(op, a[lo:hi], b[lo:hi], out[lo:hi])


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


# -------------------------------------------------------------------------- entry points
def _splits(a, b):
    return (pool.parallel("elementwise", a.size) and a.shape == b.shape and a.flags.c_contiguous
            and b.flags.c_contiguous and not np.may_share_memory(a, b))


def _splits_into(a, b):
    return _splits(a, b) and a.flags.writeable  # a read-only target gets NumPy's error


add = Kernel("elementwise.add", add_numba, add_numpy, floats=(0, 1), applies=_splits, parallel_only="elementwise",
             doc="a + b, a new array.")
add_inplace = Kernel("elementwise.add_inplace", add_inplace_numba, add_inplace_numpy, floats=(0, 1),
                     applies=_splits_into, parallel_only="elementwise", doc="a += b; returns a.")
mul_inplace = Kernel("elementwise.mul_inplace", mul_inplace_numba, mul_inplace_numpy, floats=(0, 1),
                     applies=_splits_into, parallel_only="elementwise", doc="a *= b; returns a.")
