"""Primitive differentiable ops: one class each, forward and backward side by side, and under each
class the Tensor methods and functions that call it.

Every ``backward`` returns one gradient per positional input of ``forward`` (None where the input
needs none) and calls ``unbroadcast`` to undo NumPy broadcasting. Backward passes never write into
the incoming gradient. Python scalars take the dtype of the tensor they meet (``x * 2`` keeps
float32), as in torch. This file holds arithmetic, elementwise functions, casts and reductions;
shapes and indexing live in ``shapes.py``, fused ops (softmax, layer_norm, attention, ...) in ``fused.py``.
"""
import numpy as np

from .. import backend
from ..kernels import elementwise
from .engine import Function, Tensor


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: undo NumPy broadcasting in the backward pass."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


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


def _binary(op, swap=False, true_division=False):
    """The Tensor method for a binary op: ``self op other``, or ``other op self`` with ``swap``.
    ``true_division``: ints become the default float dtype first, as torch's ``/`` does."""
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
            if op is not MatMul:
                try:
                    np.broadcast_shapes(a.shape, b.shape)
                except ValueError:
                    raise ValueError(f"{name}: shapes {a.shape} and {b.shape} do not broadcast") from None
            raise
    return method


def _unary(op):
    return lambda self: op.apply(self)


# =============================================================================================
# elementwise arithmetic
# =============================================================================================


class Add(Function):
    def forward(ctx, a, b):
        ctx.a_shape, ctx.b_shape = a.shape, b.shape
        return elementwise.add(a, b)  # a + b (on both cores when large: a GPT's residual stream)

    def backward(ctx, g):
        return unbroadcast(g, ctx.a_shape), unbroadcast(g, ctx.b_shape)

Tensor.__add__ = Tensor.__radd__ = Tensor.add = _binary(Add)


class Sub(Function):
    def forward(ctx, a, b):
        ctx.a_shape, ctx.b_shape = a.shape, b.shape
        return a - b

    def backward(ctx, g):
        return unbroadcast(g, ctx.a_shape), unbroadcast(-g, ctx.b_shape)

Tensor.__sub__ = Tensor.sub = _binary(Sub)
Tensor.__rsub__ = _binary(Sub, swap=True)


class Mul(Function):
    def forward(ctx, a, b):
        ctx.a, ctx.b = a, b
        return a * b

    def backward(ctx, g):
        a, b = ctx.a, ctx.b
        da = unbroadcast(g * b, a.shape) if ctx.needs_input_grad[0] else None
        db = unbroadcast(g * a, b.shape) if ctx.needs_input_grad[1] else None
        return da, db

Tensor.__mul__ = Tensor.__rmul__ = Tensor.mul = _binary(Mul)


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

Tensor.__truediv__ = Tensor.div = _binary(Div, true_division=True)
Tensor.__rtruediv__ = _binary(Div, swap=True, true_division=True)


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


def _pow(self, exponent):
    if isinstance(exponent, (int, float)) and not isinstance(exponent, bool):
        if isinstance(exponent, float) and not backend.is_floating(self.dtype):  # torch: int ** 0.5 is float
            self = Tensor._wrap(self.data.astype(backend.get_default_dtype()))
        return PowScalar.apply(self, exponent=exponent)
    return _tensor_pow(self, as_tensor_like(exponent, self))


def _tensor_pow(base, exponent):
    if base.dtype != exponent.dtype:  # torch's promotion: float32 ** int64 stays float32
        base, exponent = _promote(base, exponent)
    return Pow.apply(base, exponent)


Tensor.__pow__ = Tensor.pow = _pow
Tensor.__rpow__ = lambda self, base: _tensor_pow(as_tensor_like(base, self), self)


class Neg(Function):
    def forward(ctx, a):
        return -a

    def backward(ctx, g):
        return -g

Tensor.__neg__ = _unary(Neg)
Tensor.__pos__ = lambda self: self


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

