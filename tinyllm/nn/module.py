"""``Module`` and ``Parameter``: torch's container semantics, so torch code ports line for line.

Assigning a Parameter or a Module to an attribute registers it; ``state_dict`` returns detached
Tensors that share memory with the parameters and buffers (as torch: writing into one writes into
the model), under torch's dotted names, and ``load_state_dict`` takes such a dict back, or NumPy
arrays, or torch tensors.

Hooks (``register_forward_pre_hook``, ``register_forward_hook``) follow torch's signatures and order; they live in ordered dicts on
the module, never in ``state_dict``, and each registration returns a ``RemovableHandle``.
"""
import warnings
from collections import OrderedDict, namedtuple

import numpy as np

from .. import backend
from ..autograd import Tensor, no_grad
from ..autograd.hooks import RemovableHandle


class Parameter(Tensor):
    """A Tensor that a Module registers as one of its parameters (requires_grad by default). As torch,
    ``Parameter(t)`` shares ``t``'s memory (``Parameter(wpe.weight[:n])`` is a view of the rows)."""

    def __init__(self, data=None, requires_grad=True):
        if data is None:  # torch's nn.Parameter(): an empty tensor of the default dtype
            data = np.empty(0, dtype=backend.get_default_dtype())
        data = data.data if isinstance(data, Tensor) else data
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class StateDictError(RuntimeError, ValueError):
    """``load_state_dict`` found missing, unexpected or wrongly shaped keys."""


IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _host_array(value):
    """A NumPy (or CuPy) array from an array, a Tensor, or anything with ``.numpy()`` (e.g. torch)."""
    if isinstance(value, Tensor):
        return value.data
    if hasattr(value, "shape") and hasattr(value, "dtype") and not hasattr(value, "detach"):
        return value
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _as_buffer(value):
    """Buffers are Tensors (as in torch), so ``to(dtype)`` and ``load_state_dict`` can write them in
    place; a plain array is wrapped (without a copy)."""
    return value if value is None or isinstance(value, Tensor) else Tensor(value)


