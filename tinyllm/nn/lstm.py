"""``LSTM`` and ``LSTMCell`` with torch's parameter names, layouts, gate order (i, f, g, o) and init, so
a torch state_dict loads as it is.

One layer over the whole sequence is ONE fused op (``autograd/fused.py``'s ``LSTMLayer``, with
back-propagation through time inside it), not ~15 graph nodes per timestep.
"""
import math

import numpy as np

from .. import backend
from ..autograd import Tensor, stack
from ..autograd.fused import LSTMLayer
from . import functional as F
from . import init
from .module import Module, Parameter


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
