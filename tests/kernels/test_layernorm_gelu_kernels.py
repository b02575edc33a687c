"""The fused numba LayerNorm and GELU kernels against their NumPy twins: random shapes (hypothesis),
both drivers (serial and prange), large offsets, as plain Python (NUMBA_DISABLE_JIT=1), and the
float32 GELU fast path against the exact float64 formula on a dense grid."""
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import force_driver
from tinyllm.kernels import gelu as G
from tinyllm.kernels import layernorm as LN

TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2e-6}


def _ln_both(x, w, b, g, eps=1e-5):
    ours = LN.layernorm_forward_numba(x, w, b, eps)
    ref = LN.layernorm_forward_numpy(x, w, b, eps)
    ours_b = LN.layernorm_backward_numba(x, w, ours[1], ours[2], g)
    ref_b = LN.layernorm_backward_numpy(x, w, ref[1], ref[2], g)
    return ours + ours_b, ref + ref_b


def _assert_ln_close(ours, ref, dtype, what="", cond=1.0):
    """``cond``: how much the input's offset amplifies rounding (|mean| / std of the rows)."""
    tol = TOL[np.dtype(dtype)] * cond
    for name, a, b in zip(("y", "mean", "rstd", "dx", "dw", "db"), ours, ref):
        if b is None:
            assert a is None, f"{what}{name}"
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what}{name}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
        scale = max(1.0, float(np.abs(b).max(initial=0)))
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale, err_msg=f"{what}{name}")


@settings(deadline=None, max_examples=60)
@given(N=st.integers(1, 200), C=st.one_of(st.integers(1, 40), st.sampled_from([7, 8, 9, 64, 128, 257])),
       dtype=st.sampled_from([np.float32, np.float64]), affine=st.sampled_from(["both", "weight", "none"]),
       offset=st.sampled_from([0.0, 1e4, -3.0]), seed=st.integers(0, 2**16))
def test_layernorm_numba_matches_numpy_twin(N, C, dtype, affine, offset, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, C)) + offset).astype(dtype)
    w = rng.standard_normal(C).astype(dtype) if affine != "none" else None
    b = rng.standard_normal(C).astype(dtype) if affine == "both" else None
    g = rng.standard_normal((N, C)).astype(dtype)
    ours, ref = _ln_both(x, w, b, g)
    for a in ours:
        assert np.isfinite(a).all()
    _assert_ln_close(ours, ref, dtype, cond=1.0 + abs(offset))


@pytest.mark.parametrize("driver", ["parallel", "serial"])
@pytest.mark.parametrize("N", [1, 63, 64, 65, 300])
def test_layernorm_drivers(monkeypatch, driver, N):
    force_driver(monkeypatch, LN, driver)
    rng = np.random.default_rng(N)
    x, g = rng.standard_normal((2, N, 24))
    w, b = rng.standard_normal((2, 24))
    ours, ref = _ln_both(x, w, b, g)
    _assert_ln_close(ours, ref, np.float64, f"{driver} N={N}: ")


def test_layernorm_constant_rows():
    """A constant row has var 0: rstd = 1/sqrt(eps), xhat = 0, and finite gradients."""
    x = np.full((3, 16), 2.5, np.float32)
    g = np.ones((3, 16), np.float32)
    ours, ref = _ln_both(x, np.ones(16, np.float32), np.zeros(16, np.float32), g)
    _assert_ln_close(ours, ref, np.float32)
    np.testing.assert_allclose(ours[2], 1 / math.sqrt(1e-5), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# GELU
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_float32_fast_path_accuracy(approximate):
    """float32 runs a vectorised erfc / tanh / exp (kernels/gelu.py). Against the exact formula in
    float64: the output within 2e-7 (2 + x^2) relative for |x| <= 5 (the x^2 is the conditioning of
    exp(-x^2 / 2) in float32; torch's float32 1 + erf loses all relative accuracy out there) and 1e-7
    absolute everywhere, the derivative within 3e-7 absolute; inf, nan and 0 behave like the formula."""
    x = np.linspace(-20, 20, 400001).astype(np.float32)
    x64 = x.astype(np.float64)
    if approximate == "none":
        cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x64])  # exact in both tails
        ref = x64 * cdf
        dref = cdf + x64 * np.exp(-0.5 * x64 * x64) / math.sqrt(2 * math.pi)
    else:
        u = math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)
        t = np.tanh(u)
        ref = 0.5 * x64 * (1 + t)
        dref = 0.5 * (1 + t) + 0.5 * x64 / np.cosh(u) ** 2 * math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x64 ** 2)
    y = G.gelu_forward_numba(x, approximate).astype(np.float64)
    dy = G.gelu_backward_numba(x, np.ones_like(x), approximate).astype(np.float64)
    near = np.abs(x64) <= 5
    assert np.all(np.abs(y - ref)[near] <= 2e-7 * (2 + x64[near] ** 2) * np.abs(ref)[near])
    assert np.abs(y - ref).max() <= 1e-7 * max(1.0, float(np.abs(x64).max()))
    assert np.abs(dy - dref).max() <= 3e-7
    specials = np.array([np.inf, -np.inf, np.nan, 0.0], np.float32)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(G.gelu_forward_numba(specials, approximate)[[0, 2, 3]], [np.inf, np.nan, 0.0])


