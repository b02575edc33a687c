"""The Adam / AdamW update of one parameter, in place: the NumPy reference twin and a fused numba version.

torch's single-tensor rule, operation for operation (so float32 results are bit-identical to it):

    g = -grad if maximize else grad
    p *= 1 - lr * wd                      (AdamW: decoupled)   or   g = g + wd * p   (Adam: L2)
    m = lerp(m, g, 1 - beta1)             m += (1 - beta1) * (g - m)
    v = beta2 * v + (1 - beta2) * g * g
    v_max = max(v_max, v)                 (amsgrad; the denominator then uses v_max)
    p -= step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)

NumPy runs that as ~10 passes over the parameter with temporaries; the numba version does one pass
and allocates nothing. Scalars are rounded to the parameter's dtype first, as torch's CPU kernels do.
Large parameters are split into one contiguous chunk per thread (every element is updated on its own,
so the result does not depend on the split): the pass is bound by memory bandwidth, which one core
does not saturate.
"""
import numpy as np
from numba import njit, prange

from .. import backend
from . import pool
from .dispatch import Kernel


# -------------------------------------------------------------------------- NumPy reference twin
def _lerp_(start, end, weight):
    """``start += weight * (end - start)`` in place, rounded the way torch's ``lerp_`` rounds."""
    if abs(weight) < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (end - start) * (1 - weight)


def adam_step_numpy(p, grad, m, v, v_max, lr, beta1, beta2, eps, wd, step, decoupled, amsgrad, maximize):
    """One Adam(W) update of p, m, v (and v_max) in place; ``step`` is the count after this update."""
    xp = backend.get_array_module(p)
    if maximize:
        grad = -grad
    if wd != 0:
        if decoupled:
            p *= 1 - lr * wd
        else:
            grad = grad + wd * p
    _lerp_(m, grad, 1 - beta1)
    v *= beta2
    v += (1 - beta2) * grad * grad
    step_size = lr / (1 - beta1 ** step)
    bias_correction2_sqrt = (1 - beta2 ** step) ** 0.5
    if amsgrad:
        xp.maximum(v_max, v, out=v_max)
        v = v_max
    denom = xp.sqrt(v)
    denom /= bias_correction2_sqrt
    denom += eps
    p -= step_size * m / denom


# -------------------------------------------------------------------------- numba version
@njit(cache=True, error_model="numpy")
def _adam_fused(p, grad, m, v, v_max, decay, l2, w_lerp, one_m_w, small_w, beta2, one_m_beta2, step_size, bc2_sqrt,
                eps, amsgrad, maximize):
    # p, grad, m, v, v_max: flat arrays of one dtype; every scalar already in that dtype (a Python int
    # in the arithmetic would promote float32 to float64 and change the rounding)
    for i in range(p.size):
        g = -grad[i] if maximize else grad[i]
        pi = p[i] * decay  # decay is 1 unless AdamW's decoupled weight decay is on
        if l2 != 0:  # Adam's L2 weight decay (then decay is 1)
            g = g + l2 * pi
        mi = m[i]
        if small_w:
            mi = mi + w_lerp * (g - mi)
        else:
            mi = g - (g - mi) * one_m_w
        m[i] = mi
        vi = v[i] * beta2 + one_m_beta2 * g * g
        v[i] = vi
        if amsgrad:
            vi = max(v_max[i], vi)
            v_max[i] = vi
        p[i] = pi - step_size * mi / (np.sqrt(vi) / bc2_sqrt + eps)


@njit(parallel=True, cache=True, error_model="numpy")
def _adam_parallel(p, grad, m, v, v_max, decay, l2, w_lerp, one_m_w, small_w, beta2, one_m_beta2, step_size,
                   bc2_sqrt, eps, amsgrad, maximize, chunks):
    # _adam_fused on ``chunks`` contiguous pieces, one a thread (v_max is v itself without amsgrad)
    n = p.size
    for c in prange(chunks):
        lo, hi = c * n // chunks, (c + 1) * n // chunks
        _adam_fused(p[lo:hi], grad[lo:hi], m[lo:hi], v[lo:hi], v_max[lo:hi], decay, l2, w_lerp, one_m_w, small_w,
                    beta2, one_m_beta2, step_size, bc2_sqrt, eps, amsgrad, maximize)


def adam_step_numba(p, grad, m, v, v_max, lr, beta1, beta2, eps, wd, step, decoupled, amsgrad, maximize):
    t = p.dtype.type
    decay = t(1 - lr * wd) if (wd != 0 and decoupled) else t(1)
    l2 = t(wd) if (wd != 0 and not decoupled) else t(0)
    w = 1 - beta1
    flat = [x.reshape(-1) for x in (p, np.ascontiguousarray(grad, dtype=p.dtype), m, v)]
    vm = v_max.reshape(-1) if amsgrad else flat[3]
    args = (decay, l2, t(w), t(1 - w), abs(w) < 0.5, t(beta2), t(1 - beta2), t(lr / (1 - beta1 ** step)),
            t((1 - beta2 ** step) ** 0.5), t(eps), amsgrad, maximize)
    if pool.parallel("adam", p.size):
        _adam_parallel(*flat, vm, *args, pool.threads())
    else:
        _adam_fused(*flat, vm, *args)


# -------------------------------------------------------------------------- entry points
def _contiguous_state(p, grad, m, v, *rest):
    return p.flags.c_contiguous and m.flags.c_contiguous and v.flags.c_contiguous


adam_step = Kernel("adam.adam_step", adam_step_numba, adam_step_numpy, floats=(0, 2, 3), applies=_contiguous_state,
                   doc="One Adam(W) update of p, m, v (and v_max) in place; ``step`` counts this update.")
