"""Fused differentiable ops with torch's signatures: ``import tinyllm.nn.functional as F``.

Each fused op is one Function with a hand-derived backward (not a chain of primitives): faster, less
memory, and the derivation sits in a comment above it. All are stable for logits of +-1e4.
"""
import math

import numpy as np

from .. import backend, kernels
from ..autograd import Function, Tensor
from ..autograd.methods import as_tensor_like


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def _tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


def _on_device_of(array, like):
    """A constant (ids, targets, masks) moved to the device of the tensor it is used with."""
    if array is None or backend._cupy is None:
        return array
    return backend.to_device(array, backend.device_of(_data(like)))


# =============================================================================================
# linear
# =============================================================================================


class Linear(Function):
    # y = x W^T + b   =>   dx = dy W,   dW = dy^T x,   db = sum(dy)   (over all leading dims)
    fresh_grads = True  # every gradient is a new array (see Function)
    def forward(ctx, x, weight, bias=None):
        if x.shape[-1] != weight.shape[1]:
            raise ValueError(f"linear: input of shape {x.shape} does not match weight of shape "
                             f"{weight.shape} ({x.shape[-1]} != {weight.shape[1]} in_features)")
        ctx.x, ctx.weight, ctx.has_bias = x, weight, bias is not None
        x2 = x.reshape(-1, x.shape[-1])  # (N, in): one GEMM, not a batched loop
        out = kernels.matmul.matmul(x2, weight.T)  # (N, out)
        if bias is not None:
            out += bias
        return out.reshape(x.shape[:-1] + (weight.shape[0],))

    def backward(ctx, g):
        x, weight = ctx.x, ctx.weight
        g2 = g.reshape(-1, g.shape[-1])  # (N, out)
        dx = kernels.matmul.matmul(g2, weight).reshape(x.shape) if ctx.needs_input_grad[0] else None
        dw = kernels.matmul.matmul_tn(g2, x.reshape(-1, x.shape[-1])) if ctx.needs_input_grad[1] else None
        db = g2.sum(axis=0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db


def linear(input, weight, bias=None):
    return Linear.apply(_tensor(input), weight, bias)


# =============================================================================================
# softmax family
# =============================================================================================


class Softmax(Function):
    # y = softmax(x)   =>   dx = y * (dy - sum(dy * y))      (fused over the last dim: kernels/softmax.py)
    fresh_grads = True  # every gradient is a new array (see Function)
    def forward(ctx, x, dim):
        ctx.out, ctx.dim = kernels.softmax.forward(x, dim), dim
        return ctx.out

    def backward(ctx, g):
        return kernels.softmax.backward(ctx.out, g, ctx.dim)


class LogSoftmax(Function):
    # y = x - logsumexp(x)   =>   dx = dy - softmax(x) * sum(dy)
    fresh_grads = True  # every gradient is a new array (see Function)
    def forward(ctx, x, dim):
        xp = backend.get_array_module(x)
        shifted = x - x.max(axis=dim, keepdims=True)
        ctx.out = shifted - xp.log(xp.exp(shifted).sum(axis=dim, keepdims=True))
        ctx.dim = dim
        return ctx.out

    def backward(ctx, g):
        xp = backend.get_array_module(g)
        return g - xp.exp(ctx.out) * g.sum(axis=ctx.dim, keepdims=True)


def _dim(dim, ndim, name):
    if dim is None:  # torch's legacy implicit dim: 0 for 0-, 1- and 3-d input, else 1
        dim = 0 if ndim in (0, 1, 3) else 1
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise IndexError(f"{name}: dim {dim} is out of range for a tensor with {ndim} dimensions")
    return dim % max(ndim, 1)


def softmax(input, dim=None, dtype=None):
    x = _tensor(input) if dtype is None else _tensor(input).to(dtype)
    return Softmax.apply(x, dim=_dim(dim, x.ndim, "softmax"))


def log_softmax(input, dim=None, dtype=None):
    x = _tensor(input) if dtype is None else _tensor(input).to(dtype)
    return LogSoftmax.apply(x, dim=_dim(dim, x.ndim, "log_softmax"))


# =============================================================================================
# layer norm
# =============================================================================================


class LayerNorm(Function):
    # xhat = (x - mean) * rstd,  y = xhat * w + b,  rstd = 1/sqrt(var + eps)   (stats over the last dims)
    # dxhat = dy * w
    # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    # dw = sum(dy * xhat),  db = sum(dy)                                        (over the leading dims)
    # The arithmetic is in tinyllm/kernels/layernorm.py, on x flattened to (rows, normalized size).
    fresh_grads = True  # every gradient is a new array (see Function)
    def forward(ctx, x, weight, bias, n_dims, eps):
        C = math.prod(x.shape[x.ndim - n_dims:])
        x2 = x.reshape(-1, C)  # (N, C)
        w2 = None if weight is None else weight.reshape(C)
        b2 = None if bias is None else bias.reshape(C)
        y, ctx.mean, ctx.rstd = kernels.layernorm.forward(x2, w2, b2, eps)
        ctx.x2, ctx.w2, ctx.shape, ctx.wshape = x2, w2, x.shape, x.shape[x.ndim - n_dims:]
        ctx.has_bias = bias is not None
        return y.reshape(x.shape)

    def backward(ctx, g):
        need_wb = ctx.needs_input_grad[1] or (ctx.has_bias and ctx.needs_input_grad[2])
        dx, dw, db = kernels.layernorm.backward(ctx.x2, ctx.w2, ctx.mean, ctx.rstd,
                                                g.reshape(ctx.x2.shape), need_wb)
        dw = dw.reshape(ctx.wshape) if ctx.w2 is not None and ctx.needs_input_grad[1] else None
        db = db.reshape(ctx.wshape) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx.reshape(ctx.shape), dw, db


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    x = _tensor(input)
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"layer_norm: normalized_shape {shape} does not match the last dims of input {x.shape}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != shape:
            raise ValueError(f"layer_norm: {name} has shape {tuple(p.shape)}, expected {shape}")
    return LayerNorm.apply(x, weight, bias, n_dims=len(shape), eps=eps)


# =============================================================================================
# embedding
# =============================================================================================


class Embedding(Function):
    # out = W[ids]   =>   dW[i] = sum of dy over every position whose id is i (a scatter-add)
    fresh_grads = True  # every gradient is a new array (see Function)
    def forward(ctx, weight, ids, padding_idx=None):
        ctx.ids, ctx.shape, ctx.padding_idx = ids, weight.shape, padding_idx
        return weight[ids]

    def backward(ctx, g):
        dw = kernels.embedding.embedding_backward(ctx.ids.reshape(-1), g.reshape(-1, ctx.shape[1]), ctx.shape[0])
        if ctx.padding_idx is not None:
            dw[ctx.padding_idx] = 0
        return dw, None


def _check_ids(ids, n, name):
    xp = backend.get_array_module(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{name}: indices must be integers, got dtype {ids.dtype}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= n):
        bad = int(ids.min()) if int(ids.min()) < 0 else int(ids.max())
        raise IndexError(f"{name}: index {bad} is out of range for {n} rows (valid: 0..{n - 1})")
    return xp


def embedding(input, weight, padding_idx=None):
    """Rows of ``weight`` picked by the integer ids in ``input`` (a Tensor or an int array)."""
    ids = _data(input)
    ids = np.asarray(ids) if not hasattr(ids, "dtype") else ids
    _check_ids(ids, weight.shape[0], "embedding")
    ids = _on_device_of(ids, weight)  # host ids index a weight on any device
    if padding_idx is not None and padding_idx < 0:
        padding_idx += weight.shape[0]
    return Embedding.apply(weight, ids, padding_idx=padding_idx)


# =============================================================================================
# cross entropy
# =============================================================================================


class CrossEntropy(Function):
    # Per row: loss = -sum_c a_c * logp_c with logp = log_softmax(x) and class coefficients a:
    #   hard target y:  a = (1 - eps) w_y onehot(y) + (eps / C) w      (a = 0 on ignored rows)
    #   soft target t:  a = w * ((1 - eps) t + eps / C)
    # d loss / dx = p * sum(a) - a,  p = softmax(x).   'mean' divides by sum of w_y (hard) or N (soft).
    # Hard targets run the fused kernels of tinyllm/kernels/cross_entropy.py (only lse is kept).
    fresh_grads = True  # every gradient is a new array (see Function)
    def forward(ctx, logits, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        xp = backend.get_array_module(logits)
        ctx.reduction, ctx.soft, ctx.n = reduction, target.dtype.kind == "f", logits.shape[0]
        if ctx.soft:  # class probabilities
            C = logits.shape[-1]
            shifted = logits - logits.max(axis=-1, keepdims=True)
            logp = shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))  # (N, C)
            w = xp.ones(C, dtype=logits.dtype) if weight is None else weight.astype(logits.dtype, copy=False)
            a = w * ((1 - label_smoothing) * target + label_smoothing / C)
            losses = -(a * logp).sum(axis=-1)  # (N,)
            ctx.logp, ctx.a, denom = logp, a, logits.shape[0]
        else:
            losses, ctx.lse, denom = kernels.cross_entropy.forward(logits, target, weight, ignore_index,
                                                                   label_smoothing)
            ctx.args = (logits, target, weight, ignore_index, label_smoothing)
        if reduction == "none":
            return losses
        if reduction == "sum":
            return xp.asarray(losses.sum(dtype=xp.float64), dtype=logits.dtype)
        ctx.denom = denom
        with np.errstate(invalid="ignore", divide="ignore"):
            return xp.asarray(losses.sum(dtype=xp.float64) / denom, dtype=logits.dtype)

    def backward(ctx, g):
        xp = backend.get_array_module(g)
        if ctx.reduction == "none":
            rows = g
        else:
            with np.errstate(divide="ignore", invalid="ignore"):  # every row ignored: denom 0, loss nan
                scale = g if ctx.reduction == "sum" else g / ctx.denom
            rows = xp.broadcast_to(scale, (ctx.n,))
        if ctx.soft:
            a = ctx.a
            return (xp.exp(ctx.logp) * a.sum(axis=-1, keepdims=True) - a) * rows[:, None], None, None
        return kernels.cross_entropy.backward(*ctx.args, ctx.lse, rows), None, None


