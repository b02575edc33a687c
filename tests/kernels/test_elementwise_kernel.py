"""The parallel elementwise kernels (tinyllm/kernels/elementwise.py) against their NumPy twins: the
same operation on every element, so the results must be bit-identical for every shape and split,
and everything the numba twin does not take (broadcasting, mixed dtypes, views, shared memory,
read-only targets) must get NumPy's result through the dispatch."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyllm as tl
from tinyllm.kernels import elementwise as E
from tinyllm.kernels import pool

OPS = {"add": (E.add_numba, E.add_numpy), "add_inplace": (E.add_inplace_numba, E.add_inplace_numpy),
       "mul_inplace": (E.mul_inplace_numba, E.mul_inplace_numpy)}
CODES = {"add": E.ADD, "add_inplace": E.IADD, "mul_inplace": E.IMUL}


def _operands(rng, shape, dtype, extreme=False):
    a = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape).astype(dtype)
    if extreme and a.size:
        a.reshape(-1)[::3] = 1e4
        b.reshape(-1)[1::5] = -1e4
        a.reshape(-1)[0] = np.inf
        b.reshape(-1)[-1] = np.nan
    return a, b


@settings(deadline=None, max_examples=80)
@given(shape=st.lists(st.integers(1, 70), min_size=1, max_size=3).map(tuple),
       dtype=st.sampled_from([np.float32, np.float64]), op=st.sampled_from(sorted(OPS)),
       n_parts=st.integers(1, 5), extreme=st.booleans(), seed=st.integers(0, 2**16))
def test_every_split_is_bit_identical_to_numpy_twin(shape, dtype, op, n_parts, extreme, seed):
    """Any number of runs (also more runs than 16-element blocks: some runs are then empty), any size
    that does not split evenly; +-1e4, inf and NaN pass through as NumPy's do."""
    a, b = _operands(np.random.default_rng(seed), shape, dtype, extreme)
    expected = OPS[op][1](a.copy(), b)
    got = a.copy()
    out = np.empty_like(a) if op == "add" else got
    E._run_parallel(CODES[op], got.reshape(-1), b.reshape(-1), out.reshape(-1), n_parts)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == dtype


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("size", [1, 17, 40_001])
def test_numba_twin_matches_numpy_twin(op, size):
    a, b = _operands(np.random.default_rng(size), (size,), np.float32)
    numba_twin, numpy_twin = OPS[op]
    got = numba_twin(a.copy(), b)
    np.testing.assert_array_equal(got, numpy_twin(a.copy(), b))


@pytest.fixture
def forced(monkeypatch, one_pool):
    """Dispatch to the numba twin whatever the size, in the one-pool setup (the only one that takes it)."""
    if not one_pool:
        pytest.skip("the one-pool setup does not apply on this machine (one numba thread, or a shared BLAS)")
    monkeypatch.setitem(pool.PARALLEL_MIN, "elementwise", (0, np.inf))


def test_dispatch_takes_the_numba_twin_for_large_contiguous_operands(forced):
    a, b = _operands(np.random.default_rng(0), (96, 40), np.float32)
    with tl.backend.use_kernels("numba"):
        assert E.add.uses_numba(a, b) and E.add_inplace.uses_numba(a, b) and E.mul_inplace.uses_numba(a, b)
    np.testing.assert_array_equal(E.add(a, b), a + b)
    c = a.copy()
    assert E.add_inplace(c, b) is c
    np.testing.assert_array_equal(c, a + b)
    assert E.mul_inplace(c, b) is c
    np.testing.assert_array_equal(c, (a + b) * b)


@pytest.mark.parametrize("case", ["broadcast", "dtypes", "strided", "overlap", "same", "int", "0-d"])
def test_dispatch_falls_back_to_numpy(forced, case):
    """Operands the numba twin does not take get exactly NumPy's result: broadcasting, mixed dtypes,
    non-contiguous views, partly overlapping memory (NumPy buffers it), the same array twice, ints."""
    rng = np.random.default_rng(1)
    buf = rng.standard_normal(2001).astype(np.float32)
    a, b = {
        "broadcast": (rng.standard_normal((30, 40)).astype(np.float32), rng.standard_normal(40).astype(np.float32)),
        "dtypes": (rng.standard_normal((30, 40)), rng.standard_normal((30, 40)).astype(np.float32)),
        "strided": (rng.standard_normal((30, 80)).astype(np.float32)[:, ::2], rng.standard_normal((30, 40)).astype(np.float32)),
        "overlap": (buf[1:], buf[:-1]),
        "same": (buf, buf),
        "int": (np.arange(3000).reshape(30, 100), np.arange(3000).reshape(30, 100)),
        "0-d": (np.array(2.0, np.float32), np.array(3.0, np.float32)),
    }[case]
    if case in ("overlap", "same"):
        assert not E.add.uses_numba(a, b)
    np.testing.assert_array_equal(E.add(a, b), a + b)
    for inplace, reference in ((E.add_inplace, np.add), (E.mul_inplace, np.multiply)):
        if case in ("broadcast", "dtypes") or case == "int" and inplace is E.mul_inplace:
            continue  # (in place needs b to fit a's shape and dtype; ints are covered once)
        if case in ("overlap", "same"):
            work = buf.copy()
            a_, b_ = (work[1:], work[:-1]) if case == "overlap" else (work, work)
            ref = buf.copy()
            ra, rb = (ref[1:], ref[:-1]) if case == "overlap" else (ref, ref)
        else:
            a_, b_, ra, rb = a.copy(), b, a.copy(), b
        reference(ra, rb, out=ra)
        inplace(a_, b_)
        np.testing.assert_array_equal(a_, ra)


def test_read_only_target_raises_numpys_error(forced):
    a, b = _operands(np.random.default_rng(2), (64, 64), np.float32)
    a.flags.writeable = False
    with tl.backend.use_kernels("numba"):
        assert E.add.uses_numba(a, b) and not E.add_inplace.uses_numba(a, b)
    with pytest.raises(ValueError, match="read-only"):
        E.add_inplace(a, b)
    with pytest.raises(ValueError, match="read-only"):
        E.mul_inplace(a, b)


def test_numpy_kernels_setting_selects_the_twin(forced, monkeypatch):
    monkeypatch.setattr(tl.backend, "kernels", lambda: "numpy")
    a, b = _operands(np.random.default_rng(3), (64, 64), np.float32)
    assert not E.add.uses_numba(a, b)
    np.testing.assert_array_equal(E.add(a, b), a + b)


def test_engine_sums_through_the_kernels_give_numpys_result(forced):
    """A leaf reached twice in one backward (the engine's gradient sum) and by two backwards (its
    .grad accumulating): both sums go through the kernels and match the operator's."""
    rng = np.random.default_rng(4)
    x = tl.Tensor(rng.standard_normal((64, 600)).astype(np.float32), requires_grad=True)
    g1, g2 = (rng.standard_normal((64, 600)).astype(np.float32) for _ in range(2))
    (x * tl.Tensor(g1) + x * tl.Tensor(g2)).backward(np.ones((64, 600), np.float32))
    np.testing.assert_array_equal(x.grad, g1 + g2)
    (x * tl.Tensor(g1)).backward(np.ones((64, 600), np.float32))
    np.testing.assert_array_equal(x.grad, (g1 + g2) + g1)
