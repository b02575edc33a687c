"""The shape rule of tinyllm/kernels/matmul.py's numba version: each split (a's rows or the weight's
columns for a @ b; K with partial sums, dW's rows or dW's columns for a^T b) against the NumPy twin,
at shapes that do not divide between the threads, one row, an F-ordered b and float64; and which split
each of the training recipe's products takes (the recipe's arithmetic must not move)."""
import numba
import numpy as np
import pytest

from tinyllm.kernels import matmul as MM

TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


def _close(ours, ref, K):
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    tol = TOL[ref.dtype] * max(1.0, np.sqrt(K))
    np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol)


@pytest.fixture(params=[1, 2, 3])
def threads(request):
    previous = numba.get_num_threads()
    numba.set_num_threads(min(request.param, numba.config.NUMBA_NUM_THREADS))
    yield numba.get_num_threads()
    numba.set_num_threads(previous)


SHAPES = [(1, 7, 300), (5, 3, 301), (37, 65, 129), (300, 9, 11), (2, 1, 5), (1, 1, 1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,K,N", SHAPES)
def test_every_split_of_a_b_matches_the_twin(threads, M, K, N, dtype):
    rng = np.random.default_rng(M * 1000 + N)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    for bl in (b, np.asfortranarray(b), rng.standard_normal((N, K)).astype(dtype).T):  # C, F, a weight's .T
        ref = a @ bl
        for driver in (MM._matmul_rows, MM._matmul_cols):
            out = np.empty((M, N), dtype)
            driver(a, bl, out, min(threads, M if driver is MM._matmul_rows else N))
            _close(out, ref, K)
        _close(MM.matmul_numba(a, bl), ref, K)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K,M,N", SHAPES)
def test_every_split_of_a_t_b_matches_the_twin(threads, K, M, N, dtype, monkeypatch):
    rng = np.random.default_rng(K * 1000 + N)
    a = rng.standard_normal((K, M)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    ref = MM.matmul_tn_numpy(a, b)
    out = np.empty((M, N), dtype)
    MM._matmul_row_blocks(a.T, b, out, min(threads, M))
    _close(out, ref, K)
    out = np.empty((M, N), dtype)
    MM._matmul_cols(a.T, b, out, min(threads, N))
    _close(out, ref, K)
    for limit in (0, MM.MAX_TN_PARTIAL):  # the partial-sum split, and the row or column split
        monkeypatch.setattr(MM, "MAX_TN_PARTIAL", limit)
        _close(MM.matmul_tn_numba(a, b), ref, K)
        _close(MM.matmul_tn_numba(a, np.asfortranarray(b)), ref, K)


def test_strided_output_blocks_are_written_in_place():
    """_gemm writes into a block of a larger array's columns and leaves the rest alone."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((6, 4)), rng.standard_normal((4, 10))
    out = np.full((6, 10), np.nan)
    MM._gemm_into(a, b[:, 3:7], out[:, 3:7])
    np.testing.assert_allclose(out[:, 3:7], a @ b[:, 3:7], rtol=1e-12)
    assert np.isnan(out[:, :3]).all() and np.isnan(out[:, 7:]).all()


def test_the_recipes_products_keep_their_split(monkeypatch):
    """The recipe's Linear products (768 tokens, width 128, vocabulary 84) take the row split and the
    partial-sum split, as before the shape rule: the training recipe stays bit-identical."""
    calls = []
    for name in ("_matmul_rows", "_matmul_cols", "_matmul_row_blocks", "_matmul_tn_split"):
        monkeypatch.setattr(MM, name, (lambda name: lambda *args: calls.append(name))(name))
    monkeypatch.setattr(MM.pool, "threads", lambda: 2)
    for C, O in ((128, 384), (128, 128), (128, 512), (512, 128), (128, 84)):
        x, w, g = np.ones((768, C), np.float32), np.ones((O, C), np.float32), np.ones((768, O), np.float32)
        MM.matmul_numba(x, w.T)
        MM.matmul_numba(g, w)
        MM.matmul_tn_numba(g, x)
    assert set(calls) == {"_matmul_rows", "_matmul_tn_split"}


def test_wide_products_split_the_weight(monkeypatch):
    """GPT-2-small's shapes (256 tokens, width 768, vocabulary 50257) split the larger operand."""
    calls = []
    for name in ("_matmul_rows", "_matmul_cols", "_matmul_row_blocks", "_matmul_tn_split"):
        monkeypatch.setattr(MM, name, (lambda name: lambda *args: calls.append(name))(name))
    monkeypatch.setattr(MM.pool, "threads", lambda: 2)
    x, w = np.ones((256, 768), np.float32), np.ones((3072, 768), np.float32)
    g = np.ones((256, 3072), np.float32)
    MM.matmul_numba(x, w.T)
    MM.matmul_tn_numba(g, x)
    MM.matmul_tn_numba(x, g)
    assert calls == ["_matmul_cols", "_matmul_row_blocks", "_matmul_cols"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,K,N", SHAPES + [(64, 128, 384), (300, 40, 700)])
def test_the_serial_drivers_give_the_parallel_drivers_bits(threads, M, K, N, dtype):
    """What the guard runs on a busy machine: the same blocks on one thread, bit for bit."""
    rng = np.random.default_rng(M + K + N)
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    for parallel, serial, x, y, n in [(MM._matmul_rows, MM._rows_serial, a, b, min(M, threads)),
                                      (MM._matmul_cols, MM._cols_serial, a, b, threads),
                                      (MM._matmul_row_blocks, MM._row_blocks_serial, a.T.copy().T, b, min(M, threads))]:
        ours, theirs = np.empty((M, N), dtype), np.empty((M, N), dtype)
        parallel(x, y, ours, n)
        serial(x, y, theirs, n)
        assert np.array_equal(ours, theirs), parallel.__name__
    g = rng.standard_normal((M, N)).astype(dtype)  # dW = a^T g with K = M split, partial sums added
    n = max(1, min(M, threads))
    ours, theirs = np.empty((K, N), dtype), np.empty((K, N), dtype)
    MM._matmul_tn_split(a, g, np.empty((n - 1, K, N), dtype), ours)
    MM._tn_split_serial(a, g, np.empty((n - 1, K, N), dtype), theirs)
    assert np.array_equal(ours, theirs)


def test_the_guard_s_serial_answer_keeps_the_numba_split(monkeypatch, one_pool):
    """When the guard answers "serial", matmul still takes its numba version (its own serial
    driver), never numpy's BLAS, so a busy machine never changes a run's numbers."""
    if not one_pool:
        pytest.skip("the one-pool setup does not apply on this machine")
    from tinyllm.kernels import pool
    a = np.random.default_rng(0).standard_normal((512, 128)).astype(np.float32)  # rows: 512 >= 384
    b = np.random.default_rng(1).standard_normal((128, 384)).astype(np.float32)
    monkeypatch.setattr(pool.GUARD, "enabled", True)
    monkeypatch.setattr(pool.GUARD, "choose", lambda key: False)  # always serial
    called = []
    monkeypatch.setattr(MM, "_rows_serial", lambda *args: called.append(args) or MM._dot_into(args[0], args[1], args[2]))
    if pool.threads() < 2:
        pytest.skip("one thread: no parallel driver to replace")
    assert MM.matmul.uses_numba(a, b)
    MM.matmul(a, b)
    assert called


def test_a_decode_window_s_products_run_on_the_calling_thread(monkeypatch, one_pool):
    """A 64-token window of the recipe model (at most SERIAL_UP_TO flops on a weight of at most
    SMALL_WEIGHT elements) is one BLAS call on the calling thread: no parallel region and no numpy
    threads to stall on a busy machine; the training step's products (768 rows) keep the parallel
    drivers, and one token (a decode step) stays on numpy's BLAS."""
    if not one_pool:
        pytest.skip("the one-pool setup does not apply on this machine")
    from tinyllm.kernels import pool
    if pool.threads() < 2:
        pytest.skip("one thread: no parallel driver to replace")
    calls = []
    for name in ("_rows_serial", "_cols_serial", "_matmul_rows", "_matmul_cols", "_dot_into", "matmul_numpy"):
        run = getattr(MM, name)
        monkeypatch.setattr(MM, name, lambda *args, name=name, run=run: calls.append(name) or run(*args))
    rng = np.random.default_rng(0)
    for rows, k, n in [(64, 128, 384), (64, 128, 512), (1, 128, 384), (1, 768, 3072), (768, 128, 384)]:
        x, w = rng.standard_normal((rows, k)).astype(np.float32), rng.standard_normal((n, k)).astype(np.float32)
        np.testing.assert_allclose(MM.matmul(x, w.T), x @ w.T, rtol=1e-4, atol=1e-4)
    assert calls == ["_dot_into", "_dot_into", "matmul_numpy", "matmul_numpy", "_matmul_rows"]
