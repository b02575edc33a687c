"""tinyllm: a small, exact and fast language-model library in pure NumPy, torch-shaped.

    import tinyllm as tl
    x = tl.randn(3, 4, requires_grad=True)
    (x @ x.T).sum().backward()

torch's names are here too (``tl.long``, ``tl.float32``, ``tl.exp``, ``tl.matmul``, ...), so a torch
model file runs with ``import tinyllm as torch``.
"""
import math as _math

import numpy as _np

from . import backend
from .backend import (cuda_available, device, finfo, get_default_dtype, get_device, get_rng_state, iinfo,
                      manual_seed, set_default_dtype, set_rng_state)
from .autograd import (Function, Tensor, arange, as_tensor, cat, empty, empty_like, enable_grad, eye, full,
                       full_like, gradcheck, is_grad_enabled, linspace, no_grad, ones, ones_like, rand,
                       rand_like, randint, randn, randn_like, set_grad_enabled, stack, tensor, where, zeros,
                       zeros_like)
from .autograd.functions import *  # noqa: F401,F403  (torch's function forms: exp, pow, matmul, ...)

from . import nn, optim  # noqa: E402  (after the engine: nn and optim build on it)

# dtypes are NumPy's types, so ``x.dtype == tl.long`` holds; torch's bfloat16 has no NumPy twin.
float16 = half = _np.float16
float32 = float = _np.float32
float64 = double = _np.float64
int8, int16, uint8 = _np.int8, _np.int16, _np.uint8
int32 = int = _np.int32
int64 = long = _np.int64
bool = bool_ = _np.bool_

inf, nan, pi, e = _math.inf, _math.nan, _math.pi, _math.e

__version__ = "0.1.0"
