"""Tensor's operators and methods, torch-shaped, each a thin call into one op of ``ops.py``.

Also the module-level functions ``cat``, ``stack`` and ``where``. Python scalars take the dtype of
the tensor they meet (``x * 2`` keeps float32), as in torch.
"""
import numpy as np

from .. import backend
from . import ops
from .engine import Tensor


def as_tensor_like(x, like):
    """Turn a Python scalar or array into a constant Tensor that can meet ``like`` in an op."""
    if isinstance(x, Tensor):
        return x
    xp = backend.get_array_module(like.data)
    if isinstance(x, (bool, int, float)):
        if isinstance(x, float) and not backend.is_floating(like.dtype):
            return Tensor._wrap(xp.asarray(x, dtype=backend.get_default_dtype()))
        return Tensor._wrap(xp.asarray(x, dtype=like.dtype))
    return Tensor._wrap(xp.asarray(x))


def _promote(a, b, true_division=False):
    """torch's promotion where it differs from NumPy's: int meets float -> the float's dtype
    (not float64), and true division of ints -> the default float dtype."""
    fa, fb = backend.is_floating(a.dtype), backend.is_floating(b.dtype)
    if fa and not fb:
        b = Tensor._wrap(b.data.astype(a.dtype))
    elif fb and not fa:
        a = Tensor._wrap(a.data.astype(b.dtype))
    elif true_division and not fa:
        dtype = backend.get_default_dtype()
        a, b = Tensor._wrap(a.data.astype(dtype)), Tensor._wrap(b.data.astype(dtype))
    return a, b


def _binary(op, swap=False):
    true_division = op is ops.Div
    name = op.__name__.lower()

    def method(self, other):
        a, b = (as_tensor_like(other, self), self) if swap else (self, as_tensor_like(other, self))
        if a.dtype != b.dtype:
            a, b = _promote(a, b)
        elif true_division and not backend.is_floating(a.dtype):
            a, b = _promote(a, b, true_division=True)
        try:
            return op.apply(a, b)
        except ValueError:
            if op is not ops.MatMul:
                try:
                    np.broadcast_shapes(a.shape, b.shape)
                except ValueError:
                    raise ValueError(f"{name}: shapes {a.shape} and {b.shape} do not broadcast") from None
            raise
    return method


def _pow(self, exponent):
    if isinstance(exponent, (int, float)) and not isinstance(exponent, bool):
        return ops.PowScalar.apply(self, exponent=exponent)
    return ops.Pow.apply(self, as_tensor_like(exponent, self))


def _rpow(self, base):
    return ops.Pow.apply(as_tensor_like(base, self), self)


def _compare(fn):
    def method(self, other):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(fn(self.data, other))
    return method


# -- shapes ------------------------------------------------------------------------------------
def _shape_args(shape):
    return tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else tuple(shape)


def reshape(self, *shape):
    return ops.Reshape.apply(self, shape=_shape_args(shape))


def transpose(self, dim0, dim1):
    return ops.Transpose.apply(self, dim0=dim0, dim1=dim1)


def permute(self, *dims):
    return ops.Permute.apply(self, dims=_shape_args(dims))


def unsqueeze(self, dim):
    n = self.ndim + 1
    if not -n <= dim < n:
        raise IndexError(f"unsqueeze: dim {dim} is out of range for a tensor with {self.ndim} dimensions")
    shape = list(self.shape)
    shape.insert(dim % n, 1)
    return reshape(self, shape)


def squeeze(self, dim=None):
    axes = ops._axes(dim, self.ndim)
    shape = [n for i, n in enumerate(self.shape) if not (i in axes and n == 1)]
    return reshape(self, shape)


def flatten(self, start_dim=0, end_dim=-1):
    if self.ndim == 0:
        return reshape(self, (1,))
    s, e = start_dim % self.ndim, end_dim % self.ndim
    shape = self.shape[:s] + (int(np.prod(self.shape[s:e + 1])),) + self.shape[e + 1:]
    return reshape(self, shape)


def expand(self, *sizes):
    sizes = _shape_args(sizes)
    lead = len(sizes) - self.ndim
    shape = tuple(self.shape[i - lead] if n == -1 else n for i, n in enumerate(sizes))
    return ops.Expand.apply(self, shape=shape)


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
        out.append(self[lead + (slice(start, start + s),)])
        start += s
    return tuple(out)


