"""LayerNorm forward and backward on plain (N, C) arrays: the NumPy reference twin and a fused numba version.

    forward:   mean = sum(x) / C,  rstd = 1 / sqrt(sum((x - mean)^2) / C + eps)
               xhat = (x - mean) * rstd,  y = xhat * w + b                         (per row of C)
    backward:  dxhat = dy * w
               dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))      (per row)
               dw = sum over rows of dy * xhat,  db = sum over rows of dy

Only ``mean`` and ``rstd`` (N numbers each) travel from the forward to the backward, which rebuilds
xhat from x, as llm.c does. The numba version does each row in one sweep over cached memory (statistics
in float64, through the vectorised sums of ``reduce.py``; the elementwise work in x's dtype) and the
backward's weight gradients in per-block partial sums, so rows can run in parallel without races.
"""
import math

import numpy as np
from numba import njit, prange

from .. import backend
from . import pool
from .dispatch import Kernel
from .reduce import dot64, sum64, sumsq64

ROWS_PER_BLOCK = 64  # rows per work item; each block keeps its own dw/db partial sums


# -------------------------------------------------------------------------- NumPy reference twin
def layernorm_forward_numpy(x, weight, bias, eps):
    """(y, mean, rstd) for x (N, C); weight and bias (C,) or None. mean, rstd are float64 (N,)."""
    xp = backend.get_array_module(x)
    x64 = x.astype(xp.float64)
    mean = x64.mean(axis=1)  # (N,)
    centered = x64 - mean[:, None]
    rstd = 1.0 / xp.sqrt((centered * centered).mean(axis=1) + eps)  # (N,)
    y = centered * rstd[:, None]
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype, copy=False), mean, rstd


def layernorm_backward_numpy(x, weight, mean, rstd, g, need_wb=True):
    """(dx, dw, db) of layernorm_forward_numpy; dw / db are None without weight / bias or need_wb."""
    xp = backend.get_array_module(x)
    xhat = (x.astype(xp.float64) - mean[:, None]) * rstd[:, None]  # (N, C)
    g64 = g.astype(xp.float64)
    dxhat = g64 * weight if weight is not None else g64
    dx = rstd[:, None] * (dxhat - dxhat.mean(axis=1, keepdims=True)
                          - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))
    dw = (g64 * xhat).sum(axis=0).astype(x.dtype) if need_wb else None
    db = g64.sum(axis=0).astype(x.dtype) if need_wb else None
    return dx.astype(x.dtype, copy=False), dw, db


# -------------------------------------------------------------------------- numba version
# The statistics (mean, rstd, the backward's two row means) are float64 sums; the elementwise work runs
# in x's dtype, so float32 rows go 8 to a vector instead of 4 and need no conversions. x - mean keeps float64's accuracy for rows far from 0 (|mean| >> std): mean is split
# as mf + dm, both in x's dtype, and (x - mf) - dm is exact to an ulp of x - mean. For float64 x,
# mf = mean and dm = 0, as before. numba cannot cast to a dtype known only from an array, so the
# float64 scalars are rounded to x's dtype by storing them in a small array of it (c, s below).
@njit(cache=True, error_model="numpy")
def _row_constants(m, r, c):
    """mf, dm, rf in c's dtype (see above)."""
    c[0] = m
    c[1] = m - np.float64(c[0])
    c[2] = r
    return c[0], c[1], c[2]


@njit(cache=True, error_model="numpy")
def _forward_block(blk, x, w, b, eps, y, mean, rstd):
    N, C = x.shape
    c = np.empty(3, x.dtype)
    for i in range(blk * ROWS_PER_BLOCK, min(N, (blk + 1) * ROWS_PER_BLOCK)):
        xr, yr = x[i], y[i]
        m = sum64(xr) / C  # two passes (mean, then squares about it): exact for large offsets
        r = 1.0 / math.sqrt(sumsq64(xr, m) / C + eps)
        mean[i] = m
        rstd[i] = r
        mf, dm, rf = _row_constants(m, r, c)
        for j in range(xr.size):
            yr[j] = ((xr[j] - mf) - dm) * rf * w[j] + b[j]


