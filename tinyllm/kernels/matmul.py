"""The matmuls of Linear, forward and backward, run inside numba's thread pool (see ``pool.py``).

    matmul(a, b)     = a @ b       (M, K) x (K, N): the forward x W^T and the backward dx = dy W
    matmul_tn(a, b)  = a^T @ b     (K, M)^T x (K, N): the weight gradient dW = dy^T x

The NumPy twin is the plain product (``a.dot(b)``). The numba version leaves the arithmetic to BLAS too
(numba's BLAS gateway calls scipy's OpenBLAS, set to one thread) and only decides who does which part,
by shape. For ``matmul`` a small product (at most ``SERIAL_UP_TO`` flops on a weight of at most
``SMALL_WEIGHT`` elements: a decode window of a small model) is one BLAS call on the calling thread;
otherwise each thread takes a block of the larger operand: a's rows when a has at least as many rows as
the output has columns, else a block of the weight's columns (a wide layer, the lm_head), written in
place into the output's columns. For ``matmul_tn`` a small dW (at most ``MAX_TN_PARTIAL`` elements,
every product of the training recipe) splits the K rows that are summed over and adds the partial
products at the end (the first thread's part goes straight into the output, so only the others need a
buffer); a larger dW is split by its rows or columns, whichever is longer, so that no thread fills a
dW-sized buffer. One row (a decode step), a few rows through a large weight, other dtypes, and every
case outside the one-pool setup take the NumPy twin (outside it numpy's own threaded BLAS is the better
choice at every size). In the setup no small product of several rows goes to numpy's threaded BLAS: its
threads stall whenever another process holds a core, which made sampling on a busy machine more than
twice as slow as on one thread (benchmarks/README, design notes).
"""
import numpy as np
from numba import njit, prange
from numba.core.extending import overload
from numba.np.linalg import _BLAS  # numba's own BLAS gateway (what its np.dot calls)
from numba.np.numpy_support import as_dtype

from . import pool
from .dispatch import Kernel

MIN_ROWS_PER_THREAD = 32  # fewer rows (a decode step's one token, a short prompt) go to numpy's BLAS,
# which splits the weight between its threads; a block of rows each would have every thread read all
# of the weight.
SERIAL_UP_TO = 2 ** 23  # flops: a product this small (a 64-token decode window of the recipe model; its
# MLP's is exactly this) on a weight of at most SMALL_WEIGHT elements runs as one BLAS call on the calling
# thread: two threads gain nothing on it idle, and a parallel region stalls when another process holds a core
SMALL_WEIGHT = 2 ** 18  # elements, 1 MiB of float32 (a core's L2 here): a product on a larger weight is
# split between the threads even when it is small in flops
MAX_TN_PARTIAL = 2 ** 16  # dW = a^T b of at most this many elements sums per-thread partial products over
# K (a buffer that stays in cache); a larger dW is split by its rows or columns, which needs no buffer
# and leaves each element's sum over K to one BLAS call.


# -------------------------------------------------------------------------- NumPy reference twin
# np.dot rather than @ for these 2-d products: the same BLAS call and the same result, without the
# matmul ufunc's dispatch, which costs as much as a decode step's small product
def matmul_numpy(a, b):
    return a.dot(b)


def matmul_tn_numpy(a, b):
    return a.T.dot(b)


# -------------------------------------------------------------------------- numba version
@njit(cache=True)
def _dot_into(a, b, out):
    # np.dot inside a parallel loop body would make numba refuse to cache the whole driver
    np.dot(a, b, out)


def _gemm(a, b, c):
    """c[:] = a @ b for 2-d arrays whose rows or columns lie apart (a block of columns of a larger
    array, a transposed view): the NumPy meaning of the numba version below."""
    c[...] = a @ b


