"""Shape ops and indexing: reshape, transpose, permute, expand, getitem and setitem, the in-place
writes (copy_, fill_, zero_, masked_fill_), masked_fill, where, cat, stack, tril/triu, repeat,
index_select, flip, roll, narrow, unbind and movedim. One class each, forward and backward side by
side, and under each class the Tensor methods and functions that call it (see ``ops.py`` for the
conventions)."""
import numpy as np

from .. import backend
from . import grad_mode
from .engine import Function, Tensor
from .grad_buffers import SliceGrad
from .ops import Clone, _axes, as_tensor_like, unbroadcast


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
    # ``then``: the advanced part, applied to the view ``a[index]`` (see ``_torch_index``).
    def forward(ctx, a, index, then=None):
        ctx.shape, ctx.dtype, ctx.index, ctx.then = a.shape, a.dtype, index, then
        ctx.strides = None if a.flags.c_contiguous else a.strides  # the gradient's memory order
        try:
            return a[index] if then is None else a[index][then]
        except IndexError as e:
            raise IndexError(f"index {_describe_index(index, then)} is invalid for a tensor of shape "
                             f"{a.shape}: {e}") from None

    def backward(ctx, g):
        xp = backend.get_array_module(g)
        if ctx.then is None and _is_basic_index(ctx.index):  # g where the view lies, zero elsewhere
            if not backend.plain():  # fast path: the engine fills one buffer for all of a tensor's slices
                return SliceGrad(ctx.shape, ctx.index, g, ctx.strides)
            grad = xp.zeros(ctx.shape, dtype=g.dtype)
            grad[ctx.index] = g
            return grad
        grad = xp.zeros(ctx.shape, dtype=g.dtype)
        if ctx.then is None:
            xp.add.at(grad, _bool_to_int_index(ctx.index), g)
        else:  # grad[index] is a view of grad, so the scatter-add lands in grad
            xp.add.at(grad[ctx.index], _bool_to_int_index(ctx.then), g)
        return grad


def _torch_index(index):
    """torch's reading of an index, as ``(index, then)`` for NumPy: ``a[index]``, then ``[then]``
    when ``then`` is not None.

    Tensors become arrays: a 0-d integer tensor is an int (torch selects with it), a uint8 tensor a
    mask; a list is an index array, or a tuple when it holds a slice, None, Ellipsis, a tensor or a
    sequence (as torch still reads it). Where ints meet index arrays torch differs from NumPy: it
    applies the ints first, as slices that drop their dim, so ``x[1, :, idx]`` is ``x[1][:, idx]``
    (NumPy would put idx's dims first). A Python bool adds a dim and counts as an index array.
    """
    if type(index) in _BASIC_PARTS or (type(index) is tuple and all(type(p) in _BASIC_PARTS for p in index)):
        return index, None  # the common cases, kept cheap
    if isinstance(index, list) and _list_is_tuple(index):
        index = tuple(index)
    parts = tuple(_index_part(p) for p in (index if isinstance(index, tuple) else (index,)))
    has_int = has_array = has_bool = False
    for p in parts:
        if isinstance(p, (bool, np.bool_)):
            has_bool = True
        elif isinstance(p, (int, np.integer)):
            has_int = True
        elif hasattr(p, "ndim"):
            has_array = True
    if not (has_bool or (has_int and has_array)):  # NumPy's reading is torch's
        return (parts if isinstance(index, tuple) else parts[0]), None
    return _split_at_ints(parts)


_BASIC_PARTS = {int, slice, type(None), type(Ellipsis)}  # bool is not here: it adds a dim


def _index_part(p):
    if isinstance(p, Tensor):
        p = p.data
        if p.dtype == np.uint8:  # torch reads a byte tensor as a mask
            p = p.astype(bool)
    elif isinstance(p, list):
        p = np.asarray(p) if p else np.zeros(0, dtype=np.int64)
    elif isinstance(p, float):
        raise IndexError("only integers, slices (`:`), ellipsis (`...`), None and long or byte tensors are "
                         f"valid indices (got float {p})")
    if hasattr(p, "ndim") and not isinstance(p, np.generic):
        if p.dtype.kind not in "iub":
            raise IndexError(f"tensors used as indices must be long, int, byte or bool tensors, got {p.dtype}")
        if p.ndim == 0:  # torch selects with a 0-d integer tensor, and reads a 0-d bool as a Python bool
            return bool(p) if p.dtype == bool else int(p)
    return p


