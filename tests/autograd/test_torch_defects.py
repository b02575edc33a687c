"""Defects a peer project's op suite found, each held to torch: max/min of integer and bool tensors,
var/std backward with no degrees of freedom, torch's dtype promotion for ``**``, and the arguments
torch refuses (``nll_loss(reduction='typo')``, ``clamp(None, None)``)."""
import warnings

import numpy as np
import pytest

import tinyllm as tl
import tinyllm.nn.functional as F

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.uint8])
@pytest.mark.parametrize("reduce", ["max", "min"])
def test_max_and_min_of_integer_and_bool_tensors_match_torch(torch, dtype, reduce):
    data = np.array([[1, 3, 0], [3, 0, 2]]).astype(dtype)
    x, xt = tl.tensor(data), torch.tensor(data)
    cases = [(getattr(x, reduce)(), getattr(xt, reduce)()),
             (getattr(x, reduce)(dim=(0, 1)), getattr(torch, "a" + reduce)(xt, dim=(0, 1))),
             (getattr(x, reduce)(dim=(1,), keepdim=True), getattr(torch, "a" + reduce)(xt, dim=(1,), keepdim=True)),
             (getattr(x, reduce)(dim=0).values, getattr(xt, reduce)(dim=0).values),
             (getattr(x, reduce)(dim=0).indices, getattr(xt, reduce)(dim=0).indices)]
    for ours, theirs in cases:
        assert ours.dtype == theirs.numpy().dtype
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("shape,call", [
    ((1, 3), lambda x: x.var(dim=0)),
    ((0, 3), lambda x: x.var(dim=0)),
    ((4, 3), lambda x: x.std(dim=0, correction=4)),
    ((2, 3), lambda x: x.var(dim=1, correction=5)),
])
def test_var_and_std_without_degrees_of_freedom_give_torch_s_nan_gradients(torch, shape, call):
    data = np.random.default_rng(0).standard_normal(shape)
    x = tl.tensor(data, requires_grad=True)
    xt = torch.tensor(data, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that the degrees of freedom are <= 0
        out_t = call(xt)
        out_t.backward(torch.ones_like(out_t))
    out = call(x)
    out.backward(np.ones(out.shape))
    np.testing.assert_array_equal(np.isnan(out.numpy()), np.isnan(out_t.detach().numpy()))
    assert x.grad.shape == tuple(xt.grad.shape)
    np.testing.assert_array_equal(np.isnan(x.grad), np.isnan(xt.grad.numpy()))
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), equal_nan=True)


POW_CASES = {
    "int ** float": (lambda lib: lib.tensor([1, 2, 4]) ** 0.5),
    "float ** int tensor (right)": (lambda lib: 0.7 ** lib.tensor([1, 2])),
    "float32 ** int tensor": (lambda lib: lib.tensor([1.5, 2.0]) ** lib.tensor([1, 2])),
    "int tensor ** float32 tensor": (lambda lib: lib.tensor([1, 2]) ** lib.tensor([0.5, 2.0])),
    "int ** int": (lambda lib: lib.tensor([1, 2]) ** 2),
    "int ** (right)": (lambda lib: 2 ** lib.tensor([1, 2])),
    "float64 ** float32": (lambda lib: lib.tensor([1.5, 2.0], dtype=lib.float64) ** lib.tensor([2.0, 0.5])),
}


@pytest.mark.parametrize("name", list(POW_CASES))
def test_pow_promotes_dtypes_as_torch(torch, name):
    ours, theirs = POW_CASES[name](tl), POW_CASES[name](torch)
    assert ours.dtype == theirs.numpy().dtype, name
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


def test_pow_of_float32_by_an_int_tensor_keeps_float32_gradients(torch):
    base, exponent = np.array([1.5, 2.0, 0.5], np.float32), np.array([1, 2, 3])
    x = tl.tensor(base, requires_grad=True)
    xt = torch.tensor(base, requires_grad=True)
    (x ** tl.tensor(exponent)).sum().backward()
    (xt ** torch.tensor(exponent)).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-6)


def test_nll_loss_refuses_an_unknown_reduction_as_torch_does(torch):
    logp = np.log(np.full((3, 4), 0.25))
    with pytest.raises(ValueError):
        torch.nn.functional.nll_loss(torch.tensor(logp), torch.tensor([0, 1, 2]), reduction="typo")
    with pytest.raises(ValueError, match="reduction must be one of .*'typo'"):
        F.nll_loss(tl.tensor(logp), np.array([0, 1, 2]), reduction="typo")


def test_clamp_with_neither_bound_raises_as_torch_does(torch):
    with pytest.raises(RuntimeError):
        torch.ones(3).clamp(None, None)
    with pytest.raises(RuntimeError, match="at least one of min and max"):
        tl.ones(3).clamp(None, None)
    np.testing.assert_array_equal(tl.tensor([-1.0, 2.0]).clamp(None, 1.0).numpy(), [-1.0, 1.0])


@pytest.mark.parametrize("shape", [(5, 7), (7,), (3, 7, 4)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing,weighted", [(0.0, False), (0.2, True)])
def test_cross_entropy_gives_a_probability_target_its_gradient(torch, shape, reduction, smoothing, weighted):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal(shape)
    probs = rng.random(shape)
    probs /= probs.sum(axis=0 if len(shape) == 1 else 1, keepdims=True)
    weight = rng.random(7) + 0.5 if weighted else None
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    x, t = tl.tensor(logits, requires_grad=True), tl.tensor(probs, requires_grad=True)
    xt, tt = torch.tensor(logits, requires_grad=True), torch.tensor(probs, requires_grad=True)
    out = F.cross_entropy(x, t, weight=None if weight is None else tl.tensor(weight), **kw)
    out_t = torch.nn.functional.cross_entropy(xt, tt, weight=None if weight is None else torch.tensor(weight), **kw)
    g = rng.standard_normal(out.shape)
    out.backward(g)
    out_t.backward(torch.tensor(g))
    np.testing.assert_allclose(out.numpy(), out_t.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(t.grad, tt.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_cross_entropy_target_gradient_passes_gradcheck():
    rng = np.random.default_rng(2)
    x = tl.tensor(rng.standard_normal((4, 6)), requires_grad=True)
    t = tl.tensor(rng.random((4, 6)), requires_grad=True)
    assert tl.gradcheck(lambda a, b: F.cross_entropy(a, b, label_smoothing=0.1), [x, t])