Tensor.__matmul__ = Tensor.matmul = _binary(MatMul)
Tensor.__rmatmul__ = _binary(MatMul, swap=True)


# comparisons: no gradient, so no op; the result is a bool tensor
def _compare(fn):
    def method(self, other):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(fn(self.data, other))
    return method


Tensor.__lt__, Tensor.__le__ = _compare(lambda a, b: a < b), _compare(lambda a, b: a <= b)
Tensor.__gt__, Tensor.__ge__ = _compare(lambda a, b: a > b), _compare(lambda a, b: a >= b)
Tensor.__eq__, Tensor.__ne__ = _compare(lambda a, b: a == b), _compare(lambda a, b: a != b)


# =============================================================================================
# elementwise functions
# =============================================================================================


class Exp(Function):
    def forward(ctx, a):
        ctx.out = backend.get_array_module(a).exp(a)
        return ctx.out

    def backward(ctx, g):
        return g * ctx.out

Tensor.exp = _unary(Exp)


class Log(Function):
    def forward(ctx, a):
        ctx.a = a
        return backend.get_array_module(a).log(a)

    def backward(ctx, g):
        return g / ctx.a

Tensor.log = _unary(Log)


class Tanh(Function):
    # d tanh(a) = 1 - tanh(a)^2
    def forward(ctx, a):
        ctx.out = backend.get_array_module(a).tanh(a)
        return ctx.out

    def backward(ctx, g):
        return g * (1 - ctx.out * ctx.out)

Tensor.tanh = _unary(Tanh)


class Sigmoid(Function):
    # d s(a) = s(a) (1 - s(a)); computed from exp(-|a|) so that it never overflows
    def forward(ctx, a):
        xp = backend.get_array_module(a)
        e = xp.exp(-xp.abs(a))
        ctx.out = xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        return ctx.out

    def backward(ctx, g):
        return g * ctx.out * (1 - ctx.out)

Tensor.sigmoid = _unary(Sigmoid)


class ReLU(Function):
    def forward(ctx, a):
        ctx.mask = a > 0
        return backend.get_array_module(a).maximum(a, 0)  # not a * mask: -inf * 0 is nan

    def backward(ctx, g):
        return g * ctx.mask

Tensor.relu = _unary(ReLU)


class Sqrt(Function):
    def forward(ctx, a):
        ctx.out = backend.get_array_module(a).sqrt(a)
        return ctx.out

    def backward(ctx, g):
        return g / (2 * ctx.out)

Tensor.sqrt = _unary(Sqrt)


class Abs(Function):
    def forward(ctx, a):
        ctx.sign = backend.get_array_module(a).sign(a)
        return abs(a)

    def backward(ctx, g):
        return g * ctx.sign

Tensor.__abs__ = Tensor.abs = _unary(Abs)


class Clamp(Function):
    # gradient passes where min <= a <= max, as torch.clamp
    def forward(ctx, a, min=None, max=None):
        if min is None and max is None:
            raise RuntimeError("clamp: at least one of min and max must not be None")
        xp = backend.get_array_module(a)
        ctx.mask = xp.ones(a.shape, dtype=bool)
        if min is not None:
            ctx.mask &= a >= min
        if max is not None:
            ctx.mask &= a <= max
        return xp.clip(a, min, max)

    def backward(ctx, g):
        return g * ctx.mask

Tensor.clamp = lambda self, min=None, max=None: Clamp.apply(self, min=min, max=max)


class Clone(Function):
    def forward(ctx, a):
        return a.copy()

    def backward(ctx, g):
        return g

Tensor.clone = _unary(Clone)
Tensor.contiguous = lambda self: self  # every op accepts any memory layout


# =============================================================================================
# dtypes and devices
# =============================================================================================


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