def _list_is_tuple(seq):
    return len(seq) < 32 and any(p is None or p is Ellipsis or isinstance(p, (slice, Tensor, list, tuple))
                                 or (hasattr(p, "ndim") and p.ndim > 0) for p in seq)


def _split_at_ints(parts):
    """(basic, advanced): ints, slices and None applied first (a view), then the index arrays, each
    on the dim it indexes in that view. A Python bool is a new dim of 1 indexed by [0] (or by []
    when False), as NumPy reads it."""
    basic, then = [], []
    for p in parts:
        if p is Ellipsis:
            basic.append(Ellipsis)
            then.append(Ellipsis)
        elif p is None:
            basic.append(None)
            then.append(slice(None))
        elif isinstance(p, (bool, np.bool_)):
            basic.append(None)
            then.append(np.zeros(1 if p else 0, dtype=np.intp))
        elif isinstance(p, (int, np.integer)):
            basic.append(p)
        elif isinstance(p, slice):
            basic.append(p)
            then.append(slice(None))
        else:  # an index array: it keeps its dims for now
            basic.extend([slice(None)] * (p.ndim if p.dtype == bool else 1))
            then.append(p)
    return tuple(basic), tuple(then)


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


def _describe_index(index, then=None):
    parts = index if isinstance(index, tuple) else (index,)
    text = "[" + ", ".join(f"array{p.shape}" if hasattr(p, "shape") else repr(p) for p in parts) + "]"
    return text if then is None else text + _describe_index(then)


def getitem(self, index):
    index, then = _torch_index(index)
    return GetItem.apply(self, index=index, then=then)


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


def _check_mask_and_value(mask, value):
    if getattr(mask, "dtype", None) != bool:
        raise RuntimeError(f"masked_fill: only boolean masks are supported, got a mask of dtype "
                           f"{getattr(mask, 'dtype', type(mask).__name__)}")
    if isinstance(value, Tensor) and value.ndim:
        raise RuntimeError(f"masked_fill: the value must be a number or a 0-d tensor, got a tensor of "
                           f"shape {value.shape}")


def masked_fill(self, mask, value):
    mask = mask.data if isinstance(mask, Tensor) else mask
    _check_mask_and_value(mask, value)
    if isinstance(value, Tensor):
        if value.requires_grad and grad_mode.enabled:  # the value gets the sum of the filled gradients
            return where(Tensor._wrap(mask), value.to(self.dtype), self)
        value = value.item()
    return MaskedFill.apply(self, mask, value=value)


Tensor.masked_fill = masked_fill


# =============================================================================================
# in-place ops
# =============================================================================================
# torch's rules: with no graph to record (under no_grad, or nothing involved requires grad) the
# write goes into ``.data`` and every view of the tensor sees it. A leaf that requires grad refuses
# outside no_grad. Otherwise the op runs out of place and the tensor takes over the result's array
# and graph node (torch's CopySlices), so the arrays earlier ops saved for backward stay unchanged.


def _in_place(self, others, out_of_place, write, view=False):
    """Run an in-place op on ``self`` by the rules above; ``others``: the op's other inputs."""
    records = grad_mode.enabled and (self.requires_grad or any(isinstance(o, Tensor) and o.requires_grad
                                                                for o in others))
    if not records:
        write(self.data)
        return self
    if self.requires_grad and (self._ctx is None or _is_view_of_leaf(self._ctx)):
        leaf = "a view of a leaf Variable" if view or self._ctx is not None else "a leaf Variable"
        raise RuntimeError(f"{leaf} that requires grad is being used in an in-place operation.")
    out = out_of_place()
    if self._retains_grad:  # the retained gradient is the new version's
        if self._ctx is not None:
            self._ctx.retained = None
        out._ctx.retained = self
    self._backward_hooks = None  # as torch: hooks registered so far stay with the old version's node
    self.data, self._ctx, self.requires_grad = out.data, out._ctx, out.requires_grad
    return self


def _is_view_of_leaf(ctx):
    """Did a view op (one whose output shares the input's memory in torch) make this from a leaf?"""
    views = (Reshape, Transpose, Permute, Expand)
    is_view = isinstance(ctx, views) or (isinstance(ctx, GetItem) and ctx.then is None
                                         and _is_basic_index(ctx.index))
    return is_view and isinstance(ctx.parents[0], Tensor)


