"""The one place that chooses, call by call, whether a kernel runs its numba version or its NumPy twin.

Each kernel module declares its entry points (what the ops, the engine and the optimizer call) as
``Kernel`` objects: the two versions, module-level functions that take the same arguments (looked up
by name at each call, as a plain function calling them would, so patching the module patches the
entry point), and the kernel's own limits (``applies``). A call runs the numba version when all of
this holds, else the NumPy twin:

1. the kernel family is 'numba' (``tinyllm.backend.kernels()``; it is 'numpy' in plain mode);
2. the arguments at the positions ``floats`` are NumPy (not CuPy) arrays of one dtype, float32 or
   float64, and those at ``arrays`` are NumPy arrays;
3. ``applies(*args, **kwargs)`` is true: the kernel's own conditions (the last dim, no mask, a size
   large enough to split, ...), asked only when 1 and 2 hold. A kernel whose numba version is only a
   parallel split names its row of ``pool.PARALLEL_MIN`` (``parallel_only``); an array smaller than
   both its sizes takes the twin after that one comparison.

Both versions compute the same function, so the choice changes speed, never meaning; tests tie each
numba version to its twin.

Each call also tells ``pool.GUARD`` how long it took when the guard chose its driver (parallel or
serial, see ``pool.py``), so a kernel whose parallel driver stalls on a busy machine runs serially.
"""
import sys
from time import perf_counter

import numpy as np

from .. import backend
from . import pool

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
KERNELS = {}  # 'module.entry_point' -> Kernel, every entry point of tinyllm.kernels


class Kernel:
    """One entry point. Calling it runs the function named like ``numba`` or the one named like
    ``numpy`` in their module (see the module's docstring); ``uses_numba(*args, **kwargs)`` says which."""

    def __init__(self, name, numba, numpy, floats=(0,), arrays=(), applies=None, parallel_only=None, doc=None):
        self.name, self.floats, self.arrays, self.applies = name, floats, arrays, applies
        self.parallel_only = parallel_only  # a row of pool.PARALLEL_MIN: below its sizes the twin runs
        self._first, self._more_floats = floats[0], floats[1:]
        self._functions = vars(sys.modules[numba.__module__])  # the kernel module's globals
        self._numba, self._numpy = numba.__name__, numpy.__name__
        self.__name__ = self.__qualname__ = name.rsplit(".", 1)[-1]
        self.__doc__ = doc
        KERNELS[name] = self

    @property
    def numba(self):
        return self._functions[self._numba]

    @property
    def numpy(self):
        return self._functions[self._numpy]

    def uses_numba(self, *args, **kwargs):
        return self._takes_numba(args, kwargs)

    def __call__(self, *args, **kwargs):
        pool._calling, pool._asked = self.name, None
        t = perf_counter()
        numba = self._takes_numba(args, kwargs)
        out = self._functions[self._numba if numba else self._numpy](*args, **kwargs)
        # the guard chose the driver: tell it the time (unless its parallel choice was overruled)
        if pool._asked is not None and (numba or not pool._asked[1]):
            pool.report(perf_counter() - t)
        return out

    def _takes_numba(self, args, kwargs):
        first = args[self._first]
        if not isinstance(first, np.ndarray):
            return False
        # the cheap size test first: a decode step's small arrays leave here
        if self.parallel_only is not None and first.size < min(pool.PARALLEL_MIN[self.parallel_only]):
            return False
        if backend.kernels() != "numba":
            return False
        if first.dtype not in FLOAT_DTYPES:
            return False
        for i in self._more_floats:
            if not isinstance(args[i], np.ndarray) or args[i].dtype != first.dtype:
                return False
        for i in self.arrays:
            if not isinstance(args[i], np.ndarray):
                return False
        return self.applies is None or bool(self.applies(*args, **kwargs))

    def __repr__(self):
        return f"<kernel {self.name}: {self._numba} or {self._numpy}>"