def to(self, *args, **kwargs):
    """``t.to(dtype)``, ``t.to('cuda')``, ``t.to('cpu')``, ``t.to(device=..., dtype=...)``, as torch:
    the result is ``t`` itself when nothing changes, else a new tensor that gradients flow back through."""
    dtype, device = backend.dtype_and_device(args, kwargs)
    out = self
    if device is not None and backend._check_device(device) != self.device:
        out = ToDevice.apply(out, device=device)
    if dtype is not None and np.dtype(dtype) != out.dtype:
        out = Cast.apply(out, dtype=np.dtype(dtype))
    return out


Tensor.to = to
Tensor.type = lambda self, dtype: to(self, dtype)
Tensor.float = lambda self: to(self, np.float32)
Tensor.double = lambda self: to(self, np.float64)
Tensor.cuda = lambda self: to(self, "cuda")
Tensor.cpu = lambda self: to(self, "cpu")


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

Tensor.sum = lambda self, dim=None, keepdim=False: Sum.apply(self, dim=dim, keepdim=keepdim)


class Mean(Function):
    def forward(ctx, a, dim=None, keepdim=False):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, _axes(dim, a.ndim), keepdim
        ctx.count = int(np.prod([a.shape[i] for i in ctx.axes]))
        return a.mean(axis=ctx.axes, keepdims=keepdim)

    def backward(ctx, g):
        return _expand_reduced(g / ctx.count, ctx.shape, ctx.axes, ctx.keepdim)

Tensor.mean = lambda self, dim=None, keepdim=False: Mean.apply(self, dim=dim, keepdim=keepdim)


class Var(Function):
    # var = sum((a - mean)^2) / (N - correction)  =>  d var / da = 2 (a - mean) / (N - correction)
    # With N - correction <= 0 torch's forward divides by max(N - correction, 0) (inf or nan) and its
    # backward by N - correction as it is; both kept. Python floats, so float32 stays float32.
    def forward(ctx, a, dim=None, keepdim=False, correction=1):
        axes = _axes(dim, a.ndim)
        n = int(np.prod([a.shape[i] for i in axes]))
        ctx.centered = a - a.mean(axis=axes, keepdims=True) if a.size else a
        ctx.denom = float(n - correction)
        ctx.axes, ctx.keepdim = axes, keepdim
        with np.errstate(divide="ignore", invalid="ignore"):
            return (ctx.centered ** 2).sum(axis=axes, keepdims=keepdim) / max(ctx.denom, 0.0)

    def backward(ctx, g):
        g = _expand_reduced(g, ctx.centered.shape, ctx.axes, ctx.keepdim)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = float(np.float64(2) / ctx.denom)  # inf or nan for 0, not ZeroDivisionError
            return g * scale * ctx.centered


def var(self, dim=None, unbiased=True, keepdim=False, *, correction=None):
    if correction is None:
        correction = 1 if unbiased else 0
    return Var.apply(self, dim=dim, keepdim=keepdim, correction=correction)


Tensor.var = var
Tensor.std = lambda self, dim=None, unbiased=True, keepdim=False, *, correction=None: \
    var(self, dim, unbiased, keepdim, correction=correction).sqrt()


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
        if ctx.needs_input_grad[0]:  # only a float tensor needs the gradient's mask (ints, bools: no)
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

Tensor.max = lambda self, dim=None, keepdim=False: Max.apply(self, dim=dim, keepdim=keepdim)
Tensor.min = lambda self, dim=None, keepdim=False: Max.apply(self, dim=dim, keepdim=keepdim, minimum=True)


def argmax(self, dim=None, keepdim=False):  # an index: no gradient, so no op
    return Tensor._wrap(backend.get_array_module(self.data).argmax(self.data, axis=dim, keepdims=keepdim))


def argmin(self, dim=None, keepdim=False):
    return Tensor._wrap(backend.get_array_module(self.data).argmin(self.data, axis=dim, keepdims=keepdim))


Tensor.argmax, Tensor.argmin = argmax, argmin
