"""Fused differentiable ops: one Function each, with a hand-derived backward instead of a chain of
primitives (faster, less memory), the derivation in a comment above it. The arithmetic runs in
``tinyllm/kernels`` (a NumPy twin and a numba version of each). ``tinyllm.nn.functional`` is the
torch-signature layer over these. All are stable for logits of +-1e4.
"""
import math

import numpy as np

from .. import backend, kernels
from .engine import Function, Tensor
from .ops import unbroadcast


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



class RMSNorm(Function):
    # y = xhat * w,  xhat = x * rstd,  rstd = 1/sqrt(mean(x^2) + eps)         (stats over the last dims)
    # d rstd / dx_j = -rstd^3 x_j / C,  so with dxhat = dy * w:
    # dx = rstd * (dxhat - xhat * mean(dxhat * xhat)),   dw = sum(dy * xhat)   (over the leading dims)
    fresh_grads = True  # every gradient is a new array (see Function)
    def forward(ctx, x, weight, n_dims, eps):
        xp = backend.get_array_module(x)
        C = math.prod(x.shape[x.ndim - n_dims:])
        x2 = x.reshape(-1, C)  # (N, C)
        rstd = 1 / xp.sqrt((x2 * x2).mean(axis=-1, keepdims=True) + eps)  # (N, 1)
        xhat = x2 * rstd
        ctx.xhat, ctx.rstd, ctx.shape, ctx.wshape = xhat, rstd, x.shape, x.shape[x.ndim - n_dims:]
        ctx.w2 = None if weight is None else weight.reshape(C)
        return (xhat if weight is None else xhat * ctx.w2).reshape(x.shape)

    def backward(ctx, g):
        g2 = g.reshape(ctx.xhat.shape)  # (N, C)
        dxhat = g2 if ctx.w2 is None else g2 * ctx.w2
        dx = ctx.rstd * (dxhat - ctx.xhat * (dxhat * ctx.xhat).mean(axis=-1, keepdims=True))
        dw = (g2 * ctx.xhat).sum(axis=0).reshape(ctx.wshape) if ctx.needs_input_grad[1] else None
        return dx.reshape(ctx.shape), dw


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
    # A soft target that requires grad gets d loss / dt = -(1 - eps) w logp.
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
            ctx.target_coef = (1 - label_smoothing) * w  # (C,): d a / d target
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
            dx = (xp.exp(ctx.logp) * a.sum(axis=-1, keepdims=True) - a) * rows[:, None]
            dt = -(ctx.target_coef * ctx.logp) * rows[:, None] if ctx.needs_input_grad[1] else None
            return dx, dt, None
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


class SiLU(Function):
    # y = x s(x), s = sigmoid  =>  dx = dy * s (1 + x (1 - s));  s from exp(-|x|), so never overflows
    fresh_grads = True  # every gradient is a new array (see Function)
    def forward(ctx, x):
        xp = backend.get_array_module(x)
        e = xp.exp(-xp.abs(x))
        ctx.x, ctx.s = x, xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        with np.errstate(invalid="ignore"):  # -inf * 0 is nan, as torch's silu(-inf), without a warning
            return x * ctx.s

    def backward(ctx, g):
        s = ctx.s
        with np.errstate(invalid="ignore"):
            return g * (s * (1 + ctx.x * (1 - s)))


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
    # forward/backward math in tinyllm/kernels/attention.py; only the logsumexp of each row is kept.
    # A float mask that requires grad adds S = q k^T scale + mask  =>  dmask = dS, summed over the
    # dims the mask was broadcast along (a mask always runs on the reference, which this backward repeats).
    fresh_grads = True  # every gradient is a new array (see Function)
    def forward(ctx, q, k, v, mask=None, scale=1.0, is_causal=False):
        q, k, v = kernels.attention.kernel_inputs(q, k, v, mask)  # kept for the backward as they are
        out, lse = kernels.attention.attention_forward(q, k, v, scale, is_causal, mask)
        ctx.q, ctx.k, ctx.v, ctx.mask, ctx.out, ctx.lse = q, k, v, mask, out, lse
        ctx.scale, ctx.is_causal = scale, is_causal
        return out

    def backward(ctx, g):
        if ctx.needs_input_grad[3]:
            return _attention_backward_with_mask_grad(ctx, g)
        dq, dk, dv = kernels.attention.attention_backward(
            ctx.q, ctx.k, ctx.v, ctx.out, ctx.lse, g, ctx.scale, ctx.is_causal, ctx.mask)
        return dq, dk, dv, None