def _assign(array, index, then, value):
    """``array[index] = value``, or ``array[index][then] = value`` (a view, so it writes ``array``)."""
    target, index = (array, index) if then is None else (array[index], then)
    try:
        target[index] = value
    except ValueError:
        raise RuntimeError(f"setitem: a value of shape {tuple(np.shape(value))} does not broadcast to the "
                           f"indexed shape {target[index].shape}") from None
    except IndexError as e:
        raise IndexError(f"index {_describe_index(index)} is invalid for a tensor of shape {array.shape}: "
                         f"{e}") from None


class SetItem(Function):
    # out = a with out[index] = value   =>   da = g with zeros at index, dvalue = g[index] (summed
    # down to value's shape; a repeated index hands the same gradient to each value written there)
    def forward(ctx, a, value, index, then=None):
        ctx.index, ctx.then = index, then
        ctx.value_shape, ctx.value_dtype = value.shape, value.dtype
        out = a.copy()
        _assign(out, index, then, value)
        return out

    def backward(ctx, g):
        da = dvalue = None
        if ctx.needs_input_grad[0]:
            da = g.copy()
            _assign(da, ctx.index, ctx.then, 0)
        if ctx.needs_input_grad[1]:
            picked = g[ctx.index] if ctx.then is None else g[ctx.index][ctx.then]
            dvalue = _sum_to(picked, ctx.value_shape).astype(ctx.value_dtype, copy=False)
        return da, dvalue


def _sum_to(grad, shape):
    """unbroadcast, also to a shape with more leading 1s than ``grad`` has dims (torch allows them)."""
    shape = tuple(shape)
    lead = len(shape) - grad.ndim
    if lead <= 0:
        return unbroadcast(grad, shape)
    return unbroadcast(grad, shape[lead:]).reshape(shape)


def setitem(self, index, value):
    if isinstance(value, (list, tuple)):
        raise TypeError(f"can't assign a {type(value).__name__} to a tensor (make it a tensor first)")
    index, then = _torch_index(index)
    view = then is None and index is not Ellipsis and _is_basic_index(index)  # torch writes through a view
    _in_place(self, (value,),
              lambda: SetItem.apply(self, as_tensor_like(value, self), index=index, then=then),
              lambda data: _assign(data, index, then, value.data if isinstance(value, Tensor) else value),
              view=view)


Tensor.__setitem__ = setitem


class Copy(Function):
    # out = src broadcast to a's shape and dtype   =>   da = 0, dsrc = g summed down to src's shape
    def forward(ctx, a, src):
        ctx.src_shape, ctx.src_dtype = src.shape, src.dtype
        out = backend.get_array_module(a).empty_like(a)
        out[...] = src
        return out

    def backward(ctx, g):
        xp = backend.get_array_module(g)
        da = xp.zeros_like(g) if ctx.needs_input_grad[0] else None
        dsrc = unbroadcast(g, ctx.src_shape).astype(ctx.src_dtype, copy=False) if ctx.needs_input_grad[1] else None
        return da, dsrc


def copy_(self, src, non_blocking=False):
    """Copy ``src`` (a tensor, or anything NumPy can read: an array, a torch tensor) into ``self``,
    broadcast to its shape and cast to its dtype; the gradient flows to ``src``."""
    if not isinstance(src, Tensor):
        src = src.detach() if hasattr(src, "detach") else src  # a torch tensor
        src = Tensor._wrap(backend.get_array_module(self.data).asarray(src))
    if not _broadcasts(src.shape, self.shape) or np.broadcast_shapes(src.shape, self.shape) != self.shape:
        raise RuntimeError(f"copy_: the source's shape {src.shape} does not broadcast to {self.shape}")
    return _in_place(self, (src,), lambda: Copy.apply(self, src), lambda data: data.__setitem__(..., src.data))


def _broadcasts(shape, to):
    try:
        np.broadcast_shapes(shape, to)
        return True
    except ValueError:
        return False


def fill_(self, value):
    if isinstance(value, Tensor) and value.ndim:
        raise RuntimeError(f"fill_: the value must be a number or a 0-d tensor, got a tensor of shape {value.shape}")
    value = as_tensor_like(value, self)
    return _in_place(self, (value,), lambda: Copy.apply(self, value), lambda data: data.__setitem__(..., value.data))


