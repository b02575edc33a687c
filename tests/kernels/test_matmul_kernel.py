"""The parallel matmul of Linear (tinyllm/kernels/matmul.py) against its NumPy twin, the plain ``@``:
random shapes (hypothesis), fewer rows than threads, every layout Linear hands it, as plain Python
(NUMBA_DISABLE_JIT=1); and the dispatch and the one-pool setup of kernels/pool.py, which
``tinyllm.backend.tune_for_training()`` switches on (the ``one_pool`` fixture)."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyllm as tl
from tinyllm import backend
from tinyllm.kernels import matmul as MM
from tinyllm.kernels import pool

TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


def _layout(x, layout):
    """The same values as x, laid out in memory as C, F, or a strided view."""
    if layout == "F":
        return np.asfortranarray(x)
    if layout == "strided":
        big = np.zeros((x.shape[0], 2 * x.shape[1]), x.dtype)
        big[:, ::2] = x
        return big[:, ::2]
    return x


def _assert_close(ours, ref, K, dtype):
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    tol = TOL[np.dtype(dtype)] * max(1.0, np.sqrt(K))
    np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol)


@settings(deadline=None, max_examples=60)
@given(M=st.integers(1, 70), K=st.integers(1, 70), N=st.integers(1, 70),
       dtype=st.sampled_from([np.float32, np.float64]), layout_a=st.sampled_from(["C", "F", "strided"]),
       layout_b=st.sampled_from(["C", "F", "strided"]), seed=st.integers(0, 2**16))
def test_numba_matmuls_match_numpy_twin(M, K, N, dtype, layout_a, layout_b, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    at = rng.standard_normal((K, M)).astype(dtype)
    la, lb, lat = _layout(a, layout_a), _layout(b, layout_b), _layout(at, layout_a)
    _assert_close(MM.matmul_numba(la, lb), MM.matmul_numpy(a, b), K, dtype)
    _assert_close(MM.matmul_tn_numba(lat, lb), MM.matmul_tn_numpy(at, b), K, dtype)


@pytest.mark.parametrize("threads", [1, 2])
def test_fewer_rows_than_threads_and_the_recipe_shapes(threads):
    """One row, a K smaller than the thread count, and Linear's three products at the recipe's
    sizes (x W^T, dy W, dy^T x) with the weight transposed as Linear passes it."""
    import numba
    previous = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        rng = np.random.default_rng(threads)
        for M, K, N in ((1, 5, 3), (3, 1, 4), (768, 128, 384), (768, 512, 128)):
            x = rng.standard_normal((M, K)).astype(np.float32)
            w = rng.standard_normal((N, K)).astype(np.float32)  # (out, in), as in Linear
            g = rng.standard_normal((M, N)).astype(np.float32)
            _assert_close(MM.matmul_numba(x, w.T), x @ w.T, K, np.float32)
            _assert_close(MM.matmul_numba(g, w), g @ w, N, np.float32)
            _assert_close(MM.matmul_tn_numba(g, x), g.T @ x, M, np.float32)
    finally:
        numba.set_num_threads(previous)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(5, 2\) do not align \(4 != 5\)"):
        MM.matmul_numba(np.ones((3, 4)), np.ones((5, 2)))
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(5, 2\) do not align \(3 != 5\)"):
        MM.matmul_tn_numba(np.ones((3, 4)), np.ones((5, 2)))


def test_dispatch(monkeypatch):
    """In the one-pool setup every float product takes the numba version (small ones as one BLAS call
    on the calling thread, never numpy's threaded BLAS) except one row (a decode step: cheaper to call
    there, and numpy's BLAS threads only a large weight) and a few rows through a large weight; the
    rest (integer, mixed dtypes, empty, the NumPy kernel family, the pool off) is the plain ``@``."""
    calls = []
    monkeypatch.setattr(MM, "matmul_numba", lambda a, b: calls.append("mm") or a @ b)
    monkeypatch.setattr(MM, "matmul_tn_numba", lambda a, b: calls.append("tn") or a.T @ b)
    monkeypatch.setattr(backend, "_one_pool", {"saved": [], "blas_core": None})
    monkeypatch.setattr(pool, "threads", lambda: 2)
    big = np.ones((256, 128), np.float32)
    MM.matmul(big, big.T)
    MM.matmul_tn(big, big)
    MM.matmul(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32))  # small: one call on this thread
    MM.matmul(np.ones((64, 128), np.float32), np.ones((384, 128), np.float32).T)  # a decode window
    assert calls == ["mm", "tn", "mm", "mm"]
    calls.clear()
    MM.matmul(np.ones((1, 128), np.float32), np.ones((384, 128), np.float32).T)  # one token: a decode step
    MM.matmul(np.ones((1, 768), np.float32), np.ones((4096, 768), np.float32).T)  # one token, a large weight
    MM.matmul(np.ones((8, 768), np.float32), np.ones((4096, 768), np.float32).T)  # a few rows, a large weight
    MM.matmul(np.ones((1, 768), np.float32), np.ones((768, 4096), np.float32))  # one row, a C-ordered weight
    MM.matmul_tn(np.ones((16, 768), np.float32), np.ones((16, 4096), np.float32))  # K too short to split
    MM.matmul(big.astype(np.int64), big.T.astype(np.int64))  # integer
    MM.matmul(big, big.T.astype(np.float64))  # mixed dtypes
    MM.matmul(np.ones((0, 128), np.float32), big.T)  # empty
    with backend.use_kernels("numpy"):
        MM.matmul(big, big.T)
    monkeypatch.setattr(backend, "_one_pool", None)
    MM.matmul(big, big.T)
    MM.matmul(np.ones((2, 3), np.float32), np.ones((3, 2), np.float32))
    assert calls == []


def test_linear_uses_the_kernel_and_matches_the_reference(monkeypatch, one_pool):
    """F.linear forward and backward through the numba matmuls equal the NumPy family's."""
    if not one_pool:
        pytest.skip("the one-pool setup does not apply on this machine (one numba thread, or a shared BLAS)")
    rng = np.random.default_rng(0)
    x0, w0 = rng.standard_normal((6, 50, 64)), rng.standard_normal((96, 64))
    calls = []
    for name in ("matmul_numba", "matmul_tn_numba"):
        monkeypatch.setattr(MM, name, lambda a, b, run=getattr(MM, name): calls.append(1) or run(a, b))
    results = []
    for family in ("numba", "numpy"):
        with backend.use_kernels(family):
            x = tl.Tensor(x0.astype(np.float32), requires_grad=True)
            w = tl.Tensor(w0.astype(np.float32), requires_grad=True)
            y = tl.nn.functional.linear(x, w)
            (y * y).sum().backward()
            results.append((y.data, x.grad, w.grad))
        if family == "numba":
            assert len(calls) == 3  # x W^T, dy W, dy^T x
    assert len(calls) == 3
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_one_pool_setup_leaves_numpy_blas_alone(one_pool):
    """When the setup is active, the BLAS numba calls runs on one thread and numpy's keeps its own."""
    from threadpoolctl import ThreadpoolController
    if not one_pool:
        pytest.skip("the one-pool setup does not apply on this machine (one numba thread, or a shared BLAS)")
    assert pool.active()
    libs = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    scipy_libs = [c for c in libs if "scipy" in os.path.basename(os.path.dirname(c.filepath))
                  and "numpy" not in c.filepath]
    numpy_libs = [c for c in libs if "numpy" in c.filepath]
    assert scipy_libs and all(c.num_threads == 1 for c in scipy_libs)
    if (os.cpu_count() or 1) > 1 and not any(os.environ.get(v) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")):
        assert numpy_libs and all(c.num_threads > 1 for c in numpy_libs)


def test_one_pool_is_off_until_asked_and_restored_after():
    """Importing tinyllm leaves the setup off; tune_for_training() switches it on (where it applies)
    and restore_defaults() gives scipy's BLAS its threads back."""
    code = textwrap.dedent("""
        import scipy.linalg.cython_blas  # the BLAS the setup limits, loaded before counting threads
        from threadpoolctl import ThreadpoolController
        from tinyllm import backend
        from tinyllm.kernels import pool
        blas = lambda: sorted((c.filepath, c.num_threads) for c in ThreadpoolController().lib_controllers
                              if c.user_api == "blas")
        before = blas()
        print('imported', pool.active())
        print('tuned', backend.tune_for_training()['one_pool'], pool.active())
        backend.restore_defaults()
        print('restored', pool.active(), blas() == before)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "imported False" in res.stdout and "restored False True" in res.stdout
    tuned = res.stdout.split("tuned ")[1].split()
    assert tuned[0] == tuned[1]  # what tune_for_training() reports is what holds


def test_one_pool_switch_and_plain_python():
    """TINYLLM_ONE_POOL=0 makes tune_for_training() leave the setup off (numpy's matmul and
    one-thread kernels); NUMBA_DISABLE_JIT=1 runs the numba version as plain Python."""
    off = ("from tinyllm import backend; from tinyllm.kernels import pool; "
           "print('one_pool', backend.tune_for_training()['one_pool'], pool.active())")
    res = subprocess.run([sys.executable, "-c", off], env=dict(os.environ, TINYLLM_ONE_POOL="0"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "one_pool False False" in res.stdout, res.stderr[-3000:]
    code = textwrap.dedent("""
        import numpy as np
        from numba import config
        assert config.DISABLE_JIT
        from tinyllm.kernels import matmul as MM
        rng = np.random.default_rng(0)
        a, b, c = rng.standard_normal((7, 5)), rng.standard_normal((5, 3)), rng.standard_normal((7, 3))
        np.testing.assert_allclose(MM.matmul_numba(a, b), a @ b, rtol=1e-12)
        np.testing.assert_allclose(MM.matmul_tn_numba(a, c), a.T @ c, rtol=1e-12)
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, NUMBA_DISABLE_JIT="1"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]
