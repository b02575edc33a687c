"""Primitive differentiable ops: one class each, forward and backward side by side.

Every ``backward`` returns one gradient per positional input of ``forward`` (None where the input
needs none) and calls ``unbroadcast`` to undo NumPy broadcasting. Backward passes never write into
the incoming gradient. Fused ops (softmax, layer_norm, attention, ...) live in ``tinyllm.nn.functional``.
"""
import numpy as np

from .. import backend
from ..kernels import elementwise
from .engine import Function, SliceGrad, Tensor, unbroadcast

# =============================================================================================
# elementwise arithmetic
# =============================================================================================


class Add(Function):
    def forward(ctx, a, b):
        ctx.a_shape, ctx.b_shape = a.shape, b.shape
        return elementwise.add(a, b)  # a + b (on both cores when large: a GPT's residual stream)

    def backward(ctx, g):
        return unbroadcast(g, ctx.a_shape), unbroadcast(g, ctx.b_shape)


class Sub(Function):
    def forward(ctx, a, b):
        ctx.a_shape, ctx.b_shape = a.shape, b.shape
        return a - b

    def backward(ctx, g):
        return unbroadcast(g, ctx.a_shape), unbroadcast(-g, ctx.b_shape)


class Mul(Function):
    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        return a * b

    def backward(ctx, g):
        a, b = ctx.a, ctx.b
        da = unbroadcast(g * b, a.shape) if ctx.needs_input_grad[0] else None
        db = unbroadcast(g * a, b.shape) if ctx.needs_input_grad[1] else None
        return da, db


class Div(Function):
    # d(a/b)/da = 1/b ;  d(a/b)/db = -a/b^2 = -out/b
    def forward(ctx, a, b):
        out = a / b
        ctx.b, ctx.out, ctx.a_shape = b, out, a.shape
        return out

    def backward(ctx, g):
        g_over_b = g / ctx.b
        da = unbroadcast(g_over_b, ctx.a_shape) if ctx.needs_input_grad[0] else None
        db = unbroadcast(-g_over_b * ctx.out, ctx.b.shape) if ctx.needs_input_grad[1] else None
        return da, db


class PowScalar(Function):
    # d(a^p)/da = p * a^(p-1)
    def forward(ctx, a, exponent):
        ctx.a, ctx.exponent = a, exponent
        return a ** exponent

    def backward(ctx, g):
        p = ctx.exponent
        if p == 0:  # not 0 * 0^-1 = nan at a = 0; torch gives 0
            return backend.get_array_module(g).zeros_like(g), None
        return g * (p * ctx.a ** (p - 1)), None


class Pow(Function):
    # d(a^b)/da = b * a^(b-1)   (0 where b == 0)
    # d(a^b)/db = a^b * log(a)   (0 where a == 0 and b >= 0), both as torch
    def forward(ctx, a, b):
        out = a ** b
        ctx.a, ctx.b, ctx.out = a, b, out
        return out

    def backward(ctx, g):
        a, b, out = ctx.a, ctx.b, ctx.out
        xp = backend.get_array_module(a)
        da = db = None
        if ctx.needs_input_grad[0]:
            with np.errstate(divide="ignore", invalid="ignore"):
                da = unbroadcast(g * xp.where(b == 0, 0, b * a ** (b - 1)), a.shape)
        if ctx.needs_input_grad[1]:
            with np.errstate(divide="ignore", invalid="ignore"):
                log_a = xp.where((a == 0) & (b >= 0), 0, out * xp.log(a))
            db = unbroadcast(g * log_a, b.shape)
        return da, db


class Neg(Function):
    def forward(ctx, a):
        return -a

    def backward(ctx, g):
        return -g


