"""Fused differentiable ops: one Function each, with a hand-derived backward instead of a chain of
primitives (faster, less memory), the derivation in a comment above it. The arithmetic runs in
``tinyllm/kernels`` (a NumPy twin and a numba version of each). ``tinyllm.nn.functional`` is the
torch-signature layer over these. All are stable for logits of +-1e4.
"""
import math

import numpy as np

from .. import backend, kernels
from .engine import Function, Tensor


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


Tensor.softmax = lambda self, dim=-1: Softmax.apply(self, dim=_dim(dim, self.ndim, "softmax"))
Tensor.log_softmax = lambda self, dim=-1: LogSoftmax.apply(self, dim=_dim(dim, self.ndim, "log_softmax"))



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


class Dropout(Function):
    # y = x * m / (1 - p) with m ~ Bernoulli(1 - p)   =>   dx = dy * m / (1 - p)
    def forward(ctx, x, p):
        xp = backend.get_array_module(x)
        keep = backend.rng().random(x.shape) >= p
        ctx.scale = xp.asarray(keep, dtype=x.dtype) * (1.0 / (1.0 - p) if p < 1 else 0.0)
        return x * ctx.scale

    def backward(ctx, g):
        return g * ctx.scale



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
