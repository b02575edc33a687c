"""tinyllm: a small, exact and fast language-model library in pure NumPy, torch-shaped.

    import tinyllm as tl
    x = tl.randn(3, 4, requires_grad=True)
    (x @ x.T).sum().backward()
"""
from . import backend
from .backend import (cuda_available, device, get_default_dtype, get_device, get_rng_state, manual_seed,
                      set_default_dtype, set_rng_state)
from .autograd import (Function, Tensor, arange, as_tensor, cat, empty, enable_grad, full,
                       gradcheck, is_grad_enabled, no_grad, ones, ones_like, rand, randint, randn,
                       set_grad_enabled, stack, tensor, where, zeros, zeros_like)
import numpy as _np

from . import nn, optim  # noqa: E402  (after the engine: nn and optim build on it)

float16, float32, float64 = _np.float16, _np.float32, _np.float64
int32, int64, bool_ = _np.int32, _np.int64, _np.bool_

__version__ = "0.1.0"
