"""GELU forward and backward on plain arrays, exact (erf) and tanh forms.

NumPy has no erf, so the NumPy reference twin calls ``math.erf`` element by element (exact, slow);
the numba version runs one fused pass: libm's erf in float64, a vectorised approximation good to about
one ulp in float32 (see below). ``forward_and_derivative`` returns y and dy/dx from one pass: the
autograd op saves dy/dx, so its backward is a single multiply instead of a second erf/exp pass.

    exact:  y = x Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2,  dy/dx = Phi(x) + x phi(x)
    tanh:   y = x (1 + tanh u) / 2,  u = sqrt(2/pi) (x + 0.044715 x^3)
            dy/dx = (1 + tanh u) / 2 + x (1 - tanh^2 u) / 2 * sqrt(2/pi) (1 + 3 * 0.044715 x^2)
"""
import math

import numpy as np
from numba import njit, prange

from .. import backend
from . import pool
from .dispatch import Kernel
from .fastmath import exp_inplace

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


def gelu_forward_and_derivative_numpy(x, approximate="none"):
    xp = backend.get_array_module(x)
    if approximate == "tanh":
        t = xp.tanh(SQRT_2_OVER_PI * (x + C * x ** 3))
        y = 0.5 * x * (1 + t)
        return y, 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * C * x * x)
    cdf = 0.5 * (1 + erf_numpy(x * INV_SQRT_2))
    pdf = xp.exp(-0.5 * x * x) * INV_SQRT_2PI
    return x * cdf, cdf + x * pdf


def gelu_backward_numpy(x, g, approximate="none"):
    return g * gelu_forward_and_derivative_numpy(x, approximate)[1]


# -------------------------------------------------------------------------- numba version
# float32 runs a vectorisable form (libm's erf/tanh/exp are scalar calls, and numba has no vector
# versions without Intel's SVML); float64 keeps math.erf / math.tanh / math.exp.
# Both forms are written so that every factor is computed with a small *relative* error, also in the
# tails where Phi(x) or 1 + tanh(u) is tiny:
#   exact: z = |x| / sqrt 2,  erfc(z) = exp(-z^2) R(t),  t = 1 / (1 + z / 2),  R(t) = erfcx(z)
#          (R: a degree-11 polynomial in t, fitted to scipy's erfcx on t in [0.15, 1], i.e. z <= 11.3,
#          relative error 7e-9 in float64 and ~3e-7 evaluated in float32; beyond, exp(-z^2) is 0 in
#          float32). Phi(x) = 1 - erfc(z) / 2 for x >= 0, erfc(z) / 2 for x < 0; phi(x) = exp(-z^2) /
#          sqrt(2 pi): y and dy/dx share their one exp (Numerical Recipes' erfcc form,
#          t exp(-z^2 + P(t)), would need a second exp for the pdf)
#   tanh:  e = exp(-2|u|),  a = 2e / (1 + e),  b = 2 / (1 + e):  1 + tanh u and 1 - tanh u are (b, a)
#          for u >= 0 and (a, b) for u < 0, and 1 - tanh^2 u = a b
# The exp is fastmath.py's polynomial one (max relative error 8e-8), run over chunks of CHUNK.
CHUNK = 1024
_F32 = np.float32
_ERFCX = tuple(_F32(c) for c in (  # R(t) = sum c_i t^i (see above); least squares weighted by 1/R
    2.424935740110193e-06, 0.28201999905485375, 0.28309373043770986, 0.23925297694033362,
    0.21222790166123362, -0.025432250894816776, 0.20154704451036665, -0.2582970835843723,
    -0.062498112837026776, 0.24069797965199005, -0.14030356482867382, 0.027688961094012792))


# What a pass writes: y to out; g * dy/dx to out; or y to out and dy/dx to out2.
FORWARD, BACKWARD, BOTH = 0, 1, 2


# error_model="numpy": no ZeroDivisionError check, which blocks vectorising. fastmath 'contract' alone:
# the polynomials' multiply-adds become FMAs (one rounding instead of two, so no less accurate).
@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _exact_at(xi, ez, t):
    """(y, dy/dx) of exact GELU at xi, given ez = exp(-xi^2 / 2) and t = 1 / (1 + |xi| / (2 sqrt 2))."""
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11 = _ERFCX
    r = c0 + t * (c1 + t * (c2 + t * (c3 + t * (c4 + t * (c5 + t * (c6 + t * (c7 + t * (
        c8 + t * (c9 + t * (c10 + t * c11))))))))))  # erfcx(z)
    half_erfc = _F32(0.5) * ez * r
    cdf = _F32(1.0) - half_erfc if xi >= 0 else half_erfc  # Phi(x)
    return xi * cdf, cdf + xi * ez * _F32(INV_SQRT_2PI)


@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _tanh_at(xi, eu):
    """(y, dy/dx) of tanh GELU at xi, given eu = exp(-2|u|)."""
    half, one, two = _F32(0.5), _F32(1.0), _F32(2.0)
    k = _F32(SQRT_2_OVER_PI)
    a = two * eu / (one + eu)
    b = two / (one + eu)
    onep = b if xi >= 0 else a  # 1 + tanh u (u has the sign of x)
    return half * xi * onep, half * onep + half * xi * (a * b) * k * (one + _F32(3.0 * C) * xi * xi)


