"""Post-training int8 weight quantisation: per output channel, symmetric.

    scale_o = max_i |W[o, i]| / 127,   Q[o, i] = round(W[o, i] / scale_o) in [-127, 127]   (int8)
    W ~ Q * scale[:, None]   (error at most scale_o / 2 per weight)

``QuantizedLinear`` and ``QuantizedEmbedding`` hold Q and the scales as buffers (so they save and
load with the state dict): the file and the resident weights are a quarter of float32's. A few rows
(decode steps) run a numba kernel that reads Q directly; many rows dequantize and use BLAS
(tinyllm/kernels/int8.py). They are for inference: their weights take no gradient.
"""
import numpy as np

from .. import backend, kernels
from ..autograd import Tensor, is_grad_enabled
from . import functional as F
from .layers import Embedding, Linear
from .module import Module, replace_submodules


def quantize_per_channel(weight):
    """(Q int8, scale float32) of a 2-D float array, one scale per row (output channel)."""
    xp = backend.get_array_module(weight)
    w = weight.astype(xp.float32)
    scale = xp.abs(w).max(axis=1) / 127.0
    scale = xp.where(scale > 0, scale, 1.0).astype(xp.float32)  # an all-zero row: any scale works
    q = xp.clip(xp.rint(w / scale[:, None]), -127, 127).astype(xp.int8)
    return q, scale


def dequantize(q, scale, dtype=np.float32):
    return q.astype(dtype) * scale.astype(dtype)[:, None]


class QuantizedLinear(Module):
    """``Linear`` with an int8 weight (out, in) and one float32 scale per output feature."""

    def __init__(self, in_features, out_features, bias=True, q=None, scale=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight_int8", q if q is not None else Tensor(np.zeros((out_features, in_features), np.int8)))
        self.register_buffer("weight_scale", scale if scale is not None else Tensor(np.ones(out_features, np.float32)))
        if bias:
            self.register_buffer("bias", Tensor(np.zeros(out_features, np.float32)))
        else:
            self.bias = None

    @classmethod
    def from_float(cls, linear, shared=None):
        """Quantize ``linear``; ``shared`` maps id(weight) -> (Q, scale) Tensors so tied weights stay tied."""
        q, scale = _quantized(linear.weight, shared)
        m = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, q=q, scale=scale)
        if linear.bias is not None:
            m.bias = Tensor(linear.bias.data.astype(np.float32))
        return m

    def forward(self, x):
        if is_grad_enabled() and isinstance(x, Tensor) and x.requires_grad:  # a gradient for x: the F path
            w = dequantize(self.weight_int8.data, self.weight_scale.data, x.dtype)
            return F.linear(x, Tensor._wrap(w), self.bias)
        xd = x.data if isinstance(x, Tensor) else np.asarray(x)
        if xd.shape[-1] != self.in_features:
            raise ValueError(f"linear: input of shape {xd.shape} does not match weight of shape "
                             f"{(self.out_features, self.in_features)}")
        y = kernels.int8.linear(xd.reshape(-1, self.in_features), self.weight_int8.data, self.weight_scale.data)
        if self.bias is not None:
            y += self.bias.data
        return Tensor._wrap(y.reshape(xd.shape[:-1] + (self.out_features,)))

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


class QuantizedEmbedding(Module):
    """``Embedding`` with int8 rows and one float32 scale per row; only the looked-up rows are dequantized."""

    def __init__(self, num_embeddings, embedding_dim, q=None, scale=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.register_buffer("weight_int8", q if q is not None else Tensor(np.zeros((num_embeddings, embedding_dim), np.int8)))
        self.register_buffer("weight_scale", scale if scale is not None else Tensor(np.ones(num_embeddings, np.float32)))

    @classmethod
    def from_float(cls, emb, shared=None):
        q, scale = _quantized(emb.weight, shared)
        return cls(emb.num_embeddings, emb.embedding_dim, q=q, scale=scale)

    def forward(self, ids):
        ids = ids.data if isinstance(ids, Tensor) else np.asarray(ids)
        F._check_ids(ids, self.num_embeddings, "embedding")
        rows = self.weight_int8.data[ids].astype(np.float32) * self.weight_scale.data[ids][..., None]
        return Tensor._wrap(rows)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}, int8"


def _quantized(weight, shared):
    key = id(weight)
    if shared is not None and key in shared:
        return shared[key]
    q, scale = quantize_per_channel(weight.data)
    pair = (Tensor(q), Tensor(scale))
    if shared is not None:
        shared[key] = pair
    return pair


def quantize_(model):
    """Replace every ``Linear`` and ``Embedding`` in ``model`` with its int8 version, in place (tied
    weights share one int8 copy). Returns the model, in eval mode."""
    shared = {}

    def convert(name, child):
        if isinstance(child, Linear):
            return QuantizedLinear.from_float(child, shared)
        if isinstance(child, Embedding):
            return QuantizedEmbedding.from_float(child, shared)
        return None

    replace_submodules(model, convert)
    return model.eval()
