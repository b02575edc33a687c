"""The engine's fast path: summing gradients with fewer copies. ``TINYLLM_PLAIN=1`` turns it off.

``ReusingSums`` does what the engine's plain ``GradientSums`` does, with the same numbers, but
- adds into a gradient array in place when only the engine holds it (it allocated it, or an op with
  ``Function.fresh_grads`` returned it), instead of allocating a new sum;
- hands such an array to a leaf as its ``.grad`` instead of copying it;
- keeps indexing's gradient lazy (``SliceGrad``), so the pieces of a ``split`` (attention's q, k, v)
  are written into one buffer, or, when they already lie in one buffer laid out like the tensor
  (attention's packed dq, dk, dv), that buffer is taken as it is.
tests/test_plain_mode.py holds the two to the same results.
"""
import math

import numpy as np

from .. import backend
from ..kernels import elementwise


class ReusingSums:
    reuses_buffers = True  # ops may also write into what their forward saved (Function.last_backward)

    def __init__(self):
        self.grads = {}
        self.owned = set()  # ids of nodes whose gradient array only the engine holds
        self.taken, self.taken_owned = None, False  # the gradient take() returned last

    def add(self, node, grad, op=None):
        key = id(node)
        if isinstance(grad, SliceGrad):  # its one piece may be the gradient that reached op
            grad.fresh = self.taken_owned and len(grad.pieces) == 1 and grad.pieces[0][1] is self.taken
        previous = self.grads.get(key)
        if previous is None:
            self.grads[key] = grad
            if op is not None and op.fresh_grads and not isinstance(grad, SliceGrad):
                self.owned.add(key)
        else:
            self.grads[key] = self._sum(previous, grad, key, op is not None and op.fresh_grads)

    def take(self, node):
        key = id(node)
        g = self.grads.pop(key, None)
        owned = key in self.owned
        self.owned.discard(key)
        if isinstance(g, SliceGrad):
            g, owned = g.dense(), True
        self.taken, self.taken_owned = g, owned
        return g

    def release(self, grad):
        """A hook has seen ``grad`` (the gradient take() returned) and may keep it: stop owning it,
        so it is neither written into nor handed to a leaf as its ``.grad``."""
        if grad is self.taken:
            self.taken_owned = False

    def into_grad(self, tensor, grad):
        """Like the plain engine's; a leaf keeps an array only the engine holds, without a copy."""
        keep = grad is self.taken and self.taken_owned and tensor.is_leaf
        if grad.dtype != tensor.data.dtype or grad.shape != tensor.data.shape:
            grad = grad.astype(tensor.data.dtype, copy=False).reshape(tensor.data.shape)
        if tensor.grad is None:
            keep = keep and grad.ndim > 0 and grad.flags.c_contiguous and getattr(grad.flags, "writeable", True)
            tensor.grad = grad if keep else backend.get_array_module(grad).array(grad, copy=True)
        else:
            tensor.grad = elementwise.add_inplace(tensor.grad, grad)  # .grad += grad, on both cores when large

    def _sum(self, a, b, key, b_fresh):
        """a + b for two gradients of one node (either may be a SliceGrad), in place into ``a`` when
        the engine owns it, else into ``b`` when it is fresh, if the sum keeps that array's shape
        and dtype."""
        owned = self.owned
        if isinstance(a, SliceGrad):
            if isinstance(b, SliceGrad) and b.shape == a.shape:
                return a.add(b)  # still lazy: the buffer is filled once, when the node's backward runs
            a = a.dense()
            owned.add(key)
        if isinstance(b, SliceGrad):
            if key in owned and all(_holds_sum(a, b.shape, v.dtype) for _, v in b.pieces):
                for index, value in b.pieces:
                    a[index] += value
                return a
            b, b_fresh = b.dense(), True
        if key in owned and _holds_sum(a, b.shape, b.dtype):
            return elementwise.add_inplace(a, b)
        if b_fresh and _holds_sum(b, a.shape, a.dtype):
            elementwise.add_inplace(b, a)
            owned.add(key)
            return b
        owned.add(key)
        return a + b  # a new array: ours from now on


def _holds_sum(target, shape, dtype):
    """Can ``target += (an array of this shape and dtype)`` hold the sum?"""
    return (getattr(target, "ndim", 0) > 0 and target.shape == shape
            and np.result_type(target.dtype, dtype) == target.dtype)


class SliceGrad:
    """A gradient that is zero outside some basic-index regions: what indexing's backward returns
    outside plain mode. Pieces that tile the tensor along its first dim (``x[0]``, ``x[1]``, ... once
    each) need no zero-fill. ``strides``: the indexed array's, so the buffer is laid out in its memory
    order (then the backward of a permuted view of a projection is a view again, not a copy).
    ``fresh``: only the engine holds the pieces (``ReusingSums.add`` sets it).
    """

    __slots__ = ("shape", "strides", "pieces", "fresh")

    def __init__(self, shape, index, value, strides=None):
        self.shape, self.strides, self.pieces = shape, strides, [(index, value)]
        self.fresh = False

    def add(self, other):
        self.pieces += other.pieces
        self.fresh = self.fresh and other.fresh
        return self

    def dense(self):
        pieces = self.pieces
        xp = backend.get_array_module(pieces[0][1])
        dtype = pieces[0][1].dtype if len(pieces) == 1 else np.result_type(*[v.dtype for _, v in pieces])
        if self._tiles_first_dim():
            grad = self._shared_buffer(dtype) if self.fresh and xp is np else None
            if grad is not None:  # the pieces already lie where the buffer would hold them
                return grad
            grad = _in_order(xp.empty(math.prod(self.shape), dtype=dtype), self.shape, self.strides)
            for index, value in pieces:
                grad[index] = value
            return grad
        grad = xp.zeros(self.shape, dtype=dtype)
        for n, (index, value) in enumerate(pieces):
            if n == 0:
                grad[index] = value
            else:
                grad[index] += value
        return grad

    def _shared_buffer(self, dtype):
        """The buffer ``dense`` would fill, when the pieces already are its parts: views of one array
        of this gradient's size lying exactly where ``grad[index]`` of that array, laid out in
        ``strides``' order, does. Only for fresh pieces: nobody else may hold that array."""
        base = self.pieces[0][1].base
        if (base is None or base.dtype != dtype or not base.flags.c_contiguous
                or base.size != math.prod(self.shape)):
            return None
        grad = _in_order(base, self.shape, self.strides)
        for index, value in self.pieces:
            part = grad[index]
            if (value.base is not base or part.shape != value.shape or part.strides != value.strides
                    or part.ctypes.data != value.ctypes.data):
                return None
        return grad

    def _tiles_first_dim(self):
        n = self.shape[0] if self.shape else 0
        if len(self.pieces) != n or n == 0:
            return False
        seen = set()
        for index, _ in self.pieces:
            if isinstance(index, tuple):
                index = index[0] if len(index) == 1 else None
            if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
                return False
            seen.add(int(index) % n)
        return len(seen) == n


def _in_order(flat, shape, strides):
    """The contiguous array ``flat`` (of prod(shape) elements) seen as ``shape``, its memory running
    in the order of ``strides`` (largest first), or C order without them."""
    if strides is None or len(shape) < 2:
        return flat.reshape(shape)
    order = sorted(range(len(shape)), key=lambda d: -strides[d])
    inverse = [0] * len(order)
    for i, d in enumerate(order):
        inverse[d] = i
    return flat.reshape(tuple(shape[d] for d in order)).transpose(inverse)