def _attention_backward_with_mask_grad(ctx, g):
    """The reference backward (kernels/attention.py's attention_backward_numpy) that also returns dS,
    the gradient of the pre-softmax scores, as the additive mask's gradient:
        P = exp(S - lse),  dP = dO V^T,  dS = P * (dP - rowsum(dO * O)),
        dQ = dS K scale,  dK = dS^T Q scale,  dV = P^T dO,  dmask = dS summed to the mask's shape."""
    xp = backend.get_array_module(g)
    q, k, v, mask, scale = ctx.q, ctx.k, ctx.v, ctx.mask, ctx.scale
    s = (q @ k.swapaxes(-1, -2)) * scale + mask  # (..., T, S)
    with np.errstate(invalid="ignore"):  # a row masked out entirely (lse -inf) gets no gradient
        p = xp.where(xp.isfinite(ctx.lse)[..., None], xp.exp(s - ctx.lse[..., None]), 0)
    p = p.astype(q.dtype, copy=False)
    dv = p.swapaxes(-1, -2) @ g  # (..., S, Dv)
    dp = g @ v.swapaxes(-1, -2)  # (..., T, S)
    ds = p * (dp - (g * ctx.out).sum(axis=-1, keepdims=True))  # (..., T, S)
    dq = (ds @ k) * scale
    dk = (ds.swapaxes(-1, -2) @ q) * scale
    return dq, dk, dv, unbroadcast(ds, mask.shape)


# =============================================================================================
# padding
# =============================================================================================


class ConstantPad(Function):
    # y = x set into a block of `value` (a negative pad crops)  =>  dx = dy where x landed, 0 where cropped
    fresh_grads = True  # every gradient is a new array (see Function)
    def forward(ctx, x, pads, value):
        """``pads``: one (before, after) per dim of x."""
        xp = backend.get_array_module(x)
        out = xp.full(tuple(n + b + a for n, (b, a) in zip(x.shape, pads)), value, dtype=x.dtype)
        ctx.src = tuple(slice(max(-b, 0), n - max(-a, 0)) for n, (b, a) in zip(x.shape, pads))
        ctx.dst = tuple(slice(max(b, 0), max(b, 0) + max(s.stop - s.start, 0))
                        for (b, _), s in zip(pads, ctx.src))
        ctx.shape = x.shape
        out[ctx.dst] = x[ctx.src]
        return out

    def backward(ctx, g):
        dx = backend.get_array_module(g).zeros(ctx.shape, dtype=g.dtype)
        dx[ctx.src] = g[ctx.dst]
        return dx, None


class IndexPad(Function):
    # 'reflect', 'replicate', 'circular': y = x gathered along each padded dim by an index array
    # idx[d] (positions -before .. n+after-1 mapped into 0..n-1)  =>  dx = dy scatter-added back by idx
    fresh_grads = True  # every gradient is a new array (see Function)
    def forward(ctx, x, index):
        """``index``: {dim: the source position of every output position along dim}."""
        xp = backend.get_array_module(x)
        ctx.index, ctx.shape = index, x.shape
        for d, idx in index.items():
            x = xp.take(x, idx, axis=d)
        return x

    def backward(ctx, g):
        xp = backend.get_array_module(g)
        shape = list(g.shape)
        for d, idx in reversed(list(ctx.index.items())):
            shape[d] = ctx.shape[d]
            summed = xp.zeros(shape, dtype=g.dtype)
            xp.add.at(summed, (slice(None),) * d + (idx,), g)
            g = summed
        return g


# =============================================================================================
# recurrent: one LSTM layer over a whole sequence
# =============================================================================================


# The input projection of every timestep is one GEMM and only the (B, H) @ (H, 4H) recurrence is a
# Python loop; the backward runs back-propagation through time inside the op, and W_ih's, W_hh's and
# the biases' gradients are each one GEMM or sum after the loop.
def _gate_constants(H, dtype):
    """sigmoid(x) = 0.5 tanh(x/2) + 0.5, so all four gates are one tanh:  act = tanh(a * s) * s + shift,
    with s = 1/2 on the sigmoid gates (i, f, o) and 1 on the tanh gate g (whose shift is 0)."""
    s = np.full(4 * H, 0.5, dtype=dtype)
    s[2 * H:3 * H] = 1.0
    shift = np.full(4 * H, 0.5, dtype=dtype)
    shift[2 * H:3 * H] = 0.0
    return s, shift


