"""The matmuls of Linear, forward and backward, run inside numba's thread pool (see ``pool.py``).

    matmul(a, b)     = a @ b       (M, K) x (K, N): the forward x W^T and the backward dx = dy W
    matmul_tn(a, b)  = a^T @ b     (K, M)^T x (K, N): the weight gradient dW = dy^T x

The NumPy twin is the plain product (``a.dot(b)``). The numba version leaves the arithmetic to BLAS too
(numba's ``np.dot`` calls scipy's OpenBLAS, set to one thread) and only decides who does which part:
each thread multiplies one block of a's rows; for ``matmul_tn`` each thread takes one block of the K rows
that are summed over and the partial products are added at the end (a block of dW's rows would be a
strided slice of dy, which BLAS would have to copy). The first thread's part goes straight into the
output, so only the others need a buffer to be added in. Small products, other dtypes, and every case
outside the one-pool setup take the NumPy twin (outside it numpy's own threaded BLAS is the better
choice at every size).
"""
import numpy as np
from numba import njit, prange

from . import pool
from .dispatch import Kernel

MIN_ROWS_PER_THREAD = 32  # fewer rows (a decode step's one token, a short prompt) go to numpy's BLAS,
# which splits the weight between its threads; a block of rows each would have every thread read all
# of the weight.


# -------------------------------------------------------------------------- NumPy reference twin
# np.dot rather than @ for these 2-d products: the same BLAS call and the same result, without the
# matmul ufunc's dispatch, which costs as much as a decode step's small product
def matmul_numpy(a, b):
    return a.dot(b)


def matmul_tn_numpy(a, b):
    return a.T.dot(b)


# -------------------------------------------------------------------------- numba version
@njit(cache=True)
def _dot_into(a, b, out):
    # np.dot inside a parallel loop body would make numba refuse to cache the whole driver
    np.dot(a, b, out)


@njit(parallel=True, cache=True)
def _matmul_rows(a, b, out, n):
    # a (M, K) C-contiguous, b (K, N) C- or F-contiguous, out (M, N): n blocks of rows, one a thread
    M = a.shape[0]
    for p in prange(n):
        lo, hi = p * M // n, (p + 1) * M // n
        _dot_into(a[lo:hi], b, out[lo:hi])


@njit(parallel=True, cache=True)
def _matmul_tn_split(a, b, parts, out):
    # a (K, M), b (K, N), C-contiguous; parts (n - 1, M, N). Thread 0 writes a[K0]^T b[K0] straight
    # into out and thread p > 0 writes a[Kp]^T b[Kp] into parts[p - 1]; then out += sum of the parts
    # (one buffer fewer to fill and read back than n partials summed into out)
    K, n = a.shape[0], parts.shape[0] + 1
    for p in prange(n):
        lo, hi = p * K // n, (p + 1) * K // n
        if p == 0:
            _dot_into(a[lo:hi].T, b[lo:hi], out)
        else:
            _dot_into(a[lo:hi].T, b[lo:hi], parts[p - 1])
    # row by row, one part at a time: the inner loop is one contiguous run, which LLVM vectorises (a
    # loop over the parts innermost, summing each element in a scalar, is not). The same additions
    # in the same order either way
    for i in prange(out.shape[0]):
        row = out[i]
        for p in range(n - 1):
            part = parts[p, i]
            for j in range(row.shape[0]):
                row[j] += part[j]


def _check(name, a_shape, b_shape, ka, kb):
    if ka != kb:
        raise ValueError(f"{name}: shapes {a_shape} and {b_shape} do not align ({ka} != {kb})")


def matmul_numba(a, b):
    _check("matmul", a.shape, b.shape, a.shape[1], b.shape[0])
    a = np.ascontiguousarray(a)
    if not (b.flags.c_contiguous or b.flags.f_contiguous):
        b = np.ascontiguousarray(b)
    out = np.empty((a.shape[0], b.shape[1]), a.dtype)
    _matmul_rows(a, b, out, min(a.shape[0], pool.threads()))
    return out


def matmul_tn_numba(a, b):
    _check("matmul_tn", a.shape, b.shape, a.shape[0], b.shape[0])
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    n = max(1, min(a.shape[0], pool.threads()))
    parts = np.empty((n - 1, a.shape[1], b.shape[1]), a.dtype)
    out = np.empty((a.shape[1], b.shape[1]), a.dtype)
    _matmul_tn_split(a, b, parts, out)
    return out


# -------------------------------------------------------------------------- entry points
def _splits(a, b):
    # a's first dim is what is split between the threads: its rows, or for matmul_tn the K summed over
    return (a.ndim == 2 and b.ndim == 2 and min(a.shape + b.shape) > 0
            and a.shape[0] >= MIN_ROWS_PER_THREAD * pool.threads()
            and pool.parallel("matmul", 2 * a.shape[0] * a.shape[1] * b.shape[1]))


matmul = Kernel("matmul.matmul", matmul_numba, matmul_numpy, floats=(0, 1), applies=_splits,
                doc="a @ b for 2-d arrays.")
matmul_tn = Kernel("matmul.matmul_tn", matmul_tn_numba, matmul_tn_numpy, floats=(0, 1), applies=_splits,
                   doc="a.T @ b for 2-d arrays, without forming a.T.")