# One loop per (form, mode), with the mode's stores unconditional: a loop that chose its stores by the
# run-time ``mode`` vectorised them as masked stores (vmaskmovps), which AMD cores run slowly.
@njit(cache=True, error_model="numpy", fastmath={"contract"})
def _gelu_chunk(x, g, out, out2, use_tanh, mode, e, tbuf, ibuf):
    """One chunk of the float32 fast path; ``mode`` is FORWARD, BACKWARD or BOTH (see above)."""
    n = x.size
    half, one, two = _F32(0.5), _F32(1.0), _F32(2.0)
    if use_tanh:
        k = _F32(SQRT_2_OVER_PI)
        for j in range(n):
            xi = x[j]
            e[j] = -two * abs(k * (xi + _F32(C) * xi * xi * xi))  # -2|u|
        exp_inplace(e, n, ibuf, True)
        if mode == FORWARD:
            for j in range(n):
                out[j] = _tanh_at(x[j], e[j])[0]
        elif mode == BACKWARD:
            for j in range(n):
                out[j] = g[j] * _tanh_at(x[j], e[j])[1]
        else:
            for j in range(n):
                out[j], out2[j] = _tanh_at(x[j], e[j])
        return
    for j in range(n):
        xi = x[j]
        tbuf[j] = one / (one + half * (abs(xi) * _F32(INV_SQRT_2)))  # t
        e[j] = -(half * (xi * xi))  # -z^2 with one rounding, not two
    exp_inplace(e, n, ibuf, True)  # exp(-z^2) = exp(-x^2 / 2)
    if mode == FORWARD:
        for j in range(n):
            out[j] = _exact_at(x[j], e[j], tbuf[j])[0]
    elif mode == BACKWARD:
        for j in range(n):
            out[j] = g[j] * _exact_at(x[j], e[j], tbuf[j])[1]
    else:
        for j in range(n):
            out[j], out2[j] = _exact_at(x[j], e[j], tbuf[j])


@njit(cache=True, error_model="numpy")
def _gelu_exact64(x, g, out, out2, lo, hi, use_tanh, mode):
    """The float64 (and reference-exact) path: libm's erf, tanh and exp."""
    for i in range(lo, hi):
        xi = x[i]
        if use_tanh:
            t = math.tanh(SQRT_2_OVER_PI * (xi + C * xi * xi * xi))
            y = 0.5 * xi * (1.0 + t)
            if mode != FORWARD:
                d = 0.5 * (1.0 + t) + 0.5 * xi * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * C * xi * xi)
        else:
            cdf = 0.5 * (1.0 + math.erf(xi * INV_SQRT_2))
            y = xi * cdf
            if mode != FORWARD:
                d = cdf + xi * math.exp(-0.5 * xi * xi) * INV_SQRT_2PI
        if mode == FORWARD:
            out[i] = y
        elif mode == BACKWARD:
            out[i] = g[i] * d
        else:
            out[i] = y
            out2[i] = d


@njit(cache=True, error_model="numpy")
def _scratch():
    return np.empty(CHUNK, np.float32), np.empty(CHUNK, np.float32), np.empty(CHUNK, np.int32)


@njit(cache=True, error_model="numpy")
def _gelu_serial(x, g, out, out2, use_tanh, mode, fast):
    if fast:  # one set of scratch buffers for the whole array
        e, tbuf, ibuf = _scratch()
        for lo in range(0, x.size, CHUNK):
            hi = min(x.size, lo + CHUNK)
            _gelu_chunk(x[lo:hi], g[lo:hi], out[lo:hi], out2[lo:hi], use_tanh, mode, e, tbuf, ibuf)
    else:
        _gelu_exact64(x, g, out, out2, 0, x.size, use_tanh, mode)


@njit(parallel=True, cache=True, error_model="numpy")
def _gelu_parallel(x, g, out, out2, use_tanh, mode, fast, n_parts):
    # one run of whole chunks a thread, each with its own scratch buffers: numba's allocator is shared
    # between threads, so allocating them per chunk inside the parallel loop is slow
    n_chunks = (x.size + CHUNK - 1) // CHUNK
    for p in prange(n_parts):
        lo = (p * n_chunks // n_parts) * CHUNK
        hi = min(x.size, ((p + 1) * n_chunks // n_parts) * CHUNK)
        _gelu_serial(x[lo:hi], g[lo:hi], out[lo:hi], out2[lo:hi], use_tanh, mode, fast)


def _gelu_numba(x, g, approximate, mode):
    """Returns out, or (out, out2) in mode BOTH, shaped like x."""
    flat = np.ascontiguousarray(x).reshape(-1)
    gflat = flat if g is None else np.ascontiguousarray(g, dtype=x.dtype).reshape(-1)
    out = np.empty_like(flat)
    out2 = np.empty_like(flat) if mode == BOTH else out  # (unused unless BOTH)
    args = (flat, gflat, out, out2, approximate == "tanh", mode, x.dtype == np.float32)
    if pool.parallel("gelu", flat.size):
        _gelu_parallel(*args, pool.threads())
    else:
        _gelu_serial(*args)
    if mode == BOTH:
        return out.reshape(x.shape), out2.reshape(x.shape)
    return out.reshape(x.shape)


def gelu_forward_numba(x, approximate="none"):
    return _gelu_numba(x, None, approximate, FORWARD)


def gelu_backward_numba(x, g, approximate="none"):
    return _gelu_numba(x, g, approximate, BACKWARD)


def gelu_forward_and_derivative_numba(x, approximate="none"):
    return _gelu_numba(x, None, approximate, BOTH)


# -------------------------------------------------------------------------- entry points
forward = Kernel("gelu.forward", gelu_forward_numba, gelu_forward_numpy, doc="gelu(x), exact or 'tanh'.")
backward = Kernel("gelu.backward", gelu_backward_numba, gelu_backward_numpy, doc="g * gelu'(x).")
forward_and_derivative = Kernel(
    "gelu.forward_and_derivative", gelu_forward_and_derivative_numba, gelu_forward_and_derivative_numpy,
    doc="(gelu(x), gelu'(x)): what the autograd op saves so that its backward is one multiply.")