class MatMul(Function):
    # C = A @ B  =>  dA = dC @ B^T,  dB = A^T @ dC   (1-D operands are promoted, as in NumPy)
    fresh_grads = True  # both gradients are new products (see Function)
    def forward(ctx, a, b):
        _check_matmul(a.shape, b.shape)
        ctx.a, ctx.b = a, b
        return a @ b

    def backward(ctx, g):
        a, b = ctx.a, ctx.b
        A = a[None, :] if a.ndim == 1 else a
        B = b[:, None] if b.ndim == 1 else b
        if b.ndim == 1:  # b first: for 1-D @ 1-D, g is 0-d and gets its axes one at a time
            g = g[..., None]
        if a.ndim == 1:
            g = g[..., None, :]
        da = db = None
        if ctx.needs_input_grad[0]:
            da = unbroadcast(g @ B.swapaxes(-1, -2), A.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            if B.ndim == 2 and A.ndim > 2:  # a batched activation times a weight: one big GEMM
                db = A.reshape(-1, A.shape[-1]).T @ g.reshape(-1, g.shape[-1])
            else:
                db = unbroadcast(A.swapaxes(-1, -2) @ g, B.shape)
            db = db.reshape(b.shape)
        return da, db


def _check_matmul(sa, sb):
    if len(sa) == 0 or len(sb) == 0:
        raise ValueError(f"matmul: both operands need at least one dimension, got shapes {sa} and {sb}")
    k_a = sa[-1]
    k_b = sb[0] if len(sb) == 1 else sb[-2]
    if k_a != k_b:
        raise ValueError(f"matmul: shapes {sa} and {sb} do not align ({k_a} != {k_b})")
    batch_a, batch_b = sa[:-2], sb[:-2]
    for x, y in zip(reversed(batch_a), reversed(batch_b)):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"matmul: batch dimensions of shapes {sa} and {sb} do not broadcast")


# =============================================================================================
# elementwise functions
# =============================================================================================


class Exp(Function):
    def forward(ctx, a):
        ctx.out = backend.get_array_module(a).exp(a)
        return ctx.out

    def backward(ctx, g):
        return g * ctx.out


class Log(Function):
    def forward(ctx, a):
        ctx.a = a
        return backend.get_array_module(a).log(a)

    def backward(ctx, g):
        return g / ctx.a


class Tanh(Function):
    # d tanh(a) = 1 - tanh(a)^2
    def forward(ctx, a):
        ctx.out = backend.get_array_module(a).tanh(a)
        return ctx.out

    def backward(ctx, g):
        return g * (1 - ctx.out * ctx.out)


class Sigmoid(Function):
    # d s(a) = s(a) (1 - s(a)); computed from exp(-|a|) so that it never overflows
    def forward(ctx, a):
        xp = backend.get_array_module(a)
        e = xp.exp(-xp.abs(a))
        ctx.out = xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        return ctx.out

    def backward(ctx, g):
        return g * ctx.out * (1 - ctx.out)


class ReLU(Function):
    def forward(ctx, a):
        ctx.mask = a > 0
        return backend.get_array_module(a).maximum(a, 0)  # not a * mask: -inf * 0 is nan

    def backward(ctx, g):
        return g * ctx.mask


class Sqrt(Function):
    def forward(ctx, a):
        ctx.out = backend.get_array_module(a).sqrt(a)
        return ctx.out

    def backward(ctx, g):
        return g / (2 * ctx.out)


class Abs(Function):
    def forward(ctx, a):
        ctx.sign = backend.get_array_module(a).sign(a)
        return abs(a)

    def backward(ctx, g):
        return g * ctx.sign


class Clamp(Function):
    # gradient passes where min <= a <= max, as torch.clamp
    def forward(ctx, a, min=None, max=None):
        xp = backend.get_array_module(a)
        ctx.mask = xp.ones(a.shape, dtype=bool)
        if min is not None:
            ctx.mask &= a >= min
        if max is not None:
            ctx.mask &= a <= max
        return xp.clip(a, min, max)

    def backward(ctx, g):
        return g * ctx.mask


class Cast(Function):
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    def backward(ctx, g):
        return g.astype(ctx.dtype)


class ToDevice(Function):
    # y = x on another device   =>   dx = dy moved back
    def forward(ctx, a, device):
        ctx.source = backend.device_of(a)
        return backend.to_device(a, device)

    def backward(ctx, g):
        return backend.to_device(g, ctx.source)


# =============================================================================================
# reductions
# =============================================================================================


def _axes(dim, ndim):
    """Normalise torch's ``dim`` (None, int or tuple; negative allowed) to a sorted tuple of axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    axes = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"dim {d} is out of range for a tensor with {ndim} dimensions")
        axes.append(d % max(ndim, 1))
    return tuple(sorted(set(axes))) if ndim else ()


def _expand_reduced(g, shape, axes, keepdim):
    """Broadcast a reduced gradient back to the input's shape."""
    xp = backend.get_array_module(g)
    if not keepdim and axes:
        g = g.reshape([1 if i in axes else n for i, n in enumerate(shape)])
    return xp.broadcast_to(g, shape)