def masked_fill_(self, mask, value):
    mask_array = mask.data if isinstance(mask, Tensor) else mask

    _check_mask_and_value(mask_array, value)

    def write(data):
        xp = backend.get_array_module(data)
        try:
            where = xp.broadcast_to(mask_array, data.shape)
        except ValueError:
            raise ValueError(f"masked_fill_: mask of shape {mask_array.shape} does not broadcast to "
                             f"{data.shape}") from None
        xp.copyto(data, xp.asarray(value.data if isinstance(value, Tensor) else value, dtype=data.dtype),
                  where=where)
    return _in_place(self, (value,), lambda: masked_fill(self, mask, value), write)


def detach_(self):
    self._ctx, self.requires_grad = None, False
    return self


Tensor.copy_, Tensor.fill_, Tensor.masked_fill_, Tensor.detach_ = copy_, fill_, masked_fill_, detach_
Tensor.zero_ = lambda self: fill_(self, 0)


def _in_place_of(name, out_of_place):
    """``x.add_(y)`` and friends: ``out_of_place(x, ...)`` written back into x by the rules above.
    As torch, the result must keep x's dtype class (an int tensor cannot take a float result)."""
    def method(self, *args, **kwargs):
        others = args + tuple(kwargs.values())

        def result():
            out = out_of_place(self, *args, **kwargs)
            if backend.is_floating(out.dtype) and not backend.is_floating(self.dtype):
                raise RuntimeError(f"{name}: result type {out.dtype} can't be cast to the desired output "
                                   f"type {self.dtype}")
            return out.to(self.dtype)

        def write(data):
            data[...] = result().data
        return _in_place(self, others, result, write)
    method.__name__ = name
    return method


def _add(self, other, *, alpha=1):
    return self + (other if alpha == 1 else other * alpha)


def _sub(self, other, *, alpha=1):
    return self - (other if alpha == 1 else other * alpha)


for _name, _op in [("add_", _add), ("sub_", _sub), ("mul_", lambda x, y: x * y),
                   ("div_", lambda x, y, rounding_mode=None: x.div(y, rounding_mode=rounding_mode)),
                   ("pow_", lambda x, y: x ** y), ("neg_", lambda x: -x), ("exp_", lambda x: x.exp()),
                   ("sqrt_", lambda x: x.sqrt()), ("tanh_", lambda x: x.tanh()), ("relu_", lambda x: x.relu()),
                   ("clamp_", lambda x, min=None, max=None: x.clamp(min, max))]:
    setattr(Tensor, _name, _in_place_of(_name, _op))
Tensor.__iadd__, Tensor.__isub__ = Tensor.add_, Tensor.sub_
Tensor.__imul__, Tensor.__itruediv__ = Tensor.mul_, Tensor.div_


def _random_fill(name, draw):
    """``normal_`` / ``uniform_``: fill with draws from tinyllm's generator (torch's refusal on a
    leaf that requires grad, outside no_grad, applies)."""
    def method(self, *args, generator=None, **kwargs):
        rng = backend.rng() if generator is None else generator
        values = Tensor._wrap(backend.get_array_module(self.data).asarray(
            draw(rng, *args, size=self.shape, **kwargs)).astype(self.dtype))
        return _in_place(self, (), lambda: Copy.apply(self, values), lambda data: data.__setitem__(..., values.data))
    method.__name__ = name
    return method


Tensor.normal_ = _random_fill("normal_", lambda rng, mean=0.0, std=1.0, *, size: rng.normal(mean, std, size))
Tensor.uniform_ = _random_fill("uniform_", lambda rng, a=0.0, b=1.0, *, size: rng.uniform(a, b, size))


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


# =============================================================================================
# triangles, repeats, flips and moves
# =============================================================================================


class Triangle(Function):
    # y = x where the mask keeps it, else 0   =>   dx = g masked the same way
    def forward(ctx, a, diagonal, upper):
        if a.ndim < 2:
            name = "triu" if upper else "tril"
            raise RuntimeError(f"{name}: input tensor must have at least 2 dimensions, got shape {a.shape}")
        ctx.diagonal, ctx.upper = diagonal, upper
        xp = backend.get_array_module(a)
        return xp.triu(a, diagonal) if upper else xp.tril(a, diagonal)  # on the last two dims

    def backward(ctx, g):
        xp = backend.get_array_module(g)
        return xp.triu(g, ctx.diagonal) if ctx.upper else xp.tril(g, ctx.diagonal)


def tril(input, diagonal=0):
    """The lower triangle of the last two dims (``diagonal`` > 0 keeps more above it), zeros above."""
    return Triangle.apply(input, diagonal=int(diagonal), upper=False)


