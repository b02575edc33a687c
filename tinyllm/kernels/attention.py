"""Scaled dot-product attention on plain arrays: the NumPy reference twin and the dispatch to the
fused numba kernels (``flash_attention.py``).

These functions know nothing of Tensor. ``forward`` returns the output and the per-row logsumexp of
the scores; ``backward`` recomputes the probabilities from that logsumexp (as flash attention does),
so only O(T) numbers travel from the forward to the backward pass. The NumPy reference still builds
the full (T, S) score matrix per call; the numba kernels compute the same function without it.

``attention_forward`` / ``attention_backward`` pick the numba kernels when ``backend.kernels()`` is
'numba', the arrays are NumPy float32/float64 with equal leading dims, there is more than one query
row and no ``mask`` (causal or not); with a boolean or additive mask, a single query (a decode step),
CuPy arrays, float16 or broadcast leading dims they run the NumPy reference.

Shapes: q (..., T, D), k (..., S, D), v (..., S, Dv); mask broadcastable to (..., T, S), either
boolean (True = may attend) or additive floats.
"""
import importlib.util

import numpy as np

from .. import backend
from .flash_attention import flash_attention_backward as attention_backward_numba
from .flash_attention import flash_attention_forward as attention_forward_numba
from .flash_attention import kernel_layout

# numba's np.dot (the tile products) needs scipy's BLAS; without it we stay on the NumPy reference.
_HAVE_SCIPY = importlib.util.find_spec("scipy") is not None


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


def attention_forward_numpy(q, k, v, scale, causal=False, mask=None):
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


def attention_backward_numpy(q, k, v, out, lse, dout, scale, causal=False, mask=None):
    """Gradients of attention_forward_numpy.

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


# -------------------------------------------------------------------------- dispatch
def _use_numba(q, k, v, mask):
    # one query row (a decode step): the reference's two small products read the keys and values
    # where they lie (views into the KV cache), while the tiled kernel would first copy them
    return (mask is None and _HAVE_SCIPY and backend.kernels() == "numba" and q.shape[-2] > 1
            and all(isinstance(x, np.ndarray) for x in (q, k, v))
            and q.dtype in (np.float32, np.float64) and k.dtype == q.dtype and v.dtype == q.dtype
            and q.ndim >= 2 and q.shape[:-2] == k.shape[:-2] == v.shape[:-2])


def kernel_inputs(q, k, v, mask=None):
    """q, k, v as the kernel that ``attention_forward`` picks reads them: for the numba kernel, the
    views themselves when it can read them in place (a GPT's heads, split out of its qkv projection),
    else contiguous copies made once here (``flash_attention.kernel_layout``; the autograd op keeps
    them for the backward); the arrays themselves for the reference (a decode step reads the KV cache
    where it lies)."""
    if _use_numba(q, k, v, mask):
        return kernel_layout(q, k, v)
    return q, k, v


def attention_forward(q, k, v, scale, causal=False, mask=None):
    """(out, lse): the numba kernel where it applies (see the module docstring), else the reference."""
    if _use_numba(q, k, v, mask):
        return attention_forward_numba(q, k, v, scale, causal)
    return attention_forward_numpy(q, k, v, scale, causal, mask)


def attention_backward(q, k, v, out, lse, dout, scale, causal=False, mask=None):
    """(dq, dk, dv) of attention_forward, on the same kernel family as the forward would pick."""
    if _use_numba(q, k, v, mask):
        return attention_backward_numba(q, k, v, out, lse, dout, scale, causal)
    return attention_backward_numpy(q, k, v, out, lse, dout, scale, causal, mask)
