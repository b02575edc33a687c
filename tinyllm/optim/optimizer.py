"""The ``Optimizer`` base class: parameter groups, per-parameter state, and torch-format state dicts.

Subclasses only write ``step()``. Parameters are anything with ``.data`` (an array updated in place)
and ``.grad`` (an array or None); parameters whose ``.grad`` is None are skipped, as in torch.
"""
import copy
from collections import defaultdict

import numpy as np

from .. import backend


class _Required:
    """Marks a default that every parameter group must set itself (torch's ``required``)."""

    def __repr__(self):
        return "<required parameter>"


required = _Required()


def _is_array(x):
    return hasattr(x, "shape") and hasattr(x, "dtype")


class Optimizer:
    """Base class for all optimizers.

    ``params`` is an iterable of tensors, of ``(name, tensor)`` pairs, or of dicts (parameter groups,
    each with ``'params'`` and any per-group options that override ``defaults``).
    """

    def __init__(self, params, defaults):
        self.defaults = defaults
        self.state = defaultdict(dict)  # param -> {'step': float, 'exp_avg': array, ...}
        self.param_groups = []
        if _looks_like_param(params):
            raise TypeError("params given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got a single {type(params).__name__}")
        if isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters must be an ordered collection (list, tuple, generator), "
                            "not a set: a set's order changes between runs")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k not in ("params", "param_names")]
        return "\n".join(lines) + "\n)"

    # -- parameter groups -------------------------------------------------------------------------
    def add_param_group(self, param_group):
        """Add a group of parameters with its own options (missing options come from the defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        params = group["params"]
        if _looks_like_param(params):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters must be an ordered collection (list, tuple, generator), "
                            "not a set: a set's order changes between runs")
        params = list(params)
        names = [p[0] for p in params if isinstance(p, tuple)]
        if names:
            if len(names) != len(params):
                raise ValueError("all optimizer params should be given with names or all without; "
                                 "some param names are missing")
            params = [p[1] for p in params]
            group["param_names"] = names
        for p in params:
            if not _looks_like_param(p):
                raise TypeError("optimizer can only optimize Tensors (objects with .data and .grad), "
                                f"but one of the params is a {type(p).__name__}")
        group["params"] = params

        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization "
                                 f"parameter {name}")
            group.setdefault(name, default)

        ids = [id(p) for p in params]
        if len(ids) != len(set(ids)):
            raise ValueError("optimizer got a parameter group with duplicate parameters")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if seen.intersection(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        """Forget the gradients: set them to None (default) or fill them with zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0

    def step(self, closure=None):
        raise NotImplementedError

    def _param_state(self, p):
        """``self.state[p]``, its arrays moved to p's device first if the parameter has moved since
        (``model.to('cuda')`` after the optimizer was built): optimizer state follows its parameters."""
        state = self.state[p]
        if backend._cupy is not None and state:
            device = backend.device_of(p.data)
            for k, v in state.items():
                if _is_array(v) and backend.device_of(v) != device:
                    state[k] = backend.to_device(v, device)
        return state

    def _closure_loss(self, closure):
        if closure is None:
            return None
        from ..autograd import enable_grad
        with enable_grad():
            return closure()

    # -- saving and loading -----------------------------------------------------------------------
    def state_dict(self):
        """The optimizer state in torch's layout, with parameters replaced by integer indices:

            {'state': {0: {'step': 3.0, 'exp_avg': array, ...}, ...},
             'param_groups': [{'lr': 0.001, ..., 'params': [0, 1]}, {..., 'params': [2]}]}

        Indices count across groups in order. Unlike torch, the arrays are copies, so the result is a
        snapshot that later steps do not change.
        """
        index = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {}
        for p, s in self.state.items():
            if id(p) in index:
                state[index[id(p)]] = {k: (v.copy() if _is_array(v) else copy.deepcopy(v))
                                       for k, v in s.items()}
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a state dict made by ``state_dict()`` (possibly of another optimizer instance).

        Checks that the groups, group sizes and state array shapes match this optimizer's parameters
        and raises ValueError naming the mismatch; nothing changes unless every check passes. State
        arrays are copied and cast to their parameter's dtype (and array module); the saved group
        options (lr, betas, ...) replace the current ones, as in torch.
        """
        name = type(self).__name__
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(f"{name}.load_state_dict: expected a dict with 'state' and 'param_groups', got "
                             f"{sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__}")
        groups, saved_groups = self.param_groups, state_dict["param_groups"]
        if len(groups) != len(saved_groups):
            raise ValueError(f"{name}.load_state_dict: the state dict has {len(saved_groups)} parameter "
                             f"group(s), the optimizer has {len(groups)}")
        for i, (g, sg) in enumerate(zip(groups, saved_groups)):
            if len(g["params"]) != len(sg["params"]):
                raise ValueError(f"{name}.load_state_dict: parameter group {i} has {len(sg['params'])} "
                                 f"parameter(s) in the state dict, {len(g['params'])} in the optimizer")

        params = {}  # saved index -> (param, group number)
        for i, (g, sg) in enumerate(zip(groups, saved_groups)):
            for idx, p in zip(sg["params"], g["params"]):
                params[int(idx)] = (p, i)

        state = defaultdict(dict)
        for key, saved in state_dict["state"].items():
            try:
                idx = int(key)
            except (TypeError, ValueError):
                raise ValueError(f"{name}.load_state_dict: state key {key!r} is not a parameter index") from None
            if idx not in params:
                raise ValueError(f"{name}.load_state_dict: the state dict has state for parameter {idx}, "
                                 f"which no parameter group lists (the groups list {len(params)} parameters)")
            p, gi = params[idx]
            xp = backend.get_array_module(p.data)
            entry = {}
            for k, v in saved.items():
                if _is_array(v) and k != "step":
                    if tuple(v.shape) != tuple(p.data.shape):
                        raise ValueError(f"{name}.load_state_dict: state[{idx}][{k!r}] (group {gi}) has shape "
                                         f"{tuple(v.shape)}, but its parameter has shape {tuple(p.data.shape)}")
                    if xp is np:
                        v = _host(v)
                    entry[k] = xp.array(v, dtype=p.data.dtype, copy=True)
                elif _is_array(v):  # a 0-d 'step' array, e.g. from a torch state dict via numpy
                    entry[k] = float(v)
                else:
                    entry[k] = copy.deepcopy(v)
            state[p] = entry

        new_groups = []
        for g, sg in zip(groups, saved_groups):
            ng = {k: copy.deepcopy(v) for k, v in sg.items() if k != "params"}
            if isinstance(ng.get("betas"), list):  # JSON turns tuples into lists
                ng["betas"] = tuple(ng["betas"])
            if "param_names" in g and "param_names" not in ng:
                ng["param_names"] = g["param_names"]
            ng["params"] = g["params"]
            new_groups.append(ng)
        self.state = state
        self.param_groups = new_groups


def _looks_like_param(x):
    return hasattr(x, "data") and hasattr(x, "grad") and not isinstance(x, dict)


def _host(a):
    """A NumPy array from a NumPy or CuPy array."""
    return a.get() if hasattr(a, "get") and _is_array(a) else a
