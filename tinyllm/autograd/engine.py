"""The reverse-mode engine: ``Tensor``, ``Function`` and ``backward``.

A Tensor wraps an array (``.data``) and, when it was produced by an op that needs gradients,
remembers that op's context (``._ctx``): a ``Function`` instance holding whatever its forward pass
saved for the backward pass, and its inputs' graph nodes (``parents``: their contexts, or the leaves
themselves), never the intermediate tensors, so their arrays die with them unless a backward saved
them (as in PyTorch, where ``grad_fn`` links to ``grad_fn``). ``backward()`` sorts that graph with an
explicit stack (never recursion, so a 20,000-op chain is fine), walks it in reverse, and leaves the
gradients of leaves in ``.grad`` as plain arrays. The ops themselves live in ``ops.py``.
"""
import math

import numpy as np

from .. import backend
from ..kernels import elementwise

_grad_enabled = True


def is_grad_enabled():
    return _grad_enabled


class set_grad_enabled:
    """Turn graph recording on or off: as a call (``tl.set_grad_enabled(False)``), a context manager
    (the previous mode comes back on exit) or a decorator, as in torch."""

    def __init__(self, mode):
        global _grad_enabled
        self.previous, self.mode = _grad_enabled, bool(mode)
        _grad_enabled = self.mode

    def __enter__(self):
        pass

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self.previous

    def __call__(self, fn):
        import functools
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            global _grad_enabled
            previous, _grad_enabled = _grad_enabled, mode
            try:
                return fn(*args, **kwargs)
            finally:
                _grad_enabled = previous

        return wrapper


class no_grad(set_grad_enabled):
    """``with tl.no_grad():``, ``@tl.no_grad()`` or ``@tl.no_grad``: ops record no graph inside."""

    _mode = False

    def __new__(cls, fn=None):
        if fn is not None and callable(fn):  # used bare, as @tl.no_grad
            return cls()(fn)
        return super().__new__(cls)

    def __init__(self, fn=None):
        self.mode = self._mode  # the mode switches on __enter__, not at construction

    def __enter__(self):
        global _grad_enabled
        self.previous, _grad_enabled = _grad_enabled, self.mode


class enable_grad(no_grad):
    _mode = True


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: undo NumPy broadcasting in the backward pass."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


class Function:
    """One differentiable op. Subclasses define ``forward(ctx, *arrays, **options)`` returning an
    array, and ``backward(ctx, grad)`` returning one gradient (or None) per positional input.

    ``ctx`` is the Function instance: the forward pass keeps on it whatever the backward needs.
    ``ctx.needs_input_grad[i]`` says whether input i wants a gradient (never under no_grad), so work
    can be skipped.

    ``fresh_grads = True`` promises that every gradient ``backward`` returns is a new array that
    nothing else holds (not ``grad`` itself, not a view of it, not one array for two inputs). The
    engine may then keep it as it is, adding into it and handing it to a leaf as ``.grad`` without
    copying it first. Disjoint views of one new buffer that nothing else holds count as new arrays
    (attention's dq, dk, dv laid out as its q, k, v lie in their projection: see SliceGrad.dense).

    ``ctx.last_backward`` is True while the engine runs the backward that frees the graph
    (``retain_graph=False``): what the forward saved dies afterwards, so backward may write its
    result into a saved array that only ctx holds.
    """

    fresh_grads = False
    last_backward = False
    retained = None  # the output tensor, once it called retain_grad()

    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **options):
        ctx = cls()
        arrays = [x.data if isinstance(x, Tensor) else x for x in inputs]
        if backend._cupy is not None:  # only a machine with CuPy can mix devices
            _check_same_device(cls.__name__, arrays)
        # under no_grad nothing will run backward, so a forward pass need save nothing for it
        if _grad_enabled:
            needs = tuple([isinstance(x, Tensor) and x.requires_grad for x in inputs])
            requires_grad = True in needs
        else:  # generation's path: skip the per-input checks
            needs = (False,) * len(inputs)
            requires_grad = False
        ctx.needs_input_grad = needs
        out = ctx.forward(*arrays, **options)
        if isinstance(out, np.generic):  # NumPy reductions return scalars; .data is always an array
            out = np.asarray(out)
        result = Tensor._wrap(out, requires_grad)
        if requires_grad:
            # the graph links contexts, not tensors: a parent is its own context (the op that made
            # it), a leaf that wants a gradient, or None. So an intermediate tensor's array is freed
            # once the user drops it, unless a backward saved it (GELU's input, for one, is not).
            ctx.parents = tuple([_node_of(x) if need else None for x, need in zip(inputs, needs)])
            result._ctx = ctx
        return result


def _node_of(tensor):
    """The graph node of a tensor that requires grad: the context that made it, or the leaf itself."""
    return tensor if tensor._ctx is None else tensor._ctx