_REDUCTIONS = ("mean", "sum", "none")


def _check_class_target(x, t, ignore_index, name):
    """Class-id target of shape (N, d1, ...) for input (N, C, d1, ...), or () for input (C,)."""
    C = x.shape[0] if x.ndim == 1 else x.shape[1]
    expected = () if x.ndim == 1 else (x.shape[0],) + x.shape[2:]
    if t.shape != expected:
        raise ValueError(f"{name}: target of shape {t.shape} does not match input of shape "
                         f"{x.shape} (expected target shape {expected})")
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name}: target must hold integer class ids, got dtype {t.dtype}")
    bad = (t != ignore_index) & ((t < 0) | (t >= C))
    if bad.any():
        raise IndexError(f"{name}: target {int(t[bad].reshape(-1)[0])} is out of range for {C} classes")


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    """torch's cross_entropy: ``input`` (N, C), (C,) or (N, C, d1, ...) logits; ``target`` class ids
    of shape (N,) / () / (N, d1, ...) or class probabilities of ``input``'s shape."""
    x = _tensor(input)
    t = _data(target)
    t = _on_device_of(np.asarray(t) if not hasattr(t, "dtype") else t, x)
    xp = backend.get_array_module(x.data)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"cross_entropy: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    if x.ndim == 0:
        raise ValueError("cross_entropy: input must have a class dimension, got a 0-d tensor")
    C = x.shape[0] if x.ndim == 1 else x.shape[1]
    soft = t.dtype.kind == "f"
    if soft:
        if t.shape != x.shape:
            raise ValueError(f"cross_entropy: probability target of shape {t.shape} must match input {x.shape}")
    else:
        _check_class_target(x, t, ignore_index, "cross_entropy")
    if weight is not None and tuple(weight.shape) != (C,):
        raise ValueError(f"cross_entropy: weight has shape {tuple(weight.shape)}, expected ({C},)")
    # move the class dim last and flatten: (N, C, d1, ...) -> (N*d1*..., C)
    if x.ndim == 1:
        logits = x.reshape(1, C)
        t2 = t.reshape(1, C) if soft else t.reshape(1)
    else:
        logits = x if x.ndim == 2 else x.permute(0, *range(2, x.ndim), 1).reshape(-1, C)
        t2 = (t if t.ndim == 2 else xp.moveaxis(t, 1, -1).reshape(-1, C)) if soft else t.reshape(-1)
    out = CrossEntropy.apply(logits, t2, _data(weight), ignore_index=ignore_index, reduction=reduction,
                             label_smoothing=label_smoothing)
    if reduction == "none":
        out = out.reshape(() if x.ndim == 1 else (x.shape[0],) + x.shape[2:])
    return out


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """torch's nll_loss on log-probabilities: -input[target], averaged as cross_entropy."""
    x = _tensor(input)
    t = _data(target)
    t = np.asarray(t) if not hasattr(t, "dtype") else t
    xp = backend.get_array_module(x.data)
    if x.ndim == 0:
        raise ValueError("nll_loss: input must have a class dimension, got a 0-d tensor")
    _check_class_target(x, t, ignore_index, "nll_loss")  # else a target of -1 would wrap to class C-1
    C = x.shape[0] if x.ndim == 1 else x.shape[1]
    if weight is not None and tuple(weight.shape) != (C,):
        raise ValueError(f"nll_loss: weight has shape {tuple(weight.shape)}, expected ({C},)")
    w = xp.ones(C, dtype=x.dtype) if weight is None else _data(weight).astype(x.dtype)
    t_flat = t.reshape(-1)
    logp = x.reshape(1, C) if x.ndim == 1 else (x if x.ndim == 2 else x.permute(0, *range(2, x.ndim), 1).reshape(-1, C))
    valid = t_flat != ignore_index
    safe = xp.where(valid, t_flat, 0)
    coef = w[safe] * valid
    picked = logp[xp.arange(len(safe)), safe] * Tensor(-coef.astype(x.dtype))
    if reduction == "none":
        return picked.reshape(t.shape)
    if reduction == "sum":
        return picked.sum()
    return picked.sum() / float(coef.sum())


