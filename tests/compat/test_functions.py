"""torch's module-level functions (``tl.exp(x)``, ``tl.pow(x, y)``, ``tl.matmul(a, b)``, ...) against
torch's: forward, dtype and every gradient (tests/helpers.py::check_op), plus their names, signatures
and the forms torch defines differently from the method (``max(a, b)``, ``softmax(x, dim, dtype)``)."""
import inspect
import traceback

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

import tinyllm as tl
from tinyllm.autograd import functions

from helpers import check_op, shapes

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch

X = (3, 4)
POSITIVE = dict(low=0.5, high=2.0)
INDEX = np.array([[0, 2, 1, 0], [3, 3, 0, 1], [1, 0, 2, 2]])
MASK = np.array([[True, False, True, False]])
PROBS = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # one certain outcome per row: sampling is exact

# name -> (check_op entries, positional args after the tensors, keyword args, check_op options)
CASES = {
    "exp": ([X], (), {}, {}),
    "log": ([X], (), {}, POSITIVE),
    "log1p": ([X], (), {}, POSITIVE),
    "expm1": ([X], (), {}, {}),
    "sqrt": ([X], (), {}, POSITIVE),
    "rsqrt": ([X], (), {}, POSITIVE),
    "tanh": ([X], (), {}, {}),
    "sigmoid": ([X], (), {}, {}),
    "relu": ([X], (), {}, {}),
    "abs": ([X], (), {}, {}),
    "neg": ([X], (), {}, {}),
    "negative": ([X], (), {}, {}),
    "sin": ([X], (), {}, {}),
    "cos": ([X], (), {}, {}),
    "square": ([X], (), {}, {}),
    "reciprocal": ([X], (), {}, POSITIVE),
    "sign": ([X], (), {}, dict(gradcheck=False)),
    "floor": ([X], (), {}, dict(gradcheck=False)),
    "ceil": ([X], (), {}, dict(gradcheck=False)),
    "round": ([X], (), {}, dict(gradcheck=False)),
    "trunc": ([X], (), {}, dict(gradcheck=False)),
    "pow": ([X, (4,)], (), {}, POSITIVE),
    "clamp": ([X], (), dict(min=-0.5, max=0.7), {}),
    "add": ([X, (4,)], (), {}, {}),
    "sub": ([X, (3, 1)], (), {}, {}),
    "mul": ([X, X], (), {}, {}),
    "div": ([X, (4,)], (), {}, POSITIVE),
    "divide": ([X, (4,)], (), {}, POSITIVE),
    "maximum": ([X, (4,)], (), {}, {}),
    "minimum": ([X, (4,)], (), {}, {}),
    "eq": ([X, X], (), {}, dict(gradcheck=False)),
    "lt": ([X, (4,)], (), {}, dict(gradcheck=False)),
    "ge": ([X, (4,)], (), {}, dict(gradcheck=False)),
    "isnan": ([np.array([1.0, np.nan, np.inf])], (), {}, dict(gradcheck=False)),
    "isinf": ([np.array([1.0, np.nan, -np.inf])], (), {}, dict(gradcheck=False)),
    "isfinite": ([np.array([1.0, np.nan, np.inf])], (), {}, dict(gradcheck=False)),
    "logical_not": ([MASK], (), {}, {}),
    "sum": ([X], (1,), dict(keepdim=True), {}),
    "mean": ([X], (0,), {}, {}),
    "prod": ([X], (1,), {}, {}),
    "var": ([X], (1,), {}, {}),
    "std": ([X], (), {}, {}),
    "amax": ([X], (1,), {}, {}),
    "amin": ([X], (0,), {}, {}),
    "argmax": ([X], (1,), {}, dict(gradcheck=False)),
    "argmin": ([X], (), {}, dict(gradcheck=False)),
    "cumsum": ([X], (1,), {}, {}),
    "norm": ([X], (), {}, {}),
    "logsumexp": ([X], (1,), {}, {}),
    "matmul": ([X, (4, 2)], (), {}, {}),
    "outer": ([(3,), (4,)], (), {}, {}),
    "transpose": ([X], (0, 1), {}, {}),
    "permute": ([(2, 3, 4)], ((2, 0, 1),), {}, {}),
    "reshape": ([X], ((2, 6),), {}, {}),
    "flatten": ([(2, 3, 4)], (1,), {}, {}),
    "squeeze": ([(3, 1, 4)], (1,), {}, {}),
    "unsqueeze": ([X], (1,), {}, {}),
    "movedim": ([(2, 3, 4)], (0, 2), {}, {}),
    "split": ([X], (2,), dict(dim=1), {}),
    "chunk": ([X], (2,), {}, {}),
    "unbind": ([X], (1,), {}, {}),
    "narrow": ([X], (1, 1, 2), {}, {}),
    "flip": ([X], ((1,),), {}, {}),
    "roll": ([X], (1, 1), {}, {}),
    "repeat_interleave": ([X], (2,), dict(dim=0), {}),
    "index_select": ([X], (0, np.array([2, 0])), {}, {}),
    "tril": ([(4, 4)], (), {}, {}),
    "triu": ([(4, 4)], (1,), {}, {}),
    "topk": ([X], (2,), {}, {}),
    "sort": ([X], (), dict(dim=1, descending=True), {}),
    "argsort": ([X], (), dict(dim=0), dict(gradcheck=False)),
    "gather": ([(4, 4)], (1, INDEX), {}, {}),
    "multinomial": ([PROBS], (1,), {}, dict(gradcheck=False, requires_grad=False)),
    "masked_fill": ([X, MASK], (0.5,), {}, {}),
    "clone": ([X], (), {}, {}),
    "log_softmax": ([X], (1,), {}, {}),
    "softmax": ([X], (1,), {}, {}),
    "max": ([X], (), {}, {}),
    "min": ([X, X], (), {}, {}),  # the two-tensor form is the elementwise minimum
    "mm": ([X, (4, 2)], (), {}, {}),
    "bmm": ([(2, 3, 4), (2, 4, 2)], (), {}, {}),
}
@pytest.mark.parametrize("name", sorted(CASES))
def test_function_matches_torch(name):
    entries, args, kwargs, options = CASES[name]
    options = dict(options)
    ours, theirs = getattr(tl, name), getattr(torch, name)
    # index arrays after the tensors go to each library as its own tensor
    our_args = [tl.tensor(a) if isinstance(a, np.ndarray) else a for a in args]
    their_args = [torch.tensor(a) if isinstance(a, np.ndarray) else a for a in args]
    check_op(entries, lambda *t: ours(*t, *our_args, **kwargs), lambda *t: theirs(*t, *their_args, **kwargs),
             **options)


