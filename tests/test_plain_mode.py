"""The reader's path and the fast path give the same answers.

Plain mode (``TINYLLM_PLAIN=1``, ``backend.use_plain()``) turns every fast path off: the engine's
gradient-buffer reuse (``autograd/grad_buffers.py``), the numba kernels and the one-pool matmul. With
the same kernels on both sides the two must train bitwise alike; with the numba kernels against
their NumPy twins, to rounding.
"""
import inspect

import numpy as np
import pytest

import tinyllm as tl
import tinyllm.nn.functional as F
from tinyllm import backend, nn, optim
from tinyllm.autograd import Function, engine, fused, grad_buffers, ops
from tinyllm.models.gpt import GPT, GPTConfig
from tinyllm.nn.utils import clip_grad_norm_

from helpers import GOLDEN_B, GOLDEN_C, GOLDEN_N_CLASS, GOLDEN_T, make_block_class

VOCAB, BLOCK = 17, 12


def train_gpt(plain, kernels, dtype, steps=4):
    """A few AdamW + clipping steps of a small GPT; the losses and the final weights."""
    with backend.use_plain(plain), backend.use_kernels(kernels):
        tl.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=2, n_embd=32,
                              bias=True)).to(dtype)
        opt = optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
        ids = np.random.default_rng(0).integers(0, VOCAB, (3, BLOCK + 1))  # one batch: it must learn it
        losses = []
        for _ in range(steps):
            _, loss = model(ids[:, :-1], ids[:, 1:])
            opt.zero_grad()
            loss.backward()
            clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
    return losses, {n: p.data.copy() for n, p in model.named_parameters()}


def train_golden_block(plain, kernels, steps=6):
    """The golden trajectory's block (tests/test_golden_trajectory.py) in float64, AdamW + clipping."""
    Block = make_block_class(nn, F)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((GOLDEN_B, GOLDEN_T, GOLDEN_C)), rng.integers(0, GOLDEN_N_CLASS, GOLDEN_B)
    with backend.use_plain(plain), backend.use_kernels(kernels):
        tl.manual_seed(1)
        model = Block().to(np.float64)
        opt = optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
        losses = []
        for _ in range(steps):
            opt.zero_grad()
            loss = F.cross_entropy(model(tl.tensor(x)), y)
            loss.backward()
            clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
    return losses, {n: p.data.copy() for n, p in model.named_parameters()}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpt_trains_bitwise_alike_with_and_without_buffer_reuse(dtype):
    """Same (NumPy) kernels on both sides: the only difference is the engine's buffer reuse."""
    fast_losses, fast_weights = train_gpt(plain=False, kernels="numpy", dtype=dtype)
    plain_losses, plain_weights = train_gpt(plain=True, kernels="numpy", dtype=dtype)
    assert fast_losses == plain_losses
    for name, w in plain_weights.items():
        np.testing.assert_array_equal(fast_weights[name], w, err_msg=name)
    assert fast_losses[-1] < fast_losses[0]


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 2e-5), (np.float64, 1e-11)])
def test_gpt_trains_alike_on_the_fast_kernels_and_the_plain_path(dtype, rtol):
    fast_losses, fast_weights = train_gpt(plain=False, kernels="numba", dtype=dtype)
    plain_losses, plain_weights = train_gpt(plain=True, kernels="numba", dtype=dtype)
    np.testing.assert_allclose(fast_losses, plain_losses, rtol=rtol)
    for name, w in plain_weights.items():
        np.testing.assert_allclose(fast_weights[name], w, rtol=100 * rtol, atol=100 * rtol, err_msg=name)


def test_golden_trajectory_is_the_same_both_ways():
    same_kernels = train_golden_block(plain=False, kernels="numpy")
    plain = train_golden_block(plain=True, kernels="numpy")
    assert same_kernels[0] == plain[0]
    for name, w in plain[1].items():
        np.testing.assert_array_equal(same_kernels[1][name], w, err_msg=name)
    fast = train_golden_block(plain=False, kernels="numba")
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-12)
    assert plain[0][-1] < plain[0][0]


def test_plain_mode_turns_every_fast_path_off(monkeypatch):
    from tinyllm.kernels import pool
    monkeypatch.setattr(backend, "_kernels", "numba")
    monkeypatch.setattr(backend, "_one_pool", {"saved": [], "blas_core": None})  # as after tune_for_training()

    def no_reuse():
        raise AssertionError("the engine reused buffers in plain mode")

    x = tl.randn(4, 3, requires_grad=True)
    with backend.use_plain():
        assert backend.plain() and backend.kernels() == "numpy" and not pool.active()
        monkeypatch.setattr(grad_buffers, "ReusingSums", no_reuse)
        (x[1:3] * 2).sum().backward()  # the plain GradientSums, and a dense gradient for the slice
        assert isinstance(x[1:3]._ctx.backward(np.ones((2, 3), np.float32)), np.ndarray)
    monkeypatch.undo()
    assert not backend.plain()
    assert isinstance(x[1:3]._ctx.backward(np.ones((2, 3), np.float32)), grad_buffers.SliceGrad)
    np.testing.assert_array_equal(x.grad, [[0] * 3, [2] * 3, [2] * 3, [0] * 3])


