"""Softmax over the last dim, forward and backward: the NumPy reference twin and a fused numba one.

    y = exp(x - max(x)) / sum(exp(x - max(x)))        dx = y * (dy - sum(dy * y))      (per row)

NumPy runs the forward as five passes with four temporaries (max, subtract, exp, sum, divide) and the
backward as four; the numba twin makes one sweep per row for each, with the row sums in float64 and,
for float32, flash attention's vectorised exp. Rows are split between threads in blocks. Only the
last dim of a C-contiguous array takes the kernel (the dispatch below); any other dim the reference.

Edge rows follow the formula, as the reference and torch do: a row of all -inf, or with +inf or a
NaN in it, comes out all NaN.
"""
import numpy as np
from numba import njit, prange

from .. import backend
from . import pool
from .flash_attention import _exp_inplace
from .reduce import dot64, sum64

ROWS_PER_BLOCK = 64  # a parallel work item
PARALLEL_MIN_SIZE = 2 ** 15  # elements; below it one thread wins (the pool's start, see pool.py)
PARALLEL_MIN_SIZE_SHARED = 2 ** 21  # the same outside the one-pool setup


# -------------------------------------------------------------------------- NumPy reference twin
def softmax_forward_numpy(x, dim=-1):
    xp = backend.get_array_module(x)
    e = xp.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def softmax_backward_numpy(y, g, dim=-1):
    return y * (g - (g * y).sum(axis=dim, keepdims=True))


# -------------------------------------------------------------------------- numba twin
@njit(cache=True, error_model="numpy")
def _row_max(xr):
    """max(xr) of a non-empty row, with eight running maxima: one chain of max(m, x) waits on each
    compare (at (3072, 64) float32 the row maxima took 55 us on one Zen 4 core; this way 30 us).
    A NaN is skipped unless it is the first element; either way its exp makes the row's sum NaN."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = xr[0]
    n8 = xr.size - xr.size % 8
    for c in range(0, n8, 8):
        a0, a1, a2, a3 = xr[c], xr[c + 1], xr[c + 2], xr[c + 3]
        a4, a5, a6, a7 = xr[c + 4], xr[c + 5], xr[c + 6], xr[c + 7]
        m0, m1 = (a0 if a0 > m0 else m0), (a1 if a1 > m1 else m1)
        m2, m3 = (a2 if a2 > m2 else m2), (a3 if a3 > m3 else m3)
        m4, m5 = (a4 if a4 > m4 else m4), (a5 if a5 > m5 else m5)
        m6, m7 = (a6 if a6 > m6 else m6), (a7 if a7 > m7 else m7)
    m = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    for c in range(n8, xr.size):
        m = max(m, xr[c])
    return m


@njit(cache=True, error_model="numpy")
def exp_shifted_rows(x, lo, hi, out, row_max, ibuf, fast):
    """out[i - lo] = exp(x[i] - m_i) and row_max[i - lo] = m_i = max(x[i]), for the rows lo..hi of x;
    out is C-contiguous (hi - lo, C), ibuf int32 of its size. One exp call covers the whole block: a
    call per row, on rows as short as attention's 64 keys or the recipe's 84 classes, cost as much as
    the exps. float32 (``fast``) uses the polynomial exp. Also the cross-entropy kernel's first step."""
    C = x.shape[1]
    for i in range(lo, hi):
        xr, orow = x[i], out[i - lo]
        m = _row_max(xr)
        row_max[i - lo] = m
        for c in range(C):
            orow[c] = xr[c] - m  # -inf - -inf (an all -inf row) is NaN, as in the formula
    _exp_inplace(out.reshape(out.size), out.size, ibuf, fast)


@njit(cache=True, error_model="numpy")
def _forward_block(blk, x, y, fast, ibuf):
    N, C = x.shape
    lo, hi = blk * ROWS_PER_BLOCK, min(N, (blk + 1) * ROWS_PER_BLOCK)
    exp_shifted_rows(x, lo, hi, y[lo:hi], np.empty(hi - lo, x.dtype), ibuf, fast)
    for i in range(lo, hi):
        yr = y[i]
        inv = 1.0 / sum64(yr)
        for c in range(C):
            yr[c] = yr[c] * inv


@njit(cache=True, error_model="numpy")
def _backward_block(blk, y, g, dx):
    N, C = y.shape
    for i in range(blk * ROWS_PER_BLOCK, min(N, (blk + 1) * ROWS_PER_BLOCK)):
        yr, gr, dr = y[i], g[i], dx[i]
        s = dot64(gr, yr)
        for c in range(C):
            dr[c] = yr[c] * (gr[c] - s)


@njit(cache=True, error_model="numpy")
def _forward_serial(x, y, fast):
    ibuf = np.empty(ROWS_PER_BLOCK * x.shape[1], np.int32)
    for blk in range((x.shape[0] + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        _forward_block(blk, x, y, fast, ibuf)


@njit(parallel=True, cache=True, error_model="numpy")
def _forward_parallel(x, y, fast):
    for blk in prange((x.shape[0] + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        _forward_block(blk, x, y, fast, np.empty(ROWS_PER_BLOCK * x.shape[1], np.int32))


@njit(cache=True, error_model="numpy")
def _backward_serial(y, g, dx):
    for blk in range((y.shape[0] + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        _backward_block(blk, y, g, dx)


@njit(parallel=True, cache=True, error_model="numpy")
def _backward_parallel(y, g, dx):
    for blk in prange((y.shape[0] + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        _backward_block(blk, y, g, dx)


def _rows(a):
    """a as C-contiguous (rows, last dim)."""
    a = np.ascontiguousarray(a)
    return a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)


def _parallel(a):
    return pool.parallel(a.size, PARALLEL_MIN_SIZE, PARALLEL_MIN_SIZE_SHARED)


def softmax_forward_numba(x):
    """softmax over the last dim of a float32/float64 array."""
    x2 = _rows(x)
    y = np.empty_like(x2)
    if x2.size:
        (_forward_parallel if _parallel(x2) else _forward_serial)(x2, y, x2.dtype == np.float32)
    return y.reshape(x.shape)


def softmax_backward_numba(y, g):
    """dx of softmax over the last dim, given its output y and the upstream gradient g."""
    y2 = _rows(y)
    g2 = _rows(np.asarray(g, dtype=y.dtype))
    dx = np.empty_like(y2)
    if y2.size:
        (_backward_parallel if _parallel(y2) else _backward_serial)(y2, g2, dx)
    return dx.reshape(y.shape)


# -------------------------------------------------------------------------- dispatch
def _use_numba(x, dim):
    return (backend.kernels() == "numba" and isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64)
            and x.ndim > 0 and dim % x.ndim == x.ndim - 1)


def forward(x, dim):
    return softmax_forward_numba(x) if _use_numba(x, dim) else softmax_forward_numpy(x, dim)


def backward(y, g, dim):
    return softmax_backward_numba(y, g) if _use_numba(y, dim) else softmax_backward_numpy(y, g, dim)
