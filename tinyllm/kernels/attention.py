"""Scaled dot-product attention on plain arrays: the NumPy reference twin, and the fused numba
version in the style of flash attention 2, which computes the same function without a T x S buffer.

    out = softmax(q k^T * scale + mask) v,   lse = logsumexp of each row of the scores

Shapes: q (..., T, D), k (..., S, D), v (..., S, Dv); mask broadcastable to (..., T, S), either
boolean (True = may attend) or additive floats. The forward returns the output and the per-row
logsumexp, and the backward rebuilds the probabilities from it, so only O(T) numbers travel between
them. The numba version takes no mask (causal or not), one float dtype and equal leading dims; the
reference takes everything, CuPy arrays included.

The numba version walks each (batch, head) in tiles of query rows by keys, keeping a running max and
sum per row (online softmax). Its tile products go to BLAS gemm (``_gemm_into``, ``_gemm_acc``),
which reads rows that lie apart, so the heads of a packed qkv projection are read where they lie
(``_in_place``) and their gradients are written into one buffer laid out like it
(``_grads_packed_like``). Tiles are held transposed, S^T = K_j Q_i^T of shape (keys, queries): the
softmax's per-query reductions then run along contiguous rows, and every product is an NN or TN one.
Products and accumulators are in the input dtype (as the reference and torch do), the softmax sums
and the logsumexp in float64; the scores are (q*scale) k^T rather than (q k^T)*scale, one rounding
apart. Memory per work item: O(T*D), nothing O(T^2). Design notes with measurements:
benchmarks/README.md; ``benchmarks/attention_bench.py`` times the kernels.
"""
import importlib.util
import math

import numpy as np
from numba import njit, prange
from numba.core.extending import overload
from numba.np.linalg import _BLAS  # numba's own BLAS gateway (what its np.dot calls), for beta = 1
from numba.np.numpy_support import as_dtype

from .. import backend
from . import pool
from .dispatch import Kernel
from .fastmath import exp_inplace
from .reduce import dot64

_TooHardError = getattr(np, "exceptions", np).TooHardError  # numpy < 1.25 kept it at the top
# numba's BLAS gateway needs scipy's BLAS; without it attention stays on the reference.
_HAVE_SCIPY = importlib.util.find_spec("scipy") is not None

# Tiles: query rows x keys. 64 x 64 is the largest square tile OpenBLAS still multiplies on the
# calling thread (larger ones make it start threads inside ours). Long sequences in the one-pool
# setup take 128 x 128, except on BLAS cores whose AVX-512 kernels run 64 x 64 faster. Causal
# attention over at most SHORT_CAUSAL positions takes 32-row tiles, so fewer products are spent on the
# masked half of the tiles the diagonal cuts.
BR = BC = 64
BR_POOL = BC_POOL = 128
AVX512_BLAS_CORES = ("skylakex", "cooperlake", "sapphirerapids")  # OpenBLAS's names for them
SHORT_CAUSAL = 128
BR_SHORT, BC_SHORT_FORWARD, BC_SHORT_BACKWARD = 32, 64, 32


# ---------------------------------------------------------------------------------- NumPy reference twin
def _scores(q, k, scale, causal, mask):
    xp = backend.get_array_module(q)
    s = (q @ k.swapaxes(-1, -2)) * scale  # (..., T, S)
    if mask is not None:
        if mask.dtype == bool:
            s = xp.where(mask, s, -xp.inf)
        else:
            s = s + mask
    if causal:
        T, S = s.shape[-2:]
        s = xp.where(xp.tril(xp.ones((T, S), dtype=bool)), s, -xp.inf)
    return s


