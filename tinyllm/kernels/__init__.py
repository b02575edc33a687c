"""Kernels on plain arrays: NumPy reference twins and, where they pay, fused numba versions.

Kernels know nothing of Tensor. Each kernel module holds a NumPy twin, its numba version and that
version's drivers, and declares its entry points for ``dispatch.py``, the one place that picks a
version call by call (the kernel family, ``tinyllm.backend.kernels()``: 'numba' by default,
``TINYLLM_KERNELS=numpy`` or plain mode for the references). ``pool.py`` holds the thread-pool setup
and the table of sizes at which parallel drivers pay; ``fastmath.py`` and ``reduce.py`` the numeric
helpers the kernels share.
"""
from . import (adam, attention, cross_entropy, dispatch, elementwise, embedding, fastmath, gelu, int8, layernorm,
               matmul, norms, pool, reduce, softmax)