@njit(cache=True, error_model="numpy")
def _backward_block(blk, x, w, mean, rstd, g, dx, dw_part, db_part):
    N, C = x.shape
    xhat = np.empty(C, x.dtype)
    dxhat = np.empty(C, x.dtype)
    c = np.empty(3, x.dtype)
    s = np.empty(2, x.dtype)
    dwp, dbp = dw_part[blk], db_part[blk]  # (C,) partial sums of this block's rows
    dwp[:] = 0
    dbp[:] = 0
    for i in range(blk * ROWS_PER_BLOCK, min(N, (blk + 1) * ROWS_PER_BLOCK)):
        xr, gr, dxr = x[i], g[i], dx[i]
        mf, dm, rf = _row_constants(mean[i], rstd[i], c)
        for j in range(C):
            xh = ((xr[j] - mf) - dm) * rf
            xhat[j] = xh
            dxhat[j] = gr[j] * w[j]
            dwp[j] += gr[j] * xh
            dbp[j] += gr[j]
        s[0] = sum64(dxhat) / C  # float64 sums, in separate sweeps: no reduction chain above
        s[1] = dot64(dxhat, xhat) / C
        s1, s2 = s[0], s[1]
        for j in range(C):
            dxr[j] = rf * (dxhat[j] - s1 - xhat[j] * s2)


@njit(cache=True, error_model="numpy")
def _forward_serial(x, w, b, eps, y, mean, rstd):
    for blk in range((x.shape[0] + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        _forward_block(blk, x, w, b, eps, y, mean, rstd)


@njit(parallel=True, cache=True, error_model="numpy")
def _forward_parallel(x, w, b, eps, y, mean, rstd):
    for blk in prange((x.shape[0] + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        _forward_block(blk, x, w, b, eps, y, mean, rstd)


@njit(cache=True, error_model="numpy")
def _sum_blocks(part, out):
    """out = part summed over its blocks (axis 0) in float64, block after block, rounded once."""
    for j in range(out.size):
        acc = 0.0
        for blk in range(part.shape[0]):
            acc += np.float64(part[blk, j])
        out[j] = acc


# The block partials are summed here rather than by NumPy in the wrapper, which would add two
# zero-fills, two float64 sums and their casts: as much time as the kernel at a GPT's sizes.
@njit(cache=True, error_model="numpy")
def _backward_serial(x, w, mean, rstd, g, dx, dw_part, db_part, dw, db):
    for blk in range((x.shape[0] + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        _backward_block(blk, x, w, mean, rstd, g, dx, dw_part, db_part)
    _sum_blocks(dw_part, dw)
    _sum_blocks(db_part, db)


@njit(parallel=True, cache=True, error_model="numpy")
def _backward_parallel(x, w, mean, rstd, g, dx, dw_part, db_part, dw, db):
    for blk in prange((x.shape[0] + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        _backward_block(blk, x, w, mean, rstd, g, dx, dw_part, db_part)
    _sum_blocks(dw_part, dw)
    _sum_blocks(db_part, db)


def _n_blocks(N):
    return (N + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK


def layernorm_forward_numba(x, weight, bias, eps):
    x = np.ascontiguousarray(x)
    N, C = x.shape
    w = np.ones(C, x.dtype) if weight is None else np.ascontiguousarray(weight, dtype=x.dtype)
    b = np.zeros(C, x.dtype) if bias is None else np.ascontiguousarray(bias, dtype=x.dtype)
    y = np.empty_like(x)
    mean = np.empty(N, np.float64)
    rstd = np.empty(N, np.float64)
    run = _forward_parallel if pool.parallel("layernorm", x.size) else _forward_serial
    run(x, w, b, float(eps), y, mean, rstd)
    return y, mean, rstd


def layernorm_backward_numba(x, weight, mean, rstd, g, need_wb=True):
    x = np.ascontiguousarray(x)
    g = np.ascontiguousarray(g, dtype=x.dtype)
    N, C = x.shape
    w = np.ones(C, x.dtype) if weight is None else np.ascontiguousarray(weight, dtype=x.dtype)
    dx = np.empty_like(x)
    dw_part = np.empty((_n_blocks(N), C), x.dtype)  # a block's 64 rows summed in x's dtype, the blocks in float64
    db_part = np.empty((_n_blocks(N), C), x.dtype)
    dw, db = np.empty(C, x.dtype), np.empty(C, x.dtype)
    run = _backward_parallel if pool.parallel("layernorm", x.size) else _backward_serial
    run(x, w, mean, rstd, g, dx, dw_part, db_part, dw, db)
    return (dx, dw, db) if need_wb else (dx, None, None)


# -------------------------------------------------------------------------- entry points
forward = Kernel("layernorm.forward", layernorm_forward_numba, layernorm_forward_numpy,
                 doc="(y, mean, rstd) of LayerNorm over the last dim of x (N, C).")
backward = Kernel("layernorm.backward", layernorm_backward_numba, layernorm_backward_numpy,
                  doc="(dx, dw, db) of LayerNorm, on the same version as the forward would pick.")
