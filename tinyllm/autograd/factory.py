"""Creating tensors: ``tensor``, ``zeros``, ``ones``, ``randn`` and friends, with torch's signatures
(``dtype=``, ``device=``, ``requires_grad=`` keywords) and torch's dtype rules."""
import numbers

import numpy as np

from .. import backend
from .engine import Tensor


def _to_array(data, dtype=None):
    return backend.to_array(data.data if isinstance(data, Tensor) else data, dtype)


def _shape(size):
    """``zeros(2, 3)``, ``zeros((2, 3))`` and ``zeros([2, 3])`` all mean shape (2, 3)."""
    shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)
    for n in shape:
        if not isinstance(n, (numbers.Integral, np.integer)) or isinstance(n, bool) or n < 0:
            raise TypeError(f"a size must be non-negative ints, got {shape!r}")
    return tuple(int(n) for n in shape)


def _dtype(dtype):
    return backend.get_default_dtype() if dtype is None else np.dtype(dtype)


def _made(array, device=None, requires_grad=False):
    """A new leaf tensor of ``array``, on ``device`` (default: the current device, ``with tl.device``)."""
    device = backend._device if device is None else backend._check_device(device)
    if device != backend.device_of(array):
        array = backend.to_device(array, device)
    t = Tensor._wrap(array)
    return t.requires_grad_(True) if requires_grad else t


def _made_like(input, array, device=None, requires_grad=False):
    """As ``_made``, but on ``input``'s device unless ``device`` says otherwise (torch's ``*_like``)."""
    return _made(array, input.device if device is None else device, requires_grad)


def tensor(data, dtype=None, device=None, requires_grad=False):
    """Like ``torch.tensor``: a copy of ``data``; int-only data stays integer, floats take the default
    dtype, a tensor's dtype is kept."""
    array = _to_array(data, dtype)
    if not isinstance(data, (list, tuple)):  # arrays and tensors may come back as they are: copy
        array = array.copy()
    return _made(array, device, requires_grad)


def as_tensor(data, dtype=None, device=None):
    """Like ``torch.as_tensor``: a tensor is returned as is, or converted as ``data.to(dtype, device)``
    (which keeps it in the graph); other data becomes a tensor sharing its memory where it can."""
    if isinstance(data, Tensor):
        return data.to(device=device, dtype=dtype)
    return _made(_to_array(data, dtype), device)


def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _made(np.zeros(_shape(size), dtype=_dtype(dtype)), device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    return _made(np.ones(_shape(size), dtype=_dtype(dtype)), device, requires_grad)


def _fill_dtype(fill_value, dtype):
    """torch.full's rule: a bool fill gives bool, an int fill int64, anything else the default dtype."""
    if dtype is not None:
        return np.dtype(dtype)
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    if isinstance(fill_value, (bool, np.bool_)):
        return np.dtype(np.bool_)
    if isinstance(fill_value, (numbers.Integral, np.integer)):
        return np.dtype(np.int64)
    return backend.get_default_dtype()


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    """Like ``torch.full``: the dtype follows ``fill_value`` (bool, int64 or the default float)."""
    size = (size,) if isinstance(size, (numbers.Integral, np.integer)) else size
    value = fill_value.item() if isinstance(fill_value, Tensor) else fill_value
    return _made(np.full(_shape((size,)), value, dtype=_fill_dtype(fill_value, dtype)), device, requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False):
    """Like ``torch.empty``, but zero-filled: uninitialised memory would make runs differ."""
    return zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)


def zeros_like(input, dtype=None, device=None, requires_grad=False):
    return full_like(input, 0, dtype=dtype, device=device, requires_grad=requires_grad)


def ones_like(input, dtype=None, device=None, requires_grad=False):
    return full_like(input, 1, dtype=dtype, device=device, requires_grad=requires_grad)


def empty_like(input, dtype=None, device=None, requires_grad=False):
    """Like ``torch.empty_like``, but zero-filled (see ``empty``)."""
    return full_like(input, 0, dtype=dtype, device=device, requires_grad=requires_grad)