def triu(input, diagonal=0):
    """The upper triangle of the last two dims (``diagonal`` > 0 drops more), zeros below."""
    return Triangle.apply(input, diagonal=int(diagonal), upper=True)


Tensor.tril, Tensor.triu = tril, triu


class Repeat(Function):
    # y = x tiled sizes[i] times along dim i   =>   dx = the sum of g's tiles
    def forward(ctx, a, sizes):
        if len(sizes) < a.ndim:
            raise RuntimeError(f"repeat: {len(sizes)} repeat sizes {tuple(sizes)} for a tensor with {a.ndim} "
                               "dimensions; give at least one per dimension")
        if any(n < 0 for n in sizes):
            raise RuntimeError(f"repeat: sizes must be non-negative, got {tuple(sizes)}")
        ctx.shape = a.shape
        a = a.reshape((1,) * (len(sizes) - a.ndim) + a.shape)  # (1, ..., *shape)
        ctx.padded = a.shape
        return backend.get_array_module(a).tile(a, sizes)  # (sizes[0] * n0, sizes[1] * n1, ...)

    def backward(ctx, g):
        tiles = [n for pair in zip(g.shape, ctx.padded) for n in (pair[0] // max(pair[1], 1), pair[1])]
        if 0 in g.shape:
            return backend.get_array_module(g).zeros(ctx.shape, dtype=g.dtype)
        g = g.reshape(tiles).sum(axis=tuple(range(0, len(tiles), 2)))  # (s0, n0, s1, n1, ...) -> (n0, n1, ...)
        return g.reshape(ctx.shape)


def repeat(self, *sizes):
    """torch's repeat: the tensor tiled ``sizes[i]`` times along dim i (NumPy's tile)."""
    if not sizes:
        raise TypeError("repeat() missing the repeat sizes, one per dimension")
    return Repeat.apply(self, sizes=tuple(int(n) for n in _shape_args(sizes)))


Tensor.repeat = repeat


class IndexSelect(Function):
    # y = x picked at ``index`` along ``dim``   =>   dx = g scatter-added back (repeats accumulate)
    def forward(ctx, a, index, dim):
        ctx.shape, ctx.dim, ctx.index = a.shape, dim, index
        try:
            return backend.get_array_module(a).take(a, index, axis=dim)
        except IndexError as e:
            raise IndexError(f"index_select: {e} (dim {dim} of shape {a.shape})") from None

    def backward(ctx, g):
        xp = backend.get_array_module(g)
        grad = xp.zeros(ctx.shape, dtype=g.dtype)
        xp.add.at(grad, (slice(None),) * ctx.dim + (ctx.index,), g)
        return grad


def _dim(dim, ndim, name):
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"{name}: dim {dim} is out of range for a tensor with {ndim} dimensions "
                         f"(expected a dim in [{-n}, {n - 1}])")
    return dim % n


def _index_array(index, name):
    index = index.data if isinstance(index, Tensor) else np.asarray(index)
    if index.dtype.kind not in "iu":
        raise RuntimeError(f"{name}: the index must be an integer tensor, got dtype {index.dtype}")
    return index


def index_select(input, dim, index):
    """The entries at ``index`` (a 1-D integer tensor) along ``dim``, in that order."""
    index = _index_array(index, "index_select")
    if index.ndim > 1:
        raise IndexError(f"index_select: the index must be 0-d or 1-d, got shape {index.shape}")
    dim = _dim(dim, input.ndim, "index_select")
    if input.ndim == 0:
        if index.size != 1:
            raise RuntimeError(f"index_select: a 0-d tensor takes one index, got {index.size}")
        return reshape(IndexSelect.apply(reshape(input, (1,)), index=index.reshape(-1), dim=0), ())
    return IndexSelect.apply(input, index=index.reshape(-1), dim=dim)


def repeat_interleave(input, repeats=None, dim=None, *, output_size=None):
    """Each entry repeated ``repeats`` times (an int, or one count per entry) along ``dim`` (None:
    of the flattened tensor). ``repeat_interleave(counts)`` alone repeats 0, 1, 2, ... that often."""
    if repeats is None:  # torch.repeat_interleave(repeats)
        counts = _index_array(input, "repeat_interleave")
        return Tensor._wrap(np.repeat(np.arange(counts.size), counts.reshape(-1)))
    if dim is None:
        input, dim = reshape(input, (-1,)), 0
    dim = _dim(dim, input.ndim, "repeat_interleave")
    n = input.shape[dim] if input.ndim else 1
    counts = repeats if isinstance(repeats, int) else _index_array(repeats, "repeat_interleave").reshape(-1)
    if isinstance(counts, np.ndarray) and counts.size == 1:
        counts = int(counts[0])
    if isinstance(counts, np.ndarray) and counts.size != n:
        raise RuntimeError(f"repeat_interleave: {counts.size} repeats for {n} entries along dim {dim}")
    if np.any(np.asarray(counts) < 0):
        raise RuntimeError(f"repeat_interleave: repeats must be non-negative, got {repeats}")
    index = np.repeat(np.arange(n), counts)
    if output_size is not None and output_size != index.size:
        raise RuntimeError(f"repeat_interleave: output_size {output_size} but the repeats give {index.size}")
    return index_select(input, dim, index)


Tensor.index_select, Tensor.repeat_interleave = index_select, repeat_interleave


class Flip(Function):
    def forward(ctx, a, dims):
        ctx.dims = dims
        return backend.get_array_module(a).flip(a, dims)

    def backward(ctx, g):
        return backend.get_array_module(g).flip(g, ctx.dims)


def _dims(dims, ndim, name):
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    out = tuple(_dim(d, ndim, name) for d in dims)
    if len(set(out)) != len(out):
        raise RuntimeError(f"{name}: dim {dims} appears multiple times in the list of dims")
    return out


def flip(input, dims):
    """The tensor with the order of its entries reversed along each of ``dims``."""
    dims = _dims(dims, input.ndim, "flip")
    return Flip.apply(input, dims=dims) if input.ndim else Clone.apply(input)


class Roll(Function):
    def forward(ctx, a, shifts, dims):
        ctx.shifts, ctx.dims = shifts, dims
        return backend.get_array_module(a).roll(a, shifts, dims)

    def backward(ctx, g):
        return backend.get_array_module(g).roll(g, tuple(-s for s in ctx.shifts), ctx.dims)


def roll(input, shifts, dims=None):
    """The entries shifted cyclically by ``shifts`` along ``dims`` (None: of the flattened tensor)."""
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    if dims is None:
        if len(shifts) != 1:
            raise RuntimeError(f"roll: {len(shifts)} shifts {shifts} but no dims (give one dim per shift)")
        return reshape(Roll.apply(reshape(input, (-1,)), shifts=shifts, dims=(0,)), input.shape)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shifts) != len(dims):
        raise RuntimeError(f"roll: shifts {shifts} and dims {dims} should have the same length")
    return Roll.apply(input, shifts=shifts, dims=tuple(_dim(d, input.ndim, "roll") for d in dims))