class Sum(Function):
    def forward(ctx, a, dim=None, keepdim=False):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, _axes(dim, a.ndim), keepdim
        return a.sum(axis=ctx.axes, keepdims=keepdim)

    def backward(ctx, g):
        return _expand_reduced(g, ctx.shape, ctx.axes, ctx.keepdim)


class Mean(Function):
    def forward(ctx, a, dim=None, keepdim=False):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, _axes(dim, a.ndim), keepdim
        ctx.count = int(np.prod([a.shape[i] for i in ctx.axes]))
        return a.mean(axis=ctx.axes, keepdims=keepdim)

    def backward(ctx, g):
        return _expand_reduced(g / ctx.count, ctx.shape, ctx.axes, ctx.keepdim)


class Var(Function):
    # var = sum((a - mean)^2) / (N - correction)  =>  d var / da = 2 (a - mean) / (N - correction)
    def forward(ctx, a, dim=None, keepdim=False, correction=1):
        axes = _axes(dim, a.ndim)
        n = int(np.prod([a.shape[i] for i in axes]))
        ctx.centered = a - a.mean(axis=axes, keepdims=True)
        ctx.denom = max(n - correction, 0)
        ctx.axes, ctx.keepdim = axes, keepdim
        with np.errstate(divide="ignore", invalid="ignore"):
            return (ctx.centered ** 2).sum(axis=axes, keepdims=keepdim) / ctx.denom

    def backward(ctx, g):
        g = _expand_reduced(g, ctx.centered.shape, ctx.axes, ctx.keepdim)
        with np.errstate(divide="ignore", invalid="ignore"):
            return g * (2 / ctx.denom) * ctx.centered


class Max(Function):
    """max / min over ``dim``. Ties: over all dims (or a tuple of dims) the gradient is split
    evenly among the tied elements, as torch's ``max()``/``amax``; over a single int ``dim`` it all
    goes to the first maximal element, the index torch's ``max(dim)`` returns."""

    def forward(ctx, a, dim=None, keepdim=False, minimum=False):
        xp = backend.get_array_module(a)
        if a.size == 0:
            raise ValueError(f"{'min' if minimum else 'max'}(): cannot reduce an empty tensor of shape {a.shape}")
        axes = _axes(dim, a.ndim)
        reduce = xp.min if minimum else xp.max
        out = reduce(a, axis=axes, keepdims=True)
        if isinstance(dim, int) and a.ndim:
            pick = (xp.argmin if minimum else xp.argmax)(a, axis=axes[0], keepdims=True)
            mask = xp.zeros(a.shape, dtype=a.dtype)
            xp.put_along_axis(mask, pick, 1, axis=axes[0])
        else:
            mask = (a == out).astype(a.dtype)
            mask /= mask.sum(axis=axes, keepdims=True)
        ctx.mask, ctx.axes, ctx.keepdim = mask, axes, keepdim
        return out if keepdim else out.reshape([n for i, n in enumerate(a.shape) if i not in axes])

    def backward(ctx, g):
        return _expand_reduced(g, ctx.mask.shape, ctx.axes, ctx.keepdim) * ctx.mask


# =============================================================================================
# shapes and indexing
# =============================================================================================


class Reshape(Function):
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot view shape {a.shape} ({a.size} elements) as {tuple(shape)}") from None

    def backward(ctx, g):
        return g.reshape(ctx.shape)


class Transpose(Function):
    def forward(ctx, a, dim0, dim1):
        ctx.dims = (dim0, dim1)
        return a.swapaxes(dim0, dim1)

    def backward(ctx, g):
        return g.swapaxes(*ctx.dims)


class Permute(Function):
    def forward(ctx, a, dims):
        n = a.ndim
        axes = tuple(d % n if -n <= d < n else d for d in dims)
        if sorted(axes) != list(range(n)):
            raise ValueError(f"permute: {tuple(dims)} is not a permutation of the {n} dims of shape {a.shape}")
        inverse = [0] * n  # inverse[axes[i]] = i (plain Python: np.argsort cost a third of the op)
        for i, d in enumerate(axes):
            inverse[d] = i
        ctx.inverse = tuple(inverse)
        return a.transpose(axes)

    def backward(ctx, g):
        return g.transpose(ctx.inverse)


