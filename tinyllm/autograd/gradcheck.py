"""Finite-difference gradient checking along a random direction (needle's backward_check,
Chainer's check_backward): compare <grad f, v> with (f(x + eps v) - f(x - eps v)) / 2 eps."""
import numpy as np

from .engine import Tensor


def _scalarize(out, weights):
    """Reduce an output to a scalar with fixed random weights, so every output element counts."""
    return (out * weights).sum()


def gradcheck(fn, inputs, eps=1e-6, atol=1e-7, rtol=1e-6, seed=0, raise_exception=True):
    """Check the analytic gradient of ``fn`` against a central finite difference, in float64.

    ``inputs`` is a sequence of Tensors (or arrays); those that require grad are perturbed together
    along one random direction. ``fn`` may return a Tensor of any shape or a tuple of Tensors.
    Returns True, or raises ``AssertionError`` naming both numbers (or returns False).
    """
    rng = np.random.default_rng(seed)
    inputs = [x if isinstance(x, Tensor) else Tensor(np.asarray(x, dtype=np.float64)) for x in inputs]
    for x in inputs:
        if x.requires_grad and x.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 inputs, got {x.dtype} (use .double())")
    wrt = [x for x in inputs if x.requires_grad]
    if not wrt:
        raise ValueError("gradcheck: no input requires grad")

    def outputs(args):
        out = fn(*args)
        return out if isinstance(out, (tuple, list)) else (out,)

    first_outputs = outputs(inputs)
    keep = [i for i, o in enumerate(first_outputs) if isinstance(o, Tensor) and o.requires_grad]
    first = [first_outputs[i] for i in keep]
    weights = [rng.standard_normal(o.shape) for o in first]
    directions = [rng.standard_normal(x.shape) for x in wrt]

    for x in wrt:
        x.grad = None
    with np.errstate(invalid="ignore"):  # only its gradient is used; a -inf output makes it nan
        loss = sum(_scalarize(o, w) for o, w in zip(first, weights))
    loss.backward()
    analytic = sum(float(np.sum(x.grad * v)) for x, v in zip(wrt, directions))

    def outputs_at(sign):
        shifted, k = [], 0
        for x in inputs:
            if x.requires_grad:
                shifted.append(Tensor(x.data + sign * eps * directions[k]))
                k += 1
            else:
                shifted.append(x)
        all_outs = outputs(shifted)
        return [all_outs[i].data for i in keep]

    # difference each output before weighting and summing: outputs that do not move (a -1e9 or
    # -inf mask fill) then cancel exactly instead of swamping the sum or making it nan
    with np.errstate(invalid="ignore"):
        diffs = [np.where(p == m, 0.0, p - m) for p, m in zip(outputs_at(+1), outputs_at(-1))]
    numeric = sum(float(np.sum(d * w)) for d, w in zip(diffs, weights)) / (2 * eps)
    ok = abs(analytic - numeric) <= atol + rtol * abs(numeric)
    if not ok and raise_exception:
        raise AssertionError(f"gradcheck failed: analytic directional derivative {analytic!r} "
                             f"!= finite difference {numeric!r} (diff {abs(analytic - numeric):.3e})")
    return ok
