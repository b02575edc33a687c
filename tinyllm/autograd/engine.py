"""The reverse-mode engine: ``Tensor``, ``Function`` and ``backward``.

A Tensor wraps an array (``.data``). When an op that needs gradients made it, it also holds that op's
context (``._ctx``): a ``Function`` instance with what its forward saved for the backward and its
inputs' graph nodes (``parents``: their contexts, or the leaves themselves), never the intermediate
tensors, so their arrays die with them unless a backward saved them (torch's ``grad_fn`` design).

``backward()`` sorts that graph with an explicit stack (never recursion: a 20,000-op chain is fine),
calls each op's backward in reverse order, sums the gradients that reach each node, and leaves the
leaves' gradients in ``.grad`` as plain arrays. A node's hooks (``Tensor.register_hook``: on a leaf,
or on the context that made a non-leaf, as ``retain_grad`` is) see its summed gradient and may replace
it before it flows on. The ops live in ``ops.py``, ``shapes.py`` and ``fused.py``; the faster way of
summing gradients (fewer copies) lives in ``grad_buffers.py``.
"""
from collections import OrderedDict

import numpy as np

from .. import backend
from . import grad_buffers, grad_mode
from .hooks import RemovableHandle


class Function:
    """One differentiable op. Subclasses define ``forward(ctx, *arrays, **options)`` returning an
    array, and ``backward(ctx, grad)`` returning one gradient (or None) per positional input.

    ``ctx`` is the Function instance: the forward pass keeps on it whatever the backward needs.
    ``ctx.needs_input_grad[i]`` says whether input i wants a gradient (never under no_grad), so work
    can be skipped.

    Two promises an op may make, which only the fast path (``grad_buffers.py``) uses:
    ``fresh_grads = True``: every gradient ``backward`` returns is a new array that nothing else holds
    (not ``grad``, not a view of it, not one array for two inputs; disjoint views of one new buffer
    count as new). ``ctx.last_backward`` is True when the graph is freed after this backward, so the
    backward may write its result into an array only ctx holds.
    """

    fresh_grads = False
    last_backward = False
    retained = None  # the output tensor, once it called retain_grad()
    _backward_hooks = None  # the output tensor's hooks, once it called register_hook()

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
        if grad_mode.enabled:
            needs = tuple([isinstance(x, Tensor) and x.requires_grad for x in inputs])
            requires_grad = True in needs
        else:  # under no_grad nothing will run backward, so the forward need save nothing for it
            needs = (False,) * len(inputs)
            requires_grad = False
        ctx.needs_input_grad = needs
        out = ctx.forward(*arrays, **options)
        if isinstance(out, np.generic):  # NumPy reductions return scalars; .data is always an array
            out = np.asarray(out)
        result = Tensor._wrap(out, requires_grad)
        if requires_grad:  # link contexts, not tensors (see the module docstring)
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
    """An n-dimensional array with an optional gradient, shaped like ``torch.Tensor``. Its operators
    and methods are attached beside the op each one calls (``ops.py``, ``shapes.py``, ``fused.py``)."""

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "_retains_grad", "_backward_hooks", "__weakref__")
    __array_priority__ = 1000  # so ``ndarray + Tensor`` defers to Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = backend.to_array(data.data if isinstance(data, Tensor) else data, dtype, legacy_constructor=True)
        if backend._device != "cpu":  # inside ``with tl.device('cuda')``
            self.data = backend.to_device(self.data, backend._device)
        self.grad = None
        self._ctx = None
        self._retains_grad = False
        self._backward_hooks = None
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
        t._backward_hooks = None
        t.requires_grad = requires_grad
        return t

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    is_leaf = property(lambda self: self._ctx is None)

    @property
    def device(self):
        return "cpu" if backend.get_array_module(self.data) is np else "cuda"

    def size(self, dim=None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def dim(self):
        return self.data.ndim

    def numel(self):
        return int(self.data.size)

    def __len__(self):
        return len(self.data)

    def numpy(self):
        return self.data if backend.get_array_module(self.data) is np else self.data.get()

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
        """Keep ``.grad`` on this non-leaf tensor after backward (leaves always keep it). As torch, it
        is the gradient after this tensor's hooks, and a second backward adds to it (out of place)."""
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        self._retains_grad = True
        if self._ctx is not None:  # the graph reaches its context, not the tensor
            self._ctx.retained = self
        return self

    retains_grad = property(lambda self: self._retains_grad and self._ctx is not None)

    def register_hook(self, hook):
        """``hook(grad)`` runs each time this tensor's gradient is known (summed over all its uses),
        before it flows on; ``grad`` is a Tensor, and a return value other than None (a Tensor or an
        array of the same shape) replaces it. Several hooks run in registration order, each seeing
        the last one's result. On a leaf the result is what gets accumulated into ``.grad``.
        Returns a handle whose ``remove()`` removes the hook."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self._backward_hooks is None:
            self._backward_hooks = OrderedDict()
            if self._ctx is not None:  # the graph reaches its context, not the tensor
                self._ctx._backward_hooks = self._backward_hooks
        handle = RemovableHandle(self._backward_hooks)
        self._backward_hooks[handle.id] = hook
        return handle

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

        sums = GradientSums() if backend.plain() else grad_buffers.ReusingSums()
        root = _node_of(self)
        sums.add(root, grad)
        for node in _topological_order(root):
            g = sums.take(node)
            if g is None:  # no gradient reached this node (an output nobody used)
                continue
            if node._backward_hooks:
                g = _run_hooks(node._backward_hooks, g, sums)
            if isinstance(node, Tensor):  # a leaf
                sums.into_grad(node, g)
                continue
            if node.retained is not None:
                _retain(node.retained, g)
            node.last_backward = sums.reuses_buffers and not retain_graph
            input_grads = node.backward(g)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for parent, parent_grad in zip(node.parents, input_grads):
                if parent is not None and parent_grad is not None:
                    sums.add(parent, parent_grad, node)
            if not retain_graph:
                _free(node)


def _run_hooks(hooks, grad, sums):
    """``grad`` after the hooks of ``Tensor.register_hook``, each seeing the last one's result."""
    sums.release(grad)  # a hook may keep the array, so the engine must not write into it again
    for hook in list(hooks.values()):
        result = hook(Tensor._wrap(grad))
        if result is not None:
            result = result.data if isinstance(result, Tensor) else backend.get_array_module(grad).asarray(result)
            if result.shape != grad.shape:
                raise RuntimeError(f"hook {getattr(hook, '__name__', hook)!r} has changed the size of value: "
                                   f"expected {grad.shape}, got {result.shape}")
            grad = result
    return grad


def _retain(tensor, grad):
    """A non-leaf's ``.grad`` (retain_grad): a copy, then out-of-place sums, as torch."""
    grad = _like(tensor, grad)
    tensor.grad = backend.get_array_module(grad).array(grad, copy=True) if tensor.grad is None else tensor.grad + grad


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
        if node.parents is None:
            raise RuntimeError("backward(): trying to backward through the graph a second time; its "
                               "saved values were freed by the first backward (use retain_graph=True)")
        for p in node.parents:
            if p is not None and id(p) not in visited:
                stack.append((p, False))
    order.reverse()
    return order


class GradientSums:
    """The gradients that reach each graph node during one backward pass, summed. The plain way:
    every sum is a new array and every ``.grad`` a copy. ``grad_buffers.ReusingSums`` gives the same
    numbers with fewer copies; ``TINYLLM_PLAIN=1`` selects this one."""

    reuses_buffers = False

    def __init__(self):
        self.grads = {}

    def add(self, node, grad, op=None):
        """Add ``grad`` to ``node``'s sum; ``op`` is the context whose backward returned it."""
        previous = self.grads.get(id(node))
        self.grads[id(node)] = grad if previous is None else previous + grad

    def take(self, node):
        """``node``'s summed gradient, once every consumer has added to it (None if none did)."""
        return self.grads.pop(id(node), None)

    def release(self, grad):
        """Someone outside the engine (a hook) has seen ``grad``: never write into it. Nothing to do
        here, since this class writes only into arrays it allocated for ``.grad``."""

    def into_grad(self, tensor, grad):
        """Accumulate ``grad`` into ``tensor.grad``."""
        grad = _like(tensor, grad)
        if tensor.grad is None:
            tensor.grad = backend.get_array_module(grad).array(grad, copy=True)  # never a NumPy scalar
        else:
            tensor.grad += grad  # in place, as torch accumulates


def _like(tensor, grad):
    """``grad`` in ``tensor``'s dtype and shape (an op may return a broadcastable or wider one)."""
    if grad.dtype != tensor.data.dtype or grad.shape != tensor.data.shape:
        grad = grad.astype(tensor.data.dtype, copy=False).reshape(tensor.data.shape)
    return grad


def _free(ctx):
    """Drop everything a context saved, keeping only the marker that it has been used."""
    ctx.__dict__.clear()
    ctx.parents = None

