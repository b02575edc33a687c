"""Picking entries by value or by index: topk, sort, argsort, argmax, argmin, gather, and sampling
with multinomial. The values they pick carry a gradient (scattered back to where they came from);
indices and samples are plain int64 tensors, as in torch."""
from collections import namedtuple

import numpy as np

from .. import backend
from .engine import Function, Tensor
from .shapes import _dim, reshape

# what torch.topk and torch.sort return: tuples that unpack, with .values and .indices
topk_result = namedtuple("topk", ["values", "indices"])
sort_result = namedtuple("sort", ["values", "indices"])


class Gather(Function):
    # y = x at ``index`` along ``dim`` (other dims: position i takes x's i)   =>   dx = g scatter-added
    # back; ``distinct``: no index repeats along dim (sort, topk), so a plain scatter will do
    def forward(ctx, a, index, dim, distinct=False):
        ctx.shape, ctx.dim, ctx.index, ctx.distinct = a.shape, dim, index, distinct
        xp = backend.get_array_module(a)
        if index.shape[:dim] + index.shape[dim + 1:] == a.shape[:dim] + a.shape[dim + 1:]:
            return xp.take_along_axis(a, index, axis=dim)
        return a[_open_index(index, dim)]

    def backward(ctx, g):
        xp = backend.get_array_module(g)
        grad = xp.zeros(ctx.shape, dtype=g.dtype)
        if ctx.distinct:
            xp.put_along_axis(grad, ctx.index, g, axis=ctx.dim)
        else:
            xp.add.at(grad, _open_index(ctx.index, ctx.dim), g)
        return grad


def _open_index(index, dim):
    """The NumPy index that picks ``a[i0, .., index[i0, .., ik], .., ik]`` for every position of index."""
    xp = backend.get_array_module(index)
    return tuple(index if d == dim else xp.arange(n).reshape((n,) + (1,) * (index.ndim - d - 1))
                 for d, n in enumerate(index.shape))


def gather(input, dim, index, *, sparse_grad=False):
    """``out[i][j][k] = input[i][index[i][j][k]][k]`` for dim=1: ``index`` has input's number of dims
    and is no larger than it outside ``dim``; the output has index's shape."""
    index = index.data if isinstance(index, Tensor) else np.asarray(index)
    if index.dtype.kind not in "iu":
        raise RuntimeError(f"gather(): expected an integer index, got dtype {index.dtype}")
    ndim = max(input.ndim, 1)
    if max(index.ndim, 1) != ndim:
        raise RuntimeError(f"gather(): index of shape {index.shape} must have as many dims as the input "
                           f"of shape {input.shape}")
    dim = _dim(dim, input.ndim, "gather")
    if input.ndim == 0:
        return reshape(gather(reshape(input, (1,)), 0, index.reshape(-1)), index.shape)
    for d, (n, m) in enumerate(zip(index.shape, input.shape)):
        if d != dim and n > m:
            raise RuntimeError(f"gather(): index of shape {index.shape} is larger than the input of shape "
                               f"{input.shape} in dim {d}")
    size = input.shape[dim]
    if index.size and (index.min() < -size or index.max() >= size):
        bad = index.max() if index.max() >= size else index.min()
        raise RuntimeError(f"gather(): index {bad} is out of bounds for dimension {dim} with size {size}")
    return Gather.apply(input, index=index, dim=dim)


Tensor.gather = lambda self, dim, index, *, sparse_grad=False: gather(self, dim, index)


def _order(a, dim, descending):
    """Indices that sort ``a`` along ``dim``, stably (equal values keep their order), NaN counted
    larger than everything, as torch does."""
    xp = backend.get_array_module(a)
    if not descending:
        return xp.argsort(a, axis=dim, kind="stable")  # NumPy puts NaN last, as the largest
    # a stable descending sort: sort the reversed array, reverse the order, map back the positions
    n = a.shape[dim]
    return (n - 1) - xp.flip(xp.argsort(xp.flip(a, dim), axis=dim, kind="stable"), dim)


def sort(input, dim=-1, descending=False, stable=False):
    """(values, indices) sorted along ``dim``. Ties keep their order whether or not ``stable``."""
    if input.ndim == 0:
        return sort_result(input * 1, Tensor._wrap(np.zeros((), dtype=np.int64)))
    dim = _dim(dim, input.ndim, "sort")
    indices = _order(input.data, dim, descending).astype(np.int64, copy=False)
    return sort_result(Gather.apply(input, index=indices, dim=dim, distinct=True), Tensor._wrap(indices))


