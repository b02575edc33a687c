"""The one dispatcher (tinyllm/kernels/dispatch.py): every kernel entry point runs its NumPy twin with
the 'numpy' kernel family and in plain mode, and its numba version with 'numba' on valid float32
NumPy input; float16 and mixed dtypes take the twin whatever the family."""
import sys

import numpy as np
import pytest

from tinyllm import backend
from tinyllm import kernels as K
from tinyllm.kernels import dispatch, pool


def _cases(dtype=np.float32):
    """entry point name -> a function making fresh copies of the same arguments (in-place kernels
    change theirs), on which the numba version applies: large enough to split, more than one query
    row, few rows for int8, ..."""
    rng = np.random.default_rng(0)
    f = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: E731
    q, k, v = f(1, 2, 8, 4), f(1, 2, 8, 4), f(1, 2, 8, 4)
    ids = rng.integers(0, 5, 12)
    q8, scale8 = rng.integers(-127, 128, (6, 8)).astype(np.int8), rng.random(6).astype(np.float32)
    ln_x, ln_w = f(10, 8), f(8)
    _, mean, rstd = K.layernorm.layernorm_forward_numpy(ln_x, ln_w, None, 1e-5)
    ce_x, ce_t = f(10, 7), rng.integers(0, 7, 10)
    _, ce_lse, _ = K.cross_entropy.cross_entropy_forward_numpy(ce_x, ce_t, None, -100, 0.0)
    out, lse = K.attention.attention_forward_numpy(q, k, v, 0.5, True)
    a, b = f(256, 128), f(256, 128)  # 2^15 elements, 256 rows
    p, zeros = f(5, 3), np.zeros((5, 3), dtype)
    cases = {
        "matmul.matmul": (a, b.T),
        "matmul.matmul_tn": (a, b),
        "softmax.forward": (f(3, 5), -1),
        "softmax.backward": (f(3, 5), f(3, 5), -1),
        "layernorm.forward": (ln_x, ln_w, None, 1e-5),
        "layernorm.backward": (ln_x, ln_w, mean, rstd, f(10, 8)),
        "gelu.forward": (f(4, 6), "none"),
        "gelu.forward_and_derivative": (f(4, 6), "tanh"),
        "gelu.backward": (f(4, 6), f(4, 6), "none"),
        "cross_entropy.forward": (ce_x, ce_t, None, -100, 0.1),
        "cross_entropy.backward": (ce_x, ce_t, None, -100, 0.1, ce_lse, np.ones(10)),
        "attention.kernel_inputs": (q, k, v, None),
        "attention.attention_forward": (q, k, v, 0.5, True),
        "attention.attention_backward": (q, k, v, out, lse, f(1, 2, 8, 4), 0.5, True),
        "elementwise.add": (a, b),
        "elementwise.add_inplace": (a, b),
        "elementwise.mul_inplace": (a, b),
        "adam.adam_step": (p, f(5, 3), zeros, zeros, None, 1e-2, 0.9, 0.99, 1e-8, 0.1, 1.0, True, False, False),
        "norms.sum_of_squares": (f(5, 3),),
        "embedding.embedding_backward": (ids, f(12, 4), 5),
        "int8.linear": (f(2, 8), q8, scale8),
    }
    copy = lambda x: x.copy() if isinstance(x, np.ndarray) else x  # noqa: E731
    return {name: (lambda args=args: tuple(copy(x) for x in args)) for name, args in cases.items()}


def _twin_result(entry, make):
    args = make()
    result = entry.numpy(*args)
    return args[0] if result is None else result  # adam updates p in place


def _assert_same(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def pool_on(monkeypatch):
    """The one-pool setup as the dispatcher sees it, with two threads, on any machine."""
    monkeypatch.setattr(backend, "_one_pool", {"saved": [], "blas_core": None})
    monkeypatch.setattr(pool, "threads", lambda: 2)


def test_every_entry_point_is_declared_and_covered():
    assert set(_cases()) == set(dispatch.KERNELS)
    for name, entry in dispatch.KERNELS.items():
        module, attr = name.split(".")
        assert getattr(getattr(K, module), attr) is entry  # what ops and benchmarks call (and patch)


def _raise(*args, **kwargs):
    raise AssertionError("the numba version ran")


def _patch(monkeypatch, entry, version, fn):
    """Replace an entry point's numba or numpy version where it lives: in its kernel module."""
    original = getattr(entry, version)
    monkeypatch.setattr(sys.modules[original.__module__], original.__name__, fn)


@pytest.mark.parametrize("mode", ["numpy kernels", "plain"])
def test_numpy_family_and_plain_mode_run_every_twin(monkeypatch, pool_on, mode):
    cases = _cases()
    for entry in dispatch.KERNELS.values():
        _patch(monkeypatch, entry, "numba", _raise)
    for name, make in cases.items():
        entry = dispatch.KERNELS[name]
        with backend.use_kernels("numpy") if mode == "numpy kernels" else backend.use_plain():
            assert not entry.uses_numba(*make()), name
            args = make()
            result = entry(*args)
        _assert_same(args[0] if result is None else result, _twin_result(entry, make))


def test_numba_family_runs_every_numba_version_on_float32(monkeypatch, pool_on):
    ran, cases = [], _cases()
    for entry in dispatch.KERNELS.values():
        _patch(monkeypatch, entry, "numba",
               lambda *a, _run=entry.numba, _name=entry.name, **kw: ran.append(_name) or _run(*a, **kw))
        _patch(monkeypatch, entry, "numpy", _raise)
    with backend.use_kernels("numba"):
        for name, make in cases.items():
            assert dispatch.KERNELS[name].uses_numba(*make()), name
            dispatch.KERNELS[name](*make())
    assert ran == list(cases)


@pytest.mark.parametrize("dtype", [np.float16, "mixed"])
def test_other_dtypes_run_the_twin(monkeypatch, pool_on, dtype):
    """float16, or a second float array of another dtype than the first, take the twin."""
    cases = _cases(np.float16 if dtype == np.float16 else np.float32)
    for entry in dispatch.KERNELS.values():
        _patch(monkeypatch, entry, "numba", _raise)
    with backend.use_kernels("numba"):
        for name, make in cases.items():
            entry = dispatch.KERNELS[name]
            args = list(make())
            if dtype == "mixed":
                if len(entry.floats) < 2:
                    continue
                i = entry.floats[1]
                args[i] = args[i].astype(np.float64)
            assert not entry.uses_numba(*args), name
            entry(*args)


def _twin(x):
    return "twin"


def test_kernel_own_conditions_are_asked_only_for_valid_arrays():
    """``applies`` sees NumPy float arrays only: a list, or an int array, never reaches it."""
    asked = []
    k = dispatch.Kernel("test.kernel", _raise, _twin, applies=lambda x: asked.append(x) or True)
    try:
        with backend.use_kernels("numba"):
            assert k([1.0, 2.0]) == "twin" and k(np.arange(3)) == "twin" and asked == []
            with pytest.raises(AssertionError, match="numba version ran"):
                k(np.ones(3, np.float32))
            assert len(asked) == 1
    finally:
        del dispatch.KERNELS["test.kernel"]
