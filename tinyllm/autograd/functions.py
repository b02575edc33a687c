"""torch's module-level functions: ``tl.exp(x)``, ``tl.pow(x, 2)``, ``tl.matmul(a, b)``, ... Each is
the Tensor method of the same name called on its first argument, so the ops and their gradients live
in one place (``ops.py``, ``shapes.py``, ``fused.py``); the few that torch defines differently from
the method (``max(a, b)``, ``softmax(x, dim, dtype)``, ``mm``, ``bmm``) and the comparisons that
return a Python bool (``allclose``, ``equal``) are written out below."""
import inspect

from .. import backend
from .einsum import einsum  # noqa: F401  (torch.einsum(equation, *operands) is a function already)
from .engine import Tensor
from .factory import as_tensor
from .ops import as_tensor_like

# Functions that call the method of the same name on their first argument, as torch's do.
METHOD_FUNCTIONS = (
    # elementwise
    "exp", "log", "log1p", "expm1", "sqrt", "rsqrt", "tanh", "sigmoid", "relu", "abs", "neg", "negative",
    "sin", "cos", "pow", "square", "reciprocal", "sign", "floor", "ceil", "round", "trunc", "clamp",
    "add", "sub", "mul", "div", "divide", "floor_divide", "remainder", "maximum", "minimum",
    "eq", "ne", "lt", "le", "gt", "ge", "isnan", "isinf", "isfinite",
    "logical_and", "logical_or", "logical_xor", "logical_not",
    "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not",
    # reductions
    "sum", "mean", "prod", "var", "std", "amax", "amin", "all", "any", "argmax", "argmin", "cumsum",
    "norm", "logsumexp",
    # linear algebra
    "matmul", "outer",
    # shapes, selection and copies
    "transpose", "permute", "reshape", "flatten", "squeeze", "unsqueeze", "movedim", "moveaxis", "split",
    "chunk", "unbind", "narrow", "flip", "roll", "repeat_interleave", "index_select", "tril", "triu",
    "topk", "sort", "argsort", "gather", "multinomial", "masked_fill", "clone", "detach",
    "log_softmax",
)


def _input(input, args, name):
    """``input`` as a Tensor; a Python number meeting a tensor takes that tensor's dtype
    (``tl.pow(2.0, x)``), as it would in ``2.0 ** x``."""
    if isinstance(input, Tensor):
        return input
    if args and isinstance(args[0], Tensor):
        return as_tensor_like(input, args[0])
    try:
        return as_tensor(input)
    except TypeError:
        raise TypeError(f"{name}(): expected a tensor as input, got {type(input).__name__}") from None


def _method_function(name):
    def function(input, *args, **kwargs):
        return getattr(_input(input, args, name), name)(*args, **kwargs)

    # its own name in tracebacks and help(), not 'function'
    code = function.__code__
    names = dict(co_name=name, co_qualname=name) if hasattr(code, "co_qualname") else dict(co_name=name)
    function.__code__ = code.replace(**names)  # co_qualname exists from Python 3.11
    function.__name__ = function.__qualname__ = name
    function.__module__ = __name__
    function.__doc__ = (f"``tl.{name}(input, ...)`` is ``input.{name}(...)``, as ``torch.{name}``: "
                        f"see ``Tensor.{name}``.")
    method = getattr(Tensor, name, None)
    if method is not None:
        try:
            signature = inspect.signature(method)
        except (TypeError, ValueError):  # a builtin without a signature: keep (input, *args, **kwargs)
            signature = None
        if signature is not None and signature.parameters:
            first, *rest = signature.parameters.values()
            function.__signature__ = signature.replace(parameters=[first.replace(name="input"), *rest])
    return function


for _name in METHOD_FUNCTIONS:
    globals()[_name] = _method_function(_name)
del _name


def max(input, dim=None, keepdim=False):
    """``tl.max(x)``, ``tl.max(x, dim, keepdim)`` as ``x.max(...)``, and ``tl.max(a, b)``, the
    elementwise maximum, as torch."""
    if isinstance(dim, Tensor):
        return _input(input, (dim,), "max").maximum(dim)
    return _input(input, (), "max").max(dim=dim, keepdim=keepdim)


def min(input, dim=None, keepdim=False):
    """``tl.min(x)``, ``tl.min(x, dim, keepdim)`` as ``x.min(...)``, and ``tl.min(a, b)``, the
    elementwise minimum, as torch."""
    if isinstance(dim, Tensor):
        return _input(input, (dim,), "min").minimum(dim)
    return _input(input, (), "min").min(dim=dim, keepdim=keepdim)


def softmax(input, dim, dtype=None):
    """``torch.softmax(x, dim, dtype=None)``: softmax over ``dim``, after a cast to ``dtype`` if given."""
    x = _input(input, (), "softmax")
    return (x if dtype is None else x.to(dtype)).softmax(dim)


def mm(input, mat2):
    """The product of two matrices (2-D only), as ``torch.mm``."""
    a, b = _input(input, (mat2,), "mm"), as_tensor(mat2)
    if a.ndim != 2 or b.ndim != 2:
        raise RuntimeError(f"mm: expected two 2-D tensors, got shapes {a.shape} and {b.shape}")
    return a.matmul(b)


def bmm(input, mat2):
    """Batched matrix products of two 3-D tensors with the same batch size, as ``torch.bmm``."""
    a, b = _input(input, (mat2,), "bmm"), as_tensor(mat2)
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0]:
        raise RuntimeError(f"bmm: expected two 3-D tensors with one batch size, got shapes {a.shape} and {b.shape}")
    return a.matmul(b)


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """True when ``|input - other| <= atol + rtol * |other|`` everywhere, as ``torch.allclose``."""
    a, b = as_tensor(input), as_tensor(other)
    xp = backend.get_array_module(a.data, b.data)
    return bool(xp.allclose(a.data, b.data, rtol=rtol, atol=atol, equal_nan=equal_nan))


def equal(input, other):
    """True when both tensors have one shape and equal elements, as ``torch.equal``."""
    a, b = as_tensor(input), as_tensor(other)
    return a.shape == b.shape and bool(backend.get_array_module(a.data, b.data).array_equal(a.data, b.data))


def is_tensor(obj):
    """True when ``obj`` is a tinyllm Tensor (Parameters included), as ``torch.is_tensor``."""
    return isinstance(obj, Tensor)


def numel(input):
    """The number of elements of ``input``, as ``torch.numel``."""
    return as_tensor(input).numel()


__all__ = [*METHOD_FUNCTIONS, "max", "min", "softmax", "mm", "bmm", "einsum", "allclose", "equal", "is_tensor",
           "numel"]
