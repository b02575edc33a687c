"""The fused numba softmax (tinyllm/kernels/softmax.py) against its NumPy twin: random shapes and
scales (up to +-1e4), masked (-inf) entries, rows of one element, both drivers (serial and prange over
blocks of rows), the edge rows that must come out NaN, the dispatch, and plain Python. The op's
parity with torch is in tests/nn/test_functional.py, which runs on this kernel by default."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import force_driver
from tinyllm import backend
from tinyllm.kernels import softmax as K

TOL = {np.dtype(np.float64): 1e-13, np.dtype(np.float32): 1e-6}


def _check(x, g):
    y, y_ref = K.softmax_forward_numba(x), K.softmax_forward_numpy(x)
    dx, dx_ref = K.softmax_backward_numba(y, g), K.softmax_backward_numpy(y_ref, g)
    tol = TOL[x.dtype]
    assert np.isfinite(y_ref).all() and np.isfinite(dx_ref).all()
    for name, a, b in (("y", y, y_ref), ("dx", dx, dx_ref)):
        assert a.dtype == b.dtype == x.dtype and a.shape == b.shape == x.shape, name
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max(initial=0))),
                                   err_msg=name)


@settings(deadline=None, max_examples=80)
@given(shape=st.lists(st.integers(1, 70), min_size=1, max_size=3).map(tuple),
       dtype=st.sampled_from([np.float32, np.float64]), scale=st.sampled_from([1.0, 30.0, 1e4]),
       masked=st.sampled_from([0.0, 0.5]), seed=st.integers(0, 2**16))
def test_numba_matches_numpy_twin(shape, dtype, scale, masked, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    x[rng.random(shape) < masked] = -np.inf
    x[..., 0] = (rng.standard_normal(shape[:-1]) * scale).astype(dtype)  # every row keeps a finite entry
    _check(x, rng.standard_normal(shape).astype(dtype))


@pytest.mark.parametrize("driver", ["parallel", "serial"])
@pytest.mark.parametrize("rows", [1, 63, 64, 65, 300])  # around and across the 64-row blocks
def test_softmax_drivers(monkeypatch, driver, rows):
    force_driver(monkeypatch, K, driver)
    rng = np.random.default_rng(rows)
    for dtype in (np.float32, np.float64):
        x = (rng.standard_normal((rows, 37)) * 30).astype(dtype)
        _check(x, rng.standard_normal(x.shape).astype(dtype))


def test_edge_rows_come_out_nan_like_the_formula():
    x = np.array([[0.0, np.nan, 1.0], [np.nan, 0.0, 1.0], [0.0, np.inf, 1.0], [-np.inf, -np.inf, -np.inf],
                  [-np.inf, 0.0, -np.inf]], np.float32)
    for dtype in (np.float32, np.float64):
        with np.errstate(invalid="ignore"):
            y, ref = K.softmax_forward_numba(x.astype(dtype)), K.softmax_forward_numpy(x.astype(dtype))
        assert np.isnan(y[:4]).all() and np.isnan(ref[:4]).all()
        np.testing.assert_array_equal(y[4], [0.0, 1.0, 0.0])


def test_dispatch_takes_the_kernel_only_for_the_last_dim(monkeypatch):
    calls = []
    monkeypatch.setattr(K, "softmax_forward_numba", lambda x, dim: calls.append(x.shape) or K.softmax_forward_numpy(x))
    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    with backend.use_kernels("numba"):
        K.forward(x, 2)
        K.forward(x, -1)
        np.testing.assert_allclose(K.forward(x, 1), K.softmax_forward_numpy(x, 1), rtol=1e-6)
    with backend.use_kernels("numpy"):
        K.forward(x, -1)
    assert calls == [(3, 4, 5), (3, 4, 5)]


def test_kernel_runs_as_plain_python():
    code = textwrap.dedent("""
        import numpy as np
        from numba import config
        assert config.DISABLE_JIT
        from tinyllm.kernels import softmax as K
        rng = np.random.default_rng(0)
        for dtype, tol in ((np.float64, 1e-13), (np.float32, 1e-6)):
            x = rng.standard_normal((6, 5)).astype(dtype); g = rng.standard_normal((6, 5)).astype(dtype)
            y = K.softmax_forward_numba(x)
            np.testing.assert_allclose(y, K.softmax_forward_numpy(x), rtol=tol, atol=tol)
            np.testing.assert_allclose(K.softmax_backward_numba(y, g), K.softmax_backward_numpy(y, g), rtol=tol, atol=tol)
        print("ok")
    """)
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]