Tensor.flip, Tensor.roll = flip, roll


def narrow(input, dim, start, length):
    """The ``length`` entries from ``start`` along ``dim`` (a view, as torch's)."""
    dim = _dim(dim, input.ndim, "narrow")
    start, size = int(start), input.shape[dim]
    if not -size <= start <= size:
        raise IndexError(f"narrow: start {start} is out of range for dim {dim} of size {size} "
                         f"(expected a start in [{-size}, {size}])")
    start = start + size if start < 0 else start
    if length < 0 or start + length > size:
        raise RuntimeError(f"narrow: start ({start}) + length ({length}) exceeds dimension size ({size}).")
    return getitem(input, (slice(None),) * dim + (slice(start, start + length),))


def unbind(input, dim=0):
    """The slices along ``dim``, each without that dim."""
    dim = _dim(dim, input.ndim, "unbind")
    return tuple(getitem(input, (slice(None),) * dim + (i,)) for i in range(input.shape[dim]))


def movedim(input, source, destination):
    """The tensor with its dims ``source`` moved to positions ``destination`` (the rest keep their order)."""
    source = _dims(source, input.ndim, "movedim")
    destination = _dims(destination, input.ndim, "movedim")
    if len(source) != len(destination):
        raise RuntimeError(f"movedim: source {source} and destination {destination} should have the same "
                           "number of dims")
    order = [d for d in range(input.ndim) if d not in source]
    for dst, src in sorted(zip(destination, source)):
        order.insert(dst, src)
    return Permute.apply(input, dims=tuple(order))


Tensor.narrow, Tensor.unbind, Tensor.movedim, Tensor.moveaxis = narrow, unbind, movedim, movedim
