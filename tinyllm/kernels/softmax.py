"""Softmax over the last dim, forward and backward: the NumPy reference twin and a fused numba version.

    y = exp(x - max(x)) / sum(exp(x - max(x)))        dx = y * (dy - sum(dy * y))      (per row)

NumPy runs the forward as five passes with four temporaries (max, subtract, exp, sum, divide) and the
backward as four; the numba version makes one sweep per row for each, with the row sums in float64
and, for float32, the polynomial exp of ``fastmath.py``. Rows are split between threads in blocks.
It takes only the last dim; any other dim runs the reference.

Edge rows follow the formula, as the reference and torch do: a row of all -inf, or with +inf or a
NaN in it, comes out all NaN.
"""
import numpy as np
from numba import njit, prange

from .. import backend
from . import pool
from .dispatch import Kernel
from .fastmath import exp_shifted_rows
from .reduce import dot64, sum64

ROWS_PER_BLOCK = 64  # a parallel work item


# -------------------------------------------------------------------------- NumPy reference twin
def softmax_forward_numpy(x, dim=-1):
    xp = backend.get_array_module(x)
    e = xp.exp(x - x.max(axis=dim, keepdims=True))
    return e / e.sum(axis=dim, keepdims=True)


def softmax_backward_numpy(y, g, dim=-1):
    return y * (g - (g * y).sum(axis=dim, keepdims=True))


# -------------------------------------------------------------------------- numba version
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


def _is_last(x, dim):
    return x.ndim > 0 and dim % x.ndim == x.ndim - 1


def _check_last(x, dim):
    if x.ndim and not _is_last(x, dim):
        raise ValueError(f"softmax: the numba version takes the last dim of {x.shape}, got dim={dim}")


def softmax_forward_numba(x, dim=-1):
    """softmax over the last dim of a float32/float64 array."""
    _check_last(x, dim)
    x2 = _rows(x)
    y = np.empty_like(x2)
    if x2.size:
        (_forward_parallel if pool.parallel("softmax", x2.size) else _forward_serial)(x2, y, x2.dtype == np.float32)
    return y.reshape(x.shape)


def softmax_backward_numba(y, g, dim=-1):
    """dx of softmax over the last dim, given its output y and the upstream gradient g."""
    _check_last(y, dim)
    y2 = _rows(y)
    g2 = _rows(np.asarray(g, dtype=y.dtype))
    dx = np.empty_like(y2)
    if y2.size:
        (_backward_parallel if pool.parallel("softmax", y2.size) else _backward_serial)(y2, g2, dx)
    return dx.reshape(y.shape)


# -------------------------------------------------------------------------- entry points
forward = Kernel("softmax.forward", softmax_forward_numba, softmax_forward_numpy, applies=_is_last,
                 doc="softmax(x) over ``dim``; the numba version takes the last dim.")
backward = Kernel("softmax.backward", softmax_backward_numba, softmax_backward_numpy,
                  applies=lambda y, g, dim: _is_last(y, dim),
                  doc="dx of softmax over ``dim``, given its output y and the upstream gradient g.")