def attention_forward_numpy(q, k, v, scale, causal=False, mask=None):
    """out = softmax(q k^T * scale + mask) v ;  lse = logsumexp of each row of the scores.

    A row whose keys are all masked gets output 0 and lse -inf (torch's math path gives NaN there).
    lse is kept in float64 (only O(T) numbers): rounded to float32, a score of 1e4 would carry an
    error of ~1e-3 into the probabilities the backward pass rebuilds from it.
    """
    xp = backend.get_array_module(q)
    s = _scores(q, k, scale, causal, mask)
    m = s.max(axis=-1, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)
    p = xp.exp(s - m)  # (..., T, S)
    denom = p.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = (m.astype(np.float64) + xp.log(denom.astype(np.float64)))[..., 0]  # (..., T)
        p = xp.where(denom > 0, p / denom, 0).astype(q.dtype, copy=False)
    return p @ v, lse


def attention_backward_numpy(q, k, v, out, lse, dout, scale, causal=False, mask=None):
    """Gradients of attention_forward_numpy.

    With P = softmax(S), O = P V:   dV = P^T dO,   dP = dO V^T,
    dS = P * (dP - rowsum(dO * O))  (rowsum(dO*O) = rowsum(P * dP)),   dQ = dS K scale,  dK = dS^T Q scale.
    """
    xp = backend.get_array_module(q)
    s = _scores(q, k, scale, causal, mask)
    with np.errstate(invalid="ignore"):
        p = xp.where(xp.isfinite(lse)[..., None], xp.exp(s - lse[..., None]), 0).astype(q.dtype, copy=False)
    dv = p.swapaxes(-1, -2) @ dout  # (..., S, Dv)
    dp = dout @ v.swapaxes(-1, -2)  # (..., T, S)
    row = (dout * out).sum(axis=-1, keepdims=True)  # (..., T, 1)
    ds = p * (dp - row)
    dq = (ds @ k) * scale
    dk = (ds.swapaxes(-1, -2) @ q) * scale
    return dq, dk, dv


# ---------------------------------------------------------------------------------- numba version
@njit(cache=True)
def _transpose_into(src, dst):
    """dst (n, m) = src (m, n)^T, both C-contiguous."""
    m, n = src.shape
    for j in range(m):
        for d in range(n):
            dst[d, j] = src[j, d]


@njit(cache=True)
def _first_seen(j, j0, i0, br, diag):
    """Causal: the first row of the query tile at i0 that sees key j0 + j (rows before it are masked)."""
    if not diag:
        return 0
    return min(br, max(0, j0 + j - i0))


def _gemm_into(a_t, a, b, c):
    """c[:] = op(a) @ b, with op(a) = a.T if ``a_t`` else a; 2-d arrays with unit stride along their
    rows, which may lie apart (the NumPy meaning of the numba version below: BLAS gemm, beta = 0)."""
    c[...] = (a.T if a_t else a) @ b


def _gemm_acc(a_t, a, b, c):
    """c += op(a) @ b, as ``_gemm_into`` (the numba version calls gemm with beta = 1: no temporary
    product and no separate pass to add it in)."""
    c += (a.T if a_t else a) @ b


