"""Every primitive op and method against torch (forward and gradients, float64 and float32), by
finite differences, on hypothesis-drawn shapes with broadcasting, and at extreme values."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tinyllm as tl
from helpers import (broadcastable_shapes, broadcastable_to, check_op, matmul_shapes, requires_torch,
                     shapes, torch)


def _lib(x):
    """The library a tensor belongs to, for lambdas that need a module-level function."""
    return tl if isinstance(x, tl.Tensor) else torch


# =============================================================================================
# elementwise arithmetic
# =============================================================================================

# name -> (fn, low, high): one range per operand, chosen so the op is smooth there
BINARY = {
    "add": (lambda a, b: a + b, -2, 2),
    "sub": (lambda a, b: a - b, -2, 2),
    "mul": (lambda a, b: a * b, -2, 2),
    "div": (lambda a, b: a / b, [-2, 0.5], [2, 2]),
    "div_negative_divisor": (lambda a, b: a / b, [-2, -2], [2, -0.5]),
    "pow": (lambda a, b: a ** b, [0.5, -2], [2, 2]),
    "add_method": (lambda a, b: a.add(b), -2, 2),
    "sub_method": (lambda a, b: a.sub(b), -2, 2),
    "mul_method": (lambda a, b: a.mul(b), -2, 2),
    "div_method": (lambda a, b: a.div(b), [-2, 0.5], [2, 2]),
    "pow_method": (lambda a, b: a.pow(b), [0.5, -2], [2, 2]),
}
BROADCAST_PAIRS = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((4,), (2, 3, 4)), ((3, 1), (1, 4)),
                   ((), (2, 3)), ((2, 3), ()), ((2, 1, 4), (3, 1)), ((1,), (1, 1, 1))]


@pytest.mark.parametrize("shapes_", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("name", BINARY)
def test_binary(name, shapes_):
    fn, low, high = BINARY[name]
    check_op(shapes_, fn, low=low, high=high)


@given(shapes_=broadcastable_shapes(2), seed=st.integers(0, 2**16))
@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "pow"])
def test_binary_hypothesis(name, shapes_, seed):
    fn, low, high = BINARY[name]
    check_op(shapes_, fn, low=low, high=high, seed=seed)


@pytest.mark.parametrize("name", ["add", "sub", "mul", "div", "pow"])
def test_binary_float32(name):
    fn, low, high = BINARY[name]
    check_op([(2, 3, 4), (3, 1)], fn, low=low, high=high, dtype=np.float32)


def test_binary_one_operand_without_grad():
    check_op([(3, 4), (4,)], lambda a, b: a * b / (b + 3), requires_grad=[False, True])
    check_op([(3, 4), (4,)], lambda a, b: a ** 2 - b, requires_grad=[True, False])


# scalar operands, reflected forms, unary minus: name -> (fn, low, high)
SCALAR = {
    "x+2": (lambda x: x + 2, -2, 2),
    "2+x": (lambda x: 2 + x, -2, 2),
    "x-2": (lambda x: x - 2, -2, 2),
    "2-x": (lambda x: 2 - x, -2, 2),
    "x*1.5": (lambda x: x * 1.5, -2, 2),
    "1.5*x": (lambda x: 1.5 * x, -2, 2),
    "x/3": (lambda x: x / 3, -2, 2),
    "2/x": (lambda x: 2 / x, 0.5, 2),
    "2**x": (lambda x: 2 ** x, -2, 2),
    "0.5**x": (lambda x: 0.5 ** x, -2, 2),
    "x**2": (lambda x: x ** 2, -2, 2),
    "x**3": (lambda x: x ** 3, -2, 2),
    "x**0.5": (lambda x: x ** 0.5, 0.1, 2),
    "x**-1.5": (lambda x: x ** -1.5, 0.1, 2),
    "x**0": (lambda x: x ** 0, -2, 2),
    "x**1": (lambda x: x ** 1, -2, 2),
    "x.pow(2.5)": (lambda x: x.pow(2.5), 0.1, 2),
    "-x": (lambda x: -x, -2, 2),
    "+x": (lambda x: +x * 1, -2, 2),
}


@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("name", SCALAR)
def test_scalar_and_reflected(name, shape):
    fn, low, high = SCALAR[name]
    check_op([shape], fn, low=low, high=high)


@pytest.mark.parametrize("name", ["2-x", "2/x", "2**x", "x**3", "x**0.5"])
def test_scalar_and_reflected_float32(name):
    fn, low, high = SCALAR[name]
    check_op([(3, 4)], fn, low=low, high=high, dtype=np.float32)


def test_pow_at_zero_matches_torch():
    # d(x^0)/dx is 0 everywhere, also at x = 0 (not 0 * 0^-1 = nan); likewise for a tensor exponent
    zeros_and_more = np.array([0.0, 0.0, 1.5, -2.0])
    check_op([zeros_and_more], lambda x: x ** 0, gradcheck=False)
    check_op([zeros_and_more], lambda x: x ** 2, gradcheck=False)
    check_op([zeros_and_more], lambda x: x ** 1, gradcheck=False)
    check_op([np.array([0.0, 0.0, 2.0]), np.array([0.0, 2.0, 0.0])], lambda a, b: a ** b, gradcheck=False)
    x = tl.Tensor(zeros_and_more, requires_grad=True)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 0, 0, 0])
    a, b = tl.Tensor(np.zeros(2), requires_grad=True), tl.Tensor(np.array([0.0, 2.0]), requires_grad=True)
    (a ** b).sum().backward()
    np.testing.assert_array_equal(a.grad, [0, 0])
    np.testing.assert_array_equal(b.grad, [0, 0])


def test_ndarray_and_tensor_operands_mix():
    c = np.linspace(0.5, 2, 4)
    check_op([(3, 4)], lambda x: x * c + c / (x * x + 1) - (c - x),
             lambda x: x * torch.from_numpy(c) + torch.from_numpy(c) / (x * x + 1) - (torch.from_numpy(c) - x))


# =============================================================================================
# matmul
# =============================================================================================

MATMUL_SHAPES = [((3, 4), (4, 5)), ((4,), (4,)), ((4,), (4, 5)), ((3, 4), (4,)), ((2, 3, 4), (4,)),
                 ((4,), (2, 4, 5)), ((2, 3, 4), (4, 5)), ((3, 4), (2, 4, 5)), ((2, 3, 4), (2, 4, 5)),
                 ((2, 1, 3, 4), (5, 4, 2)), ((1, 3, 4), (2, 4, 2)), ((1, 1), (1, 1))]


@pytest.mark.parametrize("shapes_", MATMUL_SHAPES, ids=str)
def test_matmul(shapes_):
    check_op(shapes_, lambda a, b: a @ b)


@pytest.mark.parametrize("shapes_", [((3, 4), (4, 5)), ((4,), (4,)), ((2, 3, 4), (4, 5))], ids=str)
def test_matmul_method_and_reflected(shapes_):
    check_op(shapes_, lambda a, b: a.matmul(b))
    b = np.random.default_rng(1).standard_normal(shapes_[1])
    check_op([shapes_[0]], lambda a: a @ b, lambda a: a @ torch.from_numpy(b))
    a = np.random.default_rng(2).standard_normal(shapes_[0])
    check_op([shapes_[1]], lambda b: a @ b, lambda b: torch.from_numpy(a) @ b)


@given(shapes_=matmul_shapes(), seed=st.integers(0, 2**16))
def test_matmul_hypothesis(shapes_, seed):
    check_op(shapes_, lambda a, b: a @ b, seed=seed)


def test_matmul_float32():
    check_op([(2, 8, 16), (16, 8)], lambda a, b: a @ b, dtype=np.float32)
    check_op([(16,), (16,)], lambda a, b: a @ b, dtype=np.float32)


def test_matmul_dot_product_backward():
    a, b = tl.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True), tl.Tensor(np.ones(3), requires_grad=True)
    (a @ b).backward()
    np.testing.assert_array_equal(a.grad, [1, 1, 1])
    np.testing.assert_array_equal(b.grad, [1, 2, 3])


@pytest.mark.parametrize("sa, sb", [((3, 4), (5, 6)), ((4,), (5,)), ((2, 3, 4), (3, 4, 5)), ((3,), (4, 5))])
def test_matmul_errors_name_both_shapes(sa, sb):
    with pytest.raises(ValueError) as info:
        tl.zeros(*sa) @ tl.zeros(*sb)
    assert str(sa) in str(info.value) and str(sb) in str(info.value)
    with pytest.raises(ValueError, match="at least one dimension"):
        tl.zeros(3) @ tl.tensor(2.0)


# =============================================================================================
# elementwise functions
# =============================================================================================

# name -> (fn, low, high)
UNARY = {
    "exp": (lambda x: x.exp(), -2, 2),
    "log": (lambda x: x.log(), 0.1, 3),
    "tanh": (lambda x: x.tanh(), -3, 3),
    "sigmoid": (lambda x: x.sigmoid(), -5, 5),
    "relu": (lambda x: x.relu(), -2, 2),
    "sqrt": (lambda x: x.sqrt(), 0.1, 3),
    "abs": (lambda x: x.abs(), -2, 2),
    "abs()": (lambda x: abs(x), -2, 2),
    "neg": (lambda x: -x, -2, 2),
    "clamp": (lambda x: x.clamp(-0.5, 0.7), -2, 2),
    "clamp_min": (lambda x: x.clamp(min=-0.5), -2, 2),
    "clamp_max": (lambda x: x.clamp(max=0.5), -2, 2),
    "clone": (lambda x: x.clone() * 1, -2, 2),
}


@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("name", UNARY)
def test_unary(name, shape):
    fn, low, high = UNARY[name]
    check_op([shape], fn, low=low, high=high)


@given(shape=shapes(), seed=st.integers(0, 2**16))
@pytest.mark.parametrize("name", ["exp", "log", "tanh", "sigmoid", "relu", "sqrt", "abs", "clamp"])
def test_unary_hypothesis(name, shape, seed):
    fn, low, high = UNARY[name]
    check_op([shape], fn, low=low, high=high, seed=seed)


@pytest.mark.parametrize("name", UNARY)
def test_unary_float32(name):
    fn, low, high = UNARY[name]
    check_op([(3, 5)], fn, low=low, high=high, dtype=np.float32)


EXTREMES = np.array([-1e4, -745.0, -100.0, -20.0, -1e-8, 0.0, 1e-8, 20.0, 100.0, 700.0, 1e4])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_saturating_functions_at_extreme_values(name, dtype):
    fn = UNARY[name][0]
    check_op([EXTREMES], fn, dtype=dtype, gradcheck=dtype == np.float64)
    x = tl.Tensor(EXTREMES.astype(dtype), requires_grad=True)
    y = fn(x)
    y.backward(np.ones_like(x.data))
    assert y.dtype == dtype and np.all(np.isfinite(y.data)) and np.all(np.isfinite(x.grad))
    assert y.data[0] == (0.0 if name == "sigmoid" else -1.0) and y.data[-1] == 1.0
    assert x.grad[0] == 0.0 and x.grad[-1] == 0.0  # saturated: the gradient is exactly 0


def test_exp_log_sqrt_abs_relu_at_extreme_values_match_torch():
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        check_op([np.array([-1e4, -745.0, -50.0, 0.0, 50.0, 700.0])], lambda x: x.exp(), gradcheck=False)
        check_op([np.array([0.0, 1e-300, 1e-8, 1.0, 1e300])], lambda x: x.log(), gradcheck=False)
        check_op([np.array([0.0, 1e-300, 1e-8, 1.0, 1e300])], lambda x: x.sqrt(), gradcheck=False)
        check_op([np.array([-np.inf, -1e4, -0.0, 0.0, 1e4, np.inf])], lambda x: x.abs(), gradcheck=False)
        check_op([np.array([-np.inf, -1e4, -1.0, 0.0, 1.0, 1e4, np.inf])], lambda x: x.relu(), gradcheck=False)
    x = tl.Tensor(np.array([-np.inf, -1.0, 0.0, 2.0, np.inf]))
    np.testing.assert_array_equal(x.relu().data, [0.0, 0.0, 0.0, 2.0, np.inf])


def test_nonsmooth_points_follow_torch():
    # relu'(0) = 0, |x|'(0) = 0, and clamp passes the gradient on its (inclusive) boundaries
    kinks = np.array([-1.0, -0.5, 0.0, 0.5, 0.7, 1.0])
    check_op([kinks], lambda x: x.relu(), gradcheck=False)
    check_op([kinks], lambda x: x.abs(), gradcheck=False)
    check_op([kinks], lambda x: x.clamp(-0.5, 0.7), gradcheck=False)
    check_op([kinks], lambda x: x.clamp(min=0.0), gradcheck=False)
    x = tl.Tensor(kinks, requires_grad=True)
    x.clamp(-0.5, 0.7).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 1, 1, 1, 1, 0])


# =============================================================================================
# reductions
# =============================================================================================


def _tl_reduce(op, dim, keepdim, **kw):
    return lambda x: getattr(x, op)(dim=dim, keepdim=keepdim, **kw)


def _torch_reduce(op, dim, keepdim, **kw):
    def fn(x):
        if op in ("max", "min"):
            if dim is None and not keepdim:
                return getattr(x, op)()
            if isinstance(dim, int):
                return tuple(getattr(x, op)(dim, keepdim=keepdim))  # (values, indices), as tinyllm
            dims = tuple(range(x.ndim)) if dim is None else dim
            return getattr(torch, "a" + op)(x, dim=dims, keepdim=keepdim)
        if dim is None and not keepdim:
            return getattr(x, op)(**kw)
        dims = tuple(range(x.ndim)) if dim is None else dim
        return getattr(x, op)(dim=dims, keepdim=keepdim, **kw)
    return fn


REDUCTIONS = {"sum": {}, "mean": {}, "var": {}, "var_biased": {"unbiased": False},
              "var_correction2": {"correction": 2}, "std": {}, "max": {}, "min": {}}
DIMS = [None, 0, 1, -1, (0, 2), (-1, 0), (2, 1, 0)]


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", DIMS, ids=str)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction(name, dim, keepdim):
    op, kw = name.split("_")[0], REDUCTIONS[name]
    check_op([(3, 4, 5)], _tl_reduce(op, dim, keepdim, **kw), _torch_reduce(op, dim, keepdim, **kw))


@pytest.mark.parametrize("dim", [None, 0, -1], ids=str)
@pytest.mark.parametrize("name", ["sum", "mean", "max", "min"])
def test_reduction_of_0d_and_1d(name, dim):
    check_op([()], _tl_reduce(name, dim, False), _torch_reduce(name, dim, False))
    check_op([(6,)], _tl_reduce(name, dim, True), _torch_reduce(name, dim, True))


def test_reduction_defaults_and_positional_dim():
    check_op([(3, 4)], lambda x: x.sum())
    check_op([(3, 4)], lambda x: x.mean(1))
    check_op([(3, 4)], lambda x: x.var(0, False, True), lambda x: x.var(0, False, True))
    check_op([(3, 4)], lambda x: x.max(1))  # (values, indices) on both sides


@st.composite
def _shape_and_dims(draw):
    shape = draw(shapes(min_dims=1))
    n = len(shape)
    picked = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    negate = draw(st.lists(st.booleans(), min_size=len(picked), max_size=len(picked)))
    dims = tuple(d - n if neg else d for d, neg in zip(picked, negate))
    form = draw(st.sampled_from(["int", "tuple", "none"]))
    dim = dims[0] if form == "int" else None if form == "none" else dims
    return shape, dim


@given(case=_shape_and_dims(), keepdim=st.booleans(), seed=st.integers(0, 2**16))
@pytest.mark.parametrize("name", ["sum", "mean", "var", "var_correction2", "max", "min"])
def test_reduction_hypothesis(name, case, keepdim, seed):
    shape, dim = case
    op, kw = name.split("_")[0], REDUCTIONS[name]
    if op == "var":
        axes = range(len(shape)) if dim is None else [dim] if isinstance(dim, int) else dim
        assume(int(np.prod([shape[d] for d in axes])) > kw.get("correction", 1))
    check_op([shape], _tl_reduce(op, dim, keepdim, **kw), _torch_reduce(op, dim, keepdim, **kw), seed=seed)


@pytest.mark.parametrize("name", ["sum", "mean", "var", "max", "min"])
def test_reduction_float32(name):
    check_op([(4, 6, 5)], _tl_reduce(name, -1, False), _torch_reduce(name, -1, False), dtype=np.float32)
    check_op([(4, 6, 5)], _tl_reduce(name, None, False), _torch_reduce(name, None, False), dtype=np.float32)


def test_var_with_too_few_elements_gives_nan_or_inf_like_torch():
    with np.errstate(divide="ignore", invalid="ignore"):
        out = tl.Tensor(np.array([1.0, 2.0])).var(correction=2)
        assert np.isinf(out.item())
        assert np.isnan(tl.Tensor(np.array([3.0])).var().item())


# -- max/min ties: full reductions split the gradient, max(dim) sends it to one element ---------


def _tied(seed, shape=(4, 5, 6)):
    x = np.random.default_rng(seed).integers(0, 3, size=shape).astype(np.float64)
    return x


def test_max_ties_by_hand():
    x = tl.Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]]), requires_grad=True)
    x.max().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0.5, 0.5], [0, 0, 0]])
    x.grad = None
    x.max(1).values.sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [1, 0, 0]])
    x.grad = None
    x.min().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0, 0], [0, 0, 1]])


@requires_torch
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("op", ["max", "min"])
def test_max_min_ties_match_torch(op, seed):
    x = _tied(seed)
    assert len(np.unique(x)) < x.size  # there really are ties
    check_op([x], _tl_reduce(op, None, False), _torch_reduce(op, None, False), gradcheck=False)
    check_op([x[:1, :1, :2]], _tl_reduce(op, None, False), _torch_reduce(op, None, False), gradcheck=False)
    for dim in (0, 1, 2, -1):
        for keepdim in (False, True):
            check_op([x], _tl_reduce(op, dim, keepdim), _torch_reduce(op, dim, keepdim), gradcheck=False)
    for dims in ((0, 2), (1, 2), (0, 1, 2), (-1, 0)):
        check_op([x], _tl_reduce(op, dims, False), _torch_reduce(op, dims, False), gradcheck=False)
    check_op([np.full((3, 4), 2.0)], _tl_reduce(op, None, False), _torch_reduce(op, None, False),
             gradcheck=False)


def test_reduction_errors():
    x = tl.zeros(2, 3)
    with pytest.raises(IndexError, match="dim 2"):
        x.sum(2)
    with pytest.raises(IndexError, match="dim -3"):
        x.mean(-3)
    with pytest.raises(ValueError, match=r"\(0, 3\)"):
        tl.zeros(0, 3).max()


# =============================================================================================
# shapes
# =============================================================================================

SHAPE_OPS = {
    "reshape": (lambda x: x.reshape(4, 6), None),
    "reshape_tuple": (lambda x: x.reshape((6, -1)), None),
    "reshape_flat": (lambda x: x.reshape(-1), None),
    "view": (lambda x: x.view(2, 12), None),
    "transpose": (lambda x: x.transpose(0, 2), None),
    "transpose_negative": (lambda x: x.transpose(-1, -2), None),
    "permute": (lambda x: x.permute(2, 0, 1), None),
    "permute_tuple_negative": (lambda x: x.permute((-1, 0, -2)), None),
    "T": (lambda x: x.T, lambda x: x.permute(2, 1, 0)),
    "mT": (lambda x: x.mT, None),
    "unsqueeze0": (lambda x: x.unsqueeze(0), None),
    "unsqueeze-1": (lambda x: x.unsqueeze(-1), None),
    "unsqueeze2": (lambda x: x.unsqueeze(2), None),
    "squeeze": (lambda x: x.reshape(1, 2, 1, 12, 1).squeeze(), None),
    "squeeze_dim": (lambda x: x.reshape(1, 2, 1, 12, 1).squeeze(2), None),
    "squeeze_negative": (lambda x: x.reshape(1, 2, 1, 12, 1).squeeze(-1), None),
    "squeeze_tuple": (lambda x: x.reshape(1, 2, 1, 12, 1).squeeze((0, 4)), None),
    "squeeze_non_one": (lambda x: x.squeeze(1), None),
    "flatten": (lambda x: x.flatten(), None),
    "flatten_1": (lambda x: x.flatten(1), None),
    "flatten_0_1": (lambda x: x.flatten(0, 1), None),
    "flatten_negative": (lambda x: x.flatten(-2, -1), None),
    "expand": (lambda x: x[:, :1].expand(2, 5, 4), None),
    "expand_minus_one_new_dims": (lambda x: x[:, :1].expand(3, -1, 2, -1), None),
    "split": (lambda x: x.split(2, dim=2), None),
    "split_uneven": (lambda x: x.split(3, dim=-1), None),
    "split_sizes": (lambda x: x.split([1, 2], dim=1), None),
    "chunk": (lambda x: x.chunk(2), None),
    "chunk_uneven": (lambda x: x.chunk(3, dim=2), None),
    "contiguous": (lambda x: x.transpose(0, 1).contiguous() * 1, None),
}


@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_op(name):
    fn, torch_fn = SHAPE_OPS[name]
    check_op([(2, 3, 4)], fn, torch_fn)


@pytest.mark.parametrize("name", ["transpose", "permute", "split", "expand", "reshape"])
def test_shape_op_float32(name):
    fn, torch_fn = SHAPE_OPS[name]
    check_op([(2, 3, 4)], fn, torch_fn, dtype=np.float32)


def test_T_of_a_matrix():
    check_op([(3, 5)], lambda x: x.T)


@given(shape=shapes(), data=st.data())
def test_permute_and_reshape_hypothesis(shape, data):
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    check_op([shape], lambda x: x.permute(*perm) if perm else x * 1)
    size = int(np.prod(shape))
    target = data.draw(st.sampled_from([(size,), (-1,), (1, size), (size, 1), shape[::-1]]))
    check_op([shape], lambda x: x.reshape(target))
    if len(shape) >= 2:
        d0, d1 = data.draw(st.integers(-len(shape), len(shape) - 1)), data.draw(st.integers(0, len(shape) - 1))
        check_op([shape], lambda x: x.transpose(d0, d1))


@given(shape=shapes(), data=st.data())
def test_unsqueeze_squeeze_flatten_hypothesis(shape, data):
    n = len(shape)
    d = data.draw(st.integers(-n - 1, n))
    check_op([shape], lambda x: x.unsqueeze(d))
    check_op([shape], lambda x: x.squeeze())
    if n:
        s = data.draw(st.integers(-n, n - 1))
        e = data.draw(st.integers(s % n, n - 1))
        check_op([shape], lambda x: x.squeeze(s))
        check_op([shape], lambda x: x.flatten(s, e))


@given(shape=shapes(min_dims=1), extra=st.lists(st.integers(1, 3), max_size=2), data=st.data())
def test_expand_hypothesis(shape, extra, data):
    small = data.draw(broadcastable_to(shape))
    target = tuple(extra) + shape
    check_op([small], lambda x: x.expand(*target))


@given(shape=shapes(min_dims=1, max_side=6), data=st.data())
def test_split_chunk_hypothesis(shape, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[dim]
    size = data.draw(st.integers(1, n))
    check_op([shape], lambda x: x.split(size, dim=dim))
    check_op([shape], lambda x: x.chunk(size, dim=dim))
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=3)))
    sizes = [b - a for a, b in zip([0] + cuts, cuts + [n])]
    check_op([shape], lambda x: x.split(sizes, dim=dim))


def test_shape_errors():
    x = tl.zeros(2, 3)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 2\)"):
        x.reshape(4, 2)
    with pytest.raises(ValueError, match="permutation"):
        x.permute(0, 0)
    with pytest.raises(ValueError, match="permutation"):
        x.permute(0, 3)  # out of range (3 % 2 == 1 once passed as a valid permutation)
    with pytest.raises(ValueError, match=r"\[1, 1\].*3"):
        x.split([1, 1], dim=1)
    with pytest.raises(IndexError, match="unsqueeze"):
        x.unsqueeze(3)


# =============================================================================================
# indexing
# =============================================================================================

IDX = np.array([0, 2, 2, 4, 0, -1])  # repeated and negative: the backward must scatter-add
MASK = np.random.default_rng(7).random((5, 4, 3)) > 0.5

# name -> (tl_fn, torch_fn or None), for x of shape (5, 4, 3)
INDEXING = {
    "int": (lambda x: x[1], None),
    "negative_int": (lambda x: x[-1], None),
    "slice": (lambda x: x[1:4], None),
    "slices": (lambda x: x[1:4:2, ::2, 1:], None),
    "int_and_slice": (lambda x: x[:, 1:3, -1], None),
    "ellipsis": (lambda x: x[..., 0], None),
    "ellipsis_middle": (lambda x: x[1, ..., 1:], None),
    "none": (lambda x: x[None, 2, :, None], None),
    "empty_slice": (lambda x: x[3:3] * 1, None),
    "negative_step": (lambda x: x[::-1], lambda x: x.flip(0)),
    "negative_step_2": (lambda x: x[3:0:-2], lambda x: x[torch.tensor([3, 1])]),
    "negative_step_last": (lambda x: x[..., ::-1], lambda x: x.flip(-1)),
    "negative_step_and_int": (lambda x: x[:, ::-2, 1], lambda x: x[:, [3, 1], 1]),
    "gather_repeated": (lambda x: x[IDX], lambda x: x[torch.from_numpy(IDX)]),
    "gather_list": (lambda x: x[[0, 0, 3]], None),
    "gather_2d_index": (lambda x: x[IDX.reshape(2, 3)], lambda x: x[torch.from_numpy(IDX.reshape(2, 3))]),
    "gather_dim1": (lambda x: x[:, [3, 3, 0]], None),
    "gather_pairs": (lambda x: x[[0, 0, 4], [1, 1, 3]], None),
    "gather_broadcast_pairs": (lambda x: x[[[0], [4]], [1, 1, 2]], None),
    "gather_and_slice": (lambda x: x[[1, 1, 3], 1:3], None),
    "gather_separated_by_slice": (lambda x: x[[1, 1, 3], :, [0, 0, 2]], None),
    "gather_and_int": (lambda x: x[:, [3, 3, 1], 0], None),
    "bool_mask_full": (lambda x: x[MASK], lambda x: x[torch.from_numpy(MASK)]),
    "bool_mask_first_dim": (lambda x: x[MASK[:, 0, 0]], lambda x: x[torch.from_numpy(MASK[:, 0, 0])]),
    "bool_mask_two_dims": (lambda x: x[MASK[:, :, 0]], lambda x: x[torch.from_numpy(MASK[:, :, 0])]),
    "bool_mask_second_dim": (lambda x: x[:, MASK[0, :, 0]], lambda x: x[:, torch.from_numpy(MASK[0, :, 0])]),
}


@pytest.mark.parametrize("name", INDEXING)
def test_indexing(name):
    fn, torch_fn = INDEXING[name]
    check_op([(5, 4, 3)], fn, torch_fn)


@pytest.mark.parametrize("name", ["slices", "gather_repeated", "bool_mask_full", "negative_step"])
def test_indexing_float32(name):
    fn, torch_fn = INDEXING[name]
    check_op([(5, 4, 3)], fn, torch_fn, dtype=np.float32)


def test_indexing_with_tensor_indices():
    # integer and boolean index arrays passed as tinyllm / torch Tensors, alone and in tuples
    check_op([(5, 4, 3), IDX], lambda x, i: x[i])
    check_op([(5, 4, 3), np.array([[3, 3], [0, 2]])], lambda x, i: x[:, i])
    check_op([(5, 4, 3), np.array([0, 0, 4]), np.array([2, 2, 1])], lambda x, i, j: x[i, j])
    check_op([(5, 4, 3), np.array([0, 0, 4]), np.array([2, 2, 1])], lambda x, i, j: x[i, 1:, j])
    check_op([(5, 4, 3), MASK], lambda x, m: x[m])
    check_op([(5, 4, 3), MASK[:, :, 0]], lambda x, m: x[m])
    check_op([(5, 4, 3), np.array(2)], lambda x, i: x[i])


def test_repeated_index_scatter_adds_by_hand():
    x = tl.Tensor(np.zeros(4), requires_grad=True)
    x[np.array([1, 1, 1, 3])].sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 3, 0, 1])
    x.grad = None
    x[[2, 2]].backward(np.array([1.5, 2.0]))
    np.testing.assert_array_equal(x.grad, [0, 0, 3.5, 0])


@given(shape=shapes(min_dims=1, max_side=5), data=st.data(), seed=st.integers(0, 2**16))
def test_gather_hypothesis(shape, data, seed):
    dim = data.draw(st.integers(0, len(shape) - 1))
    n = shape[dim]
    idx = np.array(data.draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=8)))
    lead = (slice(None),) * dim
    check_op([shape], lambda x: x[lead + (idx,)], lambda x: x[lead + (torch.from_numpy(idx),)], seed=seed)
    check_op([shape, idx], lambda x, i: x[lead + (i,)], seed=seed)


@given(shape=shapes(min_dims=1, max_side=5), data=st.data(), seed=st.integers(0, 2**16))
def test_slicing_hypothesis(shape, data, seed):
    index = []
    for n in shape:
        start = data.draw(st.none() | st.integers(-n, n))
        stop = data.draw(st.none() | st.integers(-n, n))
        index.append(data.draw(st.sampled_from([slice(start, stop), slice(start, stop, 2), n - 1, slice(None)])))
    index = tuple(index)
    check_op([shape], lambda x: x[index] * 1, seed=seed)


@given(shape=shapes(min_dims=1, max_side=5), data=st.data(), seed=st.integers(0, 2**16))
def test_bool_mask_hypothesis(shape, data, seed):
    k = data.draw(st.integers(1, len(shape)))
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=int(np.prod(shape[:k])),
                                       max_size=int(np.prod(shape[:k]))))).reshape(shape[:k])
    check_op([shape, mask], lambda x, m: x[m] * 1, seed=seed)


def test_index_errors_name_the_shape():
    x = tl.zeros(2, 3)
    with pytest.raises(IndexError, match=r"\(2, 3\)"):
        x[5]
    with pytest.raises(IndexError, match=r"\(2, 3\)"):
        x[np.array([0, 7])]


def test_iterating_a_tensor_gives_rows():
    x = tl.Tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    rows = list(x)
    assert len(rows) == 3 and rows[2].shape == (2,)
    sum(r.sum() * i for i, r in enumerate(rows)).backward()
    np.testing.assert_array_equal(x.grad, [[0, 0], [1, 1], [2, 2]])


# =============================================================================================
# masked_fill, where, cat, stack, casts
# =============================================================================================


@pytest.mark.parametrize("value", [0.0, -1e9, -np.inf, 2])
@pytest.mark.parametrize("mask_shape", [(3, 4), (3, 1), (4,), (1, 1)], ids=str)
def test_masked_fill(mask_shape, value):
    mask = np.asarray(np.random.default_rng(3).random(mask_shape)) > 0.5
    check_op([(3, 4), mask], lambda x, m: x.masked_fill(m, value))
    check_op([(3, 4)], lambda x: x.masked_fill(mask, value) * 1,
             lambda x: x.masked_fill(torch.from_numpy(mask), value) * 1)


def test_masked_fill_float32_keeps_dtype():
    mask = np.array([[True, False, False], [False, True, False]])
    out = check_op([(2, 3), mask], lambda x, m: x.masked_fill(m, -np.inf), dtype=np.float32)
    assert out.dtype == np.float32
    with pytest.raises(ValueError, match=r"\(3,\).*\(2, 4\)"):
        tl.zeros(2, 4).masked_fill(np.ones(3, bool), 0.0)


@given(shape=shapes(), data=st.data(), seed=st.integers(0, 2**16))
def test_masked_fill_hypothesis(shape, data, seed):
    mask_shape = data.draw(broadcastable_to(shape))
    mask = np.asarray(np.random.default_rng(seed).random(mask_shape)) > 0.5
    check_op([shape, mask], lambda x, m: x.masked_fill(m, -1.5), seed=seed)


@pytest.mark.parametrize("shapes_", [((3, 4), (3, 4), (3, 4)), ((3, 1), (1, 4), (4,)), ((), (2, 3), (3,))],
                         ids=str)
def test_where(shapes_):
    cond = np.asarray(np.random.default_rng(5).random(shapes_[0])) > 0.5
    check_op([cond, shapes_[1], shapes_[2]], lambda c, x, y: _lib(x).where(c, x, y))
    check_op([cond, shapes_[1]], lambda c, x: _lib(x).where(c, x, 0.5))
    check_op([cond, shapes_[1]], lambda c, x: _lib(x).where(c, -1.0, x))
    check_op([cond, shapes_[1], shapes_[2]], lambda c, x, y: _lib(x).where(c, x, y), requires_grad=[False, False, True])


def test_where_float32():
    cond = np.array([[True, False, True]])
    out = check_op([cond, (2, 3), (2, 1)], lambda c, x, y: _lib(x).where(c, x, y), dtype=np.float32)
    assert out.dtype == np.float32
    out = check_op([cond, (2, 3)], lambda c, x: _lib(x).where(c, x, 0.0), dtype=np.float32)
    assert out.dtype == np.float32


@given(shapes_=broadcastable_shapes(3), seed=st.integers(0, 2**16))
def test_where_hypothesis(shapes_, seed):
    cond = np.asarray(np.random.default_rng(seed).random(shapes_[0])) > 0.5
    check_op([cond, shapes_[1], shapes_[2]], lambda c, x, y: _lib(x).where(c, x, y), seed=seed)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat(dim):
    base = [2, 3, 4]
    sizes = [1, 3, 2]
    shapes_ = [tuple(s if i == dim % 3 else n for i, n in enumerate(base)) for s in sizes]
    check_op(shapes_, lambda *xs: _lib(xs[0]).cat(list(xs), dim=dim))
    check_op(shapes_, lambda *xs: _lib(xs[0]).cat(xs, dim), requires_grad=[True, False, True])
    check_op(shapes_, lambda *xs: _lib(xs[0]).cat(list(xs), dim=dim), dtype=np.float32)


def test_cat_same_tensor_twice_and_errors():
    check_op([(2, 3)], lambda x: _lib(x).cat([x, x * 2, x], dim=1))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 3\)"):
        tl.cat([tl.zeros(2, 3), tl.zeros(3, 3)], dim=1)
    with pytest.raises(ValueError, match="non-empty"):
        tl.cat([])


@given(shape=shapes(min_dims=1), data=st.data(), seed=st.integers(0, 2**16))
def test_cat_hypothesis(shape, data, seed):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=4))
    assume(sum(sizes) > 0)
    shapes_ = [tuple(s if i == dim % len(shape) else n for i, n in enumerate(shape)) for s in sizes]
    check_op(shapes_, lambda *xs: _lib(xs[0]).cat(list(xs), dim=dim), seed=seed)


@pytest.mark.parametrize("dim", [0, 1, 2, -1, -3])
def test_stack(dim):
    check_op([(2, 3)] * 3, lambda *xs: _lib(xs[0]).stack(list(xs), dim=dim))
    check_op([(2, 3)] * 2, lambda a, b: _lib(a).stack([a, b], dim), requires_grad=[False, True])
    check_op([(2, 3)] * 2, lambda a, b: _lib(a).stack([a, b * a], dim), dtype=np.float32)


def test_stack_errors():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        tl.stack([tl.zeros(2, 3), tl.zeros(3, 2)])


@given(shape=shapes(max_dims=3), n=st.integers(1, 4), data=st.data(), seed=st.integers(0, 2**16))
def test_stack_hypothesis(shape, n, data, seed):
    dim = data.draw(st.integers(-len(shape) - 1, len(shape)))
    check_op([shape] * n, lambda *xs: _lib(xs[0]).stack(list(xs), dim=dim), seed=seed)


def test_casts():
    # float64 -> float32 -> back: gradients come back in the input's dtype (no gradcheck through float32)
    out = check_op([(3, 4)], lambda x: x.float(), gradcheck=False)
    assert out.dtype == np.float32
    out = check_op([(3, 4)], lambda x: x.double() * 2, dtype=np.float32)
    assert out.dtype == np.float64
    check_op([(3, 4), (4,)], lambda x, w: x.float() * w.float() + 1, gradcheck=False)
    check_op([(3, 4)], lambda x: x.to(tl.float32) if isinstance(x, tl.Tensor) else x.to(torch.float32),
             gradcheck=False)
