"""``LSTM`` and ``LSTMCell`` with torch's parameter names, layouts, gate order (i, f, g, o) and init, so
a torch state_dict loads as it is.

Speed comes from doing one layer over the whole sequence as ONE fused op (``LSTMLayer``): the input
projection of every timestep is a single GEMM, only the (B, H) @ (H, 4H) recurrence is a Python loop,
and the backward pass runs back-propagation through time inside the op, with W_ih, W_hh and the
biases' gradients each formed by one GEMM / sum after the loop. A chain of primitive ops would record
~15 graph nodes per timestep instead.
"""
import math

import numpy as np

from .. import backend
from ..autograd import Function, Tensor, stack
from . import functional as F
from . import init
from .module import Module, Parameter


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


def lstm_layer(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None):
    """One layer over a time-major sequence x (T, B, in): returns (output (T, B, H), h_T, c_T)."""
    T = x.shape[0]
    Y = LSTMLayer.apply(x, h0, c0, w_ih, w_hh, b_ih, b_hh)  # (T + 1, B, H)
    return Y[:T], Y[T - 1], Y[T]


def _data(a):
    return a.data if isinstance(a, Tensor) else a


class LSTM(Module):
    """torch.nn.LSTM: ``output, (h_n, c_n) = lstm(input, (h_0, c_0))``.

    input (T, B, in), or (B, T, in) with ``batch_first``, or unbatched (T, in); h_0, c_0 of shape
    (num_layers, B, H) (or (num_layers, H) unbatched), zeros when omitted. ``dropout`` is applied to
    every layer's output but the last, in training mode only (as torch).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 dtype=None):
        super().__init__()
        if num_layers < 1 or hidden_size < 1:
            raise ValueError(f"LSTM: num_layers and hidden_size must be positive, got {num_layers}, {hidden_size}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"LSTM: dropout must be in [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        dt = backend.get_default_dtype() if dtype is None else np.dtype(dtype)
        H = hidden_size
        for k in range(num_layers):  # registration order = torch's state_dict order
            n_in = input_size if k == 0 else H
            setattr(self, f"weight_ih_l{k}", Parameter(np.zeros((4 * H, n_in), dtype=dt)))
            setattr(self, f"weight_hh_l{k}", Parameter(np.zeros((4 * H, H), dtype=dt)))
            if bias:
                setattr(self, f"bias_ih_l{k}", Parameter(np.zeros(4 * H, dtype=dt)))
                setattr(self, f"bias_hh_l{k}", Parameter(np.zeros(4 * H, dtype=dt)))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)  # torch: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def layer_params(self, k):
        b = (getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")) if self.bias else (None, None)
        return (getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")) + b

    def forward(self, input, hx=None):
        x = input if isinstance(input, Tensor) else Tensor(input)
        unbatched = x.ndim == 2
        if x.ndim not in (2, 3):
            raise ValueError(f"LSTM: expected a 2-D (unbatched) or 3-D input, got shape {x.shape}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"LSTM: input has {x.shape[-1]} features, expected input_size={self.input_size}")
        if unbatched:
            x = x.unsqueeze(1)  # (T, 1, in)
        elif self.batch_first:
            x = x.transpose(0, 1)  # (T, B, in)
        T, B = x.shape[0], x.shape[1]
        L, H = self.num_layers, self.hidden_size
        if hx is None:
            zeros = np.zeros((L, B, H), dtype=x.dtype)
            h0, c0 = zeros, zeros
        else:
            h0, c0 = hx
            want = (L, H) if unbatched else (L, B, H)
            for name, s in (("h_0", h0), ("c_0", c0)):
                if tuple(s.shape) != want:
                    raise ValueError(f"LSTM: {name} must have shape {want}, got {tuple(s.shape)}")
            if unbatched:
                h0, c0 = h0.unsqueeze(1) if isinstance(h0, Tensor) else h0[:, None], \
                    c0.unsqueeze(1) if isinstance(c0, Tensor) else c0[:, None]
        if T == 0:
            raise ValueError("LSTM: the input sequence is empty (T = 0)")
        h_n, c_n = [], []
        for k in range(L):
            x, h, c = lstm_layer(x, h0[k], c0[k], *self.layer_params(k))  # (T, B, H)
            h_n.append(h)
            c_n.append(c)
            if k < L - 1 and self.training and self.dropout > 0:
                x = F.dropout(x, self.dropout, True)
        h_n, c_n = (stack(h_n, 0), stack(c_n, 0)) if L > 1 else (h_n[0].unsqueeze(0), c_n[0].unsqueeze(0))
        if unbatched:
            return x.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        if self.batch_first:
            x = x.transpose(0, 1)
        return x, (h_n, c_n)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s


class LSTMCell(Module):
    """torch.nn.LSTMCell: ``h_1, c_1 = cell(input, (h_0, c_0))`` for one step; input (B, in) or (in,)."""

    def __init__(self, input_size, hidden_size, bias=True, dtype=None):
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        dt = backend.get_default_dtype() if dtype is None else np.dtype(dtype)
        H = hidden_size
        self.weight_ih = Parameter(np.zeros((4 * H, input_size), dtype=dt))
        self.weight_hh = Parameter(np.zeros((4 * H, H), dtype=dt))
        if bias:
            self.bias_ih = Parameter(np.zeros(4 * H, dtype=dt))
            self.bias_hh = Parameter(np.zeros(4 * H, dtype=dt))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def forward(self, input, hx=None):
        x = input if isinstance(input, Tensor) else Tensor(input)
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"LSTMCell: expected input of shape (B, {self.input_size}) or ({self.input_size},), "
                             f"got {x.shape}")
        unbatched = x.ndim == 1
        if unbatched:
            x = x.unsqueeze(0)
        B, H = x.shape[0], self.hidden_size
        if hx is None:
            h0 = c0 = np.zeros((B, H), dtype=x.dtype)
        else:
            h0, c0 = hx
            if unbatched:
                h0 = h0.unsqueeze(0) if isinstance(h0, Tensor) else h0[None]
                c0 = c0.unsqueeze(0) if isinstance(c0, Tensor) else c0[None]
        _, h1, c1 = lstm_layer(x.unsqueeze(0), h0, c0, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        if unbatched:
            return h1.squeeze(0), c1.squeeze(0)
        return h1, c1

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")