class Module:
    """Base class of every layer and model; subclasses define ``forward``."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        # torch's hook stores: hook id -> hook, in call order, plus which ids take kwargs / always run
        for name in ("_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_forward_hooks",
                     "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_backward_hooks",
                     "_backward_pre_hooks"):
            object.__setattr__(self, name, OrderedDict())

    # -- registration ---------------------------------------------------------------------------
    # Registered parameters, buffers and submodules live in their ordered stores (torch's layout, which
    # state_dict and parameters() walk) and are mirrored into __dict__, so reading ``self.weight`` is a
    # plain lookup instead of a failed one that falls through to __getattr__ (a cost paid on every
    # generated token). ``_register`` is the one way in, keeping the two in step.
    def _register(self, store, name, value):
        store[name] = value
        if value is None:
            self.__dict__.pop(name, None)
        else:
            self.__dict__[name] = value

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {name!r} before Module.__init__() is called")
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, (Parameter, Module)):
            # as torch: reassigning keeps the name's place (so state_dict and parameters() order
            # do not change when e.g. a head's weight is tied to the embedding)
            own = params if isinstance(value, Parameter) else modules
            for store in (params, buffers, modules):
                if store is not own:
                    store.pop(name, None)
            self._register(own, name, value)
        elif name in buffers:
            self._register(buffers, name, _as_buffer(value))
        elif name in params or name in modules:
            if value is not None:
                kind = "parameter" if name in params else "submodule"
                raise TypeError(f"cannot assign a {type(value).__name__} to {kind} {name!r} "
                                f"(expected a Parameter, a Module or None)")
            self._register(params if name in params else modules, name, None)
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):  # only reached for names not in __dict__: None entries, or missing
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                self.__dict__.pop(name, None)
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        if param is None:
            self._register(self._parameters, name, None)
        else:
            setattr(self, name, param)

    def register_buffer(self, name, tensor, persistent=True):
        """A non-trainable tensor that belongs to the module (saved in state_dict if persistent)."""
        self._register(self._buffers, name, _as_buffer(tensor))
        if not persistent:
            self._non_persistent.add(name)

    def add_module(self, name, module):
        setattr(self, name, module)

    # -- traversal -----------------------------------------------------------------------------
    def named_modules(self, prefix=""):
        seen, stack = set(), [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{n}" if name else n, m) for n, m in module._modules.items() if m is not None]
            stack.extend(reversed(children))

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def _named_members(self, store, prefix="", recurse=True, remove_duplicate=True):
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_name, module in modules:
            for name, value in getattr(module, store).items():
                if value is None or (remove_duplicate and id(value) in seen):
                    continue
                seen.add(id(value))
                yield (f"{mod_name}.{name}" if mod_name else name), value

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """Each parameter once (tied weights appear under their first name), as torch."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix="", recurse=True):
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn):
        """``fn`` on every submodule, children first in registration order, then on self (torch's
        order: a module shared by two parents is visited under each)."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # -- modes and housekeeping ----------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def to(self, *args, **kwargs):
        """``to(dtype)`` casts floating parameters and buffers; ``to('cuda')`` / ``to('cpu')`` moves
        every parameter, buffer and gradient to that device. In place (the same Parameter objects,
        so optimizers keep working), and returns the module."""
        dtype, device = backend.dtype_and_device(args, kwargs)
        tensors = list(self.parameters()) + [b for b in self.buffers() if isinstance(b, Tensor)]
        if device is not None:
            device = backend._check_device(device)
            for t in tensors:
                t.data = backend.to_device(t.data, device)
                if t.grad is not None:
                    t.grad = backend.to_device(t.grad, device)
        if dtype is not None:
            dtype = np.dtype(dtype)
            for t in tensors:
                if backend.is_floating(t.dtype) and t.dtype != dtype:
                    t.data = t.data.astype(dtype)
                    if t.grad is not None:
                        t.grad = t.grad.astype(dtype)
        return self

    def cuda(self):
        return self.to("cuda")

    def cpu(self):
        return self.to("cpu")

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())

    # -- state dict ----------------------------------------------------------------------------
    def _state_items(self):
        """(name, tensor) for every parameter and persistent buffer, tied duplicates included."""
        for mod_name, module in self.named_modules():
            for store in ("_parameters", "_buffers"):
                for name, value in getattr(module, store).items():
                    if value is None or (store == "_buffers" and name in module._non_persistent):
                        continue
                    yield (f"{mod_name}.{name}" if mod_name else name), value

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """An OrderedDict of name -> Tensor under torch's names (tied weights under each name).

        As torch, each is detached but shares memory with the live parameter or buffer, so
        ``sd[k].copy_(w)`` loads ``w`` into the model; take ``.numpy().copy()`` for a snapshot.
        ``keep_vars=True`` gives the Parameters themselves.
        """
        out = OrderedDict() if destination is None else destination
        for name, t in self._state_items():
            out[prefix + name] = t if keep_vars else t.detach()
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters and buffers, cast to their dtypes.

        Raises ``StateDictError`` naming every missing, unexpected (when strict) and wrongly shaped
        key; nothing is written unless all checks pass. Returns (missing_keys, unexpected_keys).
        """
        own = OrderedDict(self._state_items())
        given = {k: _host_array(v) for k, v in state_dict.items()}
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        wrong = [f"size mismatch for {k}: the checkpoint has shape {tuple(given[k].shape)}, the model has "
                 f"{tuple(own[k].shape)}" for k in own if k in given and tuple(given[k].shape) != tuple(own[k].shape)]
        problems = []
        if strict and missing:
            problems.append("missing key(s): " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected key(s): " + ", ".join(unexpected))
        problems += wrong
        if problems:
            raise StateDictError(f"error(s) loading state_dict for {type(self).__name__}:\n  " + "\n  ".join(problems))
        with no_grad():
            for k, t in own.items():
                if k in given:
                    xp = backend.get_array_module(t.data)
                    t.data[...] = xp.asarray(given[k]).astype(t.data.dtype, copy=False)
        return IncompatibleKeys(missing, unexpected)

    # -- calling and printing ------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        if self._forward_pre_hooks or self._forward_hooks or self._backward_hooks or self._backward_pre_hooks:
            return self._call_with_hooks(args, kwargs)
        return self.forward(*args, **kwargs)

    # -- hooks (torch's signatures and order; see RemovableHandle) --------------------------------
    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """``hook(module, args)`` runs before ``forward``; a return value other than None replaces
        ``args`` (a non-tuple is wrapped in one). With ``with_kwargs=True``: ``hook(module, args,
        kwargs)`` returning None or ``(args, kwargs)``. ``prepend`` runs it before the others."""
        handle = RemovableHandle(self._forward_pre_hooks, extra_dict=self._forward_pre_hooks_with_kwargs)
        self._forward_pre_hooks[handle.id] = hook
        if with_kwargs:
            self._forward_pre_hooks_with_kwargs[handle.id] = True
        if prepend:
            self._forward_pre_hooks.move_to_end(handle.id, last=False)
        return handle

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False, always_call=False):
        """``hook(module, args, output)`` (or ``hook(module, args, kwargs, output)`` with
        ``with_kwargs=True``) runs after ``forward``; a return value other than None replaces the
        output. ``always_call=True`` runs it even when ``forward`` raises (then ``output`` is None)."""
        handle = RemovableHandle(self._forward_hooks, extra_dict=[self._forward_hooks_with_kwargs,
                                                                  self._forward_hooks_always_called])
        self._forward_hooks[handle.id] = hook
        if with_kwargs:
            self._forward_hooks_with_kwargs[handle.id] = True
        if always_call:
            self._forward_hooks_always_called[handle.id] = True
        if prepend:
            self._forward_hooks.move_to_end(handle.id, last=False)
        return handle

    def _call_with_hooks(self, args, kwargs):
        """``__call__`` once any hook is registered: torch's ``_call_impl`` order."""
        for hook_id, hook in list(self._forward_pre_hooks.items()):
            if hook_id in self._forward_pre_hooks_with_kwargs:
                result = hook(self, args, kwargs)
                if result is not None:
                    if not (isinstance(result, tuple) and len(result) == 2):
                        raise RuntimeError(f"forward pre-hook must return None or a tuple of (new_args, "
                                           f"new_kwargs), but got {result}")
                    args, kwargs = result
            else:
                result = hook(self, args)
                if result is not None:
                    args = result if isinstance(result, tuple) else (result,)
        output, called = None, set()
        try:
            output = self.forward(*args, **kwargs)
            for hook_id, hook in list(self._forward_hooks.items()):
                called.add(hook_id)
                output = self._run_forward_hook(hook_id, hook, args, kwargs, output)
        except Exception:
            # as torch: hooks registered with always_call=True still run, and the first error is raised
            for hook_id, hook in list(self._forward_hooks.items()):
                if hook_id in self._forward_hooks_always_called and hook_id not in called:
                    try:
                        output = self._run_forward_hook(hook_id, hook, args, kwargs, output)
                    except Exception as e:
                        warnings.warn("module forward hook with ``always_call=True`` raised an exception "
                                      f"that was silenced as another error was raised in forward: {e}")
            raise
        return output

    def _run_forward_hook(self, hook_id, hook, args, kwargs, output):
        if hook_id in self._forward_hooks_with_kwargs:
            result = hook(self, args, kwargs, output)
        else:
            result = hook(self, args, output)
        return output if result is None else result

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = []
        for name, m in self._modules.items():
            child = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n" + "\n".join(lines) + "\n)"


def replace_submodules(model, convert):
    """Swap submodules in place: ``convert(name, child)`` returns the replacement or None to keep the
    child. The walk is over a snapshot, so replacements are not visited again. Returns how many changed."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            new = convert(name, child) if child is not None else None
            if new is not None:
                module._register(module._modules, name, new)
                replaced += 1
    return replaced
