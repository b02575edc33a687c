"""The floor under a training step: its kernel calls replayed back to back, with no Python between them.

``record(step)`` runs one step with every kernel entry point that tinyllm's ops, engine and optimizer
call (the ``ENTRY_POINTS`` below: the matmuls, attention, GELU, LayerNorm, cross-entropy, the
elementwise adds and multiplies, AdamW, the clipping norm) wrapped, and keeps each call with its
arguments. ``Replay(calls)`` then runs those calls again in the same order, on the same arrays, and
times only the calls themselves: what is left of the step if the autograd engine, the modules, the
optimizer's loop and every wrapper cost nothing. ``Replay(calls, only=("matmul",))`` keeps the matmuls.

What the replay leaves out, besides Python: NumPy work outside the kernels (the embedding gather,
the views and copies of reshapes, clipping's scaling multiply, zero_grad). So it is a floor, not an
estimate of a faster step.

Replaying changes the arrays the in-place kernels update: AdamW's parameters and moments drift a
little each time and the engine's gradient sums grow, which changes no timing. GELU's backward
multiplies its saved dy/dx in place by the incoming gradient, and repeated products of small numbers
would end in subnormals, which are slow; so that buffer is restored before each of its calls, outside
the timed part, from a copy taken when the call was recorded.
"""
import importlib
import time

import numpy as np

from tinyllm import backend

# kernel module -> the functions the rest of tinyllm calls (found by tracing a recipe step's calls
# from outside tinyllm/kernels/ into it)
ENTRY_POINTS = {
    "matmul": ("matmul", "matmul_tn"),
    "attention": ("kernel_inputs", "attention_forward", "attention_backward"),
    "gelu": ("forward", "forward_and_derivative", "backward"),
    "layernorm": ("forward", "backward"),
    "cross_entropy": ("forward", "backward"),
    "elementwise": ("add", "add_inplace", "mul_inplace"),
    "embedding": ("embedding_backward",),
    "adam": ("adam_step",),
    "norms": ("sum_of_squares",),
}
RESTORED = {("elementwise", "mul_inplace"): 0}  # (module, function) -> the argument restored before each call


def record(step):
    """Run ``step()`` once with the kernel entry points wrapped; returns a list of
    (module, name, fn, args, kwargs, restore): ``restore`` is (the argument an in-place kernel in
    ``RESTORED`` updates, a copy of it as it was before the call), else None. Calls a kernel makes
    into another entry point are not recorded twice (only the outermost counts)."""
    calls, depth, patched = [], [0], []

    def wrap(module_name, name, fn):
        which = RESTORED.get((module_name, name))

        def recorded(*args, **kwargs):
            if depth[0] == 0:
                restore = None if which is None else (args[which], np.array(args[which], copy=True))
                calls.append((module_name, name, fn, args, kwargs, restore))
            depth[0] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
        return recorded

    for module_name, names in ENTRY_POINTS.items():
        module = importlib.import_module(f"tinyllm.kernels.{module_name}")
        for name in names:
            fn = getattr(module, name)
            patched.append((module, name, fn))
            setattr(module, name, wrap(module_name, name, fn))
    try:
        step()
    finally:
        for module, name, fn in patched:
            setattr(module, name, fn)
    return calls


class Replay:
    """A step's recorded kernel calls as a benchmark side: ``timed()`` replays them and returns the
    seconds spent inside the calls (see the module's docstring)."""

    def __init__(self, calls, only=None, kernels=None):
        self.calls = [c for c in calls if only is None or c[0] in only]
        self.kernels = kernels or backend.kernels()  # the family the entry points dispatch to

    def __len__(self):
        return len(self.calls)

    def timed(self):
        return sum(self.timed_by_kernel().values())

    def timed_by_kernel(self):
        """Like ``timed``, but the seconds per entry point ('matmul.matmul_tn', ...)."""
        per = {}
        with backend.use_kernels(self.kernels):
            for module_name, name, fn, args, kwargs, restore in self.calls:
                if restore is not None:
                    np.copyto(*restore)
                t = time.perf_counter()
                fn(*args, **kwargs)
                key = f"{module_name}.{name}"
                per[key] = per.get(key, 0.0) + time.perf_counter() - t
        return per

    def __call__(self):
        self.timed()