class Expand(Function):
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return backend.get_array_module(a).broadcast_to(a, shape)

    def backward(ctx, g):
        return unbroadcast(g, ctx.shape)


class GetItem(Function):
    # basic indexing is a view: its gradient is written into place. Advanced (integer-array)
    # indexing is a gather: its gradient is a scatter-add, so repeated indices accumulate.
    def forward(ctx, a, index):
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        ctx.strides = None if a.flags.c_contiguous else a.strides  # the gradient's memory order
        try:
            return a[index]
        except IndexError as e:
            raise IndexError(f"index {_describe_index(index)} is invalid for a tensor of shape {a.shape}: {e}") from None

    def backward(ctx, g):
        if _is_basic_index(ctx.index):  # zero outside the view: the engine fills one buffer per tensor
            return SliceGrad(ctx.shape, ctx.index, g, ctx.strides)
        xp = backend.get_array_module(g)
        grad = xp.zeros(ctx.shape, dtype=g.dtype)
        xp.add.at(grad, _bool_to_int_index(ctx.index), g)
        return grad


def _normalize_index(index):
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    if isinstance(index, list):
        return np.asarray(index)
    return index


def _is_basic_index(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (int, slice, np.integer)) for p in parts)


def _bool_to_int_index(index):
    parts = index if isinstance(index, tuple) else (index,)
    out = []
    for p in parts:
        if hasattr(p, "dtype") and p.dtype == bool:
            out.extend(backend.get_array_module(p).nonzero(p))
        else:
            out.append(p)
    return tuple(out)


def _describe_index(index):
    parts = index if isinstance(index, tuple) else (index,)
    return "[" + ", ".join(f"array{p.shape}" if hasattr(p, "shape") else repr(p) for p in parts) + "]"


class MaskedFill(Function):
    def forward(ctx, a, mask, value):
        xp = backend.get_array_module(a)
        try:
            ctx.mask = xp.broadcast_to(mask, a.shape)
        except ValueError:
            raise ValueError(f"masked_fill: mask of shape {mask.shape} does not broadcast to {a.shape}") from None
        return xp.where(ctx.mask, xp.asarray(value, dtype=a.dtype), a)

    def backward(ctx, g):
        return backend.get_array_module(g).where(ctx.mask, 0, g).astype(g.dtype, copy=False), None, None


class Where(Function):
    def forward(ctx, cond, x, y):
        xp = backend.get_array_module(x, y)
        ctx.cond, ctx.x_shape, ctx.y_shape = cond, xp.shape(x), xp.shape(y)
        return xp.where(cond, x, y)

    def backward(ctx, g):
        xp = backend.get_array_module(g)
        zero = xp.zeros((), dtype=g.dtype)
        dx = unbroadcast(xp.where(ctx.cond, g, zero), ctx.x_shape) if ctx.needs_input_grad[1] else None
        dy = unbroadcast(xp.where(ctx.cond, zero, g), ctx.y_shape) if ctx.needs_input_grad[2] else None
        return None, dx, dy


class Cat(Function):
    def forward(ctx, *arrays, dim=0):
        xp = backend.get_array_module(*arrays)
        ctx.dim = dim
        ctx.splits = np.cumsum([a.shape[dim] for a in arrays])[:-1]
        try:
            return xp.concatenate(arrays, axis=dim)
        except ValueError:
            raise ValueError(f"cat: shapes {[a.shape for a in arrays]} do not match outside dim {dim}") from None

    def backward(ctx, g):
        return tuple(backend.get_array_module(g).split(g, ctx.splits, axis=ctx.dim))


class Stack(Function):
    def forward(ctx, *arrays, dim=0):
        xp = backend.get_array_module(*arrays)
        if len({a.shape for a in arrays}) > 1:
            raise ValueError(f"stack: all tensors need the same shape, got {[a.shape for a in arrays]}")
        ctx.dim = dim
        return xp.stack(arrays, axis=dim)

    def backward(ctx, g):
        xp = backend.get_array_module(g)
        return tuple(xp.moveaxis(g, ctx.dim, 0))


class Clone(Function):
    def forward(ctx, a):
        return a.copy()

    def backward(ctx, g):
        return g
