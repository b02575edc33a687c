"""``BackwardHook``: how ``Module.register_full_backward_hook`` and ``register_full_backward_pre_hook``
reach the engine (torch's ``torch.utils.hooks.BackwardHook``), used only while such a hook is registered.

When a module has backward hooks, its tensor inputs and outputs pass through identity ops, so the
engine reaches a node when all of their gradients are known. Every op here has one output, so the
"one node with many outputs" torch uses is two steps: ``_Gather`` (inputs: the tensors; output: a 0-d
placeholder) and one ``_Pass`` per tensor (the placeholder in, the tensor's array out). Each ``_Pass``
keeps the gradient it gets; the ``_Gather`` runs after all of them (it is their common input), calls
the hooks with the whole tuple and hands the results on.
"""
from .. import backend
from ..autograd import Function, Tensor, grad_mode


class _Gather(Function):
    def forward(ctx, *arrays, on_backward):
        ctx.on_backward = on_backward
        return backend.get_array_module(arrays[0]).zeros((), dtype=arrays[0].dtype)

    def backward(ctx, grad):
        return ctx.on_backward()


class _Pass(Function):
    def forward(ctx, placeholder, array, grads, slot):
        ctx.grads, ctx.slot = grads, slot
        return array

    def backward(ctx, grad):
        ctx.grads[ctx.slot] = grad
        return backend.get_array_module(grad).zeros((), dtype=grad.dtype), None


class BackwardHook:
    """One module call's backward hooks: wraps its inputs (``setup_input_hook``) and outputs
    (``setup_output_hook``) and runs ``hook(module, grad_input, grad_output)`` and
    ``pre_hook(module, grad_output)`` with torch's tuples: one entry per positional argument (or
    output). As torch: in grad_input a non-Tensor argument gets None, and a Tensor that needs no
    gradient, or got none, gets zeros; in grad_output an output that got no gradient gets None."""

    def __init__(self, module, user_hooks, user_pre_hooks):
        self.module, self.user_hooks, self.user_pre_hooks = module, user_hooks, user_pre_hooks
        self.grad_outputs = None
        self.n_inputs = self.n_outputs = 0
        self.input_index = self.output_index = None  # positions of the wrapped tensors

    def setup_input_hook(self, args):
        self.n_inputs = len(args)
        self.input_zeros = [(i, a.shape, a.dtype, backend.get_array_module(a.data))
                            for i, a in enumerate(args) if isinstance(a, Tensor)]
        args, self.input_index, self.input_grads = _wrap(args, self._inputs_backward)
        return args

    def setup_output_hook(self, output):
        outputs = output if isinstance(output, tuple) else (output,)
        self.n_outputs = len(outputs)
        outputs, self.output_index, self.output_grads = _wrap(outputs, self._outputs_backward)
        return outputs if isinstance(output, tuple) else outputs[0]

    def _outputs_backward(self):
        """All output gradients are known: the pre-hooks, then (when no input needs a gradient, so
        no input node will run) the hooks with an all-None grad_input."""
        grad_outputs = _pack(self.output_index, self.output_grads, self.n_outputs)
        for hook in list(self.user_pre_hooks.values()):
            result = hook(self.module, grad_outputs)
            if result is not None:
                grad_outputs = _checked(result, len(grad_outputs), "grad_output")
        if self.input_index is None:
            grad_inputs = (None,) * self.n_inputs
            for hook in list(self.user_hooks.values()):
                result = hook(self.module, grad_inputs, grad_outputs)
                if result is not None and any(g is not None for g in result):
                    raise RuntimeError("Backward hook for Modules where no input requires gradient should "
                                       "always return None or None for all gradients.")
        else:
            self.grad_outputs = grad_outputs
        self.output_grads[:] = [None] * len(self.output_grads)
        return tuple(_array(grad_outputs[i]) for i in self.output_index)

    def _inputs_backward(self):
        """All input gradients are known: the hooks, each seeing the last one's grad_input."""
        grad_inputs = list(_pack(self.input_index, self.input_grads, self.n_inputs))
        self.input_grads[:] = [None] * len(self.input_grads)
        for i, shape, dtype, xp in self.input_zeros:
            if grad_inputs[i] is None:
                grad_inputs[i] = Tensor._wrap(xp.zeros(shape, dtype=dtype))
        grad_inputs = tuple(grad_inputs)
        if self.grad_outputs is not None:  # else the gradient reached the inputs without the outputs
            for hook in list(self.user_hooks.values()):
                result = hook(self.module, grad_inputs, self.grad_outputs)
                if result is not None:
                    grad_inputs = _checked(result, len(grad_inputs), "grad_input")
            self.grad_outputs = None
        return tuple(_array(grad_inputs[i]) for i in self.input_index)


def _wrap(values, on_backward):
    """``values`` with each Tensor that requires grad passed through a ``_Pass`` of one shared
    ``_Gather``; the wrapped positions; and the list the ``_Pass`` ops fill with their gradients."""
    index = [i for i, v in enumerate(values) if isinstance(v, Tensor) and v.requires_grad]
    if not index or not grad_mode.enabled:
        return values, None, None
    grads = [None] * len(index)
    placeholder = _Gather.apply(*[values[i] for i in index], on_backward=on_backward)
    values = list(values)
    for slot, i in enumerate(index):
        values[i] = _Pass.apply(placeholder, values[i].data, grads=grads, slot=slot)
    return tuple(values), index, grads


def _pack(index, grads, n):
    """One entry per position: the gradient (as a Tensor) where one was kept, else None."""
    packed = [None] * n
    for i, g in zip(index or (), grads or ()):
        packed[i] = None if g is None else Tensor._wrap(g)
    return tuple(packed)


def _checked(result, n, what):
    result = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    if len(result) != n:
        raise RuntimeError(f"Backward hook returned an invalid number of {what}, got {len(result)}, but expected {n}")
    return result


def _array(g):
    return g.data if isinstance(g, Tensor) else g
