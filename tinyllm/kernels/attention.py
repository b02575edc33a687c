"""Scaled dot-product attention on plain arrays: the NumPy reference twin.

These functions know nothing of Tensor. ``forward`` returns the output and the per-row logsumexp of
the scores; ``backward`` recomputes the probabilities from that logsumexp (as flash attention does),
so only O(T) numbers travel from the forward to the backward pass. This reference still builds the
full (T, S) score matrix per call; the fused numba kernels must compute the same function without it.

Shapes: q (..., T, D), k (..., S, D), v (..., S, Dv); mask broadcastable to (..., T, S), either
boolean (True = may attend) or additive floats.
"""
import numpy as np

from .. import backend


def _scores(q, k, scale, causal, mask):
    xp = backend.get_array_module(q)
    s = (q @ k.swapaxes(-1, -2)) * scale  # (..., T, S)
    if mask is not None:
        if mask.dtype == bool:
            s = xp.where(mask, s, -xp.inf)
        else:
            s = s + mask
    if causal:
        T, S = s.shape[-2:]
        s = xp.where(xp.tril(xp.ones((T, S), dtype=bool)), s, -xp.inf)
    return s


def attention_forward(q, k, v, scale, causal=False, mask=None):
    """out = softmax(q k^T * scale + mask) v ;  lse = logsumexp of each row of the scores.

    A row whose keys are all masked gets output 0 and lse -inf (torch's math path gives NaN there).
    lse is kept in float64 (only O(T) numbers): rounded to float32, a score of 1e4 would carry an
    error of ~1e-3 into the probabilities the backward pass rebuilds from it.
    """
    xp = backend.get_array_module(q)
    s = _scores(q, k, scale, causal, mask)
    m = s.max(axis=-1, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)
    p = xp.exp(s - m)  # (..., T, S)
    denom = p.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = (m.astype(np.float64) + xp.log(denom.astype(np.float64)))[..., 0]  # (..., T)
        p = xp.where(denom > 0, p / denom, 0).astype(q.dtype, copy=False)
    return p @ v, lse


def attention_backward(q, k, v, out, lse, dout, scale, causal=False, mask=None):
    """Gradients of attention_forward.

    With P = softmax(S), O = P V:   dV = P^T dO,   dP = dO V^T,
    dS = P * (dP - rowsum(dO * O))  (rowsum(dO*O) = rowsum(P * dP)),   dQ = dS K scale,  dK = dS^T Q scale.
    """
    xp = backend.get_array_module(q)
    s = _scores(q, k, scale, causal, mask)
    with np.errstate(invalid="ignore"):
        p = xp.where(xp.isfinite(lse)[..., None], xp.exp(s - lse[..., None]), 0).astype(q.dtype, copy=False)
    dv = p.swapaxes(-1, -2) @ dout  # (..., S, Dv)
    dp = dout @ v.swapaxes(-1, -2)  # (..., T, S)
    row = (dout * out).sum(axis=-1, keepdims=True)  # (..., T, 1)
    ds = p * (dp - row)
    dq = (ds @ k) * scale
    dk = (ds.swapaxes(-1, -2) @ q) * scale
    return dq, dk, dv
