"""Primitive differentiable ops: one class each, forward and backward side by side, and under each
class the Tensor methods and functions that call it.

Every ``backward`` returns one gradient per positional input of ``forward`` (None where the input
needs none) and calls ``unbroadcast`` to undo NumPy broadcasting. Backward passes never write into
the incoming gradient. Python scalars take the dtype of the tensor they meet (``x * 2`` keeps
float32), as in torch. This file holds arithmetic, elementwise functions, casts and reductions;
shapes and indexing live in ``shapes.py``, fused ops (softmax, layer_norm, attention, ...) in ``fused.py``.
"""
from collections import namedtuple

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


def _float_unary(op):
    """A method for a function of the reals: int and bool tensors become the default float dtype first,
    as torch's ``sin``, ``exp``, ``sqrt``, ... do (NumPy would give float64)."""
    def method(self):
        if not backend.is_floating(self.dtype):
            self = Tensor._wrap(self.data.astype(backend.get_default_dtype()))
        return op.apply(self)
    return method


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

Tensor.__rtruediv__ = _binary(Div, swap=True, true_division=True)


class RoundedDiv(Function):
    """``a // b`` and ``div(a, b, rounding_mode='floor'|'trunc')``. Floats round a / b the way torch
    does (floor: Python's divmod rule, as ``np.floor_divide``; trunc: trunc(a / b)); ints raise on a
    zero divisor, as torch. The result is piecewise constant: torch's ``div`` with a rounding mode
    gives zero gradients, and its ``//`` (floor_divide) refuses the backward; both kept."""

    def forward(ctx, a, b, mode, differentiable):
        ctx.a_shape, ctx.b_shape, ctx.differentiable = a.shape, b.shape, differentiable
        xp = backend.get_array_module(a)
        if not backend.is_floating(a.dtype):
            if xp.any(b == 0):
                raise RuntimeError("ZeroDivisionError: integer division by zero")
            q = xp.floor_divide(a, b)
            if mode == "trunc":  # floor rounds negative quotients down; trunc rounds them up
                q = q + ((q < 0) & (q * b != a))
            return q
        with np.errstate(divide="ignore", invalid="ignore"):
            return xp.floor_divide(a, b) if mode == "floor" else xp.trunc(a / b)

    def backward(ctx, g):
        if not ctx.differentiable:
            raise RuntimeError("derivative for floor_divide is not implemented (as in torch); "
                               "div(a, b, rounding_mode='floor') gives zero gradients instead")
        xp = backend.get_array_module(g)
        return xp.zeros(ctx.a_shape, g.dtype), xp.zeros(ctx.b_shape, g.dtype)


_ROUNDING_MODES = (None, "trunc", "floor")


def div(self, other, *, rounding_mode=None):
    """``a / b``, or with ``rounding_mode`` 'trunc' or 'floor' the rounded quotient (ints stay ints)."""
    if rounding_mode is None:
        return _true_div(self, other)
    if rounding_mode not in _ROUNDING_MODES:
        raise RuntimeError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' "
                           f"but found {rounding_mode!r}")
    return _rounded_div(self, as_tensor_like(other, self), rounding_mode, differentiable=True)


def _rounded_div(a, b, mode, differentiable):
    if a.dtype != b.dtype:
        a, b = _promote(a, b)
    return RoundedDiv.apply(a, b, mode=mode, differentiable=differentiable)


def floor_divide(self, other):
    return _rounded_div(self, as_tensor_like(other, self), "floor", differentiable=False)


_true_div = _binary(Div, true_division=True)
Tensor.__truediv__ = _true_div
Tensor.div = Tensor.divide = div
Tensor.__floordiv__ = Tensor.floor_divide = floor_divide
Tensor.__rfloordiv__ = lambda self, other: floor_divide(as_tensor_like(other, self), self)


