"""torch's functional API: ``import tinyllm.nn.functional as F``.

Each function checks its arguments (torch's names, shapes and defaults) and applies one op: the fused
ones (linear, softmax, layer_norm, cross_entropy, attention, ...) are in ``tinyllm/autograd/fused.py``,
the primitives in ``tinyllm/autograd/ops.py`` and ``shapes.py``.
"""
import math

import numpy as np

from .. import backend
from ..autograd import Tensor
from ..autograd.fused import (GELU, ConstantPad, CrossEntropy, Dropout, Embedding, IndexPad, LayerNorm, Linear,
                              LogSoftmax, RMSNorm, ScaledDotProductAttention, SiLU, Softmax, _dim)
from ..autograd.ops import as_tensor_like


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


def linear(input, weight, bias=None):
    return Linear.apply(_tensor(input), weight, bias)


# =============================================================================================
# softmax family
# =============================================================================================


def softmax(input, dim=None, dtype=None):
    x = _tensor(input) if dtype is None else _tensor(input).to(dtype)
    return Softmax.apply(x, dim=_dim(dim, x.ndim, "softmax"))


def log_softmax(input, dim=None, dtype=None):
    x = _tensor(input) if dtype is None else _tensor(input).to(dtype)
    return LogSoftmax.apply(x, dim=_dim(dim, x.ndim, "log_softmax"))


# =============================================================================================
# layer norm
# =============================================================================================


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    x = _tensor(input)
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"layer_norm: normalized_shape {shape} does not match the last dims of input {x.shape}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != shape:
            raise ValueError(f"layer_norm: {name} has shape {tuple(p.shape)}, expected {shape}")
    return LayerNorm.apply(x, weight, bias, n_dims=len(shape), eps=eps)


def rms_norm(input, normalized_shape, weight=None, eps=None):
    """x / sqrt(mean(x^2) + eps) * weight over the last ``len(normalized_shape)`` dims; ``eps=None`` is
    the machine epsilon of the input's dtype, as torch."""
    x = _tensor(input)
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    if x.shape[x.ndim - len(shape):] != shape or len(shape) > x.ndim:
        raise ValueError(f"rms_norm: normalized_shape {shape} does not match the last dims of input {x.shape}")
    if weight is not None and tuple(weight.shape) != shape:
        raise ValueError(f"rms_norm: weight has shape {tuple(weight.shape)}, expected {shape}")
    if not backend.is_floating(x.dtype):
        raise TypeError(f"rms_norm: input must be floating point, got dtype {x.dtype}")
    eps = float(np.finfo(x.dtype).eps) if eps is None else float(eps)
    return RMSNorm.apply(x, weight, n_dims=len(shape), eps=eps)


