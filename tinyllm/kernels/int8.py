"""y = x W^T with an int8 weight W = Q * scale[:, None] (per output channel): the NumPy reference twin
dequantizes W and calls BLAS; the numba version reads Q directly, one output at a time.

The numba version wins for few rows (decode steps), where dequantizing the whole weight costs more
than the product; for many rows BLAS on the dequantized weight wins, so ``linear`` picks by rows.
"""
import numpy as np
from numba import njit

from .dispatch import Kernel

NUMBA_MAX_ROWS = 16  # more rows than this run the reference


def int8_linear_numpy(x, q, scale):
    """x (M, K) float, q (N, K) int8, scale (N,) float32 -> (M, N) in x's dtype."""
    w = q.astype(x.dtype) * scale.astype(x.dtype)[:, None]
    return x @ w.T


# fastmath 'reassoc' only: it lets LLVM split the dot product's sum into vector lanes (the summation
# order changes float32 rounding by ~1e-7 relative); without it the reduction runs scalar, 4x slower.
@njit(fastmath={"reassoc"}, cache=True, error_model="numpy")
def _int8_linear(x, q, scale, out):
    M, K = x.shape
    N = q.shape[0]
    for m in range(M):
        xm = x[m]
        for o in range(N):
            qo = q[o]
            acc = xm[0] * 0  # a zero of x's dtype
            for i in range(K):
                acc += xm[i] * qo[i]
            out[m, o] = acc * scale[o]


def int8_linear_numba(x, q, scale):
    x = np.ascontiguousarray(x)
    out = np.empty((x.shape[0], q.shape[0]), x.dtype)
    if x.shape[1] == 0:
        out[:] = 0
        return out
    _int8_linear(x, np.ascontiguousarray(q), np.ascontiguousarray(scale, dtype=x.dtype), out)
    return out


linear = Kernel("int8.linear", int8_linear_numba, int8_linear_numpy,
                applies=lambda x, q, scale: x.shape[0] <= NUMBA_MAX_ROWS,
                doc="x (M, K) @ (q * scale)^T on the faster version for its number of rows.")
