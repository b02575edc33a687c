"""The arithmetic torch model code reaches for, held to torch: elementwise functions (rsqrt, sin, cos,
...), casts, rounded division, bitwise and logical ops, reductions with ``dtype=`` (sum, mean, cumsum,
prod, logsumexp, amax), maximum/minimum, outer, norm and einsum. Forward values, dtypes and every
gradient against torch and by float64 finite differences; the non-differentiable results exactly."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyllm as tl
from helpers import broadcastable_shapes, check_op, shapes
from tinyllm.autograd import einsum

pytestmark = pytest.mark.torch
INF, NAN = np.inf, np.nan


def _lib(x):
    return tl if isinstance(x, tl.Tensor) else __import__("torch")


def _einsum(equation, *operands):
    """tinyllm's einsum for tinyllm tensors, torch's for torch tensors (the list form included)."""
    first = operands[0][0] if isinstance(operands[0], list) else operands[0]
    return (einsum if isinstance(first, tl.Tensor) else _lib(first).einsum)(equation, *operands)


def _same(ours, theirs):
    """Exact equality, dtype included (for results without a gradient)."""
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    ours = ours.numpy() if isinstance(ours, tl.Tensor) else np.asarray(ours)
    assert ours.dtype == theirs.dtype, f"dtype {ours.dtype}, torch gives {theirs.dtype}"
    assert ours.shape == theirs.shape, f"shape {ours.shape}, torch gives {theirs.shape}"
    np.testing.assert_array_equal(ours, theirs)


def _both(torch, data, fn, **kwargs):
    """``fn`` on the same data in both libraries, compared exactly."""
    _same(fn(tl.tensor(data, **kwargs)), fn(torch.tensor(data)))


def _grads_match(torch, arrays, fn, upstream_seed=0):
    """Forward and gradients (nan and inf included) of ``fn`` on fixed arrays, against torch."""
    xs = [tl.tensor(a, requires_grad=True) for a in arrays]
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y, yt = fn(*xs), fn(*ts)
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-12, equal_nan=True)
    g = np.random.default_rng(upstream_seed).uniform(0.5, 1.5, y.shape)
    y.backward(g)
    yt.backward(torch.tensor(g))
    for x, t in zip(xs, ts):
        expected = np.zeros(x.shape) if t.grad is None else t.grad.numpy()
        got = np.zeros(x.shape) if x.grad is None else x.grad
        np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)


# =============================================================================================
# elementwise functions
# =============================================================================================

UNARY = {  # name -> (fn, low, high): a range where the function is smooth
    "neg": (lambda x: x.neg(), -2, 2),
    "rsqrt": (lambda x: x.rsqrt(), 0.3, 3),
    "sin": (lambda x: x.sin(), -4, 4),
    "cos": (lambda x: x.cos(), -4, 4),
    "log1p": (lambda x: x.log1p(), -0.7, 3),
    "expm1": (lambda x: x.expm1(), -2, 2),
    "reciprocal": (lambda x: x.reciprocal(), 0.3, 3),
    "square": (lambda x: x.square(), -2, 2),
    "sign": (lambda x: x.sign(), -2, 2),
    "floor": (lambda x: x.floor(), -2, 2),
    "ceil": (lambda x: x.ceil(), -2, 2),
    "round": (lambda x: x.round(), -2, 2),
    "round_decimals": (lambda x: x.round(decimals=1), -2, 2),
    "trunc": (lambda x: x.trunc(), -2, 2),
}
# the piecewise-constant ones have no derivative for finite differences to see at a jump, but
# random inputs never sit on one; torch's gradient there is zero, and so is ours


@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_unary_against_torch(name, dtype):
    fn, low, high = UNARY[name]
    check_op([(3, 4)], fn, low=low, high=high, dtype=dtype)


@settings(max_examples=25)
@given(shape=shapes(), seed=st.integers(0, 2**16))
@pytest.mark.parametrize("name", ["neg", "rsqrt", "sin", "cos", "log1p", "expm1", "reciprocal", "square"])
def test_unary_hypothesis(name, shape, seed):
    fn, low, high = UNARY[name]
    check_op([shape], fn, low=low, high=high, seed=seed)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy warns at inf and nan; torch does not
@pytest.mark.parametrize("name", ["rsqrt", "sin", "cos", "log1p", "expm1", "reciprocal", "sqrt", "exp",
                                  "log", "tanh", "sigmoid", "square", "neg"])
def test_unary_at_extreme_values(torch, name):
    data = np.array([0.0, -0.0, 1e-300, -1.0, 1e300, INF, -INF, NAN])
    _grads_match(torch, [data], lambda x: getattr(x, name)())


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy warns at inf and nan; torch does not
@pytest.mark.parametrize("name", ["rsqrt", "sin", "cos", "log1p", "expm1", "reciprocal", "sqrt", "exp",
                                  "log", "tanh", "sigmoid", "square", "neg", "sign", "floor", "ceil",
                                  "round", "trunc", "abs"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_unary_of_int_tensors_give_torch_s_dtype(torch, name, dtype):
    data = np.array([1, 4, 9, -2]).astype(dtype)
    ours, theirs = getattr(tl.tensor(data), name)(), getattr(torch.tensor(data), name)()
    assert ours.dtype == theirs.numpy().dtype
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, equal_nan=True)


def test_sign_round_and_friends_at_special_values(torch):
    data = np.array([-2.5, -0.5, -0.0, 0.0, 0.5, 1.5, 2.5, INF, -INF, NAN])
    for name in ["sign", "floor", "ceil", "round", "trunc"]:
        _both(torch, data, lambda x: getattr(x, name)())
    _both(torch, np.array([0.125, 1.15, 2.25, -3.35]), lambda x: x.round(decimals=1))
    _both(torch, np.array([True, False]), lambda x: x.sign())
    _both(torch, np.array([True, False]), lambda x: x.square())


def test_negating_a_bool_tensor_raises_as_torch(torch):
    with pytest.raises(RuntimeError):
        -torch.tensor([True])
    with pytest.raises(RuntimeError, match="bool"):
        -tl.tensor([True])


# =============================================================================================
# casts
# =============================================================================================

CASTS = ["int", "long", "float", "double", "half", "bool", "short", "byte"]


@pytest.mark.parametrize("cast", CASTS)
@pytest.mark.parametrize("source", [np.float32, np.float64, np.int64, np.int32, np.bool_])
def test_casts_match_torch(torch, cast, source):
    data = np.array([-2.7, -1.0, 0.0, 0.4, 3.9]).astype(source)
    if cast == "byte":
        data = np.abs(data)  # a negative float to uint8 is undefined behaviour in C (and in torch)
    _both(torch, data, lambda x: getattr(x, cast)())


def test_casting_nan_and_inf_to_int_gives_torch_s_values(torch):
    data = np.array([NAN, INF, -INF, 1.7])
    _both(torch, data, lambda x: x.long())
    _both(torch, data, lambda x: x.bool())


@pytest.mark.parametrize("cast", CASTS)
def test_casts_keep_or_end_the_graph_as_torch(torch, cast):
    x = tl.tensor([1.5, -2.0], requires_grad=True)
    xt = torch.tensor([1.5, -2.0], requires_grad=True)
    assert getattr(x, cast)().requires_grad == getattr(xt, cast)().requires_grad
    assert (getattr(x, cast)() is x) == (getattr(xt, cast)() is xt)  # .float() of float32 is itself


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_a_float_cast_carries_the_gradient_back(dtype):
    check_op([(3, 4)], lambda x: (x.double() if dtype == np.float64 else x.half()).float() * 3,
             lambda x: (x.double() if dtype == np.float64 else x.half()).float() * 3, dtype=np.float32)


def test_type_names_and_conversions(torch):
    for dtype in [np.float32, np.float64, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.bool_]:
        data = np.array([1, 0]).astype(dtype)
        assert tl.tensor(data).type() == torch.tensor(data).type()
    x, xt = tl.tensor([1.5, -2.0]), torch.tensor([1.5, -2.0])
    for name in ["torch.DoubleTensor", "torch.LongTensor", "torch.BoolTensor", "torch.FloatTensor"]:
        _same(x.type(name), xt.type(name))
    assert x.type(tl.float32) is x
    _same(x.type(np.int64), xt.type(torch.int64))
    with pytest.raises(ValueError, match="invalid type"):
        x.type("torch.FooTensor")


# =============================================================================================
# division with rounding, remainder, bitwise and logical ops
# =============================================================================================

DIVIDENDS = np.array([7.0, -7.0, 7.5, -7.5, 0.0, -0.0, 1.0, -1.0, INF, -INF, NAN, 0.3, 5.0])
DIVISORS = np.array([2.0, 2.0, -2.0, -2.0, 3.0, 3.0, 0.0, 0.0, 2.0, INF, 1.0, 0.1, INF])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", ["trunc", "floor"])
def test_div_with_rounding_mode_matches_torch_on_floats(torch, dtype, mode):
    a, b = DIVIDENDS.astype(dtype), DIVISORS.astype(dtype)
    _same(tl.tensor(a).div(tl.tensor(b), rounding_mode=mode), torch.tensor(a).div(torch.tensor(b), rounding_mode=mode))
    _same(tl.tensor(a).div(2, rounding_mode=mode), torch.tensor(a).div(2, rounding_mode=mode))
    if mode == "floor":
        _same(tl.tensor(a) // tl.tensor(b), torch.tensor(a) // torch.tensor(b))
        _same(tl.tensor(a).floor_divide(0.1), torch.tensor(a).floor_divide(0.1))
        _same(7.0 // tl.tensor(b), 7.0 // torch.tensor(b))


@pytest.mark.parametrize("mode", [None, "trunc", "floor"])
def test_div_of_ints_keeps_torch_s_dtype(torch, mode):
    a = np.array([7, -7, 6, -6, 0, 1])
    b = np.array([2, 2, -4, -4, 3, -3])
    for lhs, rhs in [(a, b), (a, 2), (a, -4), (a.astype(np.int32), b.astype(np.int32)), (a, 2.5)]:
        ours = tl.tensor(lhs).div(rhs if np.isscalar(rhs) else tl.tensor(rhs), rounding_mode=mode)
        theirs = torch.tensor(lhs).div(rhs if np.isscalar(rhs) else torch.tensor(rhs), rounding_mode=mode)
        _same(ours, theirs)
    _same(tl.tensor(a) // 3, torch.tensor(a) // 3)
    _same(tl.tensor(a) // 2.0, torch.tensor(a) // 2.0)
    _same(13 // tl.tensor(b), 13 // torch.tensor(b))


def test_integer_division_by_zero_raises_as_torch(torch):
    with pytest.raises(RuntimeError):
        torch.tensor([1, 2]) // 0
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        tl.tensor([1, 2]) // 0
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        tl.tensor([1, 2]).div(tl.tensor([1, 0]), rounding_mode="trunc")
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        tl.tensor([1, 2]) % 0


def test_rounding_mode_must_be_known(torch):
    with pytest.raises(RuntimeError):
        torch.tensor([1.0]).div(2, rounding_mode="round")
    with pytest.raises(RuntimeError, match="rounding_mode"):
        tl.tensor([1.0]).div(2, rounding_mode="round")


@pytest.mark.parametrize("mode", ["trunc", "floor"])
def test_div_with_rounding_mode_has_zero_gradients_as_torch(mode):
    check_op([(3, 4), (4,)], lambda a, b: a.div(b, rounding_mode=mode), low=[-5, 0.5], high=[5, 2],
             gradcheck=False)


def test_floor_divide_refuses_the_backward_as_torch(torch):
    xt = torch.tensor([1.5, 2.5], requires_grad=True)
    x = tl.tensor([1.5, 2.5], requires_grad=True)
    yt, y = xt // 2, x // 2
    assert y.requires_grad == yt.requires_grad
    with pytest.raises(RuntimeError, match="floor_divide"):
        yt.sum().backward()
    with pytest.raises(RuntimeError, match="floor_divide"):
        y.sum().backward()


def test_remainder_against_torch(torch):
    # random inputs stay off the jumps (a / b an integer), where finite differences see a step
    check_op([(3, 4), (4,)], lambda x, y: x % y, low=[-5, -2], high=[5, -0.5])
    check_op([(3, 4)], lambda x: x % 1.5, low=-5, high=5)
    # torch has no derivative for number % tensor; ours is the tensor % tensor one
    check_op([(3, 4)], lambda y: 5.0 % y, lambda y: torch.full_like(y, 5.0) % y, low=0.5, high=2)
    _grads_match(torch, [DIVIDENDS, DIVISORS], lambda x, y: x % y)
    _same(tl.tensor([7, -7, 5]) % 3, torch.tensor([7, -7, 5]) % 3)
    _same(tl.tensor([7, -7, 5]) % -3, torch.tensor([7, -7, 5]) % -3)
    _same(7 % tl.tensor([2, -3]), 7 % torch.tensor([2, -3]))


@settings(max_examples=25)
@given(shapes_=broadcastable_shapes(2), seed=st.integers(0, 2**16))
def test_remainder_hypothesis(shapes_, seed):
    check_op(shapes_, lambda x, y: x % y, low=[-3, 0.5], high=[3, 2], seed=seed)


BOOLS = np.array([True, False, True, False])
INTS = np.array([5, -3, 0, 12])


@pytest.mark.parametrize("op", ["__and__", "__or__", "__xor__"])
def test_bitwise_ops_match_torch(torch, op):
    cases = [(BOOLS, BOOLS[::-1].copy()), (INTS, INTS[::-1].copy()), (INTS, BOOLS),
             (INTS.astype(np.int32), INTS), (BOOLS, INTS)]
    for a, b in cases:
        _same(getattr(tl.tensor(a), op)(tl.tensor(b)), getattr(torch.tensor(a), op)(torch.tensor(b)))
    for a, scalar in [(BOOLS, True), (BOOLS, 1), (INTS, 6), (INTS.astype(np.int32), 6)]:
        _same(getattr(tl.tensor(a), op)(scalar), getattr(torch.tensor(a), op)(scalar))
    r_op = "__r" + op[2:]
    _same(getattr(tl.tensor(INTS), r_op)(6), getattr(torch.tensor(INTS), r_op)(6))


def test_invert_and_logical_ops_match_torch(torch):
    for data in [BOOLS, INTS, INTS.astype(np.int32), np.array([0.0, 1.5, NAN])]:
        _both(torch, data, lambda x: x.logical_not())
        _both(torch, data, lambda x: x.logical_or(x))
        if data.dtype.kind != "f":
            _both(torch, data, lambda x: ~x)
            _both(torch, data, lambda x: x.bitwise_not())
    a, b = np.array([0.0, 1.5, 2.0, 0.0]), np.array([1, 0, 3, 0])
    for name in ["logical_and", "logical_or", "logical_xor"]:
        _same(getattr(tl.tensor(a), name)(tl.tensor(b)), getattr(torch.tensor(a), name)(torch.tensor(b)))


def test_bitwise_ops_refuse_floats():
    x = tl.tensor([1.0, 2.0])
    for fn in [lambda: ~x, lambda: x & x, lambda: x | 1, lambda: x ^ x, lambda: x.bitwise_not()]:
        with pytest.raises(TypeError, match="integer and bool"):
            fn()


def test_isnan_isinf_isfinite_and_comparison_methods(torch):
    data = np.array([0.0, -1.0, INF, -INF, NAN])
    for name in ["isnan", "isinf", "isfinite"]:
        _both(torch, data, lambda x: getattr(x, name)())
        _both(torch, np.array([1, 2]), lambda x: getattr(x, name)())
    for name in ["eq", "ne", "lt", "le", "gt", "ge"]:
        _both(torch, data, lambda x: getattr(x, name)(0.0))


# =============================================================================================
# reductions
# =============================================================================================


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_, np.float32, np.float64])
def test_sum_cumsum_prod_dtypes_of_every_input_match_torch(torch, dtype):
    data = np.array([[1, 0, 3], [2, 5, 1]]).astype(dtype)
    if dtype == np.uint8:
        data = data * 60  # sums past 255: torch sums uint8 into int64
    for fn in [lambda x: x.sum(), lambda x: x.sum(0), lambda x: x.sum(dim=1, keepdim=True),
               lambda x: x.cumsum(0), lambda x: x.cumsum(dim=-1), lambda x: x.prod(), lambda x: x.prod(1),
               lambda x: x.all(), lambda x: x.any(1), lambda x: x.all(dim=0, keepdim=True),
               lambda x: x.amax(), lambda x: x.amin(1)]:
        ours, theirs = fn(tl.tensor(data)), fn(torch.tensor(data))
        if theirs.dtype.is_floating_point:
            assert ours.dtype == theirs.numpy().dtype
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)
        else:
            _same(ours, theirs)


def test_reductions_with_dtype_keyword(torch):
    data = np.array([[1, 0, 3], [2, 5, 1]])
    for fn in [lambda x, lib: x.sum(dtype=lib.float64), lambda x, lib: x.sum(1, dtype=lib.int32),
               lambda x, lib: x.mean(dtype=lib.float32), lambda x, lib: x.mean(0, dtype=lib.float64),
               lambda x, lib: x.cumsum(1, dtype=lib.float64), lambda x, lib: x.prod(dtype=lib.float64)]:
        _same(fn(tl.tensor(data), tl), fn(torch.tensor(data), torch))
    check_op([(3, 4)], lambda x: x.sum(1, dtype=_lib(x).float64), dtype=np.float32)
    check_op([(3, 4)], lambda x: x.mean(dtype=_lib(x).float64), dtype=np.float32)


def test_mean_of_an_int_tensor_raises_as_torch(torch):
    with pytest.raises(RuntimeError):
        torch.tensor([1, 2]).mean()
    with pytest.raises(RuntimeError, match="dtype"):
        tl.tensor([1, 2]).mean()


REDUCTIONS = {
    "cumsum_0": lambda x: x.cumsum(0),
    "cumsum_last": lambda x: x.cumsum(-1),
    "prod_all": lambda x: x.prod(),
    "prod_dim": lambda x: x.prod(1),
    "prod_dim_keepdim": lambda x: x.prod(-1, keepdim=True),
    "logsumexp": lambda x: x.logsumexp(1),
    "logsumexp_tuple": lambda x: x.logsumexp((0, 2), keepdim=True),
    "amax": lambda x: x.amax(),
    "amax_dim": lambda x: x.amax(1),
    "amin_dims": lambda x: x.amin((0, 2), keepdim=True),
}


@pytest.mark.parametrize("name", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_reductions_against_torch(name, dtype):
    check_op([(2, 3, 4)], REDUCTIONS[name], low=0.5, high=1.5, dtype=dtype)


@settings(max_examples=25)
@given(shape=shapes(min_dims=1), seed=st.integers(0, 2**16), dim=st.integers(-4, 3))
@pytest.mark.parametrize("name", ["cumsum", "prod", "logsumexp", "amax"])
def test_reductions_hypothesis(name, shape, seed, dim):
    dim = dim % len(shape)
    check_op([shape], lambda x: getattr(x, name)(dim), seed=seed, low=0.5, high=1.5)


def test_reductions_at_extreme_values_and_ties(torch):
    zeros = np.array([[1.0, 0.0, 3.0], [2.0, 2.0, 2.0], [0.0, 4.0, 0.0]])
    _grads_match(torch, [zeros], lambda x: x.prod(1))
    _grads_match(torch, [zeros], lambda x: x.prod())
    _grads_match(torch, [np.array([1.0, 0.0, 3.0])], lambda x: x.prod())
    ties = np.array([[1.0, 3.0, 3.0], [3.0, 3.0, 3.0], [-INF, 0.0, 2.0]])
    for fn in [lambda x: x.amax(), lambda x: x.amax(1), lambda x: x.amin(0), lambda x: x.amin((0, 1))]:
        _grads_match(torch, [ties], fn)
    infinite = np.array([[1.0, 3.0], [-INF, -INF], [INF, 1.0], [NAN, 1.0], [1000.0, -1000.0]])
    _grads_match(torch, [infinite], lambda x: x.logsumexp(1))
    _grads_match(torch, [np.array([INF, 1.0, NAN])], lambda x: x.cumsum(0))


def test_logsumexp_of_ints_is_the_default_float(torch):
    _same_float = lambda o, t: np.testing.assert_allclose(o.numpy(), t.numpy(), rtol=1e-6)  # noqa: E731
    ours, theirs = tl.tensor([[1, 2], [3, 4]]).logsumexp(1), torch.tensor([[1, 2], [3, 4]]).logsumexp(1)
    assert ours.dtype == theirs.numpy().dtype
    _same_float(ours, theirs)


# =============================================================================================
# maximum / minimum, outer, norm
# =============================================================================================


@pytest.mark.parametrize("name", ["maximum", "minimum"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_maximum_minimum_against_torch(name, dtype):
    check_op([(3, 1, 4), (2, 4)], lambda a, b: getattr(a, name)(b), dtype=dtype)


@settings(max_examples=25)
@given(shapes_=broadcastable_shapes(2), seed=st.integers(0, 2**16))
@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum_hypothesis(name, shapes_, seed):
    check_op(shapes_, lambda a, b: getattr(a, name)(b), seed=seed)


@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_minimum_ties_and_nans_split_the_gradient_as_torch(torch, name):
    a = np.array([1.0, 2.0, 3.0, NAN, NAN, INF, -INF, 0.0])
    b = np.array([1.0, 0.0, 4.0, 1.0, NAN, INF, 5.0, -0.0])
    _grads_match(torch, [a, b], lambda x, y: getattr(x, name)(y))


def test_maximum_promotes_and_refuses_numbers_as_torch(torch):
    _same(tl.tensor([1, 5]).maximum(tl.tensor([2.5, 1.0])), torch.tensor([1, 5]).maximum(torch.tensor([2.5, 1.0])))
    _same(tl.tensor([1, 5], dtype=tl.int32).minimum(tl.tensor([2, 1])),
          torch.tensor([1, 5], dtype=torch.int32).minimum(torch.tensor([2, 1])))
    with pytest.raises(TypeError):
        torch.tensor([1.0]).maximum(2.0)
    with pytest.raises(TypeError, match="Tensor"):
        tl.tensor([1.0]).maximum(2.0)


def test_outer_against_torch(torch):
    check_op([(3,), (4,)], lambda a, b: a.outer(b))
    check_op([(3,), (1,)], lambda a, b: a.ger(b))
    _same(tl.tensor([1, 2]).outer(tl.tensor([3, 4, 5])), torch.tensor([1, 2]).outer(torch.tensor([3, 4, 5])))
    with pytest.raises(RuntimeError):
        torch.ones(2, 2).outer(torch.ones(2))
    with pytest.raises(RuntimeError, match="1-D"):
        tl.ones(2, 2).outer(tl.ones(2))


@settings(max_examples=25)
@given(n=st.integers(1, 5), m=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_outer_hypothesis(n, m, seed):
    check_op([(n,), (m,)], lambda a, b: a.outer(b), seed=seed)


NORM_PS = [2, "fro", 1, INF, -INF, 3, 1.5, 0.5, -1, 0]


@pytest.mark.parametrize("p", NORM_PS, ids=str)
@pytest.mark.parametrize("dim,keepdim", [(None, False), (1, False), ((0, 2), True), (-1, True)])
def test_norm_against_torch(p, dim, keepdim):
    if p == "fro" and isinstance(dim, tuple) and len(dim) != 2:
        return
    check_op([(2, 3, 4)], lambda x: x.norm(p=p, dim=dim, keepdim=keepdim), low=0.3, high=2,
             gradcheck=p != 0)


@settings(max_examples=25)
@given(shape=shapes(min_dims=1), seed=st.integers(0, 2**16), p=st.sampled_from([2, 1, 3, INF, 0.5]))
def test_norm_hypothesis(shape, seed, p):
    # entries of both signs, kept away from 0 where |x|^p has no derivative for p <= 1
    rng = np.random.default_rng(seed)
    data = rng.uniform(0.3, 2, shape) * rng.choice([-1, 1], shape)
    check_op([data], lambda x: x.norm(p=p, dim=-1), seed=seed)


@pytest.mark.parametrize("p", NORM_PS, ids=str)
def test_norm_at_zero_ties_and_infinities_as_torch(torch, p):
    for data in [np.zeros((2, 3)), np.array([[0.0, 1.0, -2.0], [0.0, 0.0, 0.0]]),
                 np.array([[2.0, -2.0, 1.0], [INF, 0.0, 1.0]]), np.array([[NAN, 1.0, 0.0], [1e200, 1e200, 0.0]])]:
        _grads_match(torch, [data], lambda x: x.norm(p=p, dim=1))
    _grads_match(torch, [np.zeros(4)], lambda x: x.norm(p=p))


def test_norm_arguments_as_torch(torch):
    x, xt = tl.tensor([[3.0, 4.0]]), torch.tensor([[3.0, 4.0]])
    np.testing.assert_allclose(x.norm(dtype=tl.float64).numpy(), xt.norm(dtype=torch.float64).numpy())
    assert x.norm(dtype=tl.float64).dtype == np.float64
    with pytest.raises(RuntimeError):
        torch.tensor([1, 2]).norm()
    with pytest.raises(RuntimeError, match="floating"):
        tl.tensor([1, 2]).norm()
    with pytest.raises(RuntimeError, match="2-tuple"):
        tl.ones(2, 2, 2).norm(p="fro", dim=(0, 1, 2))
    with pytest.raises(NotImplementedError, match="nuc"):
        x.norm(p="nuc")
    with pytest.raises(RuntimeError, match="not supported"):
        x.norm(p="abc")


# =============================================================================================
# einsum
# =============================================================================================

EINSUM = [  # the attention patterns, ellipses, implicit outputs, broadcasting, sums and diagonals
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ("bhqk,bhkd->bhqd", [(2, 3, 4, 6), (2, 3, 6, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("i,j->ij", [(3,), (4,)]),
    ("...d,de->...e", [(2, 3, 4), (4, 5)]),
    ("...d,de->...e", [(4,), (4, 5)]),
    ("ij,jk", [(2, 3), (3, 4)]),
    ("ij,jk->ik", [(2, 1), (3, 4)]),
    ("bij,bjk->bik", [(1, 2, 3), (4, 3, 5)]),
    ("ij,ij->i", [(2, 3), (1, 3)]),
    ("ij,kj->", [(2, 3), (4, 1)]),
    ("i...j,j...->i...", [(4, 5, 2, 3), (3, 2)]),
    ("...ij,...jk", [(5, 1, 2, 3), (4, 3, 2)]),
    ("bA,Ab", [(2, 3), (3, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ("ijk,ik->j", [(2, 3, 4), (2, 4)]),
    ("abc,b->ca", [(2, 3, 4), (3,)]),
    ("i,j->", [(3,), (2,)]),
    ("ij->ji", [(2, 3)]),
    ("ij->", [(2, 3)]),
    ("...ij->...", [(2, 1, 3)]),
    ("ii->i", [(3, 3)]),
    ("ii", [(3, 3)]),
    ("iij->ji", [(3, 3, 2)]),
    ("ii,i->i", [(3, 3), (3,)]),
    (" i j , j k -> i k ", [(2, 3), (3, 4)]),
]


@pytest.mark.parametrize("equation,shapes_", EINSUM, ids=[e for e, _ in EINSUM])
def test_einsum_against_torch(equation, shapes_):
    check_op(shapes_, lambda *xs: _einsum(equation, *xs))


@pytest.mark.parametrize("equation,shapes_", EINSUM[:6], ids=[e for e, _ in EINSUM[:6]])
def test_einsum_float32_and_the_list_form(equation, shapes_):
    check_op(shapes_, lambda *xs: _einsum(equation, list(xs)), dtype=np.float32)


@st.composite
def _einsum_cases(draw):
    """Two operands over random letters: shared, own, summed and output labels, sizes 1-3."""
    letters = "abcdef"
    sizes = {c: draw(st.integers(1, 3)) for c in letters}
    a = draw(st.lists(st.sampled_from(letters), min_size=0, max_size=4, unique=True))
    b = draw(st.lists(st.sampled_from(letters), min_size=0, max_size=4, unique=True))
    present = sorted(set(a) | set(b))
    order = draw(st.permutations(present))
    out = order[:draw(st.integers(0, len(order)))]
    shape_a = tuple(sizes[c] for c in a)
    shape_b = tuple(1 if c in a and draw(st.booleans()) else sizes[c] for c in b)  # size-1 broadcast
    return f"{''.join(a)},{''.join(b)}->{''.join(out)}", [shape_a, shape_b]


@settings(max_examples=25)
@given(case=_einsum_cases(), seed=st.integers(0, 2**16))
def test_einsum_hypothesis(case, seed):
    equation, shapes_ = case
    check_op(shapes_, lambda *xs: _einsum(equation, *xs), seed=seed)


def test_einsum_of_ints_and_infinities(torch):
    a, b = np.arange(6).reshape(2, 3), np.arange(12).reshape(3, 4) - 5
    _same(einsum("ij,jk->ik", tl.tensor(a), tl.tensor(b)), torch.einsum("ij,jk->ik", torch.tensor(a), torch.tensor(b)))
    x = np.array([[1.0, INF], [0.0, 2.0]])
    _grads_match(torch, [x, np.array([[1.0, 0.0], [2.0, 1.0]])],
                 lambda p, q: _einsum("ij,jk->ik", p, q))


def test_einsum_output_is_never_a_view_of_an_input():
    x = tl.ones(2, 3)
    y = einsum("ij->ij", x)
    y.data[...] = 5
    assert x.numpy().sum() == 6


@pytest.mark.parametrize("equation,shapes_,message", [
    ("ij,jk", [(2, 3), (4, 4)], "does not broadcast"),
    ("ij,jk->ik", [(2, 3)], "fewer operands"),
    ("ij", [(2, 3), (3,)], "more operands"),
    ("ij->ik", [(2, 3)], "does not appear"),
    ("ij->ii", [(2, 3)], "more than once"),
    ("ijk->ij", [(2, 3)], "number of subscripts"),
    ("i.j", [(4, 2)], "not part of any ellipsis"),
    ("i...j...", [(4, 2)], "already found"),
    ("i1->i", [(2,)], "subscripts must be in"),
    ("ii->i", [(3, 4)], "sizes don't match"),
])
def test_einsum_errors_match_torch(torch, equation, shapes_, message):
    with pytest.raises(RuntimeError):
        torch.einsum(equation, *[torch.ones(s) for s in shapes_])
    with pytest.raises(RuntimeError, match=message):
        einsum(equation, *[tl.ones(*s) for s in shapes_])


def test_einsum_refuses_mixed_dtypes(torch):
    with pytest.raises(RuntimeError):
        torch.einsum("i,i->", torch.ones(2, dtype=torch.float64), torch.ones(2))
    with pytest.raises(RuntimeError, match="dtype"):
        einsum("i,i->", tl.ones(2, dtype=tl.float64), tl.ones(2))