class LSTMLayer(Function):
    """One LSTM layer over a whole time-major sequence.

    Inputs: x (T, B, in), h0 (B, H), c0 (B, H), w_ih (4H, in), w_hh (4H, H), b_ih (4H,) or None,
    b_hh (4H,) or None. Output: one array Y of shape (T + 1, B, H) whose rows 0..T-1 are the hidden
    states h_1..h_T and whose last row is the final cell state c_T (a Function has one output; the
    module slices it into ``output``, ``h_n = Y[T-1]`` and ``c_n = Y[T]``, and the slices' gradients
    add up in dY).
    """

    # Forward, per step t (gates in torch's order i, f, g, o):
    #   a_t = x_t W_ih^T + b_ih + b_hh + h_{t-1} W_hh^T           (B, 4H); the x part for all t is one GEMM
    #   i, f, o = sigmoid(a_i, a_f, a_o),  g = tanh(a_g)
    #   c_t = f * c_{t-1} + i * g,         h_t = o * tanh(c_t)
    def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None):
        xp = backend.get_array_module(x)
        T, B, _ = x.shape
        H = w_hh.shape[1]
        dtype = x.dtype
        for name, a in (("h0", h0), ("c0", c0), ("weight_ih", w_ih), ("weight_hh", w_hh), ("bias_ih", b_ih),
                        ("bias_hh", b_hh)):
            if a is not None and a.dtype != dtype:
                raise TypeError(f"lstm: {name} has dtype {a.dtype} but the input has dtype {dtype}")
        gates = (x.reshape(T * B, -1) @ w_ih.T).reshape(T, B, 4 * H)  # (T, B, 4H): one GEMM for every step
        if b_ih is not None:
            gates += b_ih
        if b_hh is not None:
            gates += b_hh
        s, shift = _gate_constants(H, dtype)
        hs = xp.empty((T + 2, B, H), dtype=dtype)  # h_0, h_1..h_T, c_T: output = hs[1:], h_prev = hs[:T]
        cs = xp.empty((T + 1, B, H), dtype=dtype)  # c_0 .. c_T
        tanh_c = xp.empty((T, B, H), dtype=dtype)
        hs[0], cs[0] = h0, c0
        rec = xp.empty((B, 4 * H), dtype=dtype)
        w_hh_t = xp.ascontiguousarray(w_hh.T)  # (H, 4H): BLAS runs faster on a contiguous copy than on the view
        for t in range(T):
            a = gates[t]  # (B, 4H), overwritten in place by the activations
            a += xp.matmul(hs[t], w_hh_t, out=rec)
            a *= s
            xp.tanh(a, out=a)
            a *= s
            a += shift
            i, f, g, o = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            c = cs[t + 1]
            xp.multiply(f, cs[t], out=c)
            c += i * g
            xp.tanh(c, out=tanh_c[t])
            xp.multiply(o, tanh_c[t], out=hs[t + 1])
        hs[T + 1] = cs[T]
        ctx.x, ctx.w_ih, ctx.w_hh, ctx.act, ctx.hs, ctx.cs, ctx.tanh_c = x, w_ih, w_hh, gates, hs, cs, tanh_c
        ctx.has_bias = (b_ih is not None, b_hh is not None)
        return hs[1:]

    # Backward through time. dh_t = dY_t + (recurrent part) and dc start at dY_{T-1}, dY_T; per step:
    #   dc_t  += dh_t * o * (1 - tanh(c_t)^2)
    #   da_o = dh_t * tanh(c_t) * o(1-o),   da_i = dc_t * g * i(1-i),
    #   da_f = dc_t * c_{t-1} * f(1-f),     da_g = dc_t * i * (1-g^2)
    #   dh_{t-1} (recurrent) = da_t W_hh,   dc_{t-1} = dc_t * f
    # After the loop: dW_hh = sum_t da_t^T h_{t-1}, dW_ih = da^T x, dx = da W_ih, db_ih = db_hh = sum da,
    # dh0 / dc0 = what is carried out of step 0. The factors that do not depend on dh/dc are formed for
    # all t at once before the loop, so each step is ~6 elementwise ops and one (B, 4H) @ (4H, H) GEMM.
    def backward(ctx, dY):
        xp = backend.get_array_module(dY)
        x, w_ih, w_hh, act, hs, cs, tanh_c = ctx.x, ctx.w_ih, ctx.w_hh, ctx.act, ctx.hs, ctx.cs, ctx.tanh_c
        T, B, H = tanh_c.shape
        i, f, g, o = act[..., :H], act[..., H:2 * H], act[..., 2 * H:3 * H], act[..., 3 * H:]
        # step-independent factors, all (T, B, H) (or (T, B, 3, H) for the gates driven by dc)
        dc_from_dh = o * (1 - tanh_c * tanh_c)
        da_o_from_dh = tanh_c * o * (1 - o)
        by_dc = xp.empty((T, B, 3, H), dtype=act.dtype)
        by_dc[:, :, 0] = g * i * (1 - i)
        by_dc[:, :, 1] = cs[:T] * f * (1 - f)
        by_dc[:, :, 2] = i * (1 - g * g)
        da = xp.empty((T, B, 4 * H), dtype=dY.dtype)  # dL/d(pre-activation gates)
        da3 = da.reshape(T, B, 4, H)[:, :, :3]  # (T, B, 3, H) view of the i, f, g blocks
        dc = dY[T].copy()
        dh_rec = xp.zeros((B, H), dtype=dY.dtype)
        for t in range(T - 1, -1, -1):
            dh = dY[t] + dh_rec
            dc += dh * dc_from_dh[t]
            xp.multiply(dc[:, None, :], by_dc[t], out=da3[t])
            xp.multiply(dh, da_o_from_dh[t], out=da[t, :, 3 * H:])
            dh_rec = da[t] @ w_hh
            dc *= f[t]
        need = ctx.needs_input_grad
        da2 = da.reshape(T * B, 4 * H)
        dx = (da2 @ w_ih).reshape(x.shape) if need[0] else None
        dw_ih = da2.T @ x.reshape(T * B, -1) if need[3] else None
        dw_hh = da2.T @ hs[:T].reshape(T * B, H) if need[4] else None
        db = da2.sum(axis=0) if any(ctx.has_bias) else None
        return (dx, dh_rec if need[1] else None, dc if need[2] else None, dw_ih, dw_hh,
                db if ctx.has_bias[0] else None, db if ctx.has_bias[1] else None)