def chunk(self, chunks, dim=0):
    n = self.shape[dim]
    return split(self, -(-n // chunks), dim)


def getitem(self, index):
    return ops.GetItem.apply(self, index=ops._normalize_index(index))


def masked_fill(self, mask, value):
    mask = mask.data if isinstance(mask, Tensor) else mask
    if isinstance(value, Tensor):
        value = value.item()
    return ops.MaskedFill.apply(self, mask, value=value)


# -- reductions --------------------------------------------------------------------------------
def sum_(self, dim=None, keepdim=False):
    return ops.Sum.apply(self, dim=dim, keepdim=keepdim)


def mean(self, dim=None, keepdim=False):
    return ops.Mean.apply(self, dim=dim, keepdim=keepdim)


def var(self, dim=None, unbiased=True, keepdim=False, *, correction=None):
    if correction is None:
        correction = 1 if unbiased else 0
    return ops.Var.apply(self, dim=dim, keepdim=keepdim, correction=correction)


def std(self, dim=None, unbiased=True, keepdim=False, *, correction=None):
    return var(self, dim, unbiased, keepdim, correction=correction).sqrt()


def max_(self, dim=None, keepdim=False):
    return ops.Max.apply(self, dim=dim, keepdim=keepdim)


def min_(self, dim=None, keepdim=False):
    return ops.Max.apply(self, dim=dim, keepdim=keepdim, minimum=True)


def argmax(self, dim=None, keepdim=False):
    xp = backend.get_array_module(self.data)
    return Tensor._wrap(xp.argmax(self.data, axis=dim, keepdims=keepdim))


def argmin(self, dim=None, keepdim=False):
    xp = backend.get_array_module(self.data)
    return Tensor._wrap(xp.argmin(self.data, axis=dim, keepdims=keepdim))


# -- dtypes ------------------------------------------------------------------------------------
def to(self, *args, **kwargs):
    """``t.to(dtype)``, ``t.to('cuda')``, ``t.to('cpu')``, ``t.to(device=..., dtype=...)``, as torch:
    the result is ``t`` itself when nothing changes, else a new tensor that gradients flow back through."""
    dtype, device = kwargs.get("dtype"), kwargs.get("device")
    for a in args:
        if isinstance(a, str) and a not in ("float16", "float32", "float64"):
            device = a
        else:
            dtype = a
    out = self
    if device is not None and backend._check_device(device) != self.device:
        out = ops.ToDevice.apply(out, device=device)
    if dtype is not None and np.dtype(dtype) != out.dtype:
        out = ops.Cast.apply(out, dtype=np.dtype(dtype))
    return out


def cuda(self):
    return to(self, "cuda")


def cpu(self):
    return to(self, "cpu")


def _attach():
    T = Tensor
    T.__add__ = T.__radd__ = _binary(ops.Add)
    T.cuda, T.cpu = cuda, cpu
    T.__sub__, T.__rsub__ = _binary(ops.Sub), _binary(ops.Sub, swap=True)
    T.__mul__ = T.__rmul__ = _binary(ops.Mul)
    T.__truediv__, T.__rtruediv__ = _binary(ops.Div), _binary(ops.Div, swap=True)
    T.__matmul__, T.__rmatmul__ = _binary(ops.MatMul), _binary(ops.MatMul, swap=True)
    T.__pow__, T.__rpow__ = _pow, _rpow
    T.__neg__ = lambda self: ops.Neg.apply(self)
    T.__pos__ = lambda self: self
    T.__abs__ = T.abs = lambda self: ops.Abs.apply(self)
    T.__lt__, T.__le__ = _compare(lambda a, b: a < b), _compare(lambda a, b: a <= b)
    T.__gt__, T.__ge__ = _compare(lambda a, b: a > b), _compare(lambda a, b: a >= b)
    T.__eq__, T.__ne__ = _compare(lambda a, b: a == b), _compare(lambda a, b: a != b)
    T.__getitem__ = getitem
    T.add, T.sub, T.mul, T.div, T.matmul = T.__add__, T.__sub__, T.__mul__, T.__truediv__, T.__matmul__
    T.pow = _pow

    T.exp = lambda self: ops.Exp.apply(self)
    T.log = lambda self: ops.Log.apply(self)
    T.tanh = lambda self: ops.Tanh.apply(self)
    T.sigmoid = lambda self: ops.Sigmoid.apply(self)
    T.relu = lambda self: ops.ReLU.apply(self)
    T.sqrt = lambda self: ops.Sqrt.apply(self)
    T.clamp = lambda self, min=None, max=None: ops.Clamp.apply(self, min=min, max=max)
    T.clone = lambda self: ops.Clone.apply(self)

    T.sum, T.mean, T.var, T.std, T.max, T.min = sum_, mean, var, std, max_, min_
    T.argmax, T.argmin = argmax, argmin
    T.reshape = T.view = reshape
    T.transpose, T.permute, T.unsqueeze, T.squeeze = transpose, permute, unsqueeze, squeeze
    T.flatten, T.expand, T.split, T.chunk = flatten, expand, split, chunk
    T.T = property(lambda self: permute(self, tuple(reversed(range(self.ndim)))))
    T.mT = property(lambda self: transpose(self, -2, -1))
    T.contiguous = lambda self: self
    T.masked_fill = masked_fill
    T.to = to
    T.float = lambda self: to(self, np.float32)
    T.double = lambda self: to(self, np.float64)
    T.type = lambda self, dtype: to(self, dtype)

    def _softmax(self, dim=-1):
        from ..nn import functional as F
        return F.softmax(self, dim)

    def _log_softmax(self, dim=-1):
        from ..nn import functional as F
        return F.log_softmax(self, dim)

    T.softmax, T.log_softmax = _softmax, _log_softmax


_attach()


# -- module-level functions --------------------------------------------------------------------
def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    first = next((t for t in tensors if isinstance(t, Tensor)), None)
    tensors = [as_tensor_like(t, first) if first is not None else Tensor(t) for t in tensors]
    return ops.Cat.apply(*tensors, dim=dim)


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    first = next((t for t in tensors if isinstance(t, Tensor)), None)
    tensors = [as_tensor_like(t, first) if first is not None else Tensor(t) for t in tensors]
    return ops.Stack.apply(*tensors, dim=dim)


def where(condition, input, other):
    """``where(cond, x, y)``: elements of x where cond is true, else of y; no gradient to cond."""
    cond = condition.data if isinstance(condition, Tensor) else condition
    like = input if isinstance(input, Tensor) else other if isinstance(other, Tensor) else None
    if like is None:
        like = Tensor(input)
    return ops.Where.apply(cond, as_tensor_like(input, like), as_tensor_like(other, like))
