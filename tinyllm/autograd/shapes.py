"""Shape ops and indexing: reshape, transpose, permute, expand, getitem, masked_fill, where, cat and
stack. One class each, forward and backward side by side, and under each class the Tensor methods
and functions that call it (see ``ops.py`` for the conventions)."""
import numpy as np

from .. import backend
from .engine import Function, Tensor
from .grad_buffers import SliceGrad
from .ops import _axes, as_tensor_like, unbroadcast


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


def _shape_args(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def reshape(self, *shape):
    return Reshape.apply(self, shape=_shape_args(shape))


def unsqueeze(self, dim):
    n = self.ndim + 1
    if not -n <= dim < n:
        raise IndexError(f"unsqueeze: dim {dim} is out of range for a tensor with {self.ndim} dimensions")
    shape = list(self.shape)
    shape.insert(dim % n, 1)
    return reshape(self, shape)


def squeeze(self, dim=None):
    axes = _axes(dim, self.ndim)
    return reshape(self, [n for i, n in enumerate(self.shape) if not (i in axes and n == 1)])


def flatten(self, start_dim=0, end_dim=-1):
    if self.ndim == 0:
        return reshape(self, (1,))
    s, e = start_dim % self.ndim, end_dim % self.ndim
    return reshape(self, self.shape[:s] + (int(np.prod(self.shape[s:e + 1])),) + self.shape[e + 1:])


Tensor.reshape = Tensor.view = reshape
Tensor.unsqueeze, Tensor.squeeze, Tensor.flatten = unsqueeze, squeeze, flatten


class Transpose(Function):
    def forward(ctx, a, dim0, dim1):
        ctx.dims = (dim0, dim1)
        return a.swapaxes(dim0, dim1)

    def backward(ctx, g):
        return g.swapaxes(*ctx.dims)

Tensor.transpose = lambda self, dim0, dim1: Transpose.apply(self, dim0=dim0, dim1=dim1)
Tensor.mT = property(lambda self: Transpose.apply(self, dim0=-2, dim1=-1))


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

Tensor.permute = lambda self, *dims: Permute.apply(self, dims=_shape_args(dims))
Tensor.T = property(lambda self: Permute.apply(self, dims=tuple(reversed(range(self.ndim)))))


class Expand(Function):
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return backend.get_array_module(a).broadcast_to(a, shape)

    def backward(ctx, g):
        return unbroadcast(g, ctx.shape)


def expand(self, *sizes):
    sizes = _shape_args(sizes)
    lead = len(sizes) - self.ndim
    shape = tuple(self.shape[i - lead] if n == -1 else n for i, n in enumerate(sizes))
    return Expand.apply(self, shape=shape)


Tensor.expand = expand


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
        xp = backend.get_array_module(g)
        if _is_basic_index(ctx.index):  # g where the view lies, zero elsewhere
            if not backend.plain():  # fast path: the engine fills one buffer for all of a tensor's slices
                return SliceGrad(ctx.shape, ctx.index, g, ctx.strides)
            grad = xp.zeros(ctx.shape, dtype=g.dtype)
            grad[ctx.index] = g
            return grad
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


def getitem(self, index):
    return GetItem.apply(self, index=_normalize_index(index))


def split(self, split_size_or_sections, dim=0):
    """torch.split: equal chunks of ``split_size`` (the last may be smaller) or explicit sizes."""
    n = self.shape[dim]
    if isinstance(split_size_or_sections, int):
        sizes = [min(split_size_or_sections, n - i) for i in range(0, n, split_size_or_sections)]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to {n}, the size of dim {dim}")
    out, start = [], 0
    lead = (slice(None),) * (dim % self.ndim)
    for s in sizes:
        out.append(getitem(self, lead + (slice(start, start + s),)))
        start += s
    return tuple(out)


def chunk(self, chunks, dim=0):
    return split(self, -(-self.shape[dim] // chunks), dim)


Tensor.__getitem__ = getitem
Tensor.split, Tensor.chunk = split, chunk


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


def masked_fill(self, mask, value):
    mask = mask.data if isinstance(mask, Tensor) else mask
    if isinstance(value, Tensor):
        value = value.item()
    return MaskedFill.apply(self, mask, value=value)


Tensor.masked_fill = masked_fill


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


def where(condition, input, other):
    """``where(cond, x, y)``: elements of x where cond is true, else of y; no gradient to cond."""
    cond = condition.data if isinstance(condition, Tensor) else condition
    like = input if isinstance(input, Tensor) else other if isinstance(other, Tensor) else None
    if like is None:
        like = Tensor(input)
    return Where.apply(cond, as_tensor_like(input, like), as_tensor_like(other, like))


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


def _tensors(tensors, name):
    tensors = list(tensors)
    if not tensors:
        raise ValueError(f"{name}: expected a non-empty list of tensors")
    first = next((t for t in tensors if isinstance(t, Tensor)), None)
    return [as_tensor_like(t, first) if first is not None else Tensor(t) for t in tensors]


def cat(tensors, dim=0):
    return Cat.apply(*_tensors(tensors, "cat"), dim=dim)


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


def stack(tensors, dim=0):
    return Stack.apply(*_tensors(tensors, "stack"), dim=dim)
