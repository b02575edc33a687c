"""Numeric helpers the numba kernels share: a vectorisable float32 exp, and the shifted exponentials
of softmax rows (softmax, cross-entropy and attention build on them)."""
import math

import numpy as np
from numba import njit

# float32 exp: exp(x) = 2^k * exp(r), k = round(x / ln 2), r = x - k ln 2 (ln 2 split in two so k ln 2
# is exact), exp(r) by cephes' expf polynomial on |r| <= ln(2)/2. Typed globals keep it in float32.
# numba has no vector exp without Intel's SVML, and libm's scalar expf is several times slower; the
# polynomial's max relative error against np.exp is 8e-8.
_F32 = np.float32
_LOG2E = _F32(1.4426950408889634)
_LN2_HI = _F32(0.693359375)
_LN2_LO = _F32(-2.12194440e-4)
_P0, _P1, _P2 = _F32(1.9875691500e-4), _F32(1.3981999507e-3), _F32(8.3334519073e-3)
_P3, _P4, _P5 = _F32(4.1665795894e-2), _F32(1.6666665459e-1), _F32(5.0000001201e-1)
_XMIN = _F32(-87.33654)  # exp(_XMIN) = 2^-126, the smallest normal float32; below it we return 0
_XMAX = _F32(88.0)
_ONE = _F32(1.0)
_ROUND = _F32(12582912.0)  # 1.5 * 2^23: x + _ROUND - _ROUND rounds x to an integer (|x| < 2^22)


# fastmath 'contract' alone: LLVM may fuse each multiply-add into one FMA (one rounding instead of
# two, so no less accurate); the rounding to k is branch-free so the loop vectorises.
@njit(cache=True, fastmath={"contract"})
def exp_inplace(x, n, ibuf, fast):
    """x[:n] = exp(x[:n]); ``fast`` (float32 only) uses the polynomial exp, else math.exp. ibuf:
    int32 scratch of at least n."""
    if not fast:
        for j in range(n):
            x[j] = math.exp(x[j])
        return
    for j in range(n):
        s = x[j]
        t = s if s < _XMAX else _XMAX
        t = t if t > _XMIN else _XMIN
        k = (t * _LOG2E + _ROUND) - _ROUND  # round(t / ln 2): the add pushes the fraction out
        r = t - k * _LN2_HI - k * _LN2_LO
        p = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * r * r + r + _ONE
        x[j] = p
        # the bits of the float32 2^k; 0.0 below _XMIN (also -inf: masked keys); a NaN for a NaN
        ibuf[j] = ((np.int32(k) + 127) << 23) if s >= _XMIN else (0 if s < _XMIN else 0x7FC00000)
    bits = ibuf.view(np.float32)
    for j in range(n):
        x[j] *= bits[j]


@njit(cache=True, error_model="numpy")
def row_max(xr):
    """max(xr) of a non-empty row, with eight running maxima: one chain of max(m, x) would wait on
    each compare. A NaN is skipped unless it is the first element; either way its exp makes the
    row's sum NaN."""
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = xr[0]
    n8 = xr.size - xr.size % 8
    for c in range(0, n8, 8):
        a0, a1, a2, a3 = xr[c], xr[c + 1], xr[c + 2], xr[c + 3]
        a4, a5, a6, a7 = xr[c + 4], xr[c + 5], xr[c + 6], xr[c + 7]
        m0, m1 = (a0 if a0 > m0 else m0), (a1 if a1 > m1 else m1)
        m2, m3 = (a2 if a2 > m2 else m2), (a3 if a3 > m3 else m3)
        m4, m5 = (a4 if a4 > m4 else m4), (a5 if a5 > m5 else m5)
        m6, m7 = (a6 if a6 > m6 else m6), (a7 if a7 > m7 else m7)
    m = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    for c in range(n8, xr.size):
        m = max(m, xr[c])
    return m


@njit(cache=True, error_model="numpy")
def exp_shifted_rows(x, lo, hi, out, row_maxima, ibuf, fast):
    """out[i - lo] = exp(x[i] - m_i) and row_maxima[i - lo] = m_i = max(x[i]), for the rows lo..hi
    of x; out is C-contiguous (hi - lo, C), ibuf int32 of its size. One exp call covers the whole
    block: a call per row costs as much as the exps on rows as short as 64 keys or 84 classes.
    float32 (``fast``) uses the polynomial exp."""
    C = x.shape[1]
    for i in range(lo, hi):
        xr, orow = x[i], out[i - lo]
        m = row_max(xr)
        row_maxima[i - lo] = m
        for c in range(C):
            orow[c] = xr[c] - m  # -inf - -inf (an all -inf row) is NaN, as in the formula
    exp_inplace(out.reshape(out.size), out.size, ibuf, fast)
