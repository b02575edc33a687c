"""Kernels on plain arrays: NumPy reference twins and, where they pay, fused numba versions.

Kernels know nothing of Tensor. ``tinyllm.backend.kernels()`` ('numba' by default,
``TINYLLM_KERNELS=numpy`` for the references) picks which family the fused ops call.
"""
from . import adam, attention, cross_entropy, elementwise, embedding, gelu, int8, layernorm, matmul, norms, pool, reduce, softmax
