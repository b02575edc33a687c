"""Gradient utilities: ``clip_grad_norm_`` with torch's formula."""
import numpy as np

from .. import backend, kernels
from ..autograd import Tensor


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients in place so that their joint norm is at most ``max_norm``.

    As torch: coef = min(max_norm / (total_norm + 1e-6), 1), applied to every gradient.
    Returns the total norm (before clipping) as a 0-d Tensor.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return Tensor(np.zeros((), dtype=backend.get_default_dtype()))
    xp = backend.get_array_module(grads[0])
    norm_type = float(norm_type)
    if norm_type == float("inf"):
        total = max(xp.abs(g).max() for g in grads)
    elif norm_type == 2.0:  # the common case: one fused pass per gradient
        total = sum(kernels.norms.sum_of_squares(g) for g in grads) ** 0.5
    else:
        total = sum(float((xp.abs(g.astype(np.float64)) ** norm_type).sum()) for g in grads) ** (1.0 / norm_type)
    total = float(total)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} is {total}, so the "
                           f"gradients cannot be clipped (set error_if_nonfinite=False to skip this check)")
    coef = min(max_norm / (total + 1e-6), 1.0)
    if coef != 1.0:  # x * 1.0 is x, so an unclipped step skips the pass (torch multiplies anyway); a NaN coef still applies
        for g in grads:
            g *= g.dtype.type(coef)
    return Tensor(np.asarray(total, dtype=grads[0].dtype))


def clip_grad_value_(parameters, clip_value):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    for p in parameters:
        if p.grad is not None:
            backend.get_array_module(p.grad).clip(p.grad, -clip_value, clip_value, out=p.grad)