def full_like(input, fill_value, dtype=None, device=None, requires_grad=False):
    """A tensor of ``input``'s shape filled with ``fill_value``, in ``input``'s dtype unless ``dtype``."""
    input = as_tensor(input)
    value = fill_value.item() if isinstance(fill_value, Tensor) else fill_value
    xp = backend.get_array_module(input.data)
    array = xp.full(input.shape, value, dtype=input.dtype if dtype is None else np.dtype(dtype))
    return _made_like(input, array, device, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    """Like ``torch.arange``: int64 when start, end and step are all ints, else the default dtype."""
    if end is None:
        start, end = 0, start
    start, end, step = (v.item() if isinstance(v, Tensor) else v for v in (start, end, step))
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    is_int = all(isinstance(v, (numbers.Integral, np.integer)) for v in (start, end, step))
    dtype = np.dtype(dtype) if dtype is not None else (np.dtype(np.int64) if is_int else backend.get_default_dtype())
    return _made(np.arange(start, end, step, dtype=dtype), device, requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    """Like ``torch.linspace``: ``steps`` evenly spaced values from ``start`` to ``end``, both included.
    As torch, the first half counts up from ``start`` and the second half down from ``end``, so both
    ends are exact; inside, torch's vectorised loop rounds a little differently on each CPU (an ulp)."""
    if not isinstance(steps, (numbers.Integral, np.integer)) or steps < 0:
        raise ValueError(f"linspace: steps must be a non-negative int, got {steps!r}")
    dtype = _dtype(dtype)
    work = dtype if dtype.kind == "f" else np.dtype(np.float64)
    start, end = (work.type(v.item() if isinstance(v, Tensor) else v) for v in (start, end))
    if steps == 1:
        values = np.full(1, start, dtype=work)
    else:
        step = (end - start) / work.type(max(steps - 1, 1))
        i = np.arange(steps, dtype=work)
        halfway = steps // 2
        values = np.where(np.arange(steps) < halfway, start + step * i, end - step * (steps - 1 - i))
    return _made(values.astype(dtype), device, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    """Like ``torch.eye``: an ``n`` x ``m`` (default ``n`` x ``n``) identity matrix."""
    return _made(np.eye(n, n if m is None else m, dtype=_dtype(dtype)), device, requires_grad)


def randn(*size, dtype=None, device=None, requires_grad=False):
    # drawn in float64 on the host and then cast and moved, so a seed gives the same values everywhere
    data = backend.rng().standard_normal(_shape(size)).astype(_dtype(dtype))
    return _made(data, device, requires_grad)


def rand(*size, dtype=None, device=None, requires_grad=False):
    data = backend.rng().random(_shape(size)).astype(_dtype(dtype))
    return _made(data, device, requires_grad)


def randn_like(input, dtype=None, device=None, requires_grad=False):
    input = as_tensor(input)
    data = backend.rng().standard_normal(input.shape).astype(input.dtype if dtype is None else np.dtype(dtype))
    return _made_like(input, data, device, requires_grad)


def rand_like(input, dtype=None, device=None, requires_grad=False):
    input = as_tensor(input)
    data = backend.rng().random(input.shape).astype(input.dtype if dtype is None else np.dtype(dtype))
    return _made_like(input, data, device, requires_grad)


def randint(low, high=None, size=None, dtype=np.int64, device=None, requires_grad=False):
    """Like ``torch.randint``: ``randint(high, size)`` or ``randint(low, high, size)``, values in
    [low, high)."""
    if size is None:
        if isinstance(high, (tuple, list)):  # randint(high, size)
            low, high, size = 0, low, high
        elif high is None:  # randint(high): one value, tinyllm's older short form
            low, high, size = 0, low, ()
        else:
            raise TypeError("randint: missing the size argument (randint(high, size) or randint(low, high, size))")
    elif high is None:
        low, high = 0, low
    shape = (size,) if isinstance(size, (numbers.Integral, np.integer)) else _shape((size,))
    return _made(backend.rng().integers(low, high, size=shape, dtype=np.dtype(dtype)), device, requires_grad)