# =============================================================================================
# activations and dropout
# =============================================================================================


class GELU(Function):
    # y = x Phi(x)   =>   dx = dy * (Phi(x) + x phi(x))        (tanh form and kernels: kernels/gelu.py)
    # The forward pass computes dy/dx alongside y, from the same erf and exp, and keeps it in place of x.
    fresh_grads = True  # every gradient is a new array (see Function)
    def forward(ctx, x, approximate="none"):
        if not ctx.needs_input_grad[0]:
            return kernels.gelu.forward(x, approximate)
        y, ctx.dydx = kernels.gelu.forward_and_derivative(x, approximate)
        return y

    def backward(ctx, g):
        dydx = ctx.dydx
        if ctx.last_backward and g.dtype == dydx.dtype and g.shape == dydx.shape:
            return kernels.elementwise.mul_inplace(dydx, g)  # dy/dx dies with ctx: reuse its buffer
        return g * dydx


def gelu(input, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(_tensor(input), approximate=approximate)


def relu(input):
    return _tensor(input).relu()


def tanh(input):
    return _tensor(input).tanh()


def sigmoid(input):
    return _tensor(input).sigmoid()


def silu(input):
    x = _tensor(input)
    return x * x.sigmoid()


def mse_loss(input, target, reduction="mean"):
    diff = _tensor(input) - as_tensor_like(target, _tensor(input))
    sq = diff * diff
    return sq.mean() if reduction == "mean" else sq.sum() if reduction == "sum" else sq


class Dropout(Function):
    # y = x * m / (1 - p) with m ~ Bernoulli(1 - p)   =>   dx = dy * m / (1 - p)
    def forward(ctx, x, p):
        xp = backend.get_array_module(x)
        keep = backend.rng().random(x.shape) >= p
        ctx.scale = xp.asarray(keep, dtype=x.dtype) * (1.0 / (1.0 - p) if p < 1 else 0.0)
        return x * ctx.scale

    def backward(ctx, g):
        return g * ctx.scale


def dropout(input, p=0.5, training=True):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability must be in [0, 1], got {p}")
    x = _tensor(input)
    if not training or p == 0.0:
        return x
    return Dropout.apply(x, p=p)


# =============================================================================================
# attention
# =============================================================================================


class ScaledDotProductAttention(Function):
    # forward/backward math in tinyllm/kernels/attention.py; only the logsumexp of each row is kept
    fresh_grads = True  # every gradient is a new array (see Function)
    def forward(ctx, q, k, v, mask=None, scale=1.0, is_causal=False):
        q, k, v = kernels.attention.kernel_inputs(q, k, v, mask)  # kept for the backward as they are
        out, lse = kernels.attention.attention_forward(q, k, v, scale, is_causal, mask)
        ctx.q, ctx.k, ctx.v, ctx.mask, ctx.out, ctx.lse = q, k, v, mask, out, lse
        ctx.scale, ctx.is_causal = scale, is_causal
        return out

    def backward(ctx, g):
        dq, dk, dv = kernels.attention.attention_backward(
            ctx.q, ctx.k, ctx.v, ctx.out, ctx.lse, g, ctx.scale, ctx.is_causal, ctx.mask)
        return dq, dk, dv, None


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None):
    """torch's SDPA: softmax(q k^T * scale + mask) v over the last two dims.

    ``attn_mask`` is boolean (True = may attend) or additive floats, broadcastable to (..., L, S).
    With ``dropout_p > 0`` the probabilities are materialised and dropped out (no fused path).
    """
    q, k, v = _tensor(query), _tensor(key), _tensor(value)
    if q.ndim < 2 or k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(f"scaled_dot_product_attention: q, k, v need the same rank >= 2, got "
                         f"{q.shape}, {k.shape}, {v.shape}")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2] or q.shape[:-2] != k.shape[:-2] \
            or k.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"scaled_dot_product_attention: shapes q {q.shape}, k {k.shape}, v {v.shape} "
                         f"do not fit (..., L, E), (..., S, E), (..., S, Ev)")
    if attn_mask is not None and is_causal:
        raise ValueError("scaled_dot_product_attention: pass either attn_mask or is_causal=True, not both")
    mask = _on_device_of(_data(attn_mask), q)
    if mask is not None:
        target = q.shape[:-1] + (k.shape[-2],)
        try:
            np.broadcast_shapes(mask.shape, target)
        except ValueError:
            raise ValueError(f"scaled_dot_product_attention: attn_mask of shape {mask.shape} does not "
                             f"broadcast to {target}") from None
        if mask.dtype != bool:
            mask = mask.astype(q.dtype, copy=False)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if dropout_p > 0.0:
        scores = (q @ k.transpose(-2, -1)) * scale
        if mask is not None:
            scores = scores.masked_fill(~mask, -np.inf) if mask.dtype == bool else scores + Tensor(mask)
        if is_causal:
            L, S = scores.shape[-2:]
            scores = scores.masked_fill(~np.tril(np.ones((L, S), dtype=bool)), -np.inf)
        return dropout(softmax(scores, dim=-1), dropout_p, True) @ v
    return ScaledDotProductAttention.apply(q, k, v, mask, scale=scale, is_causal=is_causal)