def test_every_listed_function_is_tested_and_exported():
    assert set(functions.__all__) - {"allclose", "equal", "is_tensor", "numel", "einsum"} - {"detach"} \
        - {"logical_and", "logical_or", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not",
           "ne", "le", "gt", "any", "all", "floor_divide", "remainder", "moveaxis"} <= set(CASES)
    for name in functions.__all__:
        assert getattr(tl, name) is getattr(functions, name)


@pytest.mark.parametrize("name", ["logical_and", "logical_or", "logical_xor", "bitwise_and", "bitwise_or",
                                  "bitwise_xor", "ne", "le", "gt", "floor_divide", "remainder"])
def test_binary_non_differentiable_functions(name):
    a, b = np.array([[3, -2, 0, 7]]), np.array([[2, 2, 1, -3]])
    if name.startswith("logical"):
        a, b = a > 0, b > 0
    ours = getattr(tl, name)(tl.tensor(a), tl.tensor(b))
    theirs = getattr(torch, name)(torch.tensor(a), torch.tensor(b))
    assert ours.dtype == theirs.numpy().dtype
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_reductions_to_bool_and_moveaxis():
    m = np.array([[True, False], [True, True]])
    for name in ("any", "all"):
        np.testing.assert_array_equal(getattr(tl, name)(tl.tensor(m), 1).numpy(),
                                      getattr(torch, name)(torch.tensor(m), 1).numpy())
    x = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(tl.moveaxis(tl.tensor(x), 0, 2).numpy(), torch.moveaxis(torch.tensor(x), 0, 2).numpy())
    assert tl.bitwise_not(tl.tensor(np.array([5]))).item() == torch.bitwise_not(torch.tensor([5])).item()