class Remainder(Function):
    # a - floor(a / b) * b, Python's sign rule (the divisor's), as torch's % and remainder
    # d/da = 1 ; d/db = -floor(a / b)
    def forward(ctx, a, b):
        xp = backend.get_array_module(a)
        if not backend.is_floating(a.dtype) and xp.any(b == 0):
            raise RuntimeError("ZeroDivisionError: integer division by zero")
        ctx.a_shape, ctx.b_shape = a.shape, b.shape
        with np.errstate(divide="ignore", invalid="ignore"):
            if ctx.needs_input_grad[1]:
                ctx.quotient = xp.floor_divide(a, b)
            return xp.remainder(a, b)

    def backward(ctx, g):
        da = unbroadcast(g, ctx.a_shape) if ctx.needs_input_grad[0] else None
        db = unbroadcast(-g * ctx.quotient, ctx.b_shape) if ctx.needs_input_grad[1] else None
        return da, db

Tensor.__mod__ = Tensor.remainder = _binary(Remainder)
Tensor.__rmod__ = _binary(Remainder, swap=True)


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
        if a.dtype == bool:
            raise RuntimeError("Negation, the `-` operator, on a bool tensor is not supported; to invert a mask, "
                               "use `~` or logical_not()")
        return -a

    def backward(ctx, g):
        return -g

Tensor.__neg__ = Tensor.neg = Tensor.negative = _unary(Neg)
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


# bitwise and logical ops: no gradient, so no op. &, |, ^ and ~ take bool and int tensors, as torch
def _integral(x, op):
    if backend.is_floating(x.dtype):
        raise TypeError(f"{op} is only implemented on integer and bool tensors, got dtype {x.dtype}")
    return x.data


def _bitwise(fn, name, swap=False):
    def method(self, other):
        a = _integral(self, name)
        if isinstance(other, Tensor):
            b = _integral(other, name)
        elif isinstance(other, (bool, int, np.integer, np.bool_)):
            # a Python int meeting a bool tensor makes it int64 (torch's category rule); a bool stays bool
            scalar_dtype = np.bool_ if isinstance(other, (bool, np.bool_)) else np.int64
            b = backend.get_array_module(a).asarray(other, dtype=a.dtype if a.dtype != bool else scalar_dtype)
        else:
            raise TypeError(f"{name}: expected a tensor, an int or a bool, got {type(other).__name__}")
        return Tensor._wrap(fn(b, a) if swap else fn(a, b))
    return method


Tensor.__and__ = Tensor.bitwise_and = _bitwise(np.bitwise_and, "bitwise_and")
Tensor.__or__ = Tensor.bitwise_or = _bitwise(np.bitwise_or, "bitwise_or")
Tensor.__xor__ = Tensor.bitwise_xor = _bitwise(np.bitwise_xor, "bitwise_xor")
Tensor.__rand__ = _bitwise(np.bitwise_and, "bitwise_and", swap=True)
Tensor.__ror__ = _bitwise(np.bitwise_or, "bitwise_or", swap=True)
Tensor.__rxor__ = _bitwise(np.bitwise_xor, "bitwise_xor", swap=True)


def bitwise_not(self):
    a = _integral(self, "~ (bitwise_not)")
    return Tensor._wrap(backend.get_array_module(a).invert(a))  # logical not for bools


Tensor.__invert__ = Tensor.bitwise_not = bitwise_not


def _logical(fn):
    def method(self, other):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(fn(self.data, other))  # any dtype; nonzero is True
    return method


Tensor.logical_not = lambda self: Tensor._wrap(backend.get_array_module(self.data).logical_not(self.data))
Tensor.logical_and, Tensor.logical_or, Tensor.logical_xor = (
    _logical(np.logical_and), _logical(np.logical_or), _logical(np.logical_xor))