@overload(_gemm)
def _gemm_numba(a, b, c):
    # one BLAS gemm with a leading dimension per operand, where numba's np.dot would copy a strided
    # operand and refuse a strided output. a and b may each be row- or column-major, c is row-major
    gemm = _BLAS().numba_xxgemm(c.dtype)
    dt = as_dtype(c.dtype)
    kind = ord("s" if dt == np.float32 else "d")
    alpha, beta = np.ones(1, dt), np.zeros(1, dt)  # constants of the compiled code

    def impl(a, b, c):
        m, n = c.shape
        k = a.shape[1]
        size = c.itemsize
        # BLAS is column-major: the row-major c = a b is, read column-major, c^T = b^T a^T. A row-major
        # operand read column-major is its transpose already ('n'); a column-major one needs 't'
        if b.strides[1] == size:
            tb, ldb = ord("n"), max(b.strides[0] // size, n, 1)
        else:
            tb, ldb = ord("t"), max(b.strides[1] // size, k, 1)
        if a.strides[1] == size:
            ta, lda = ord("n"), max(a.strides[0] // size, k, 1)
        else:
            ta, lda = ord("t"), max(a.strides[1] // size, m, 1)
        ldc = max(c.strides[0] // size, n, 1)
        gemm(kind, tb, ta, n, m, k, alpha.ctypes, b.ctypes, ldb, a.ctypes, lda, beta.ctypes, c.ctypes, ldc)
    return impl


@njit(cache=True)
def _gemm_into(a, b, out):
    _gemm(a, b, out)


@njit(parallel=True, cache=True)
def _matmul_cols(a, b, out, n):
    # a (M, K), b (K, N) row- or column-major, out (M, N) C-contiguous: n blocks of out's columns, one a
    # thread, each out[:, block] = a @ b[:, block] written in place: every thread reads all of a and
    # its own part of b (the weight, which is the larger operand when N is large)
    N = b.shape[1]
    for p in prange(n):
        lo, hi = p * N // n, (p + 1) * N // n
        _gemm_into(a, b[:, lo:hi], out[:, lo:hi])


@njit(parallel=True, cache=True)
def _matmul_row_blocks(a, b, out, n):
    # as _matmul_rows, for an a whose rows lie apart (a transposed view: dW's rows are dy's columns)
    M = a.shape[0]
    for p in prange(n):
        lo, hi = p * M // n, (p + 1) * M // n
        _gemm_into(a[lo:hi], b, out[lo:hi])


@njit(parallel=True, cache=True)
def _matmul_rows(a, b, out, n):
    # a (M, K) C-contiguous, b (K, N) C- or F-contiguous, out (M, N): n blocks of rows, one a thread
    M = a.shape[0]
    for p in prange(n):
        lo, hi = p * M // n, (p + 1) * M // n
        _dot_into(a[lo:hi], b, out[lo:hi])


@njit(parallel=True, cache=True)
def _matmul_tn_split(a, b, parts, out):
    # a (K, M), b (K, N), C-contiguous; parts (n - 1, M, N). Thread 0 writes a[K0]^T b[K0] straight
    # into out and thread p > 0 writes a[Kp]^T b[Kp] into parts[p - 1]; then out += sum of the parts
    # (one buffer fewer to fill and read back than n partials summed into out)
    K, n = a.shape[0], parts.shape[0] + 1
    for p in prange(n):
        lo, hi = p * K // n, (p + 1) * K // n
        if p == 0:
            _dot_into(a[lo:hi].T, b[lo:hi], out)
        else:
            _dot_into(a[lo:hi].T, b[lo:hi], parts[p - 1])
    # row by row, one part at a time: the inner loop is one contiguous run, which LLVM vectorises (a
    # loop over the parts innermost, summing each element in a scalar, is not). The same additions
    # in the same order either way
    for i in prange(out.shape[0]):
        row = out[i]
        for p in range(n - 1):
            part = parts[p, i]
            for j in range(row.shape[0]):
                row[j] += part[j]


def _check(name, a_shape, b_shape, ka, kb):
    if ka != kb:
        raise ValueError(f"{name}: shapes {a_shape} and {b_shape} do not align ({ka} != {kb})")


# The same blocks one after another on the calling thread: what the guard (``pool.GUARD``) runs when
# the parallel drivers stall on a busy machine. Same blocks, same BLAS calls, same sums: same bits.
def _rows_serial(a, b, out, n):
    M = a.shape[0]
    for p in range(n):
        _dot_into(a[p * M // n:(p + 1) * M // n], b, out[p * M // n:(p + 1) * M // n])


def _row_blocks_serial(a, b, out, n):
    M = a.shape[0]
    for p in range(n):
        _gemm_into(a[p * M // n:(p + 1) * M // n], b, out[p * M // n:(p + 1) * M // n])


def _cols_serial(a, b, out, n):
    N = b.shape[1]
    for p in range(n):
        _gemm_into(a, b[:, p * N // n:(p + 1) * N // n], out[:, p * N // n:(p + 1) * N // n])


def _tn_split_serial(a, b, parts, out):
    K, n = a.shape[0], parts.shape[0] + 1
    _dot_into(a[:K // n].T, b[:K // n], out)
    for p in range(1, n):
        _dot_into(a[p * K // n:(p + 1) * K // n].T, b[p * K // n:(p + 1) * K // n], parts[p - 1])
    for p in range(n - 1):  # element by element the same additions in the same order as the loop above
        out += parts[p]


def matmul_numba(a, b):
    _check("matmul", a.shape, b.shape, a.shape[1], b.shape[0])
    a = np.ascontiguousarray(a)
    if not (b.flags.c_contiguous or b.flags.f_contiguous):
        b = np.ascontiguousarray(b)
    M, K, N = a.shape[0], a.shape[1], b.shape[1]
    out = np.empty((M, N), a.dtype)
    if _one_call(M, K, N):  # a small product: one BLAS call on this thread
        _dot_into(a, b, out)
        return out
    n, serial = pool.threads(), _serial(M * K * N)
    if M >= N or N < n:  # split the larger operand: a's rows...
        (_rows_serial if serial else _matmul_rows)(a, b, out, min(a.shape[0], n))
    else:  # ... or the weight's columns (a wide layer, the lm_head), so no thread reads all of it
        (_cols_serial if serial else _matmul_cols)(a, b, out, n)
    return out


def matmul_tn_numba(a, b):
    _check("matmul_tn", a.shape, b.shape, a.shape[0], b.shape[0])
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    M, N = a.shape[1], b.shape[1]
    out = np.empty((M, N), a.dtype)
    n, serial = max(1, min(a.shape[0], pool.threads())), _serial(a.shape[0] * M * N)
    if M * N <= MAX_TN_PARTIAL or max(M, N) < n:
        parts = np.empty((n - 1, M, N), a.dtype)
        (_tn_split_serial if serial else _matmul_tn_split)(a, b, parts, out)
    elif M >= N:  # a block of dW's rows a thread: a^T's rows are columns of a, read with a stride
        (_row_blocks_serial if serial else _matmul_row_blocks)(a.T, b, out, n)
    else:  # a block of dW's columns a thread
        (_cols_serial if serial else _matmul_cols)(a.T, b, out, n)
    return out


# -------------------------------------------------------------------------- entry points
def _serial(multiply_adds):
    return 2 * multiply_adds <= SERIAL_UP_TO or pool.guard_chose_serial()


def _one_call(M, K, N):
    return 2 * M * K * N <= SERIAL_UP_TO and K * N <= SMALL_WEIGHT


def _products(a, b):
    # matmul in the one-pool setup: every float product but one token through a small weight and a few
    # rows through a large one, which numpy's BLAS splits between its threads as well as anything here
    if not (a.ndim == 2 and b.ndim == 2 and min(a.shape + b.shape) > 0 and pool.active()
            and pool.threads() > 1):
        return False
    M, K, N = a.shape[0], a.shape[1], b.shape[1]
    if M == 1:  # one token: numpy's BLAS costs less to call, does not thread a small weight (no stall)
        return False  # and splits a large one between its threads (GPT-2 small's decode step)
    return _one_call(M, K, N) or _splits(a, b)


def _splits(a, b):
    # a's first dim is what is split between the threads: its rows, or for matmul_tn the K summed over.
    # When the guard answers "serial", or the product is at most SERIAL_UP_TO, the split still runs,
    # block by block on this thread (same bits)
    if not (a.ndim == 2 and b.ndim == 2 and min(a.shape + b.shape) > 0
            and a.shape[0] >= MIN_ROWS_PER_THREAD * pool.threads()):
        return False
    work = 2 * a.shape[0] * a.shape[1] * b.shape[1]
    if work <= SERIAL_UP_TO:  # the table's bar, without asking the guard (it never runs parallel here)
        return pool.parallel("matmul", work, guard=False)
    return pool.parallel("matmul", work) or pool.guard_chose_serial()


matmul = Kernel("matmul.matmul", matmul_numba, matmul_numpy, floats=(0, 1), applies=_products,
                doc="a @ b for 2-d arrays.")
matmul_tn = Kernel("matmul.matmul_tn", matmul_tn_numba, matmul_tn_numpy, floats=(0, 1), applies=_splits,
                   doc="a.T @ b for 2-d arrays, without forming a.T.")
