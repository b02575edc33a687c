"""Softmax cross-entropy with class-id targets on plain (N, C) logits: the NumPy reference twin and a
fused numba version (one sweep per row for the forward, one for the backward; nothing of size N x C but
the gradient itself is allocated).

Per row i with target y (rows whose target is ``ignore_index`` count for nothing):

    lse = log sum_c exp(x_c),   logp_c = x_c - lse
    a_c = (eps / C) w_c + (1 - eps) w_y [c == y]          (eps: label smoothing, w: class weights)
    loss_i = -sum_c a_c logp_c  =  -(eps / C) sum_c w_c logp_c - (1 - eps) w_y logp_y
    d loss_i / d x_c = softmax(x)_c sum(a) - a_c

``forward`` returns the per-row losses, the per-row lse (kept for the backward, so the probabilities
are rebuilt rather than stored) and the 'mean' denominator sum_i w_{y_i}. ``backward`` takes one
upstream factor per row (``g / denom`` broadcast for 'mean').
"""
import math

import numpy as np
from numba import njit, prange

from .. import backend
from . import pool
from .dispatch import Kernel
from .fastmath import exp_inplace, exp_shifted_rows
from .reduce import sum64

ROWS_PER_BLOCK = 64  # a parallel work item


# -------------------------------------------------------------------------- NumPy reference twin
def cross_entropy_forward_numpy(logits, target, weight, ignore_index, label_smoothing):
    """(losses (N,), lse (N,) float64, denom) for logits (N, C) and int targets (N,)."""
    xp = backend.get_array_module(logits)
    N, C = logits.shape
    x = logits.astype(xp.float64)
    m = x.max(axis=1, keepdims=True)
    lse = (m + xp.log(xp.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]  # (N,)
    logp = x - lse[:, None]
    w = xp.ones(C) if weight is None else weight.astype(xp.float64)
    valid = target != ignore_index
    safe = xp.where(valid, target, 0)
    w_y = w[safe] * valid  # (N,)
    losses = -(label_smoothing / C) * (logp * w).sum(axis=1) * valid - (1 - label_smoothing) * w_y * logp[xp.arange(N), safe]
    return losses.astype(logits.dtype), lse, float(w_y.sum())


def cross_entropy_backward_numpy(logits, target, weight, ignore_index, label_smoothing, lse, g_rows):
    """d(sum_i g_rows[i] * loss_i) / d logits, (N, C) in the logits' dtype."""
    xp = backend.get_array_module(logits)
    N, C = logits.shape
    p = xp.exp(logits.astype(xp.float64) - lse[:, None])  # softmax, (N, C)
    w = xp.ones(C) if weight is None else weight.astype(xp.float64)
    valid = target != ignore_index
    safe = xp.where(valid, target, 0)
    a = (label_smoothing / C) * w[None, :] * valid[:, None]  # (N, C)
    a[xp.arange(N), safe] += (1 - label_smoothing) * w[safe] * valid
    grad = (p * a.sum(axis=1, keepdims=True) - a) * g_rows.astype(xp.float64)[:, None]
    return xp.where(valid[:, None], grad, 0).astype(logits.dtype)  # ignored rows: 0, even if g is inf


# -------------------------------------------------------------------------- numba version
@njit(cache=True, error_model="numpy")
def _block_lse(x, lo, hi, buf, ibuf, fast, lse):
    """lse[i] = log sum exp of x's rows lo..hi (float32 rows use the fast exp); buf: scratch."""
    C = x.shape[1]
    # the rows' maxima go to lse for now: they are the shifts
    exp_shifted_rows(x, lo, hi, buf.reshape((hi - lo, C)), lse[lo:hi], ibuf, fast)
    for i in range(lo, hi):
        m = lse[i]
        if m == -np.inf or m == np.inf or m != m:  # all -inf, an inf or a NaN: the float64 formula says
            s = 0.0
            for c in range(C):
                s += math.exp(np.float64(x[i, c]) - m)
            lse[i] = m + math.log(s)
        else:
            lse[i] = m + math.log(sum64(buf[(i - lo) * C:(i - lo + 1) * C]))


@njit(cache=True, error_model="numpy")
def _ce_forward_block(blk, x, target, w, ignore_index, eps, fast, losses, lse, w_y):
    N, C = x.shape
    lo, hi = blk * ROWS_PER_BLOCK, min(N, (blk + 1) * ROWS_PER_BLOCK)
    _block_lse(x, lo, hi, np.empty((hi - lo) * C, x.dtype), np.empty((hi - lo) * C, np.int32), fast, lse)
    for i in range(lo, hi):
        xr, l = x[i], lse[i]
        y = target[i]
        if y == ignore_index:
            losses[i] = 0
            w_y[i] = 0.0
            continue
        loss = -(1.0 - eps) * w[y] * (np.float64(xr[y]) - l)
        if eps != 0.0:
            s = 0.0
            for c in range(C):
                s += w[c] * (np.float64(xr[c]) - l)
            loss -= eps / C * s
        losses[i] = loss
        w_y[i] = w[y]


@njit(cache=True, error_model="numpy")
def _ce_backward_block(blk, x, target, w, ignore_index, eps, fast, lse, g_rows, w_sum, grad):
    N, C = x.shape
    lo, hi = blk * ROWS_PER_BLOCK, min(N, (blk + 1) * ROWS_PER_BLOCK)
    if fast:  # the softmax of the whole block: shifted rows, then one exp call
        for i in range(lo, hi):
            gr, xr = grad[i], x[i]
            for c in range(C):
                gr[c] = np.float64(xr[c]) - lse[i]  # rounded to float32 only after subtracting
        block = grad[lo:hi].reshape((hi - lo) * C)
        exp_inplace(block, block.size, np.empty(block.size, np.int32), True)
    for i in range(lo, hi):
        gr = grad[i]
        y = target[i]
        if y == ignore_index:
            for c in range(C):
                gr[c] = 0
            continue
        if not fast:
            xr = x[i]
            for c in range(C):
                gr[c] = math.exp(np.float64(xr[c]) - lse[i])
        g = np.float64(g_rows[i])
        a_sum = eps / C * w_sum + (1.0 - eps) * w[y]
        for c in range(C):
            gr[c] = (np.float64(gr[c]) * a_sum - eps / C * w[c]) * g
        gr[y] = gr[y] - (1.0 - eps) * w[y] * g


# Serial and parallel drivers over blocks of rows. The 'mean' denominator (the sum of the rows' target
# weights) is one float64 sum over the rows after the blocks, so it does not depend on the thread count.
@njit(cache=True, error_model="numpy")
def _ce_forward_serial(x, target, w, ignore_index, eps, fast, losses, lse, w_y):
    for blk in range((x.shape[0] + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        _ce_forward_block(blk, x, target, w, ignore_index, eps, fast, losses, lse, w_y)
    return sum64(w_y)


@njit(parallel=True, cache=True, error_model="numpy")
def _ce_forward_parallel(x, target, w, ignore_index, eps, fast, losses, lse, w_y):
    for blk in prange((x.shape[0] + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        _ce_forward_block(blk, x, target, w, ignore_index, eps, fast, losses, lse, w_y)
    return sum64(w_y)


@njit(cache=True, error_model="numpy")
def _ce_backward_serial(x, target, w, ignore_index, eps, fast, lse, g_rows, w_sum, grad):
    for blk in range((x.shape[0] + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        _ce_backward_block(blk, x, target, w, ignore_index, eps, fast, lse, g_rows, w_sum, grad)


@njit(parallel=True, cache=True, error_model="numpy")
def _ce_backward_parallel(x, target, w, ignore_index, eps, fast, lse, g_rows, w_sum, grad):
    for blk in prange((x.shape[0] + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        _ce_backward_block(blk, x, target, w, ignore_index, eps, fast, lse, g_rows, w_sum, grad)


def _parallel(x):
    return pool.parallel("cross_entropy", x.size)


def _weights(weight, C):
    return np.ones(C) if weight is None else np.ascontiguousarray(weight, dtype=np.float64)


def cross_entropy_forward_numba(logits, target, weight, ignore_index, label_smoothing):
    x = np.ascontiguousarray(logits)
    N, C = x.shape
    losses = np.empty(N, x.dtype)
    lse = np.empty(N, np.float64)
    w_y = np.empty(N, np.float64)  # each row's target weight (0 if ignored)
    run = _ce_forward_parallel if _parallel(x) else _ce_forward_serial
    denom = run(x, np.ascontiguousarray(target, dtype=np.int64), _weights(weight, C), int(ignore_index),
                float(label_smoothing), x.dtype == np.float32, losses, lse, w_y)
    return losses, lse, float(denom)


def cross_entropy_backward_numba(logits, target, weight, ignore_index, label_smoothing, lse, g_rows):
    x = np.ascontiguousarray(logits)
    N, C = x.shape
    w = _weights(weight, C)
    grad = np.empty_like(x)
    run = _ce_backward_parallel if _parallel(x) else _ce_backward_serial
    run(x, np.ascontiguousarray(target, dtype=np.int64), w, int(ignore_index), float(label_smoothing),
        x.dtype == np.float32, lse, np.ascontiguousarray(g_rows, dtype=np.float64), float(w.sum()), grad)
    return grad


# -------------------------------------------------------------------------- entry points
forward = Kernel("cross_entropy.forward", cross_entropy_forward_numba, cross_entropy_forward_numpy,
                 doc="(losses (N,), lse (N,) float64, the 'mean' denominator) for logits (N, C).")
backward = Kernel("cross_entropy.backward", cross_entropy_backward_numba, cross_entropy_backward_numpy,
                  doc="d(sum_i g_rows[i] * loss_i) / d logits, (N, C) in the logits' dtype.")