Tensor.isnan = lambda self: Tensor._wrap(backend.get_array_module(self.data).isnan(self.data))
Tensor.isinf = lambda self: Tensor._wrap(backend.get_array_module(self.data).isinf(self.data))
Tensor.isfinite = lambda self: Tensor._wrap(backend.get_array_module(self.data).isfinite(self.data))
Tensor.eq, Tensor.ne = Tensor.__eq__, Tensor.__ne__
Tensor.lt, Tensor.le, Tensor.gt, Tensor.ge = Tensor.__lt__, Tensor.__le__, Tensor.__gt__, Tensor.__ge__


# =============================================================================================
# elementwise functions
# =============================================================================================


class Exp(Function):
    def forward(ctx, a):
        ctx.out = backend.get_array_module(a).exp(a)
        return ctx.out

    def backward(ctx, g):
        return g * ctx.out

Tensor.exp = _float_unary(Exp)


class Log(Function):
    def forward(ctx, a):
        ctx.a = a
        return backend.get_array_module(a).log(a)

    def backward(ctx, g):
        return g / ctx.a

Tensor.log = _float_unary(Log)


class Tanh(Function):
    # d tanh(a) = 1 - tanh(a)^2
    def forward(ctx, a):
        ctx.out = backend.get_array_module(a).tanh(a)
        return ctx.out

    def backward(ctx, g):
        return g * (1 - ctx.out * ctx.out)

Tensor.tanh = _float_unary(Tanh)


class Sigmoid(Function):
    # d s(a) = s(a) (1 - s(a)); computed from exp(-|a|) so that it never overflows
    def forward(ctx, a):
        xp = backend.get_array_module(a)
        e = xp.exp(-xp.abs(a))
        ctx.out = xp.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)
        return ctx.out

    def backward(ctx, g):
        return g * ctx.out * (1 - ctx.out)

Tensor.sigmoid = _float_unary(Sigmoid)


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

Tensor.sqrt = _float_unary(Sqrt)


class Rsqrt(Function):
    # d a^(-1/2) = -1/2 a^(-3/2) = -out^3 / 2
    def forward(ctx, a):
        with np.errstate(divide="ignore", invalid="ignore"):
            ctx.out = 1 / backend.get_array_module(a).sqrt(a)
        return ctx.out

    def backward(ctx, g):
        return g * (-0.5 * ctx.out ** 3)

Tensor.rsqrt = _float_unary(Rsqrt)


class Sin(Function):
    def forward(ctx, a):
        ctx.a = a
        return backend.get_array_module(a).sin(a)

    def backward(ctx, g):
        return g * backend.get_array_module(g).cos(ctx.a)

Tensor.sin = _float_unary(Sin)


class Cos(Function):
    def forward(ctx, a):
        ctx.a = a
        return backend.get_array_module(a).cos(a)

    def backward(ctx, g):
        return -g * backend.get_array_module(g).sin(ctx.a)

Tensor.cos = _float_unary(Cos)


class Log1p(Function):
    def forward(ctx, a):
        ctx.a = a
        return backend.get_array_module(a).log1p(a)

    def backward(ctx, g):
        return g / (ctx.a + 1)

Tensor.log1p = _float_unary(Log1p)


class Expm1(Function):
    # d (e^a - 1) = e^a = out + 1
    def forward(ctx, a):
        ctx.out = backend.get_array_module(a).expm1(a)
        return ctx.out

    def backward(ctx, g):
        return g * (ctx.out + 1)

Tensor.expm1 = _float_unary(Expm1)


class Reciprocal(Function):
    # d (1/a) = -1/a^2 = -out^2
    def forward(ctx, a):
        with np.errstate(divide="ignore"):
            ctx.out = 1 / a
        return ctx.out

    def backward(ctx, g):
        return g * -(ctx.out * ctx.out)

Tensor.reciprocal = _float_unary(Reciprocal)
# a ** 2, so ints stay ints (torch: int64.square() is int64) and the gradient is 2a, as torch
Tensor.square = lambda self: (self.long() if self.dtype == bool else self) ** 2


class Step(Function):
    """A piecewise-constant function (sign, floor, ceil, round, trunc): its gradient is zero, and
    torch still hands the zeros back, so ints keep their dtype and floats keep the graph."""

    def forward(ctx, a, fn):
        return fn(a)

    def backward(ctx, g):
        return backend.get_array_module(g).zeros_like(g)


