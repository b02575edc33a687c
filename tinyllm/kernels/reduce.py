"""Float64 sums along one contiguous row, for the kernels' statistics (LayerNorm's mean and variance,
attention's rowsum(dO * O), the gradient norm).

A sum written as one loop is a chain of dependent adds: without leave to reorder it, LLVM runs it one
element at a time. fastmath's 'reassoc' flag alone (none of the others: no NaN or infinity
assumptions, no reduced-precision division) lets it keep one partial sum per vector lane and add the
lanes at the end, the way a hand-unrolled loop would. The accumulators stay float64, so the result
differs from a left-to-right float64 sum only by float64 rounding (~1e-16 relative).
"""
import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def sum64(a):
    """sum(a) in float64."""
    s = 0.0
    for j in range(a.size):
        s += np.float64(a[j])
    return s


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def sumsq64(a, shift):
    """sum((a - shift)^2) in float64."""
    s = 0.0
    for j in range(a.size):
        d = np.float64(a[j]) - shift
        s += d * d
    return s


@njit(cache=True, error_model="numpy", fastmath={"reassoc"})
def dot64(a, b):
    """sum(a * b) in float64."""
    s = 0.0
    for j in range(a.size):
        s += np.float64(a[j]) * np.float64(b[j])
    return s
