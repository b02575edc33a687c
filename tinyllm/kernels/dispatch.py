"""The one place that chooses, call by call, whether a kernel runs its numba version or its NumPy twin.

Each kernel module declares its entry points (what the ops, the engine and the optimizer call) as
``Kernel`` objects: the two versions, which take the same arguments, and the kernel's own limits
(``applies``). A call runs the numba version when all of this holds, else the NumPy twin:

1. the kernel family is 'numba' (``tinyllm.backend.kernels()``; it is 'numpy' in plain mode);
2. the arguments at the positions ``floats`` are NumPy (not CuPy) arrays of one dtype, float32 or
   float64, and those at ``arrays`` are NumPy arrays;
3. ``applies(*args, **kwargs)`` is true: the kernel's own conditions (the last dim, no mask, a size
   large enough to split, ...), asked only when 1 and 2 hold.

Both versions compute the same function, so the choice changes speed, never meaning; tests tie each
numba version to its twin.
"""
import numpy as np

from .. import backend

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
KERNELS = {}  # 'module.entry_point' -> Kernel, every entry point of tinyllm.kernels


class Kernel:
    """One entry point. Calling it runs ``numba(*args, **kwargs)`` or ``numpy(*args, **kwargs)``
    (see the module's docstring); ``uses_numba(*args, **kwargs)`` says which it would."""

    def __init__(self, name, numba, numpy, floats=(0,), arrays=(), applies=None, doc=None):
        self.name, self.numba, self.numpy = name, numba, numpy
        self.floats, self.arrays, self.applies = floats, arrays, applies
        self.__name__ = self.__qualname__ = name.rsplit(".", 1)[-1]
        self.__doc__ = doc
        KERNELS[name] = self

    def uses_numba(self, *args, **kwargs):
        if backend.kernels() != "numba":
            return False
        first = args[self.floats[0]]
        if not isinstance(first, np.ndarray) or first.dtype not in FLOAT_DTYPES:
            return False
        for i in self.floats[1:]:
            if not isinstance(args[i], np.ndarray) or args[i].dtype != first.dtype:
                return False
        for i in self.arrays:
            if not isinstance(args[i], np.ndarray):
                return False
        return self.applies is None or bool(self.applies(*args, **kwargs))

    def __call__(self, *args, **kwargs):
        run = self.numba if self.uses_numba(*args, **kwargs) else self.numpy
        return run(*args, **kwargs)

    def __repr__(self):
        return f"<kernel {self.name}: {self.numba.__name__} or {self.numpy.__name__}>"