def _sign(a):
    xp = backend.get_array_module(a)
    return xp.where(xp.isnan(a), 0, xp.sign(a)).astype(a.dtype, copy=False)  # torch: sign(nan) = 0


def _step(name):
    def method(self):
        if self.dtype == bool or (not backend.is_floating(self.dtype) and name != "sign"):
            return Tensor._wrap(self.data.copy())  # floor(int) is the int itself
        fn = _sign if name == "sign" else getattr(backend.get_array_module(self.data), name)
        return Step.apply(self, fn=fn)
    return method


def _round(self, *, decimals=0):
    if decimals == 0 or not backend.is_floating(self.dtype):
        return _step("round")(self)
    xp = backend.get_array_module(self.data)
    return Step.apply(self, fn=lambda a: xp.round(a, decimals))  # half to even, as torch


Tensor.sign, Tensor.floor, Tensor.ceil, Tensor.trunc = (_step(n) for n in ("sign", "floor", "ceil", "trunc"))
Tensor.round = _round


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

Tensor.clone = lambda self, memory_format=None: Clone.apply(self)  # every layout is the same here
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
    the result is ``t`` itself when nothing changes, else a new tensor that gradients flow back through
    (a cast to an int or bool dtype ends the graph: such a tensor has no gradient)."""
    dtype, device = backend.dtype_and_device(args, kwargs)
    out = self
    if device is not None and backend._check_device(device) != self.device:
        out = ToDevice.apply(out, device=device)
    if dtype is not None and np.dtype(dtype) != out.dtype:
        dtype = np.dtype(dtype)
        if backend.is_floating(dtype):
            out = Cast.apply(out, dtype=dtype)
        else:
            with np.errstate(invalid="ignore"):  # nan and inf become torch's (and C's) int values
                out = Tensor._wrap(out.data.astype(dtype))
    return out


# torch's legacy type names: ``t.type()`` returns one, ``t.type(name)`` accepts one
_TYPE_NAMES = {np.dtype(np.float32): "FloatTensor", np.dtype(np.float64): "DoubleTensor",
               np.dtype(np.float16): "HalfTensor", np.dtype(np.int64): "LongTensor",
               np.dtype(np.int32): "IntTensor", np.dtype(np.int16): "ShortTensor",
               np.dtype(np.int8): "CharTensor", np.dtype(np.uint8): "ByteTensor", np.dtype(np.bool_): "BoolTensor"}


def type_(self, dtype=None, non_blocking=False):
    """``t.type()``: torch's name for the tensor's type ('torch.FloatTensor', 'torch.cuda.LongTensor',
    ...), so code comparing those strings works; ``t.type(dtype)`` is ``t.to(dtype)``, and ``dtype``
    may also be such a name."""
    if dtype is None:
        return ("torch.cuda." if self.device == "cuda" else "torch.") + _TYPE_NAMES[self.dtype]
    if isinstance(dtype, str) and dtype.startswith("torch."):
        on_cuda = dtype.startswith("torch.cuda.")
        name = dtype.rsplit(".", 1)[-1]
        matches = [d for d, n in _TYPE_NAMES.items() if n == name]
        if not matches:
            raise ValueError(f"invalid type: {dtype!r} (expected one of "
                             f"{sorted('torch.' + n for n in _TYPE_NAMES.values())})")
        return to(self, "cuda" if on_cuda else "cpu", matches[0])
    return to(self, dtype)


Tensor.to = to
Tensor.type_as = lambda self, other: to(self, device=other.device, dtype=other.dtype)  # as torch: both
Tensor.type = type_
Tensor.float = lambda self: to(self, np.float32)
Tensor.double = lambda self: to(self, np.float64)
Tensor.half = lambda self: to(self, np.float16)
Tensor.int = lambda self: to(self, np.int32)
Tensor.long = lambda self: to(self, np.int64)
Tensor.short = lambda self: to(self, np.int16)
Tensor.byte = lambda self: to(self, np.uint8)
Tensor.bool = lambda self: to(self, np.bool_)
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


def _accumulation_dtype(x, dtype):
    """The dtype torch sums in: ``dtype`` if given, else int64 for int and bool tensors, else their own."""
    if dtype is not None:
        return np.dtype(dtype)
    return x.dtype if backend.is_floating(x.dtype) else np.dtype(np.int64)


def _cast_input(x, dtype):
    """``x`` as ``dtype`` before a reduction with ``dtype=``, as torch: a float cast keeps the graph."""
    return x if dtype is None or np.dtype(dtype) == x.dtype else to(x, dtype)


class Sum(Function):
    def forward(ctx, a, dim=None, keepdim=False, dtype=None):
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, _axes(dim, a.ndim), keepdim
        if dtype is not None or not backend.is_floating(a.dtype):
            return a.sum(axis=ctx.axes, keepdims=keepdim, dtype=_accumulation_dtype(a, dtype))
        return a.sum(axis=ctx.axes, keepdims=keepdim)

    def backward(ctx, g):
        return _expand_reduced(g, ctx.shape, ctx.axes, ctx.keepdim)

Tensor.sum = lambda self, dim=None, keepdim=False, *, dtype=None: \
    Sum.apply(_cast_input(self, dtype), dim=dim, keepdim=keepdim, dtype=dtype)


class Mean(Function):
    def forward(ctx, a, dim=None, keepdim=False):
        if not backend.is_floating(a.dtype):
            raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be a floating point "
                               f"dtype, got {a.dtype} (pass dtype=, or call .float() first)")
        ctx.shape, ctx.axes, ctx.keepdim = a.shape, _axes(dim, a.ndim), keepdim
        ctx.count = int(np.prod([a.shape[i] for i in ctx.axes]))
        return a.mean(axis=ctx.axes, keepdims=keepdim)

    def backward(ctx, g):
        return _expand_reduced(g / ctx.count, ctx.shape, ctx.axes, ctx.keepdim)

Tensor.mean = lambda self, dim=None, keepdim=False, *, dtype=None: \
    Mean.apply(_cast_input(self, dtype), dim=dim, keepdim=keepdim)


class Cumsum(Function):
    # y_i = sum_{j <= i} x_j   =>   dx_j = sum_{i >= j} dy_i, a cumulative sum from the end
    def forward(ctx, a, dim, dtype=None):
        ctx.axis = _axes(dim, a.ndim)[0] if a.ndim else None
        xp = backend.get_array_module(a)
        return xp.cumsum(a, axis=ctx.axis, dtype=_accumulation_dtype(a, dtype)).reshape(a.shape)

    def backward(ctx, g):
        if ctx.axis is None:
            return g
        xp = backend.get_array_module(g)
        return xp.flip(xp.cumsum(xp.flip(g, ctx.axis), axis=ctx.axis), ctx.axis)


def cumsum(self, dim, *, dtype=None):
    if not isinstance(dim, (int, np.integer)):
        raise TypeError(f"cumsum(): dim must be an int, got {dim!r}")
    return Cumsum.apply(_cast_input(self, dtype), dim=int(dim), dtype=dtype)


Tensor.cumsum = cumsum


class Prod(Function):
    # d(prod x)/dx_j = the product of all the other entries: exclusive products from both ends, which
    # stay exact where some x_i are zero (torch gets the same numbers its own way)
    def forward(ctx, a, dim=None, keepdim=False, dtype=None):
        ctx.a, ctx.dim, ctx.keepdim = a, dim, keepdim
        dtype = _accumulation_dtype(a, dtype)
        if dim is None:
            return a.prod(dtype=dtype)
        return a.prod(axis=_axes(dim, a.ndim)[0] if a.ndim else None, keepdims=keepdim, dtype=dtype)

    def backward(ctx, g):
        a = ctx.a
        xp = backend.get_array_module(a)
        x = a.reshape(-1) if ctx.dim is None else a
        axis = 0 if ctx.dim is None or a.ndim == 0 else _axes(ctx.dim, a.ndim)[0]
        x = x.reshape(1) if x.ndim == 0 else x
        n = x.shape[axis]
        ones = xp.ones_like(xp.take(x, [0], axis=axis)) if n else None
        if n == 0:
            return xp.zeros(a.shape, g.dtype)
        before = xp.concatenate([ones, xp.cumprod(xp.take(x, range(n - 1), axis=axis), axis=axis)], axis=axis)
        flipped = xp.flip(x, axis)
        after = xp.concatenate([ones, xp.cumprod(xp.take(flipped, range(n - 1), axis=axis), axis=axis)],
                               axis=axis)
        others = before * xp.flip(after, axis)
        if ctx.dim is None:
            return g * others.reshape(a.shape)
        if not ctx.keepdim and a.ndim:
            g = xp.expand_dims(g, axis)
        return g * others


def prod(self, dim=None, keepdim=False, *, dtype=None):
    if dim is not None and not isinstance(dim, (int, np.integer)):
        raise TypeError(f"prod(): dim must be an int or None, got {dim!r}")
    return Prod.apply(_cast_input(self, dtype), dim=dim, keepdim=keepdim, dtype=dtype)


Tensor.prod = prod


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

# torch.return_types.max / min: ``values, indices = x.max(dim)`` and ``x.max(dim).values`` both work
max_result = namedtuple("max", ["values", "indices"])
min_result = namedtuple("min", ["values", "indices"])


def _extreme(minimum):
    """``x.max()``: the largest value; ``x.max(dim, keepdim)``: (values, indices) along one dim, as
    torch; ``x.max(other)``: the elementwise maximum. A tuple ``dim`` gives the values (amax)."""
    def method(self, dim=None, keepdim=False):
        if isinstance(dim, Tensor):
            return self.minimum(dim) if minimum else self.maximum(dim)
        values = Max.apply(self, dim=dim, keepdim=keepdim, minimum=minimum)
        if not isinstance(dim, (int, np.integer)):
            return values
        indices = (argmin if minimum else argmax)(self, dim=dim, keepdim=keepdim)
        return (min_result if minimum else max_result)(values, indices)
    method.__name__ = "min" if minimum else "max"
    return method


Tensor.max, Tensor.min = _extreme(False), _extreme(True)


def argmax(self, dim=None, keepdim=False):  # an index: no gradient, so no op
    return Tensor._wrap(backend.get_array_module(self.data).argmax(self.data, axis=dim, keepdims=keepdim))


def argmin(self, dim=None, keepdim=False):
    return Tensor._wrap(backend.get_array_module(self.data).argmin(self.data, axis=dim, keepdims=keepdim))


Tensor.argmax, Tensor.argmin = argmax, argmin
Tensor.amax = lambda self, dim=(), keepdim=False: Max.apply(self, dim=_amax_dim(dim), keepdim=keepdim)
Tensor.amin = lambda self, dim=(), keepdim=False: Max.apply(self, dim=_amax_dim(dim), keepdim=keepdim,
                                                            minimum=True)


def _amax_dim(dim):
    """amax/amin split the gradient evenly among ties even over one dim: as a tuple, Max does that.
    ``dim=()`` (torch's default) reduces over every dim."""
    if dim is None or dim == ():
        return None
    return (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)


def _reduce_bool(name, fn):
    def method(self, dim=None, keepdim=False):
        xp = backend.get_array_module(self.data)
        axes = _axes(dim, self.ndim)
        out = getattr(xp, fn)(self.data, axis=axes, keepdims=keepdim)
        # torch: uint8 in, uint8 out; anything else gives bool
        return Tensor._wrap(xp.asarray(out, dtype=np.uint8 if self.dtype == np.uint8 else bool))
    method.__name__ = name
    return method


Tensor.all, Tensor.any = _reduce_bool("all", "all"), _reduce_bool("any", "any")


class LogSumExp(Function):
    # y = m + log(sum(exp(x - m))), m = max(x) (0 where it is infinite, as torch)
    # dy/dx = exp(x - y): softmax, and torch's nan where y is infinite (x - y = inf - inf)
    def forward(ctx, a, dim, keepdim=False):
        xp = backend.get_array_module(a)
        axes = _axes(dim, a.ndim)
        m = a.max(axis=axes, keepdims=True) if a.size else xp.zeros([1] * a.ndim, a.dtype)
        m = xp.where(xp.isinf(m), 0, m).astype(a.dtype, copy=False)
        with np.errstate(divide="ignore"):
            out = xp.log(xp.exp(a - m).sum(axis=axes, keepdims=True)) + m
        ctx.a, ctx.out, ctx.axes, ctx.keepdim = a, out, axes, keepdim
        return out if keepdim else out.reshape([n for i, n in enumerate(a.shape) if i not in axes])

    def backward(ctx, g):
        g = _expand_reduced(g, ctx.a.shape, ctx.axes, ctx.keepdim)
        with np.errstate(invalid="ignore"):
            return g * backend.get_array_module(g).exp(ctx.a - ctx.out)


def logsumexp(self, dim, keepdim=False):
    if not backend.is_floating(self.dtype):
        self = Tensor._wrap(self.data.astype(backend.get_default_dtype()))
    return LogSumExp.apply(self, dim=dim, keepdim=keepdim)


Tensor.logsumexp = logsumexp


# =============================================================================================
# elementwise maximum and minimum, outer product, norms
# =============================================================================================


class Maximum(Function):
    # the larger input gets the gradient; ties split it half and half; a nan sends it to both (torch)
    def forward(ctx, a, b, minimum=False):
        xp = backend.get_array_module(a)
        ctx.a, ctx.b, ctx.minimum = a, b, minimum
        return xp.minimum(a, b) if minimum else xp.maximum(a, b)

    def backward(ctx, g):
        a, b = ctx.a, ctx.b
        xp = backend.get_array_module(g)
        a_loses, b_loses = (a > b, a < b) if ctx.minimum else (a < b, a > b)
        shared = xp.where(a == b, g / 2, g)
        da = unbroadcast(xp.where(a_loses, 0, shared), a.shape) if ctx.needs_input_grad[0] else None
        db = unbroadcast(xp.where(b_loses, 0, shared), b.shape) if ctx.needs_input_grad[1] else None
        return da, db


def _elementwise_extreme(minimum):
    name = "minimum" if minimum else "maximum"

    def method(self, other):
        if not isinstance(other, Tensor):
            raise TypeError(f"{name}(): argument 'other' must be a Tensor, not {type(other).__name__}")
        a, b = (self, other) if self.dtype == other.dtype else _promote(self, other)
        if a.dtype != b.dtype:  # two ints or two floats of different widths
            dtype = np.result_type(a.dtype, b.dtype)
            a, b = to(a, dtype), to(b, dtype)
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise ValueError(f"{name}: shapes {a.shape} and {b.shape} do not broadcast") from None
        return Maximum.apply(a, b, minimum=minimum)
    return method


Tensor.maximum, Tensor.minimum = _elementwise_extreme(False), _elementwise_extreme(True)


def outer(self, vec2):
    """The outer product of two 1-D tensors: ``out[i, j] = self[i] * vec2[j]``, shape (n, m)."""
    for name, v in (("self", self), ("vec2", vec2)):
        if not isinstance(v, Tensor) or v.ndim != 1:
            got = f"{v.ndim}-D" if isinstance(v, Tensor) else type(v).__name__
            raise RuntimeError(f"outer: expected 1-D argument {name}, but got {got}")
    return self.reshape(-1, 1) * vec2  # (n, 1) * (m,) -> (n, m)


Tensor.outer = Tensor.ger = outer


class Norm(Function):
    """The vector p-norm over ``dim``: (sum |x|^p)^(1/p); max |x| for p = inf, min |x| for -inf, the
    count of nonzeros for p = 0. The backward is torch's, case by case, with its zeros where x or
    the norm is 0 (so the 2-norm at x = 0 has gradient 0, not nan)."""

    def forward(ctx, a, p, dim, keepdim):
        xp = backend.get_array_module(a)
        axes = _axes(dim, a.ndim)
        absolute = xp.abs(a)
        if p == np.inf:
            out = absolute.max(axis=axes, keepdims=True)
        elif p == -np.inf:
            out = absolute.min(axis=axes, keepdims=True)
        elif p == 0:
            out = (a != 0).sum(axis=axes, keepdims=True).astype(a.dtype)
        elif p == 1:
            out = absolute.sum(axis=axes, keepdims=True)
        elif p == 2:
            out = xp.sqrt((a * a).sum(axis=axes, keepdims=True))
        else:
            with np.errstate(divide="ignore"):
                out = (absolute ** p).sum(axis=axes, keepdims=True) ** (1 / p)
        out = out.astype(a.dtype, copy=False)
        ctx.a, ctx.p, ctx.out, ctx.axes, ctx.keepdim = a, p, out, axes, keepdim
        return out if keepdim else out.reshape([n for i, n in enumerate(a.shape) if i not in axes])

    def backward(ctx, g):
        a, p, norm = ctx.a, ctx.p, ctx.out
        xp = backend.get_array_module(a)
        g = _expand_reduced(g, a.shape, ctx.axes, ctx.keepdim)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # inf inputs: torch is silent too
            if p == 0:
                return xp.zeros(a.shape, g.dtype)
            if p == 1:
                return g * _sign(a)
            if p == 2:
                return g * xp.where(norm == 0, 0, a / norm)
            if xp.isinf(p):  # the extreme entries (and nans) share the gradient
                absolute = xp.abs(a)
                mask = (absolute == norm) | xp.isnan(absolute)
                return _sign(a) * (g / mask.sum(axis=ctx.axes, keepdims=True) * mask)
            if p < 1:
                scaled = _sign(a) * xp.where(a == 0, 0, xp.abs(a) ** (p - 1))
                return scaled * g * norm ** (1 - p)
            scaled = _sign(a) * xp.abs(a) ** (p - 1) if p < 2 else a * xp.abs(a) ** (p - 2)
            return scaled * xp.where(norm == 0, 0, g / norm ** (p - 1))


def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
    """torch's ``Tensor.norm``: ``p`` is a number (inf and -inf included) or 'fro'; 'fro' over None, one
    dim or two dims is the 2-norm of the entries. ``dtype`` casts the input first."""
    if isinstance(dim, (list, tuple)) and len(dim) == 0:
        dim = None
    if isinstance(p, str):
        if p == "nuc":
            raise NotImplementedError("norm(p='nuc'): the nuclear norm is not implemented in tinyllm")
        if p != "fro":
            raise RuntimeError(f"norm(): order {p!r} not supported (expected a number, 'fro' or 'nuc')")
        if isinstance(dim, (list, tuple)) and len(dim) != 2:
            raise RuntimeError(f"norm(p='fro'): dim must be an int or a 2-tuple, got {tuple(dim)}")
        p = 2
    elif p is None:
        p = 2
    elif not isinstance(p, (int, float, np.integer, np.floating)) or isinstance(p, bool):
        raise TypeError(f"norm(): p must be a number or 'fro', got {p!r}")
    self = _cast_input(self, dtype)
    if not backend.is_floating(self.dtype):
        raise RuntimeError(f"linalg.vector_norm: Expected a floating point tensor as input. Got {self.dtype}")
    return Norm.apply(self, p=float(p), dim=dim, keepdim=keepdim)


Tensor.norm = norm
