"""GELU forward and backward on plain arrays, exact (erf) and tanh forms.

NumPy has no erf, so the NumPy reference twin calls ``math.erf`` element by element (exact, slow);
the numba twin runs the same formula compiled and in parallel. ``forward``/``backward`` dispatch on
``tinyllm.backend.kernels()``.

    exact:  y = x Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2,  dy/dx = Phi(x) + x phi(x)
    tanh:   y = x (1 + tanh u) / 2,  u = sqrt(2/pi) (x + 0.044715 x^3)
            dy/dx = (1 + tanh u) / 2 + x (1 - tanh^2 u) / 2 * sqrt(2/pi) (1 + 3 * 0.044715 x^2)
"""
import math

import numpy as np
from numba import njit, prange

from .. import backend

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
C = 0.044715

# -------------------------------------------------------------------------- NumPy reference twin
_erf_elementwise = np.vectorize(math.erf, otypes=[np.float64])


def erf_numpy(x):
    xp = backend.get_array_module(x)
    if xp is not np:  # CuPy ships erf
        import cupyx.scipy.special as sp
        return sp.erf(x)
    return _erf_elementwise(x).astype(x.dtype, copy=False)


def gelu_forward_numpy(x, approximate="none"):
    xp = backend.get_array_module(x)
    if approximate == "tanh":
        return 0.5 * x * (1 + xp.tanh(SQRT_2_OVER_PI * (x + C * x ** 3)))
    return 0.5 * x * (1 + erf_numpy(x * INV_SQRT_2))


def gelu_backward_numpy(x, g, approximate="none"):
    xp = backend.get_array_module(x)
    if approximate == "tanh":
        t = xp.tanh(SQRT_2_OVER_PI * (x + C * x ** 3))
        return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * C * x * x))
    cdf = 0.5 * (1 + erf_numpy(x * INV_SQRT_2))
    pdf = xp.exp(-0.5 * x * x) * INV_SQRT_2PI
    return g * (cdf + x * pdf)


# -------------------------------------------------------------------------- numba twin
@njit(parallel=True, cache=True)
def _gelu_forward_numba(x, out, use_tanh):
    for i in prange(x.size):
        xi = x[i]
        if use_tanh:
            out[i] = 0.5 * xi * (1.0 + math.tanh(SQRT_2_OVER_PI * (xi + C * xi * xi * xi)))
        else:
            out[i] = 0.5 * xi * (1.0 + math.erf(xi * INV_SQRT_2))


@njit(parallel=True, cache=True)
def _gelu_backward_numba(x, g, out, use_tanh):
    for i in prange(x.size):
        xi = x[i]
        if use_tanh:
            t = math.tanh(SQRT_2_OVER_PI * (xi + C * xi * xi * xi))
            d = 0.5 * (1.0 + t) + 0.5 * xi * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * C * xi * xi)
        else:
            d = 0.5 * (1.0 + math.erf(xi * INV_SQRT_2)) + xi * math.exp(-0.5 * xi * xi) * INV_SQRT_2PI
        out[i] = g[i] * d


def gelu_forward_numba(x, approximate="none"):
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    _gelu_forward_numba(flat, out, approximate == "tanh")
    return out.reshape(x.shape)


def gelu_backward_numba(x, g, approximate="none"):
    flat = np.ascontiguousarray(x).reshape(-1)
    gflat = np.ascontiguousarray(g, dtype=x.dtype).reshape(-1)
    out = np.empty_like(flat)
    _gelu_backward_numba(flat, gflat, out, approximate == "tanh")
    return out.reshape(x.shape)


# -------------------------------------------------------------------------- dispatch
def _use_numba(x):
    return backend.kernels() == "numba" and isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64)


def forward(x, approximate="none"):
    return gelu_forward_numba(x, approximate) if _use_numba(x) else gelu_forward_numpy(x, approximate)


def backward(x, g, approximate="none"):
    return gelu_backward_numba(x, g, approximate) if _use_numba(x) else gelu_backward_numpy(x, g, approximate)
