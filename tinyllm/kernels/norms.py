"""Sum of squares of an array in float64 (the gradient norm of ``clip_grad_norm_``): the NumPy twin
converts to float64 and squares (two temporaries of the array's size); the numba version is one pass
over the array, summing in float64 (``reduce.sumsq64``)."""
import numpy as np

from .. import backend
from .dispatch import Kernel
from .reduce import sumsq64


def sum_of_squares_numpy(x):
    xp = backend.get_array_module(x)
    x64 = x.astype(xp.float64).reshape(-1)
    return float(x64 @ x64)


def sum_of_squares_numba(x):
    return float(sumsq64(np.ascontiguousarray(x).reshape(-1), 0.0))


sum_of_squares = Kernel("norms.sum_of_squares", sum_of_squares_numba, sum_of_squares_numpy,
                        doc="sum(x^2) in float64, a Python float.")