def _blas_gemm(beta):
    """numba's implementation of c = op(a) @ b + beta * c, through numba's own BLAS gateway. Unlike
    numba's np.dot it takes row-strided operands as they are (a head's rows inside a GPT's qkv)."""
    def typer(a_t, a, b, c):
        gemm = _BLAS().numba_xxgemm(c.dtype)
        dt = as_dtype(c.dtype)
        kind = ord("s" if dt == np.float32 else "d")
        alpha, beta_c = np.ones(1, dt), np.full(1, beta, dt)  # constants of the compiled code

        def impl(a_t, a, b, c):
            m, n = c.shape
            k = b.shape[0]
            size = c.itemsize
            # BLAS is column-major: the row-major c = op(a) b is, read column-major, c^T = b^T op(a)^T
            ldb = max(b.strides[0] // size, n, 1)
            lda = max(a.strides[0] // size, a.shape[1], 1)
            ldc = max(c.strides[0] // size, n, 1)
            gemm(kind, ord("n"), ord("t") if a_t else ord("n"), n, m, k,
                 alpha.ctypes, b.ctypes, ldb, a.ctypes, lda, beta_c.ctypes, c.ctypes, ldc)
        return impl
    return typer


overload(_gemm_into)(_blas_gemm(0.0))
overload(_gemm_acc)(_blas_gemm(1.0))


# forward: S^T = K_j Q_i^T per tile, an online softmax down its columns, acc += P V
@njit(cache=True)
def _flash_forward_item(item, q, k, v, scale, causal, split, fast, br_max, bc_max, out, lse):
    # q (B, H, L, D), k (B, H, S, D), v (B, H, S, Dv), out (B, H, L, Dv): unit stride along D, rows
    # maybe apart (see _in_place); lse (B, H, L) float64.
    # One work item: the query tiles part, part + split, ... of one (b, h).
    H, L, D = q.shape[1], q.shape[2], q.shape[3]
    S = k.shape[2]
    Dv = v.shape[3]
    nq = (L + br_max - 1) // br_max
    bh = item // split
    part = item % split
    b, h = bh // H, bh % H
    qb, kb, vb, ob, lb = q[b, h], k[b, h], v[b, h], out[b, h], lse[b, h]  # this (b, h)'s rows
    qt = np.empty(D * br_max, q.dtype)  # Q_i^T (D, br)
    st = np.empty(bc_max * br_max, q.dtype)  # S^T, then P^T, of one tile (w, br)
    ibuf = np.empty(bc_max * br_max, np.int32)
    acc = np.empty((br_max, Dv), q.dtype)  # unnormalised output rows
    m = np.empty(br_max, q.dtype)  # running max of each query row
    mx = np.empty(br_max, q.dtype)  # the new running max (mx2: its other buffer, see below)
    mx2 = np.empty(br_max, q.dtype)
    alpha = np.empty(br_max, q.dtype)  # exp(m_old - m_new)
    l = np.empty(br_max, np.float64)  # running sum of exp(s - m)
    for it in range(part, nq, split):
        i0 = it * br_max
        br = min(br_max, L - i0)
        qtt = qt[:D * br].reshape((D, br))
        _transpose_into(qb[i0:i0 + br], qtt)
        for d in range(D):
            for r in range(br):
                qtt[d, r] *= scale  # S^T comes out scaled; the backward scales Q^T alike
        m[:br] = -np.inf
        l[:br] = 0.0
        kend = min(S, i0 + br) if causal else S  # keys seen by the tile's last row (at least one)
        for j0 in range(0, kend, bc_max):
            first = j0 == 0  # acc and l start empty: no rescaling, and acc is written, not added to
            w = min(bc_max, kend - j0)
            stt = st[:w * br].reshape((w, br))
            _gemm_into(False, kb[j0:j0 + w], qtt, stt)  # S^T * scale (w, br)
            if causal and j0 + w - 1 > i0:  # the causal mask cuts this tile
                for j in range(w):
                    for r in range(_first_seen(j, j0, i0, br, True)):
                        stt[j, r] = -np.inf
            # the new running max, key by key; written to another buffer than it reads: updating one
            # buffer in place (mx[r] = max(mx[r], s)) vectorises as masked stores, slow on AMD cores
            cur = m
            for j in range(w):
                nxt = mx if j % 2 == 0 else mx2
                for r in range(br):
                    nxt[r] = max(cur[r], stt[j, r])
                cur = nxt
            if w % 2 == 0:  # the last key's row went to mx2
                mx[:br] = mx2[:br]
            for r in range(br):
                if mx[r] == -np.inf:  # no key seen yet (not reachable without a mask): stay empty
                    mx[r] = 0
                alpha[r] = m[r] - mx[r]
            if not first:
                exp_inplace(alpha, br, ibuf, fast)
            for j in range(w):
                for r in range(br):
                    stt[j, r] -= mx[r]
            exp_inplace(st, w * br, ibuf, fast)  # P^T, unnormalised
            for r in range(br):
                if not first:
                    l[r] *= alpha[r]
                m[r] = mx[r]
            for j in range(w):
                for r in range(br):
                    l[r] += stt[j, r]
            if first:
                _gemm_into(True, stt, vb[j0:j0 + w], acc[:br])  # acc = P V (br, Dv)
                continue
            for r in range(br):
                a = alpha[r]
                for e in range(Dv):
                    acc[r, e] *= a
            _gemm_acc(True, stt, vb[j0:j0 + w], acc[:br])  # acc += P V (br, Dv)
        for r in range(br):
            if l[r] > 0:
                inv = 1.0 / l[r]
                for e in range(Dv):
                    ob[i0 + r, e] = acc[r, e] * inv
                lb[i0 + r] = np.float64(m[r]) + math.log(l[r])
            else:
                ob[i0 + r, :] = 0
                lb[i0 + r] = -np.inf


# backward: with P = softmax(S), O = P V and D_i = rowsum(dO_i * O_i) (= rowsum(P_i * dP_i)):
#   dV = P^T dO,   dP = dO V^T,   dS = P * (dP - D),   dQ = dS K scale,   dK = dS^T Q scale.
# Outer loop over key tiles (dK_j, dV_j accumulate in place), inner over the query tiles that see
# them; dQ_i accumulates across key tiles into the item's own dQ. Tiles are transposed as in the
# forward (P^T, dS^T of shape (keys, queries)), so with Q^T and dO^T kept per (b, h) every product
# is a BLAS NN or TN one.
@njit(cache=True)
def _flash_backward_item(item, q, k, v, out, lse, dout, scale, causal, split, fast, br_max, bc_max, dq, dk, dv):
    # q, dq (B, H, L, D); k, dk (B, H, S, D); v, dv (B, H, S, Dv); out, dout (B, H, L, Dv); lse (B, H, L).
    # q, k, v, out, dout as in the forward; dq is (split, B, H, L, D), one copy per split part, and
    # dq, dk, dv come uninitialised (C-contiguous, or strided like the output when q, k, v are read
    # in place): each item writes what it owns (its dQ copy, its key tiles of dK and dV), on its own
    # thread, the first product into a tile with beta = 0, and zeroes the tiles no product reaches.
    # One work item: the key tiles part, part + split, ... of one (b, h).
    H, L, D = q.shape[1], q.shape[2], q.shape[3]
    S = k.shape[2]
    Dv = v.shape[3]
    nk = (S + bc_max - 1) // bc_max
    bh = item // split
    part = item % split
    b, h = bh // H, bh % H
    qb, kb, vb, ob, dob, lb = q[b, h], k[b, h], v[b, h], out[b, h], dout[b, h], lse[b, h]  # this (b, h)'s rows
    dqp = dq[part, b, h]  # (L, D)
    dq_set = np.zeros((L + br_max - 1) // br_max, np.bool_)  # query tiles of dqp written yet
    drow = np.empty(L, q.dtype)  # D_i = rowsum(dO_i * O_i)
    for i in range(L):
        drow[i] = dot64(dob[i], ob[i])
    qt = np.empty(L * D, q.dtype)  # Q^T by query tiles: the tile at i0 is qt[i0*D:][:D*br] as (D, br)
    dot = np.empty(L * Dv, q.dtype)  # dO^T likewise
    for i0 in range(0, L, br_max):
        br = min(br_max, L - i0)
        qtt = qt[i0 * D:(i0 + br) * D].reshape((D, br))
        _transpose_into(qb[i0:i0 + br], qtt)
        for d in range(D):
            for r in range(br):
                qtt[d, r] *= scale  # as in the forward, so S^T * scale is rebuilt bit for bit
        _transpose_into(dob[i0:i0 + br], dot[i0 * Dv:(i0 + br) * Dv].reshape((Dv, br)))
    st = np.empty(bc_max * br_max, q.dtype)  # S^T, then P^T (w, br)
    dp = np.empty(bc_max * br_max, q.dtype)  # dP^T, then dS^T * scale
    ibuf = np.empty(bc_max * br_max, np.int32)
    for jt in range(part, nk, split):
        j0 = jt * bc_max
        w = min(bc_max, S - j0)
        dkj = dk[b, h, j0:j0 + w]
        dvj = dv[b, h, j0:j0 + w]
        kj = kb[j0:j0 + w]  # (w, D)
        vj = vb[j0:j0 + w]  # (w, Dv)
        # the first product into each gradient tile is written (beta = 0), later ones added: no
        # zero-fill pass, and no read of an uninitialised tile. Tiles no product reaches are zeroed.
        first = True
        i_first = (j0 // br_max) * br_max if causal else 0  # rows i >= j0 see key j0
        for i0 in range(i_first, L, br_max):  # (none when causal and j0 >= L: no query sees these keys)
            br = min(br_max, L - i0)
            qtt = qt[i0 * D:(i0 + br) * D].reshape((D, br))
            dott = dot[i0 * Dv:(i0 + br) * Dv].reshape((Dv, br))
            lse_i = lb[i0:i0 + br]
            d_i = drow[i0:i0 + br]
            stt = st[:w * br].reshape((w, br))
            _gemm_into(False, kj, qtt, stt)  # S^T * scale (w, br)
            diag = causal and j0 + w - 1 > i0
            for j in range(w):
                rs = _first_seen(j, j0, i0, br, diag)
                for r in range(rs):
                    stt[j, r] = -np.inf
                for r in range(rs, br):
                    # s * scale - lse formed in float64, then rounded: exact for large logits
                    stt[j, r] = stt[j, r] - lse_i[r]
            exp_inplace(st, w * br, ibuf, fast)  # P^T (w, br)
            if first:
                _gemm_into(False, stt, dob[i0:i0 + br], dvj)  # dV_j = P^T dO (w, Dv)
            else:
                _gemm_acc(False, stt, dob[i0:i0 + br], dvj)  # dV_j += P^T dO
            dpt = dp[:w * br].reshape((w, br))
            _gemm_into(False, vj, dott, dpt)  # dP^T = V dO^T (w, br)
            for j in range(w):
                for r in range(br):
                    dpt[j, r] = stt[j, r] * (dpt[j, r] - d_i[r]) * scale  # dS^T * scale
            if first:
                _gemm_into(False, dpt, qb[i0:i0 + br], dkj)  # dK_j = dS^T Q (w, D)
            else:
                _gemm_acc(False, dpt, qb[i0:i0 + br], dkj)  # dK_j += dS^T Q
            first = False
            if dq_set[i0 // br_max]:
                _gemm_acc(True, dpt, kj, dqp[i0:i0 + br])  # dQ_i += dS K (br, D)
            else:
                _gemm_into(True, dpt, kj, dqp[i0:i0 + br])  # dQ_i = dS K
                dq_set[i0 // br_max] = True
        if first:
            _zero_rows(dkj)
            _zero_rows(dvj)
    for it in range(dq_set.size):
        if not dq_set[it]:
            _zero_rows(dqp[it * br_max:min(L, (it + 1) * br_max)])


@njit(cache=True)
def _zero_rows(x):
    """x[...] = 0 for a 2-d array whose rows may lie apart (explicit loops: numba's slice assignment
    on a non-contiguous array takes a slow generic path)."""
    for r in range(x.shape[0]):
        for e in range(x.shape[1]):
            x[r, e] = 0


# ---------------------------------------------------------------------------------- drivers
# Each kernel has a parallel driver (prange over the work items) and a serial one; pool.parallel picks.
@njit(parallel=True, cache=True)
def _flash_forward_parallel(n_items, q, k, v, scale, causal, split, fast, br_max, bc_max, out, lse):
    for item in prange(n_items):
        _flash_forward_item(item, q, k, v, scale, causal, split, fast, br_max, bc_max, out, lse)


@njit(cache=True)
def _flash_forward_serial(n_items, q, k, v, scale, causal, split, fast, br_max, bc_max, out, lse):
    for item in range(n_items):
        _flash_forward_item(item, q, k, v, scale, causal, split, fast, br_max, bc_max, out, lse)


@njit(parallel=True, cache=True)
def _flash_backward_parallel(n_items, q, k, v, out, lse, dout, scale, causal, split, fast, br_max, bc_max,
                             dq, dk, dv):
    for item in prange(n_items):
        _flash_backward_item(item, q, k, v, out, lse, dout, scale, causal, split, fast, br_max, bc_max, dq, dk, dv)


@njit(cache=True)
def _flash_backward_serial(n_items, q, k, v, out, lse, dout, scale, causal, split, fast, br_max, bc_max,
                           dq, dk, dv):
    for item in range(n_items):
        _flash_backward_item(item, q, k, v, out, lse, dout, scale, causal, split, fast, br_max, bc_max, dq, dk, dv)


def _tiles(L, S, causal=False, backward=False):
    """(query rows, keys) per tile (see the constants at the top): 128 for long sequences in the
    one-pool setup when scipy's BLAS runs no AVX-512 kernels, 32 x 64 (forward) and 32 x 32 (backward)
    for causal attention over short ones, else 64. The backward rebuilds P from lse, so its tiles
    need not match the forward's."""
    if causal and max(L, S) <= SHORT_CAUSAL:
        return (BR_SHORT, BC_SHORT_BACKWARD if backward else BC_SHORT_FORWARD)
    big = min(L, S) >= 2 * BR_POOL and pool.active() and pool.blas_core() not in AVX512_BLAS_CORES
    return (BR_POOL, BC_POOL) if big else (BR, BC)


def _parallel(BH, L, S, D):
    """Worth the thread pool? ~4 BH L S D flops a pass (halved for causal: counted in full here)."""
    return pool.parallel("attention", 4 * BH * L * S * D)


_threads = pool.threads  # (tests patch it to force every split)


def _split(bh, n_tiles):
    """Work items per (b, h): the fewest that give every thread the same number of items (prange
    hands out equal runs of items), so B*H=1 on 2 threads splits in 2, B*H=32 does not split."""
    t = _threads()
    return max(1, min(n_tiles, t // math.gcd(bh, t)))


def _readable(x):
    """Can the kernels read this 4-d array where it lies? Each (b, h) block's rows go to BLAS as a
    matrix with a leading dimension: unit stride along the last dim, a row stride of whole elements
    and at least a row long, no negative strides."""
    st, n = x.strides, x.itemsize
    return (x.ndim == 4 and x.size > 0 and (x.shape[3] == 1 or st[3] == n) and min(st) >= 0
            and st[2] % n == 0 and st[2] >= x.shape[3] * n)


def _in_place(q, k, v):
    """Read q, k, v where they lie, and write the output in (B, L, H, Dv) order? Yes when all three
    are 4-d views that are not contiguous but readable, as the heads a GPT splits out of its qkv
    projection are: then neither those views nor the output (whose ``transpose(1, 2)`` is the
    (B, L, H * Dv) the projection after attention reads) need a copy. torch's CPU flash attention
    lays its output out the same way. Otherwise everything runs on contiguous arrays. (Two layouts,
    not one per mix of them: each is a separate compilation of the kernels.)"""
    return (all(x.ndim == 4 and not x.flags.c_contiguous and _readable(x) for x in (q, k, v))
            and q.shape[1] > 1 and q.shape[2] > 1)


def _as4(x):
    """(..., n, d) -> contiguous (1, prod(...), n, d), copied only when it is not contiguous."""
    return np.ascontiguousarray(x).reshape((1, math.prod(x.shape[:-2])) + x.shape[-2:])


def _output_layout(B, H, L, Dv, dtype):
    """An uninitialised (B, H, L, Dv) array laid out as (B, L, H, Dv) (see _in_place)."""
    return np.empty((B, L, H, Dv), dtype).transpose(0, 2, 1, 3)


def _split_dq_layout(split, B, H, L, D, dtype):
    """split uninitialised dQ copies (split, B, H, L, D), each laid out as (B, L, H, D) like the output."""
    return np.empty((split, B, L, H, D), dtype).transpose(0, 1, 3, 2, 4)


def _strided_like_output(x, dtype):
    """x (B, H, L, Dv) as the kernels read it in the in-place layout: itself, or a copy in that layout
    (never C-contiguous, so the kernels see the one array layout they were compiled for)."""
    if x.dtype == dtype and not x.flags.c_contiguous and _readable(x):
        return x
    y = _output_layout(*x.shape, dtype)
    y[...] = x
    return y


def _kernel_arrays(q, k, v):
    """(in_place, q4, k4, v4): whether q, k, v are read in place (see _in_place), and the 4-d arrays
    the kernels run on."""
    if _in_place(q, k, v):
        return True, q, k, v
    return False, _as4(q), _as4(k), _as4(v)


def kernel_inputs_numpy(q, k, v, mask=None):
    """The reference reads q, k, v as they are (a decode step reads the KV cache where it lies)."""
    return q, k, v


def kernel_inputs_numba(q, k, v, mask=None):
    """q, k, v as the numba version reads them: the arrays themselves when they can be read in place
    (see _in_place), else contiguous copies, made once (the autograd op keeps them for the backward)."""
    if _in_place(q, k, v):
        return q, k, v
    return np.ascontiguousarray(q), np.ascontiguousarray(k), np.ascontiguousarray(v)


def _grads_packed_like(q, k, v):
    """dq, dk, dv as views of one new buffer, each lying where q, k, v lie in theirs, when q, k, v are
    disjoint views that fill one C-contiguous array (the heads of a GPT's qkv projection). The engine
    then takes that buffer as the projection's gradient as it is (``SliceGrad.dense``) instead of
    gathering the three into a new one (three strided copies). Else None."""
    base = q.base
    if (base is None or k.base is not base or v.base is not base or not base.flags.c_contiguous
            or not q.dtype == k.dtype == v.dtype == base.dtype
            or base.size != q.size + k.size + v.size):  # nothing else in it: no oversized buffer
        return None
    try:  # exact and cheap for such views; the bound only guards odd layouts
        if any(np.shares_memory(a, b, max_work=10 ** 4) for a, b in ((q, k), (q, v), (k, v))):
            return None
    except _TooHardError:
        return None
    buf, start = np.empty(base.shape, base.dtype), base.ctypes.data
    return tuple(np.ndarray(x.shape, x.dtype, buffer=buf, offset=x.ctypes.data - start, strides=x.strides)
                 for x in (q, k, v))


def _no_mask(mask):
    if mask is not None:
        raise ValueError("the numba attention kernels take no mask (the reference does)")


def attention_forward_numba(q, k, v, scale, causal=False, mask=None):
    """(out, lse) of softmax(q k^T * scale) v without a T x S buffer; q (..., L, D), k (..., S, D),
    v (..., S, Dv) of one float dtype and equal leading dims, no mask. lse is float64 (..., L). out is
    contiguous, or, for q, k, v read in place (see _in_place), (B, H, L, Dv) laid out as (B, L, H, Dv)."""
    _no_mask(mask)
    lead, L = q.shape[:-2], q.shape[-2]
    Dv = v.shape[-1]
    in_place, q4, k4, v4 = _kernel_arrays(q, k, v)
    B, H = q4.shape[:2]
    out = _output_layout(B, H, L, Dv, q.dtype) if in_place else np.empty((B, H, L, Dv), q.dtype)
    S = k4.shape[2]
    lse = np.empty((B, H, L), np.float64)
    if B * H and L:
        if S == 0:
            out[...] = 0
            lse[...] = -np.inf
        else:
            par = _parallel(B * H, L, S, q4.shape[3])
            br, bc = _tiles(L, S, causal)
            split = _split(B * H, -(-L // br)) if par else 1
            run = _flash_forward_parallel if par else _flash_forward_serial
            run(B * H * split, q4, k4, v4, q.dtype.type(scale), bool(causal), split, q.dtype == np.float32,
                br, bc, out, lse)
    return out.reshape(lead + (L, Dv)), lse.reshape(lead + (L,))


def attention_backward_numba(q, k, v, out, lse, dout, scale, causal=False, mask=None):
    """(dq, dk, dv) of attention_forward_numba, rebuilding P tile by tile from lse; C-contiguous, or
    for q, k, v read in place (see _in_place), (B, H, n, d) laid out as (B, n, H, d)."""
    _no_mask(mask)
    L, S = q.shape[-2], k.shape[-2]
    in_place, q4, k4, v4 = _kernel_arrays(q, k, v)
    if in_place:
        o4, do4 = _strided_like_output(out, q.dtype), _strided_like_output(dout, q.dtype)
    else:
        o4 = _as4(out)
        do4 = np.ascontiguousarray(dout, dtype=q.dtype).reshape(o4.shape)
    B, H = q4.shape[:2]
    lse4 = np.ascontiguousarray(lse, dtype=np.float64).reshape((B, H, L))
    par = _parallel(B * H, L, S, q4.shape[3])
    br, bc = _tiles(L, S, causal, backward=True)
    split = _split(B * H, -(-S // bc)) if L and S and par else 1
    # uninitialised: each work item writes (or zeroes) every tile it owns. Read in place, q, k, v are
    # the heads of one (B, L, 3, H, D) projection: their gradients go into one buffer laid out alike,
    # which the engine hands on as the projection's gradient without a copy (_grads_packed_like); when
    # they are not, each is laid out as (B, L, H, D) like the output.
    packed = _grads_packed_like(q, k, v) if in_place else None
    if packed is not None:
        dq_out, dk, dv = packed
        dq = dq_out[None] if split == 1 else _split_dq_layout(split, B, H, L, q4.shape[3], q.dtype)
    elif in_place:
        dq = _split_dq_layout(split, B, H, L, q4.shape[3], q.dtype)
        dk = _output_layout(B, H, S, k4.shape[3], q.dtype)
        dv = _output_layout(B, H, S, v4.shape[3], q.dtype)
    else:
        dq = np.empty((split,) + q4.shape, q.dtype)
        dk = np.empty(k4.shape, q.dtype)
        dv = np.empty(v4.shape, q.dtype)
    if not (B * H and L and S):
        dq[:], dk[:], dv[:] = 0, 0, 0
    else:
        run = _flash_backward_parallel if par else _flash_backward_serial
        run(B * H * split, q4, k4, v4, o4, lse4, do4, q.dtype.type(scale), bool(causal), split,
            q.dtype == np.float32, br, bc, dq, dk, dv)
    if packed is not None:
        if split > 1:
            np.sum(dq, axis=0, out=dq_out)
        return dq_out, dk, dv
    dq = dq[0] if split == 1 else dq.sum(axis=0)
    return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)


# ---------------------------------------------------------------------------------- entry points
def _flash_applies(q, k, v, mask):
    # one query row (a decode step) stays on the reference: its two small products read the keys and
    # values where they lie (views into the KV cache), while the tiled kernel would copy them first
    return (mask is None and _HAVE_SCIPY and q.ndim >= 2 and q.shape[-2] > 1
            and q.shape[:-2] == k.shape[:-2] == v.shape[:-2])


kernel_inputs = Kernel(
    "attention.kernel_inputs", kernel_inputs_numba, kernel_inputs_numpy, floats=(0, 1, 2),
    applies=lambda q, k, v, mask=None: _flash_applies(q, k, v, mask),
    doc="q, k, v as the kernel that ``attention_forward`` picks reads them (the autograd op keeps them).")
attention_forward = Kernel(
    "attention.attention_forward", attention_forward_numba, attention_forward_numpy, floats=(0, 1, 2),
    applies=lambda q, k, v, scale, causal=False, mask=None: _flash_applies(q, k, v, mask),
    doc="(out, lse) of attention: the numba version without a mask and with more than one query row.")
attention_backward = Kernel(
    "attention.attention_backward", attention_backward_numba, attention_backward_numpy, floats=(0, 1, 2),
    applies=lambda q, k, v, out, lse, dout, scale, causal=False, mask=None: _flash_applies(q, k, v, mask),
    doc="(dq, dk, dv) of attention_forward, on the same version as the forward would pick.")