def _check_same_device(op, arrays):
    devices = {backend.device_of(a) for a in arrays if hasattr(a, "shape")}
    if len(devices) > 1:
        raise RuntimeError(f"{op}: expected all tensors on the same device, got tensors on "
                           f"{' and '.join(sorted(devices))} (move them with .to(device))")


class Tensor:
    """An n-dimensional array with an optional gradient, shaped like ``torch.Tensor``."""

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_retains_grad", "__weakref__")
    __array_priority__ = 1000  # so ``ndarray + Tensor`` defers to Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _to_array(data, dtype, legacy_constructor=True)
        if backend._device != "cpu":  # inside ``with tl.device('cuda')``
            self.data = backend.to_device(self.data, backend._device)
        self.grad = None
        self._ctx = None
        self._retains_grad = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, array, requires_grad=False):
        """Fast constructor for op outputs: no conversion, no checks."""
        t = object.__new__(cls)
        t.data = array
        t.grad = None
        t._ctx = None
        t._retains_grad = False
        t.requires_grad = requires_grad
        return t

    # -- basic properties ---------------------------------------------------------------------
    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def device(self):
        return "cpu" if backend.get_array_module(self.data) is np else "cuda"

    @property
    def is_leaf(self):
        return self._ctx is None

    def size(self, dim=None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def dim(self):
        return self.data.ndim

    def numel(self):
        return int(self.data.size)

    def __len__(self):
        return len(self.data)

    def numpy(self):
        if backend.get_array_module(self.data) is not np:
            return self.data.get()
        return self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item(): only a one-element tensor can be converted, got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        return Tensor._wrap(self.data, False)

    def requires_grad_(self, requires_grad=True):
        if requires_grad and not backend.is_floating(self.data.dtype):
            raise TypeError(f"only floating-point tensors can require gradients, got dtype {self.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after backward (leaves always keep it)."""
        self._retains_grad = True
        if self._ctx is not None:  # the graph reaches its context, not the tensor
            self._ctx.retained = self
        return self

    def zero_(self):
        self.data[...] = 0
        return self

    def __repr__(self):
        extra = ", requires_grad=True" if self.requires_grad else ""
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{extra})"

    def __hash__(self):
        return id(self)

    def __bool__(self):
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor with shape {self.shape} is ambiguous")
        return bool(self.data)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    # -- the backward pass ----------------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        ``grad`` is the upstream gradient; it may be omitted only for one-element tensors.
        The graph is freed afterwards unless ``retain_graph=True``.
        """
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no graph "
                               "(did you create it under no_grad, or forget requires_grad=True?)")
        xp = backend.get_array_module(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward(): grad can be implicitly created only for a scalar "
                                   f"output, but this tensor has shape {self.shape}; pass grad=")
            grad = xp.ones_like(self.data)
        else:
            grad = grad.data if isinstance(grad, Tensor) else xp.asarray(grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward(): grad has shape {grad.shape} but the tensor has shape {self.shape}")

        root = _node_of(self)
        grads = {id(root): grad}
        owned = set()  # keys whose gradient array the engine allocated itself (safe to add into)
        for node in _topological_order(root):
            key = id(node)
            g = grads.pop(key, None)
            if g is None:  # this node was not reached by any gradient (e.g. an unused output)
                continue
            fresh = key in owned
            owned.discard(key)
            if isinstance(g, SliceGrad):
                g, fresh = g.dense(), True
            if isinstance(node, Tensor):  # a leaf may keep an array only the engine holds
                _accumulate_leaf_grad(node, g, fresh)
                continue
            if node.retained is not None:  # its gradient flows on, so .grad gets a copy
                _accumulate_leaf_grad(node.retained, g)
            node.last_backward = not retain_graph
            input_grads = node.backward(g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            new_arrays = node.fresh_grads
            for parent, pg in zip(node.parents, input_grads):
                if pg is None or parent is None:
                    continue
                if isinstance(pg, SliceGrad):  # indexing's: its one piece is g itself, ours or not
                    pg.fresh = fresh and len(pg.pieces) == 1 and pg.pieces[0][1] is g
                key = id(parent)
                previous = grads.get(key)
                if previous is None:
                    grads[key] = pg
                    if new_arrays and not isinstance(pg, SliceGrad):
                        owned.add(key)
                else:
                    grads[key] = _sum_grads(previous, pg, key, owned, new_arrays)
            if not retain_graph:
                _free(node)

    # -- operators are attached in ops.py ------------------------------------------------------


def _topological_order(root):
    """Nodes reachable from ``root`` (contexts and leaves), each after every node that consumes it
    (root first)."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if isinstance(node, Tensor):  # a leaf
            continue
        parents = node.parents
        if parents is None:
            raise RuntimeError("backward(): trying to backward through the graph a second time; its "
                               "saved values were freed by the first backward (use retain_graph=True)")
        for p in parents:
            if p is not None and id(p) not in visited:
                stack.append((p, False))
    order.reverse()
    return order


class SliceGrad:
    """A gradient that is zero outside some basic-index regions: what indexing's backward returns.

    Kept lazy, so that the pieces of a ``split`` (the q, k, v of attention) are written into one
    buffer when the tensor's backward runs, instead of each allocating a full-size zero array and the
    engine adding those. Pieces that tile the tensor along its first dim (``x[0]``, ``x[1]``, ...
    once each) need no zero-fill. ``strides``: the indexed array's, so the buffer is laid out in its
    memory order (then the backward of a permuted view of a projection is a view again, not a copy).
    ``fresh``: only the engine holds the pieces (the engine sets it; see Function.fresh_grads).
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
            grad = _empty_in_order(xp, self.shape, dtype, self.strides)
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
        of this gradient's size that lie exactly where ``grad[index]`` of that array, laid out in
        ``strides``' order, does (attention's dq, dk, dv, written into one buffer laid out like the
        qkv projection they came from). Only for fresh pieces: nobody else may hold that array."""
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


def _empty_in_order(xp, shape, dtype, strides):
    """An uninitialised array of ``shape`` whose memory runs in the order of ``strides`` (largest
    first), or C order without them."""
    return _in_order(xp.empty(math.prod(shape), dtype=dtype), shape, strides)


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


def _sum_grads(a, b, key, owned, b_fresh=False):
    """a + b for two gradients of one tensor (either may be a SliceGrad). Adds in place into ``a``
    when the engine owns it (it allocated it, so nobody else holds it), else into ``b`` when that is
    a fresh array (``b_fresh``: see Function.fresh_grads), if the sum keeps that array's shape and dtype."""
    if isinstance(a, SliceGrad):
        if isinstance(b, SliceGrad) and b.shape == a.shape:
            return a.add(b)  # still lazy: the buffer is filled once, when the tensor's backward runs
        a = a.dense()
        owned.add(key)
    if isinstance(b, SliceGrad):
        if key in owned and all(_holds_sum(a, b.shape, v.dtype) for _, v in b.pieces):
            for index, value in b.pieces:
                a[index] += value
            return a
        b, b_fresh = b.dense(), True
    if key in owned and _holds_sum(a, b.shape, b.dtype):
        return elementwise.add_inplace(a, b)  # a += b (on both cores when large)
    if b_fresh and _holds_sum(b, a.shape, a.dtype):
        elementwise.add_inplace(b, a)
        owned.add(key)
        return b
    owned.add(key)
    return a + b  # a fresh array: ours from now on


def _holds_sum(target, shape, dtype):
    """Can ``target += (an array of this shape and dtype)`` hold the sum?"""
    return (getattr(target, "ndim", 0) > 0 and target.shape == shape
            and np.result_type(target.dtype, dtype) == target.dtype)


def _accumulate_leaf_grad(node, g, fresh=False):
    """``fresh``: only the engine holds ``g`` (see ``Function.fresh_grads``), so it may become .grad."""
    if g.dtype != node.data.dtype or g.shape != node.data.shape:
        g = g.astype(node.data.dtype, copy=False).reshape(node.data.shape)
    if node.grad is None:
        # own the buffer (the same array may flow to several inputs), and never keep a NumPy scalar
        keep = fresh and g.ndim > 0 and g.flags.c_contiguous and getattr(g.flags, "writeable", True)
        node.grad = g if keep else backend.get_array_module(g).array(g, copy=True)
    else:
        node.grad = elementwise.add_inplace(node.grad, g)  # node.grad += g (on both cores when large)


def _free(ctx):
    """Drop everything a context saved, keeping only the marker that it has been used."""
    ctx.__dict__.clear()
    ctx.parents = None


def _to_array(data, dtype=None, legacy_constructor=False):
    """Convert user data to a backing array, following the dtype rules of the design card.

    Floating arrays keep their dtype, integer and bool arrays stay as they are, and Python scalars
    and lists become the default dtype (as ``torch.Tensor(...)`` does). ``tl.tensor`` instead
    infers ints from int-only lists, as ``torch.tensor`` does (``legacy_constructor=False``).
    """
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.get_array_module(data)
    if dtype is not None:
        return xp.asarray(data, dtype=np.dtype(dtype) if xp is np else dtype)
    if hasattr(data, "dtype") and hasattr(data, "shape") and not isinstance(data, np.generic):
        return data if isinstance(data, xp.ndarray) else xp.asarray(data)
    if isinstance(data, np.generic):
        return np.asarray(data)
    array = np.asarray(data)
    if array.dtype.kind == "f" or array.dtype.kind == "c" or (legacy_constructor and array.dtype.kind in "iub"):
        if array.dtype.kind == "b" and not legacy_constructor:
            return array
        return array.astype(backend.get_default_dtype())
    if array.dtype == object:
        raise TypeError(f"cannot build a tensor from {type(data).__name__} data with ragged or mixed contents")
    return array
