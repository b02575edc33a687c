"""The checkers themselves: ``tl.gradcheck`` and the shared ``check_op`` helper must catch a
wrong backward, not only pass right ones."""
import numpy as np
import pytest

import tinyllm as tl
from helpers import check_op, requires_torch, torch


class _WrongSquare(tl.Function):
    """x^2 with a backward that is off by 10% (the kind of slip a hand-derived backward makes)."""

    def forward(ctx, a):
        ctx.a = a
        return a * a

    def backward(ctx, g):
        return g * 2.2 * ctx.a


class _RightSquare(_WrongSquare):
    def backward(ctx, g):
        return g * 2 * ctx.a


def _x(shape=(3, 4), seed=0):
    return tl.Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


def test_gradcheck_passes_a_right_backward_and_catches_a_wrong_one():
    assert tl.gradcheck(_RightSquare.apply, [_x()])
    with pytest.raises(AssertionError, match="analytic directional derivative"):
        tl.gradcheck(_WrongSquare.apply, [_x()])
    assert tl.gradcheck(_WrongSquare.apply, [_x()], raise_exception=False) is False


def test_gradcheck_catches_a_wrong_gradient_for_one_input_of_several():
    class WrongMul(tl.Function):
        def forward(ctx, a, b):
            ctx.a, ctx.b = a, b
            return a * b

        def backward(ctx, g):
            return g * ctx.b, g * ctx.b  # the second should be g * a

    a, b = _x(seed=1), _x(seed=2)
    with pytest.raises(AssertionError):
        tl.gradcheck(WrongMul.apply, [a, b])
    b.requires_grad = False  # only the right half is checked now
    assert tl.gradcheck(WrongMul.apply, [a, b])


def test_gradcheck_handles_tuple_outputs_constants_and_infinite_mask_fills():
    x = _x((4, 6))
    assert tl.gradcheck(lambda t: t.split(2, dim=1), [x])
    mask = np.triu(np.ones((4, 6), bool), 1)
    assert tl.gradcheck(lambda t: t.masked_fill(mask, -np.inf), [x])
    assert tl.gradcheck(lambda t: t.masked_fill(mask, -1e9) * 3, [x])
    assert tl.gradcheck(lambda t, i: t[i], [x, tl.tensor([0, 0, 3])])


def test_gradcheck_input_errors():
    with pytest.raises(TypeError, match="float64"):
        tl.gradcheck(lambda t: t * 2, [tl.Tensor(np.ones(3, np.float32), requires_grad=True)])
    with pytest.raises(ValueError, match="no input requires grad"):
        tl.gradcheck(lambda t: t * 2, [tl.Tensor(np.ones(3))])


def test_check_op_catches_a_wrong_backward_even_without_torch_parity():
    with pytest.raises(AssertionError):
        check_op([(3, 4)], _WrongSquare.apply, lambda x: x * x)


@requires_torch
def test_check_op_catches_wrong_forward_dtype_shape_and_grad():
    with pytest.raises(AssertionError):  # wrong values
        check_op([(3, 4)], lambda x: x * 2, lambda x: x * 2.001, gradcheck=False)
    with pytest.raises(AssertionError, match="dtype"):  # float64 in, float32 out
        check_op([(3, 4)], lambda x: x.float(), lambda x: x, gradcheck=False)
    with pytest.raises(AssertionError, match="shape"):
        check_op([(3, 4)], lambda x: x.sum(0), lambda x: x.sum(0, keepdim=True), gradcheck=False)
    with pytest.raises(AssertionError, match="gradient of input 0"):  # right forward, wrong backward
        check_op([(3, 4)], _WrongSquare.apply, lambda x: x * x, gradcheck=False)
    with pytest.raises(AssertionError, match="requires_grad"):
        check_op([(3, 4)], lambda x: x.detach() * 2, lambda x: x * 2, gradcheck=False)


@requires_torch
def test_check_op_compares_every_output_and_integer_inputs():
    out = check_op([(5, 3), np.array([4, 0, 0])], lambda x, i: (x[i], x.sum(1), i * 2))
    assert isinstance(out, tuple) and len(out) == 3 and out[2].dtype == np.int64
    with pytest.raises(AssertionError, match="output 1"):
        check_op([(5, 3)], lambda x: (x * 1, x.sum(1)), lambda x: (x * 1, x.sum(1) + 1e-3), gradcheck=False)


@requires_torch
def test_check_op_passes_op_kwargs_and_float32_tolerances():
    check_op([(4, 5)], lambda x, dim, keepdim: x.sum(dim=dim, keepdim=keepdim), dim=1, keepdim=True)
    out = check_op([(4, 5)], lambda x: x.exp(), dtype=np.float32)
    assert out.dtype == np.float32
    assert torch is not None
