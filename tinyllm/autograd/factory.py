"""Creating tensors: ``tensor``, ``zeros``, ``ones``, ``randn`` and friends, torch-shaped."""
import numpy as np

from .. import backend
from .engine import Tensor


def _to_array(data, dtype=None):
    return backend.to_array(data.data if isinstance(data, Tensor) else data, dtype)


def _shape(size):
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)


def _dtype(dtype):
    return backend.get_default_dtype() if dtype is None else np.dtype(dtype)


def _placed(array):
    """``array`` on the current device (``with tl.device(...)``)."""
    return array if backend._device == "cpu" else backend.to_device(array, backend._device)


def tensor(data, dtype=None, requires_grad=False):
    """Like ``torch.tensor``: int-only data stays integer, floats take the default dtype."""
    t = Tensor._wrap(_placed(_to_array(data, dtype).copy() if isinstance(data, np.ndarray) else _to_array(data, dtype)))
    return t.requires_grad_(True) if requires_grad else t


def as_tensor(data, dtype=None):
    return data if isinstance(data, Tensor) and dtype is None else Tensor._wrap(_placed(_to_array(data, dtype)))


def zeros(*size, dtype=None, requires_grad=False):
    return Tensor(np.zeros(_shape(size), dtype=_dtype(dtype)), requires_grad=requires_grad)


def ones(*size, dtype=None, requires_grad=False):
    return Tensor(np.ones(_shape(size), dtype=_dtype(dtype)), requires_grad=requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False):
    return Tensor(np.full(_shape((size,)), fill_value, dtype=_dtype(dtype)), requires_grad=requires_grad)


def empty(*size, dtype=None, requires_grad=False):
    return zeros(*size, dtype=dtype, requires_grad=requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    xp = backend.get_array_module(t.data)
    return Tensor(xp.zeros(t.shape, dtype=dtype or t.dtype), requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    xp = backend.get_array_module(t.data)
    return Tensor(xp.ones(t.shape, dtype=dtype or t.dtype), requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None):
    if end is None:
        start, end = 0, start
    is_int = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
    dtype = dtype if dtype is not None else (np.int64 if is_int else backend.get_default_dtype())
    return Tensor._wrap(_placed(np.arange(start, end, step, dtype=dtype)))


def randn(*size, dtype=None, requires_grad=False):
    data = backend.rng().standard_normal(_shape(size)).astype(_dtype(dtype))
    return Tensor(data, requires_grad=requires_grad)


def rand(*size, dtype=None, requires_grad=False):
    data = backend.rng().random(_shape(size)).astype(_dtype(dtype))
    return Tensor(data, requires_grad=requires_grad)


def randint(low, high=None, size=(), dtype=np.int64):
    if high is None:
        low, high = 0, low
    return Tensor._wrap(_placed(backend.rng().integers(low, high, size=size, dtype=dtype)))