@pytest.mark.parametrize("driver", ["parallel", "serial"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_drivers(monkeypatch, driver, dtype):
    force_driver(monkeypatch, G, driver)
    x = np.random.default_rng(0).standard_normal(5000).astype(dtype) * 3  # not a multiple of CHUNK
    g = np.random.default_rng(1).standard_normal(5000).astype(dtype)
    tol = TOL[np.dtype(dtype)]
    x64, g64 = x.astype(np.float64), g.astype(np.float64)  # float32 NumPy loses the tails to cancellation
    for approximate in ("none", "tanh"):
        np.testing.assert_allclose(G.gelu_forward_numba(x, approximate), G.gelu_forward_numpy(x64, approximate),
                                   rtol=tol, atol=tol)
        np.testing.assert_allclose(G.gelu_backward_numba(x, g, approximate),
                                   G.gelu_backward_numpy(x64, g64, approximate), rtol=tol, atol=tol)
        y, d = G.gelu_forward_and_derivative_numba(x, approximate)
        y_ref, d_ref = G.gelu_forward_and_derivative_numpy(x64, approximate)
        np.testing.assert_allclose(y, y_ref, rtol=tol, atol=tol)
        np.testing.assert_allclose(d, d_ref, rtol=tol, atol=tol)
        # the one-pass form is the same arithmetic as the separate passes, bit for bit
        np.testing.assert_array_equal(y, G.gelu_forward_numba(x, approximate))
        np.testing.assert_array_equal(g * d, G.gelu_backward_numba(x, g, approximate))


def test_kernels_run_as_plain_python():
    """NUMBA_DISABLE_JIT=1 runs the numba twins as plain Python, for debugging."""
    code = textwrap.dedent("""
        import numpy as np
        from numba import config
        assert config.DISABLE_JIT
        from tinyllm.kernels import gelu as G, layernorm as LN
        rng = np.random.default_rng(0)
        for dtype, tol in ((np.float64, 1e-12), (np.float32, 2e-6)):
            x, g = (rng.standard_normal((5, 11)).astype(dtype) for _ in range(2))
            w, b = (rng.standard_normal(11).astype(dtype) for _ in range(2))
            y, m, r = LN.layernorm_forward_numba(x, w, b, 1e-5)
            dx, dw, db = LN.layernorm_backward_numba(x, w, m, r, g)
            y2, m2, r2 = LN.layernorm_forward_numpy(x, w, b, 1e-5)
            dx2, dw2, db2 = LN.layernorm_backward_numpy(x, w, m2, r2, g)
            for a, c in ((y, y2), (dx, dx2), (dw, dw2), (db, db2)):
                np.testing.assert_allclose(a, c, rtol=tol, atol=tol)
            for approx in ("none", "tanh"):
                np.testing.assert_allclose(G.gelu_forward_numba(x, approx), G.gelu_forward_numpy(x, approx), rtol=tol, atol=tol)
                np.testing.assert_allclose(G.gelu_backward_numba(x, g, approx), G.gelu_backward_numpy(x, g, approx), rtol=tol, atol=tol)
        print("ok")
    """)
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]