def test_einsum_and_scalar_first_arguments():
    check_op([(2, 3), (3, 4)], lambda a, b: tl.einsum("ij,jk->ik", a, b),
             lambda a, b: torch.einsum("ij,jk->ik", a, b))
    # a Python number meets a tensor as in ``2.0 ** x``: the tensor's dtype, the gradient to x
    check_op([(5,)], lambda x: tl.pow(2.0, x), lambda x: torch.pow(2.0, x), dtype=np.float32)
    check_op([(5,)], lambda x: tl.mul(3, x), lambda x: torch.mul(3, x))


def test_comparisons_that_return_python_bools():
    a = np.array([1.0, 2.0, np.nan])
    b = a + 1e-9
    for kwargs in ({}, dict(equal_nan=True), dict(rtol=0, atol=0)):
        assert tl.allclose(tl.tensor(a), tl.tensor(b), **kwargs) == torch.allclose(torch.tensor(a), torch.tensor(b), **kwargs)
    assert tl.equal(tl.tensor([1, 2]), tl.tensor([1, 2])) is True
    assert tl.equal(tl.tensor([1, 2]), tl.tensor([[1, 2]])) is False
    assert tl.is_tensor(tl.zeros(1)) and tl.is_tensor(tl.nn.Parameter(tl.zeros(1))) and not tl.is_tensor(np.zeros(1))
    assert tl.numel(tl.zeros(2, 3)) == 6


def test_max_and_min_forms():
    x = np.array([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]])
    assert tl.max(tl.tensor(x)).item() == 6.0
    for ours, theirs in [(tl.min(tl.tensor(x), 1), torch.min(torch.tensor(x), 1)),
                         (tl.max(tl.tensor(x), dim=0, keepdim=True), torch.max(torch.tensor(x), dim=0, keepdim=True)),
                         (tl.tensor(x).max(-1), torch.tensor(x).max(-1))]:
        values, indices = ours  # (values, indices), as torch.return_types.max
        np.testing.assert_array_equal(values.numpy(), theirs.values.numpy())
        np.testing.assert_array_equal(ours.indices.numpy(), theirs.indices.numpy())
        assert indices.dtype == tl.long
    np.testing.assert_array_equal(tl.max(tl.tensor(x), tl.tensor(x[::-1].copy())).numpy(),
                                  torch.max(torch.tensor(x), torch.tensor(x[::-1].copy())).numpy())


def test_softmax_with_dtype():
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    ours = tl.softmax(tl.tensor(x), -1, dtype=tl.float64)
    theirs = torch.softmax(torch.tensor(x), -1, dtype=torch.float64)
    assert ours.dtype == tl.float64
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12, atol=0)


def test_mm_and_bmm_refuse_other_ranks():
    with pytest.raises(RuntimeError, match=r"mm: expected two 2-D tensors, got shapes \(2, 3, 4\)"):
        tl.mm(tl.zeros(2, 3, 4), tl.zeros(4, 2))
    with pytest.raises(RuntimeError, match="bmm: expected two 3-D tensors with one batch size"):
        tl.bmm(tl.zeros(2, 3, 4), tl.zeros(3, 4, 2))


def test_names_signatures_and_tracebacks_read_as_torch():
    assert tl.exp.__name__ == "exp" and tl.exp.__module__ == "tinyllm.autograd.functions"
    assert "input.exp" in tl.exp.__doc__
    assert list(inspect.signature(tl.sum).parameters)[:3] == ["input", "dim", "keepdim"]
    assert list(inspect.signature(tl.clamp).parameters) == ["input", "min", "max"]
    with pytest.raises(Exception) as info:
        tl.reshape(tl.zeros(2, 3), (4, 4))
    frames = [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert "reshape" in frames and "function" not in frames
    with pytest.raises(TypeError, match=r"exp\(\): expected a tensor as input, got object"):
        tl.exp(object())


@given(shape=shapes(min_dims=1, max_dims=3), dim=st.integers(-1, 0))
def test_reductions_over_shapes(shape, dim):
    for name in ("sum", "mean", "cumsum", "logsumexp"):
        check_op([shape], lambda x: getattr(tl, name)(x, dim), lambda x: getattr(torch, name)(x, dim))
