"""The fused numba softmax cross-entropy (tinyllm/kernels/cross_entropy.py) against its NumPy twin:
random shapes, class weights, label smoothing, ignored rows, logits of +-1e4, both drivers (serial
and prange over blocks of rows), and plain Python."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import force_driver
from tinyllm.kernels import cross_entropy as K

TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2e-6}


def _both(x, t, w, ignore, eps, g_rows):
    res = []
    for fwd, bwd in ((K.cross_entropy_forward_numba, K.cross_entropy_backward_numba),
                     (K.cross_entropy_forward_numpy, K.cross_entropy_backward_numpy)):
        losses, lse, denom = fwd(x, t, w, ignore, eps)
        res.append((losses, lse, np.array(denom), bwd(x, t, w, ignore, eps, lse, g_rows)))
    return res


def _assert_twins_agree(ours, ref, dtype, where=""):
    """The numba and NumPy results (losses, lse, denom, grad): same dtypes and shapes, finite, and
    equal within the dtype's tolerance, relative to the largest value."""
    tol = TOL[np.dtype(dtype)]
    for name, a, b in zip(("losses", "lse", "denom", "grad"), ours, ref):
        assert a.dtype == b.dtype and a.shape == b.shape, where + name
        assert np.isfinite(a).all(), where + name
        size = max(1.0, float(np.abs(b).max(initial=0)))
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * size, err_msg=where + name)


@settings(deadline=None, max_examples=80)
@given(N=st.integers(1, 50), C=st.sampled_from([1, 2, 3, 16, 84, 257]), dtype=st.sampled_from([np.float32, np.float64]),
       weighted=st.booleans(), eps=st.sampled_from([0.0, 0.1, 1.0]), ignore_frac=st.sampled_from([0.0, 0.3, 1.0]),
       scale=st.sampled_from([1.0, 30.0, 1e4]), seed=st.integers(0, 2**16))
def test_numba_matches_numpy_twin(N, C, dtype, weighted, eps, ignore_frac, scale, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, C)) * scale).astype(dtype)
    t = rng.integers(0, C, N)
    t[rng.random(N) < ignore_frac] = -100
    w = rng.random(C).astype(dtype) + 0.1 if weighted else None
    g_rows = rng.standard_normal(N)
    ours, ref = _both(x, t, w, -100, eps, g_rows)
    _assert_twins_agree(ours, ref, dtype)
    assert np.all(ours[3][t == -100] == 0)


@pytest.mark.parametrize("driver", ["parallel", "serial"])
@pytest.mark.parametrize("N", [1, 63, 64, 65, 200])  # around and across the 64-row blocks
def test_cross_entropy_drivers(monkeypatch, driver, N):
    force_driver(monkeypatch, K, driver)
    rng = np.random.default_rng(N)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal((N, 84)) * 30).astype(dtype)
        t = rng.integers(0, 84, N)
        t[::5] = -100
        w = rng.random(84) + 0.1
        ours, ref = _both(x, t, w, -100, 0.1, rng.standard_normal(N))
        _assert_twins_agree(ours, ref, dtype, f"{driver} N={N} ")


def test_nan_and_inf_logits_propagate_like_the_formula():
    x = np.array([[0.0, np.nan, 1.0], [0.0, np.inf, 1.0], [-np.inf, -np.inf, -np.inf]], np.float32)
    t = np.array([0, 0, 0])
    for fwd in (K.cross_entropy_forward_numba, K.cross_entropy_forward_numpy):
        with np.errstate(invalid="ignore"):
            losses, lse, _ = fwd(x, t, None, -100, 0.0)
        assert np.isnan(losses).all(), fwd.__name__


def test_kernel_runs_as_plain_python():
    code = textwrap.dedent("""
        import numpy as np
        from numba import config
        assert config.DISABLE_JIT
        from tinyllm.kernels import cross_entropy as K
        rng = np.random.default_rng(0)
        for dtype, tol in ((np.float64, 1e-12), (np.float32, 2e-6)):
            x = rng.standard_normal((6, 5)).astype(dtype); t = np.array([0, 4, -100, 2, 2, 1]); g = rng.standard_normal(6)
            a = K.cross_entropy_forward_numba(x, t, None, -100, 0.1); b = K.cross_entropy_forward_numpy(x, t, None, -100, 0.1)
            np.testing.assert_allclose(a[0], b[0], rtol=tol, atol=tol)
            np.testing.assert_allclose(K.cross_entropy_backward_numba(x, t, None, -100, 0.1, a[1], g),
                                       K.cross_entropy_backward_numpy(x, t, None, -100, 0.1, b[1], g), rtol=tol, atol=tol)
        print("ok")
    """)
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]