def argsort(input, dim=-1, descending=False, stable=False):
    return sort(input, dim, descending, stable).indices


def topk(input, k, dim=-1, largest=True, sorted=True):
    """The ``k`` largest (or smallest) entries along ``dim`` and their indices, largest first (or
    smallest first). Among equal values the lower index comes first; NaN counts as the largest."""
    k = int(k)
    n = input.shape[_dim(dim, input.ndim, "topk")] if input.ndim else 1
    if not 0 <= k <= n:
        raise RuntimeError(f"topk: k ({k}) is out of range for a dimension of size {n}")
    if input.ndim == 0:
        return topk_result(input * 1, Tensor._wrap(np.zeros((), dtype=np.int64)))
    dim = _dim(dim, input.ndim, "topk")
    order = _order(input.data, dim, descending=largest)  # a full sort: simple, exact order for ties
    indices = backend.get_array_module(order).take(order, np.arange(k), axis=dim).astype(np.int64, copy=False)
    return topk_result(Gather.apply(input, index=indices, dim=dim, distinct=True), Tensor._wrap(indices))


def argmax(input, dim=None, keepdim=False):
    return input.argmax(dim, keepdim)


def argmin(input, dim=None, keepdim=False):
    return input.argmin(dim, keepdim)


Tensor.sort, Tensor.argsort, Tensor.topk = sort, argsort, topk


def multinomial(input, num_samples, replacement=False, *, generator=None):
    """Draw ``num_samples`` category indices per row of ``input`` (1-D, or 2-D: one row per
    distribution), with probability proportional to the row's weights (they need not sum to 1).
    Without replacement each draw removes its category. Uses tinyllm's generator (``manual_seed``),
    or ``generator`` (a NumPy Generator); its stream is not torch's."""
    weights = input.data if isinstance(input, Tensor) else np.asarray(input)
    if not backend.is_floating(weights.dtype):
        raise RuntimeError(f"multinomial only supports floating-point dtypes for input, got: {weights.dtype}")
    if weights.ndim not in (1, 2):
        raise RuntimeError(f"multinomial: prob_dist must be 1 or 2 dim, got shape {weights.shape}")
    num_samples = int(num_samples)
    if num_samples <= 0:
        raise RuntimeError(f"multinomial: cannot sample n_sample <= 0 samples (got {num_samples})")
    n_categories = weights.shape[-1]
    if not replacement and num_samples > n_categories:
        raise RuntimeError(f"multinomial: cannot sample n_sample > prob_dist.size(-1) samples without "
                           f"replacement ({num_samples} > {n_categories})")
    rows = np.asarray(backend.to_device(weights, "cpu") if backend.device_of(weights) != "cpu" else weights,
                      dtype=np.float64).reshape(-1, n_categories)  # (R, C)
    if not np.all(np.isfinite(rows)) or np.any(rows < 0):
        raise RuntimeError("multinomial: probability tensor contains either `inf`, `nan` or element < 0")
    totals = rows.sum(axis=1)
    if np.any(totals <= 0):
        raise RuntimeError("multinomial: invalid multinomial distribution (sum of probabilities <= 0)")
    rng = generator if generator is not None else backend.rng()
    if replacement:
        # inverse CDF: u * total lands in category c when cdf[c-1] <= u * total < cdf[c], so a zero
        # weight (cdf[c-1] == cdf[c]) is never drawn, and u < 1 keeps it below the last category
        cdf = np.cumsum(rows, axis=1)  # (R, C)
        u = rng.random((rows.shape[0], num_samples)) * cdf[:, -1:]  # (R, S)
        samples = np.array([np.searchsorted(c, x, side="right") for c, x in zip(cdf, u)]).reshape(u.shape)
    else:
        # exponential race: category c finishes at E_c / w_c; the first S to finish are a draw of S
        # without replacement, each one in proportion to the weights left (zero weights come last)
        with np.errstate(divide="ignore"):
            finish = rng.standard_exponential(rows.shape) / rows  # (R, C)
        samples = np.argsort(finish, axis=1, kind="stable")[:, :num_samples]
    samples = samples.astype(np.int64).reshape(weights.shape[:-1] + (num_samples,))
    if backend.device_of(weights) != "cpu":
        samples = backend.to_device(samples, backend.device_of(weights))
    return Tensor._wrap(samples)


Tensor.multinomial = multinomial