def test_plain_mode_from_the_environment():
    import os
    import subprocess
    import sys
    code = ("import tinyllm as tl; from tinyllm.kernels import pool; "
            "print(tl.backend.plain(), tl.backend.kernels(), tl.backend.tune_for_training()['one_pool'], pool.active())")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, TINYLLM_PLAIN="1"),
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "True" and out[1] == "numpy" and out[3] == "False"


# -- Function.fresh_grads: the promise the fast path relies on, checked against the plain path ------
def _fresh_cases(rng):
    """One case per op that promises fresh gradients: (inputs, fn). Each input is used by two ops
    and fn's output by two consumers, so the fast path adds into and hands out the op's arrays."""
    x3 = rng.standard_normal((2, 5, 8))
    w = rng.standard_normal((6, 8))
    ids = np.array([[0, 3, 1], [2, 3, 3]])
    q = rng.standard_normal((1, 2, 70, 8))
    return {
        fused.Linear: ([x3, w, w[:, 0] * 0], lambda x, wt, b: F.linear(x, wt, b)),
        ops.MatMul: ([x3, w.T], lambda x, wt: x @ wt),
        fused.LayerNorm: ([x3, w[0], w[1]], lambda x, g, b: F.layer_norm(x, (8,), g, b)),
        fused.Embedding: ([w], lambda wt: F.embedding(ids, wt)),
        fused.GELU: ([x3], F.gelu),
        fused.ScaledDotProductAttention: ([q, q * 0.5, q[..., ::-1].copy()],
                                          lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True)),
        fused.Softmax: ([x3], lambda x: F.softmax(x, dim=-1)),
        fused.LogSoftmax: ([x3], lambda x: F.log_softmax(x, dim=-1)),
        fused.CrossEntropy: ([w], lambda x: F.cross_entropy(x, np.array([0, 7, 2, 2, 5, 1]))),
        fused.RMSNorm: ([x3, w[0]], lambda x, g: F.rms_norm(x, (8,), g)),
        fused.SiLU: ([x3], F.silu),
        fused.ConstantPad: ([x3], lambda x: F.pad(x, (1, -2, 0, 1), value=0.5)),
        fused.IndexPad: ([x3], lambda x: F.pad(x, (2, 1), mode="reflect")),
    }


def _all_functions():
    seen, todo = [], [Function]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen.append(sub)
                todo.append(sub)
    return seen


def _gradients(fn, arrays, plain, kernels):
    """The inputs' gradients after two backward passes through a graph where every input feeds two
    ops and ``fn``'s output two consumers."""
    with backend.use_plain(plain), backend.use_kernels(kernels):
        xs = [tl.tensor(a, requires_grad=True) for a in arrays]
        for _ in range(2):
            y = fn(*xs)
            g = np.random.default_rng(3).standard_normal(y.shape)
            total = (y * tl.tensor(g)).sum() + (y * y).sum() * 0.5 + sum((x * x).sum() for x in xs)
            total.backward()
        return [x.grad.copy() for x in xs]


def test_every_op_that_promises_fresh_gradients_has_a_case():
    """A new fused op that claims fresh_grads must be added to the cases below, so the check runs."""
    promising = {f for f in _all_functions() if f.fresh_grads and f.__module__.startswith("tinyllm.")}
    assert promising == set(_fresh_cases(np.random.default_rng(0)))


@pytest.mark.parametrize("kernels", ["numba", "numpy"])
@pytest.mark.parametrize("op", list(_fresh_cases(np.random.default_rng(0))), ids=lambda f: f.__name__)
def test_fresh_gradients_give_the_plain_path_s_answer(op, kernels):
    arrays, fn = _fresh_cases(np.random.default_rng(0))[op]
    reused = _gradients(fn, arrays, plain=False, kernels=kernels)
    plain = _gradients(fn, arrays, plain=True, kernels=kernels)
    for r, p in zip(reused, plain):
        if kernels == "numpy":  # the same kernels: bitwise
            np.testing.assert_array_equal(r, p)
        else:
            np.testing.assert_allclose(r, p, rtol=1e-10, atol=1e-12)


class _BrokenPromise(Function):
    """a + b, claiming fresh gradients but handing one new array to both inputs."""
    fresh_grads = True

    def forward(ctx, a, b):
        return a + b

    def backward(ctx, g):
        shared = g * 1.0
        return shared, shared


def test_the_check_catches_a_backward_that_breaks_the_promise():
    arrays = [np.arange(6.0).reshape(2, 3), np.ones((2, 3))]
    reused = _gradients(_BrokenPromise.apply, arrays, plain=False, kernels="numpy")
    plain = _gradients(_BrokenPromise.apply, arrays, plain=True, kernels="numpy")
    assert not all(np.array_equal(r, p) for r, p in zip(reused, plain))


def test_the_engine_core_holds_no_buffer_reuse():
    """Buffer reuse lives in grad_buffers.py, behind the one object the backward loop uses."""
    source = inspect.getsource(engine)
    assert "SliceGrad" not in source and "owned" not in source and "elementwise" not in source
