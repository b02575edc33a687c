"""Sum of squares of an array in float64 (the gradient norm of ``clip_grad_norm_``): the NumPy twin
converts to float64 and squares (two temporaries of the array's size); the numba twin is one pass
over the array with float64 partial sums of LANES, which vectorise without fastmath."""
import numpy as np
from numba import njit

from .. import backend

LANES = 8


def sum_of_squares_numpy(x):
    xp = backend.get_array_module(x)
    x64 = x.astype(xp.float64).reshape(-1)
    return float(x64 @ x64)


@njit(cache=True)
def _sum_of_squares(x):
    lanes = np.zeros(LANES, np.float64)
    n = x.size
    nv = n - n % LANES
    for i in range(0, nv, LANES):
        for u in range(LANES):
            xi = np.float64(x[i + u])
            lanes[u] += xi * xi
    total = 0.0
    for i in range(nv, n):
        xi = np.float64(x[i])
        total += xi * xi
    return total + lanes.sum()


def sum_of_squares_numba(x):
    return float(_sum_of_squares(np.ascontiguousarray(x).reshape(-1)))


def sum_of_squares(x):
    if backend.kernels() == "numba" and isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64):
        return sum_of_squares_numba(x)
    return sum_of_squares_numpy(x)