# =============================================================================================
# embedding
# =============================================================================================


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

    def classes_last(z):  # (N, C, d1, ...) -> (N*d1*..., C); (C,) -> (1, C)
        return z.reshape(1, C) if z.ndim == 1 else z if z.ndim == 2 else z.permute(0, *range(2, z.ndim), 1).reshape(-1, C)

    logits = classes_last(x)
    if not soft:
        t2 = t.reshape(-1)
    elif isinstance(target, Tensor) and target.requires_grad:  # probabilities that train get a gradient
        t2 = classes_last(target)
    else:
        t2 = classes_last(Tensor._wrap(t))
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
    if reduction not in _REDUCTIONS:
        raise ValueError(f"nll_loss: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
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
    return SiLU.apply(_tensor(input))


def mse_loss(input, target, reduction="mean"):
    diff = _tensor(input) - as_tensor_like(target, _tensor(input))
    sq = diff * diff
    return sq.mean() if reduction == "mean" else sq.sum() if reduction == "sum" else sq


def dropout(input, p=0.5, training=True):
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: probability must be in [0, 1], got {p}")
    x = _tensor(input)
    if not training or p == 0.0:
        return x
    return Dropout.apply(x, p=p)


# =============================================================================================
# padding and one-hot
# =============================================================================================


_PAD_MODES = ("constant", "reflect", "replicate", "circular")


def _pad_index(n, before, after, mode):
    """The source position, in 0..n-1, of each of the n + before + after output positions."""
    if mode == "circular":  # as torch: crop first (negative amounts), then wrap around what is left
        lo, hi = max(-before, 0), n - max(-after, 0)
        return np.arange(-max(before, 0), hi - lo + max(after, 0)) % (hi - lo) + lo
    i = np.arange(-before, n + after)
    if mode == "reflect":  # mirror without repeating the edge
        i = np.abs(i)
        return np.where(i > n - 1, 2 * (n - 1) - i, i)
    return np.clip(i, 0, n - 1)  # replicate


def pad(input, pad, mode="constant", value=None):
    """torch's F.pad: ``pad`` = (before, after) pairs from the last dim backwards; a negative amount
    crops. 'constant' pads any dims with ``value`` (default 0); 'reflect', 'replicate' and 'circular'
    pad the last 1 to 3 dims of a (batch, channel, ...) input, as torch."""
    x = _tensor(input)
    pad = tuple(int(p) for p in pad)
    if mode not in _PAD_MODES:
        raise NotImplementedError(f"pad: unknown padding mode {mode!r} (allowed: {', '.join(_PAD_MODES)})")
    if len(pad) % 2:
        raise ValueError(f"pad: the padding {pad} must have an even length ((before, after) per dim)")
    k = len(pad) // 2
    if k > x.ndim:
        raise ValueError(f"pad: the padding {pad} covers {k} dims, but the input has only {x.ndim} "
                         f"(shape {x.shape})")
    pairs = [(0, 0)] * (x.ndim - k) + [(pad[2 * j], pad[2 * j + 1]) for j in reversed(range(k))]
    for d, (n, (b, a)) in enumerate(zip(x.shape, pairs)):
        if n + b + a < 0:
            raise ValueError(f"pad: dim {d} of size {n} padded by ({b}, {a}) would have negative size "
                             f"{n + b + a}")
    if mode == "constant":
        value = 0 if value is None else value
        return ConstantPad.apply(x, pads=tuple(pairs), value=value)
    if value is not None and value != 0:
        raise ValueError(f"pad: mode {mode!r} takes no value, got value={value}")
    if k not in (1, 2, 3) or x.ndim not in (k + 1, k + 2):
        raise NotImplementedError(f"pad: mode {mode!r} pads the last 1, 2 or 3 dims of a {k + 1}- or "
                                  f"{k + 2}-d input (batch, channels, ...); got a padding of length "
                                  f"{len(pad)} for input of shape {x.shape}")
    index = {}
    for d in range(x.ndim - k, x.ndim):
        n, (b, a) = x.shape[d], pairs[d]
        limit = n - 1 if mode == "reflect" else n - max(-b, 0) - max(-a, 0)  # circular: the cropped size
        if mode != "replicate" and max(b, a) > limit:
            raise ValueError(f"pad: mode {mode!r} pads dim {d} of size {n} by at most {limit}, got ({b}, {a})")
        if mode == "replicate" and n == 0 and (b > 0 or a > 0):
            raise ValueError(f"pad: mode 'replicate' cannot pad the empty dim {d}")
        if (b, a) != (0, 0):
            index[d] = _on_device_of(_pad_index(n, b, a, mode), x)
    if not index:  # nothing to gather: a copy, as torch returns a new tensor
        return ConstantPad.apply(x, pads=tuple(pairs), value=0)
    return IndexPad.apply(x, index=index)


def one_hot(tensor, num_classes=-1):
    """int64 tensor of shape (*tensor.shape, num_classes) with a 1 at each class id; ``num_classes=-1``
    means the largest id + 1."""
    ids = _data(tensor)
    ids = np.asarray(ids) if not hasattr(ids, "dtype") else ids
    xp = backend.get_array_module(ids)
    if ids.dtype != np.int64:
        raise TypeError(f"one_hot: the class ids must be an int64 tensor, got dtype {ids.dtype}")
    if num_classes == -1:
        if ids.size == 0:
            raise ValueError("one_hot: cannot infer num_classes from an empty tensor; pass num_classes")
        num_classes = int(ids.max()) + 1
    if ids.size and int(ids.min()) < 0:
        raise ValueError(f"one_hot: class ids must be non-negative, got {int(ids.min())}")
    if ids.size and int(ids.max()) >= num_classes:
        raise ValueError(f"one_hot: class id {int(ids.max())} is out of range for num_classes={num_classes}")
    out = (ids[..., None] == xp.arange(num_classes)).astype(np.int64)
    return Tensor._wrap(out)


# =============================================================================================
# attention
# =============================================================================================


def _repeat_kv_heads(x, n_head, name):
    """(..., H_kv, S, D) -> (..., n_head, S, D), each kv head repeated n_head / H_kv times in a row
    (torch's repeat_interleave: query head h reads kv head h // (n_head / H_kv)); the gradient of the
    repeats sums back through expand."""
    if x.ndim < 3:
        raise IndexError(f"scaled_dot_product_attention: enable_gqa needs a head dim (-3), but {name} has "
                         f"shape {x.shape}")
    h = x.shape[-3]
    if n_head % h:
        raise RuntimeError(f"scaled_dot_product_attention: the {h} heads of {name} must divide the "
                           f"{n_head} heads of query (enable_gqa=True)")
    if h == n_head:
        return x
    rep = n_head // h
    lead = x.shape[:-3]
    grouped = x.reshape(lead + (h, 1) + x.shape[-2:]).expand(*lead, h, rep, *x.shape[-2:])  # (.., h, rep, S, D)
    return grouped.reshape(lead + (n_head,) + x.shape[-2:])


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None, enable_gqa=False):
    """torch's SDPA: softmax(q k^T * scale + mask) v over the last two dims.

    ``attn_mask`` is boolean (True = may attend) or additive floats, broadcastable to (..., L, S); a
    float mask that requires grad gets one (a learned attention bias). The leading dims of q, k, v
    broadcast; with ``enable_gqa`` key and value may have fewer heads (dim -3) than query, a divisor
    of its count (grouped-query attention). With ``dropout_p > 0`` the probabilities are materialised
    and dropped out (no fused path).
    """
    q, k, v = _tensor(query), _tensor(key), _tensor(value)
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise ValueError(f"scaled_dot_product_attention: q, k, v need rank >= 2, got "
                         f"{q.shape}, {k.shape}, {v.shape}")
    if enable_gqa:
        if q.ndim < 3:
            raise IndexError(f"scaled_dot_product_attention: enable_gqa needs a head dim (-3), but query "
                             f"has shape {q.shape}")
        k, v = _repeat_kv_heads(k, q.shape[-3], "key"), _repeat_kv_heads(v, q.shape[-3], "value")
    try:
        lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        lead = None
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2] or lead is None:
        raise ValueError(f"scaled_dot_product_attention: shapes q {q.shape}, k {k.shape}, v {v.shape} "
                         f"do not fit (..., L, E), (..., S, E), (..., S, Ev)")
    # leading dims that differ are broadcast (torch's math path does); equal ones are left as they are
    q, k, v = (x if x.shape[:-2] == lead else x.expand(*lead, *x.shape[-2:]) for x in (q, k, v))
    if attn_mask is not None and is_causal:
        raise ValueError("scaled_dot_product_attention: pass either attn_mask or is_causal=True, not both")
    mask = _on_device_of(_data(attn_mask), q)
    mask_tensor = None  # the mask as a graph input, when it wants a gradient
    if mask is not None:
        target = q.shape[:-1] + (k.shape[-2],)
        try:
            np.broadcast_shapes(mask.shape, target)
        except ValueError:
            raise ValueError(f"scaled_dot_product_attention: attn_mask of shape {mask.shape} does not "
                             f"broadcast to {target}") from None
        if mask.dtype != bool:
            if isinstance(attn_mask, Tensor) and attn_mask.requires_grad:
                mask_tensor = attn_mask if attn_mask.dtype == q.dtype else attn_mask.to(q.dtype)
            mask = mask.astype(q.dtype, copy=False)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    if dropout_p > 0.0:
        scores = (q @ k.transpose(-2, -1)) * scale
        if mask is not None:
            if mask.dtype == bool:
                scores = scores.masked_fill(~mask, -np.inf)
            else:
                scores = scores + (Tensor(mask) if mask_tensor is None else mask_tensor)
        if is_causal:
            L, S = scores.shape[-2:]
            scores = scores.masked_fill(~np.tril(np.ones((L, S), dtype=bool)), -np.inf)
        return dropout(softmax(scores, dim=-1), dropout_p, True) @ v
    return ScaledDotProductAttention.apply(q, k, v, mask if mask_tensor is None else mask_tensor,
                                           scale=scale, is_causal=is_causal)
