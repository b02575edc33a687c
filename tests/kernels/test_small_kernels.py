"""The fused numba Adam/AdamW update against its NumPy twin (tinyllm/kernels/adam.py): the same
operations in the same order, so the results must be bit-identical, in float32 and float64, for every
option (decoupled or L2 weight decay, amsgrad, maximize, a large lerp weight). Also the gradient-norm
kernel (tinyllm/kernels/norms.py) and the embedding scatter-add (kernels/embedding.py) against theirs."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyllm import backend
from tinyllm.kernels import adam as K

from helpers import force_driver


@settings(deadline=None, max_examples=60)
@given(shape=st.lists(st.integers(1, 40), min_size=1, max_size=3).map(tuple),
       dtype=st.sampled_from([np.float32, np.float64]), lr=st.sampled_from([1e-3, 0.1, 0.0]),
       beta1=st.sampled_from([0.9, 0.0, 0.3]), beta2=st.sampled_from([0.99, 0.999]),
       wd=st.sampled_from([0.0, 0.1]), decoupled=st.booleans(), amsgrad=st.booleans(), maximize=st.booleans(),
       steps=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_numba_update_is_bit_identical_to_numpy_twin(shape, dtype, lr, beta1, beta2, wd, decoupled, amsgrad,
                                                     maximize, steps, seed):
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(shape).astype(dtype)
    states = []
    for run in (K.adam_step_numba, K.adam_step_numpy):
        p = p0.copy()
        m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
        grads = np.random.default_rng(seed + 1)
        for step in range(1, steps + 1):
            g = (grads.standard_normal(shape) * 10.0 ** grads.integers(-4, 3)).astype(dtype)
            run(p, g, m, v, vmax if amsgrad else None, lr, beta1, beta2, 1e-8, wd, float(step), decoupled,
                amsgrad, maximize)
        states.append((p, m, v, vmax))
    for name, a, b in zip(("p", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"), *states):
        np.testing.assert_array_equal(a, b, err_msg=name)
        assert a.dtype == dtype


@pytest.mark.parametrize("driver", ["parallel", "serial"])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("size", [1, 3, 40_001])
def test_both_drivers_are_bit_identical_to_numpy_twin(monkeypatch, driver, amsgrad, size):
    """The parallel driver (a chunk of the parameter per thread, patched thresholds force it) and the
    serial one give the reference's bits, also for sizes that do not split evenly or at all."""
    force_driver(monkeypatch, K, driver)
    rng = np.random.default_rng(size)
    states = []
    for run in (K.adam_step_numba, K.adam_step_numpy):
        p = rng.standard_normal(size).astype(np.float32) if not states else states[0][4].copy()
        p0 = p.copy()
        m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
        grads = np.random.default_rng(size + 1)
        for step in (1, 2, 3):
            g = grads.standard_normal(size).astype(np.float32)
            run(p, g, m, v, vmax if amsgrad else None, 1e-2, 0.9, 0.99, 1e-8, 0.1, float(step), True,
                amsgrad, False)
        states.append((p, m, v, vmax, p0))
    for name, a, b in zip(("p", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"), states[0][:4], states[1][:4]):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert not np.array_equal(states[0][0], states[0][4])  # the update did something


def test_dispatch_uses_the_reference_for_non_contiguous_state():
    p = np.ones((4, 6), np.float32)
    m = np.zeros((6, 4), np.float32).T  # a view: not C-contiguous
    assert not K.adam_step.uses_numba(p, np.ones_like(p), m, np.zeros_like(p))
    with backend.use_kernels("numba"):
        assert K.adam_step.uses_numba(p, np.ones_like(p), np.zeros_like(p), np.zeros_like(p))
    K.adam_step(p, np.ones_like(p), m, np.zeros_like(p), None, 0.1, 0.9, 0.99, 1e-8, 0.0, 1.0, True, False, False)
    assert np.all(p < 1)


@settings(deadline=None, max_examples=30)
@given(shape=st.lists(st.integers(0, 30), max_size=3).map(tuple), dtype=st.sampled_from([np.float32, np.float64]),
       scale=st.sampled_from([1.0, 1e-20, 1e15]), seed=st.integers(0, 2**16))
def test_sum_of_squares_numba_matches_numpy_twin(shape, dtype, scale, seed):
    from tinyllm.kernels import norms
    x = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)
    np.testing.assert_allclose(norms.sum_of_squares_numba(x), norms.sum_of_squares_numpy(x), rtol=1e-13, atol=0)
    np.testing.assert_allclose(norms.sum_of_squares_numba(x.T), norms.sum_of_squares_numpy(x.T), rtol=1e-13, atol=0)


@settings(deadline=None, max_examples=30)
@given(n=st.integers(0, 300), rows=st.integers(1, 20), D=st.integers(1, 33), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_embedding_scatter_add_matches_numpy_twin(n, rows, D, dtype, seed):
    from tinyllm.kernels import embedding
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, rows, n)  # repeated ids accumulate
    g = rng.standard_normal((n, D)).astype(dtype)
    ours = embedding.embedding_backward_numba(ids, g, rows)
    ref = embedding.embedding_backward_numpy(ids, g, rows)
    assert ours.dtype == ref.dtype == dtype
    np.testing.assert_allclose(ours, ref, rtol=1e-6 if dtype == np.float32 else 1e-13, atol=1e-6)
