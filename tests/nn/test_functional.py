"""Every fused op in tinyllm.nn.functional against torch (forward and all gradients, float64 and
float32) and against finite differences (float64), on fixed cases, hypothesis shapes and extreme
values; the numba GELU kernel against its NumPy twin; and the error messages."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyllm as tl
import tinyllm.nn.functional as F
from tinyllm import backend
from tinyllm.kernels import gelu as gelu_kernels

from helpers import check_op

try:
    import torch
    TF = torch.nn.functional
except ImportError:  # torch is only the oracle: check_op then runs the float64 gradchecks alone
    torch = TF = None

DTYPES = [np.float64, np.float32]
SDPA, TSDPA = F.scaled_dot_product_attention, (TF.scaled_dot_product_attention if TF else None)


def both(name, **fixed):
    """The same call in tinyllm and torch: F.<name>(*args, **fixed) and TF.<name>(*args, **fixed)."""
    ours = getattr(F, name)
    return (lambda *a: ours(*a, **fixed)), (lambda *a: getattr(TF, name)(*a, **fixed))


# =============================================================================================
# linear
# =============================================================================================


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", [
    [(3, 4), (5, 4), (5,)],
    [(3, 4), (5, 4)],  # no bias
    [(4,), (5, 4), (5,)],  # a single vector
    [(2, 3, 4), (5, 4), (5,)],  # leading batch dims
    [(1, 1, 4), (1, 4), (1,)],
])
def test_linear(dtype, shapes):
    check_op(shapes, F.linear, TF.linear if TF else None, dtype=dtype)


def test_linear_frozen_weight_and_input_without_grad():
    x, w, b = tl.randn(3, 4, dtype=np.float64), tl.randn(5, 4, dtype=np.float64, requires_grad=True), tl.zeros(5)
    F.linear(x, w, b).sum().backward()
    assert x.grad is None and b.grad is None
    np.testing.assert_allclose(w.grad, np.broadcast_to(x.data.sum(0), (5, 4)))


# =============================================================================================
# softmax and log_softmax
# =============================================================================================


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,dim", [((4, 7), -1), ((4, 7), 0), ((2, 3, 5), 1), ((2, 3, 5), -1), ((6,), 0),
                                       ((3, 1), -1), ((1, 5), 0)])
def test_softmax_family(dtype, name, shape, dim):
    ours, theirs = both(name, dim=dim)
    check_op([shape], ours, theirs, dtype=dtype)


def test_softmax_rows_sum_to_one_and_log_softmax_is_its_log():
    x = tl.randn(3, 9, dtype=np.float64) * 30
    p, lp = F.softmax(x, dim=-1), F.log_softmax(x, dim=-1)
    np.testing.assert_allclose(p.data.sum(-1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(np.exp(lp.data), p.data, rtol=1e-13, atol=1e-300)


# =============================================================================================
# layer_norm
# =============================================================================================


def _ln(shape, affine):
    """(tinyllm, torch) layer_norm over ``shape`` taking x and then the affine inputs named in ``affine``."""
    def make(fn):
        def call(x, *params):
            given = dict(zip(affine, params))
            return fn(x, shape, given.get("w"), given.get("b"), 1e-5)
        return call
    return make(F.layer_norm), (make(TF.layer_norm) if TF else None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xshape,nshape", [((2, 3, 8), (8,)), ((2, 3, 8), (3, 8)), ((8,), (8,)), ((5, 1), (1,)),
                                           ((4, 2, 3), (2, 3))])
@pytest.mark.parametrize("affine", [("w", "b"), (), ("w",), ("b",)])
def test_layer_norm(dtype, xshape, nshape, affine):
    ours, theirs = _ln(nshape, affine)
    check_op([xshape] + [nshape] * len(affine), ours, theirs, dtype=dtype)


def test_layer_norm_int_normalized_shape_and_eps():
    x = np.random.default_rng(0).standard_normal((3, 6))
    ours = F.layer_norm(tl.tensor(x), 6, eps=0.5).data
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 0.5)
    np.testing.assert_allclose(ours, ref, rtol=1e-13)
    np.testing.assert_allclose(F.layer_norm(tl.tensor(x), np.int64(6), eps=0.5).data, ref, rtol=1e-13)
    assert tl.nn.LayerNorm(np.int64(6)).normalized_shape == (6,)


# =============================================================================================
# embedding
# =============================================================================================

IDS = np.array([[1, 2, 1], [0, 1, 4], [1, 1, 1]])  # repeated ids: the weight gradient is a scatter-add


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_ids_as_tensor(dtype):
    # check_op hands the int array to tinyllm as an integer Tensor
    check_op([IDS, (5, 3)], F.embedding, TF.embedding if TF else None, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_ids_as_int_array_and_list(dtype):
    check_op([(5, 3)], lambda w: F.embedding(IDS, w), (lambda w: TF.embedding(torch.tensor(IDS), w)) if TF else None,
             dtype=dtype)
    w = tl.randn(5, 3)
    np.testing.assert_array_equal(F.embedding([0, 4, 4], w).data, w.data[[0, 4, 4]])


def test_embedding_scatter_add_by_hand():
    w = tl.zeros(5, 2, dtype=np.float64, requires_grad=True)
    F.embedding(IDS, w).sum().backward()
    counts = np.bincount(IDS.ravel(), minlength=5).astype(np.float64)
    np.testing.assert_array_equal(w.grad, np.repeat(counts[:, None], 2, axis=1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("padding_idx", [1, -1, 0])
def test_embedding_padding_idx(dtype, padding_idx):
    # torch's padding_idx zeroes that row's gradient on purpose (it is not the true derivative), so
    # there is no finite-difference check here; torch parity covers it, and the row is checked below.
    out = check_op([IDS, (5, 3)], lambda i, w: F.embedding(i, w, padding_idx=padding_idx),
                   (lambda i, w: TF.embedding(i, w, padding_idx=padding_idx)) if TF else None,
                   dtype=dtype, gradcheck=False)
    assert out.shape == (3, 3, 3)
    w = tl.randn(5, 3, dtype=dtype, requires_grad=True)
    F.embedding(IDS, w, padding_idx=padding_idx).sum().backward()
    pad = padding_idx % 5
    for i in range(5):  # every id that occurs gets a gradient, except the padding row
        assert w.grad[i].any() == (i in IDS and i != pad), i


# =============================================================================================
# cross_entropy and nll_loss
# =============================================================================================

REDUCTIONS = ["mean", "sum", "none"]
T_N = np.array([0, 3, 4, -100, 2, 3])  # one row ignored by the default ignore_index


def _ce(**kw):
    """(tinyllm, torch) cross_entropy(input, target[, weight], **kw)."""
    return (lambda *a: F.cross_entropy(*a, **kw)), ((lambda *a: TF.cross_entropy(*a, **kw)) if TF else None)


def _nll(**kw):
    return (lambda *a: F.nll_loss(*a, **kw)), ((lambda *a: TF.nll_loss(*a, **kw)) if TF else None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
def test_cross_entropy_hard_targets(dtype, reduction, label_smoothing):
    ours, theirs = _ce(reduction=reduction, label_smoothing=label_smoothing)
    check_op([(6, 5), T_N], ours, theirs, dtype=dtype)
    # class weights (no grad), together with a custom ignore_index
    t = np.array([0, 3, 4, 1, 2, 3])
    ours, theirs = _ce(reduction=reduction, label_smoothing=label_smoothing, ignore_index=3)
    check_op([(6, 5), t, (5,)], ours, theirs, dtype=dtype, requires_grad=[True, False, False], low=[-2, 0, 0.1], high=[2, 0, 1.0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_unbatched_and_spatial(dtype, reduction):
    ours, theirs = _ce(reduction=reduction)
    check_op([(5,), np.array(3)], ours, theirs, dtype=dtype)  # (C,) input, () target
    t = np.array([[0, 2, 4], [1, 1, 2]])
    ours, theirs = _ce(reduction=reduction, ignore_index=2, label_smoothing=0.1)
    check_op([(2, 5, 3), t], ours, theirs, dtype=dtype)  # (N, C, d1) input, (N, d1) target
    ours, theirs = _ce(reduction=reduction)
    check_op([(2, 4, 3, 2), np.random.default_rng(1).integers(0, 4, (2, 3, 2))], ours, theirs, dtype=dtype)


def _probs(shape, axis=-1, seed=0):
    p = np.random.default_rng(seed).dirichlet(np.ones(shape[axis]), size=tuple(np.delete(shape, axis)))
    return np.moveaxis(p, -1, axis)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_probability_targets(dtype, reduction):
    ours, theirs = _ce(reduction=reduction, label_smoothing=0.2)
    check_op([(4, 5), _probs((4, 5))], ours, theirs, dtype=dtype, requires_grad=[True, False])
    # class weights (the third argument, no grad) with smoothing
    check_op([(4, 5), _probs((4, 5)), (5,)], ours, theirs, dtype=dtype, requires_grad=[True, False, False],
             low=[-2, 0, 0.1], high=[2, 0, 1.0])
    ours, theirs = _ce(reduction=reduction)
    check_op([(2, 5, 3), _probs((2, 5, 3), axis=1)], ours, theirs, dtype=dtype, requires_grad=[True, False])
    check_op([(5,), _probs((5,))], ours, theirs, dtype=dtype, requires_grad=[True, False])


def test_cross_entropy_matches_log_softmax_plus_nll_by_hand():
    x = np.random.default_rng(0).standard_normal((4, 6))
    t = np.array([5, 0, 2, 2])
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    np.testing.assert_allclose(F.cross_entropy(tl.tensor(x), t).item(), -logp[np.arange(4), t].mean(), rtol=1e-14)
    np.testing.assert_allclose(F.nll_loss(tl.tensor(logp), t).item(), -logp[np.arange(4), t].mean(), rtol=1e-14)


def test_cross_entropy_target_as_tensor_and_all_ignored():
    x = tl.randn(3, 4, dtype=np.float64, requires_grad=True)
    t = tl.tensor([1, -100, 3])
    assert t.dtype.kind == "i"
    np.testing.assert_allclose(F.cross_entropy(x, t).item(), F.cross_entropy(x, t.data).item())
    with np.errstate(invalid="ignore"):
        loss = F.cross_entropy(x, np.array([-100, -100, -100]))
    assert np.isnan(loss.item())  # 0 / 0, as torch
    assert F.cross_entropy(x, np.array([-100, -100, -100]), reduction="sum").item() == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss(dtype, reduction):
    ours, theirs = _nll(reduction=reduction)
    check_op([(6, 5), T_N, (5,)], ours, theirs, dtype=dtype, requires_grad=[True, False, False], low=[-2, 0, 0.1], high=[2, 0, 1.0])
    ours, theirs = _nll(reduction=reduction, ignore_index=2)
    check_op([(2, 5, 3), np.array([[0, 2, 4], [1, 1, 2]])], ours, theirs, dtype=dtype)
    ours, theirs = _nll(reduction=reduction)
    check_op([(5,), np.array(3)], ours, theirs, dtype=dtype)


# =============================================================================================
# gelu, relu, tanh
# =============================================================================================


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("kernels", ["numba", "numpy"])
def test_gelu(dtype, approximate, kernels):
    ours, theirs = both("gelu", approximate=approximate)
    with backend.use_kernels(kernels):
        check_op([(3, 4, 5)], ours, theirs, dtype=dtype, low=-6, high=6)
        check_op([()], ours, theirs, dtype=dtype)  # a 0-d input


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_relu_tanh(dtype, name):
    ours = getattr(F, name)
    theirs = (TF.relu if name == "relu" else torch.tanh) if TF else None
    check_op([(3, 4, 5)], ours, theirs, dtype=dtype, low=-3, high=3)


# =============================================================================================
# dropout
# =============================================================================================


def test_dropout_statistics():
    tl.manual_seed(0)
    p = 0.3
    y = F.dropout(tl.ones(200, 500), p=p).data
    assert y.dtype == np.float32
    dropped = (y == 0).mean()
    assert abs(dropped - p) < 0.01  # 100,000 draws: sd of the fraction is 0.0014
    np.testing.assert_allclose(y[y != 0], 1 / (1 - p), rtol=1e-7)
    assert abs(y.mean() - 1.0) < 0.015  # inverted dropout keeps the expectation


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_backward_uses_the_forward_mask(p):
    tl.manual_seed(1)
    x = tl.randn(40, 30, dtype=np.float64, requires_grad=True)
    y = F.dropout(x, p=p)
    g = np.random.default_rng(2).standard_normal(y.shape)
    y.backward(g)
    kept = y.data != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(y.data[kept], x.data[kept] / (1 - p), rtol=1e-14)
    np.testing.assert_allclose(x.grad[kept], g[kept] / (1 - p), rtol=1e-14)
    assert not x.grad[~kept].any()


def test_dropout_identity_cases_and_p_one():
    x = tl.randn(5, 6, dtype=np.float64, requires_grad=True)
    for y in (F.dropout(x, 0.0), F.dropout(x, 0.7, training=False), F.dropout(x, 1.0, training=False)):
        np.testing.assert_array_equal(y.data, x.data)
    g = np.random.default_rng(0).standard_normal(x.shape)
    F.dropout(x, 0.0).backward(g)
    np.testing.assert_array_equal(x.grad, g)
    x.grad = None
    y = F.dropout(x, 1.0)
    assert y.shape == x.shape and not y.data.any() and np.isfinite(y.data).all()
    y.backward(g)
    assert not x.grad.any() and np.isfinite(x.grad).all()
    if torch is not None:
        assert not TF.dropout(torch.ones(5, 6), 1.0).any()  # torch agrees: p=1 gives zeros


def test_dropout_is_reproducible_and_gradchecks_with_a_reseed():
    x = tl.randn(6, 7, dtype=np.float64, requires_grad=True)
    tl.manual_seed(3)
    a = F.dropout(x, 0.4).data
    tl.manual_seed(3)
    b = F.dropout(x, 0.4).data
    c = F.dropout(x, 0.4).data
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)

    def fn(x):
        tl.manual_seed(11)  # gradcheck calls fn several times: the same mask each time
        return F.dropout(x, 0.4)

    assert tl.gradcheck(fn, [x])


# =============================================================================================
# scaled_dot_product_attention
# =============================================================================================

SDPA_CASES = [  # (q, k, v) shapes and options
    ([(2, 3, 5, 8), (2, 3, 5, 8), (2, 3, 5, 8)], {}),
    ([(2, 3, 5, 8), (2, 3, 5, 8), (2, 3, 5, 8)], {"is_causal": True}),
    ([(2, 4, 8), (2, 6, 8), (2, 6, 3)], {"is_causal": True}),  # L < S, Dv != E
    ([(2, 4, 8), (2, 6, 8), (2, 6, 3)], {}),
    ([(3, 5, 8), (3, 7, 8), (3, 7, 4)], {"scale": 0.3}),
    ([(5, 8), (7, 8), (7, 4)], {}),  # no batch dims
    ([(1, 1, 1, 8), (1, 1, 1, 8), (1, 1, 1, 8)], {"is_causal": True}),  # T = 1
    ([(1, 2, 1, 4), (1, 2, 6, 4), (1, 2, 6, 5)], {}),  # one query, many keys (decoding)
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes,options", SDPA_CASES)
def test_sdpa(dtype, shapes, options):
    check_op(shapes, SDPA, TSDPA, dtype=dtype, **options)


def test_sdpa_causal_with_more_queries_than_keys():
    # L > S: torch's top-left aligned causal mask leaves the first rows with at least one key here
    check_op([(2, 6, 8), (2, 4, 8), (2, 4, 3)], SDPA, TSDPA, is_causal=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sdpa_boolean_mask(dtype):
    m = np.random.default_rng(0).random((5, 7)) > 0.4
    m[:, 0] = True  # every query may attend somewhere (a fully masked row is NaN in torch)
    check_op([(2, 5, 8), (2, 7, 8), (2, 7, 4), m], SDPA, TSDPA, dtype=dtype)
    m4 = np.random.default_rng(1).random((2, 1, 5, 7)) > 0.3
    m4[..., 0] = True
    check_op([(2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 4), m4], SDPA, TSDPA, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sdpa_float_additive_mask(dtype):
    mask = np.random.default_rng(0).standard_normal((2, 1, 5, 7))
    mask[..., 3] = -np.inf  # additive -inf masks a key
    check_op([(2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 4), mask], SDPA, TSDPA, dtype=dtype,
             requires_grad=[True, True, True, False])
    check_op([(5, 8), (7, 8), (7, 4), mask[0, 0]], SDPA, TSDPA, dtype=dtype, scale=0.7,
             requires_grad=[True, True, True, False])


def test_sdpa_masks_agree_with_each_other():
    """A boolean mask, the matching 0/-inf additive mask and is_causal give the same result."""
    rng = np.random.default_rng(0)
    q, k, v = (tl.tensor(rng.standard_normal((2, 6, 4))) for _ in range(3))
    causal = np.tril(np.ones((6, 6), dtype=bool))
    a = SDPA(q, k, v, is_causal=True).data
    b = SDPA(q, k, v, attn_mask=causal).data
    c = SDPA(q, k, v, attn_mask=np.where(causal, 0.0, -np.inf)).data
    np.testing.assert_allclose(a, b, rtol=1e-14)
    np.testing.assert_allclose(a, c, rtol=1e-14)
    assert not np.allclose(a, SDPA(q, k, v).data)


def _dropout_keep_mask(shape, p, seed):
    """The keep-mask F.dropout draws after tl.manual_seed(seed), read off through the public API."""
    tl.manual_seed(seed)
    return F.dropout(tl.ones(*shape, dtype=np.float64), p).data != 0


@pytest.mark.parametrize("options", [{}, {"is_causal": True}, {"scale": 0.5}])
def test_sdpa_dropout_matches_torch_given_the_same_mask(options):
    p, seed = 0.3, 5
    B, H, L, S, E, Ev = 2, 2, 4, 5, 6, 3
    keep = _dropout_keep_mask((B, H, L, S), p, seed)
    assert 0 < keep.mean() < 1

    def ours(q, k, v):
        tl.manual_seed(seed)  # the same mask on every call (check_op's gradcheck calls this repeatedly)
        return SDPA(q, k, v, dropout_p=p, **options)

    def theirs(q, k, v):  # the math path with dropout, the mask given by hand
        scale = options.get("scale", 1 / np.sqrt(E))
        s = q @ k.transpose(-2, -1) * scale
        if options.get("is_causal"):
            s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
        return (torch.softmax(s, -1) * torch.from_numpy(keep) / (1 - p)) @ v

    check_op([(B, H, L, E), (B, H, S, E), (B, H, S, Ev)], ours, theirs if TF else None)


def test_sdpa_dropout_runs_and_keeps_the_expectation():
    rng = np.random.default_rng(0)
    q, k, v = (tl.tensor(rng.standard_normal((1, 3, 4))) for _ in range(3))
    plain = SDPA(q, k, v).data
    tl.manual_seed(0)
    dropped = SDPA(q, k, v, dropout_p=0.5, is_causal=True)
    assert dropped.shape == plain.shape and np.isfinite(dropped.data).all()
    runs = []
    for seed in range(600):
        tl.manual_seed(seed)
        runs.append(SDPA(q, k, v, dropout_p=0.5).data)
    runs = np.stack(runs)
    assert not np.allclose(runs[0], plain)
    np.testing.assert_allclose(runs.mean(0), plain, atol=0.15)  # inverted dropout: unbiased


# =============================================================================================
# hypothesis: shapes with batch dims, size-1 dims and T = 1
# =============================================================================================

batch_dims = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)
small = st.integers(1, 5)
dtypes = st.sampled_from(DTYPES)
seeds = st.integers(0, 2 ** 16)


@settings(max_examples=15, deadline=None)
@given(batch=batch_dims, n_in=small, n_out=small, bias=st.booleans(), dtype=dtypes, seed=seeds)
def test_hyp_linear(batch, n_in, n_out, bias, dtype, seed):
    shapes = [batch + (n_in,), (n_out, n_in)] + ([(n_out,)] if bias else [])
    check_op(shapes, F.linear, TF.linear if TF else None, dtype=dtype, seed=seed)


@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple), data=st.data(),
       name=st.sampled_from(["softmax", "log_softmax"]), dtype=dtypes, seed=seeds)
def test_hyp_softmax_family(shape, data, name, dtype, seed):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    ours, theirs = both(name, dim=dim)
    check_op([shape], ours, theirs, dtype=dtype, seed=seed, low=-5, high=5)


@settings(max_examples=15, deadline=None)
@given(batch=batch_dims, norm=st.lists(st.integers(1, 5), min_size=1, max_size=2).map(tuple),
       affine=st.sampled_from([(), ("w",), ("b",), ("w", "b")]), dtype=dtypes, seed=seeds)
def test_hyp_layer_norm(batch, norm, affine, dtype, seed):
    ours, theirs = _ln(norm, affine)
    # float32: when a small group's spread is near sqrt(eps) and small against |x|, the backward's
    # 1 - xhat^2 cancels and both libraries are only good to ~1e-3 (measured against float64 truth,
    # torch's error and ours are alike); float64 keeps the tight tolerances and the gradcheck
    loose = {} if dtype == np.float64 else {"grad_atol": 5e-3, "grad_rtol": 5e-3}
    check_op([batch + norm] + [norm] * len(affine), ours, theirs, dtype=dtype, seed=seed, **loose)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 4), c=st.integers(1, 5), extra=st.lists(st.integers(1, 3), max_size=2).map(tuple),
       reduction=st.sampled_from(REDUCTIONS), smoothing=st.sampled_from([0.0, 0.1]), dtype=dtypes, seed=seeds)
def test_hyp_cross_entropy(n, c, extra, reduction, smoothing, dtype, seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, c, (n,) + extra)
    t[rng.random(t.shape) < 0.2] = -100
    if (t == -100).all() and reduction == "mean":
        t.reshape(-1)[0] = 0  # all-ignored mean is 0/0 = NaN in both
    ours, theirs = _ce(reduction=reduction, label_smoothing=smoothing)
    check_op([(n, c) + extra, t], ours, theirs, dtype=dtype, seed=seed, low=-4, high=4)


@settings(max_examples=15, deadline=None)
@given(batch=batch_dims, L=st.integers(1, 5), S=st.integers(1, 5), E=st.integers(1, 4), Ev=st.integers(1, 4),
       causal=st.booleans(), dtype=dtypes, seed=seeds)
def test_hyp_sdpa(batch, L, S, E, Ev, causal, dtype, seed):
    check_op([batch + (L, E), batch + (S, E), batch + (S, Ev)], SDPA, TSDPA, dtype=dtype, seed=seed,
             is_causal=causal)


@settings(max_examples=10, deadline=None)
@given(shape=st.lists(st.integers(1, 4), max_size=3).map(tuple), approximate=st.sampled_from(["none", "tanh"]),
       dtype=dtypes, seed=seeds)
def test_hyp_gelu(shape, approximate, dtype, seed):
    ours, theirs = both("gelu", approximate=approximate)
    check_op([shape], ours, theirs, dtype=dtype, seed=seed, low=-5, high=5)


@settings(max_examples=10, deadline=None)
@given(ids_shape=st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple), V=st.integers(1, 6),
       D=st.integers(1, 4), dtype=dtypes, seed=seeds)
def test_hyp_embedding(ids_shape, V, D, dtype, seed):
    ids = np.random.default_rng(seed).integers(0, V, ids_shape)
    check_op([ids, (V, D)], F.embedding, TF.embedding if TF else None, dtype=dtype, seed=seed)


# =============================================================================================
# extreme values: logits of +-1e4, large attention scores, layer_norm inputs ~1e4
# =============================================================================================


def _huge_logits(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.choice([-1e4, 1e4], size=shape) + rng.standard_normal(shape)


def _finite_grads(fn, *arrays, dtype=np.float64):
    """fn's output and input gradients are finite (a NaN or inf here would slip past nothing else)."""
    xs = [tl.Tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    out = fn(*xs)
    out.backward(np.ones(out.shape, dtype=dtype))
    assert np.isfinite(out.data).all()
    for x in xs:
        assert np.isfinite(x.grad).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_extreme_softmax_family(dtype, name):
    x = _huge_logits((4, 6))
    ours, theirs = both(name, dim=-1)
    check_op([x], ours, theirs, dtype=dtype)
    _finite_grads(ours, x, dtype=dtype)
    _finite_grads(lambda t: ours(t * -1), x, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_extreme_cross_entropy(dtype, reduction):
    x = _huge_logits((5, 6))
    t = np.array([0, 1, 2, 3, 5])
    ours, theirs = _ce(reduction=reduction, label_smoothing=0.1)
    # losses of ~1e4 carry rounding of ~1e-12, which a 1e-6 step would turn into 1e-6 of noise
    wide = {"eps": 1e-4}
    check_op([x, t], ours, theirs, dtype=dtype, gradcheck=wide)
    check_op([x, _probs((5, 6))], ours, theirs, dtype=dtype, requires_grad=[True, False], gradcheck=wide)
    _finite_grads(lambda z: F.cross_entropy(z, t, reduction="sum"), x, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_attention_scores(dtype):
    rng = np.random.default_rng(0)
    q = rng.standard_normal((2, 2, 5, 8)) * 1e2  # scores in the hundreds: softmax saturates
    check_op([q, (2, 2, 5, 8), (2, 2, 5, 8)], SDPA, TSDPA, dtype=dtype, is_causal=True)
    # scores of ~1e4: float32 rounds them by ~1e-3, which both libraries pass on to dk (measured
    # against float64 truth, torch's float32 error here is 6e-4 and ours 4e-4); see the next test
    loose = {} if dtype == np.float64 else {"grad_atol": 2e-3}
    check_op([q * 10, (2, 2, 5, 8), (2, 2, 5, 8)], SDPA, TSDPA, dtype=dtype, **loose)
    _finite_grads(lambda q, k, v: SDPA(q, k, v, is_causal=True), q * 10, rng.standard_normal((2, 2, 5, 8)),
                  rng.standard_normal((2, 2, 5, 8)), dtype=dtype)


def test_attention_backward_rebuilds_the_forward_probabilities_float32():
    """The reference kernel keeps only each row's logsumexp; the backward pass must rebuild from it
    the very probabilities the forward pass used. With float32 scores in the thousands a logsumexp
    rounded to float32 is off by up to half an ulp of the score (~1e-4 here), and every rebuilt
    probability with it (this failed before the kernel kept lse in float64)."""
    from tinyllm.kernels import attention
    rng = np.random.default_rng(5)
    T = 6
    q = (1e3 + rng.standard_normal((2, T, 8))).astype(np.float32)
    k = (1 + 1e-3 * rng.standard_normal((2, T, 8))).astype(np.float32)  # scores ~3e3, spread by ~1
    eye = np.broadcast_to(np.eye(T, dtype=np.float32), (2, T, T))
    scale = 1 / np.sqrt(8)
    p_fwd, lse = attention.attention_forward(q, k, eye, scale)  # v = I: the output is P itself
    assert np.abs(q @ k.swapaxes(-1, -2) * scale).max() > 1e3
    _, _, dv = attention.attention_backward(q, k, eye, p_fwd, lse, eye, scale)  # dv = P^T dout = P^T
    np.testing.assert_allclose(dv.swapaxes(-1, -2), p_fwd, rtol=1e-5, atol=1e-7)
    assert ((p_fwd > 1e-3) & (p_fwd < 0.999)).any()  # a row that is not one-hot, where it matters


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_layer_norm(dtype):
    rng = np.random.default_rng(0)
    ours, theirs = _ln((8,), ("w", "b"))
    check_op([rng.standard_normal((3, 8)) * 1e4, (8,), (8,)], ours, theirs, dtype=dtype)
    # a large common offset: float32 knows 1e4 + x only to ~1e-3, so outputs agree only that well
    # there; in float64 the finite difference needs a wider step to rise above the rounding of 1e4
    offset = 1e4 + rng.standard_normal((3, 8))
    loose = {} if dtype == np.float64 else {"atol": 1e-2, "grad_atol": 1e-2}
    check_op([offset, (8,), (8,)], ours, theirs, dtype=dtype, gradcheck={"eps": 1e-4}, **loose)
    _finite_grads(lambda x: F.layer_norm(x, 8), offset, dtype=dtype)


# =============================================================================================
# the numba GELU kernel against its NumPy twin
# =============================================================================================


@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(1, 9), max_size=3).map(tuple), dtype=dtypes,
       approximate=st.sampled_from(["none", "tanh"]), scale=st.sampled_from([1.0, 5.0, 1e4]),
       transpose=st.booleans(), seed=seeds)
def test_gelu_numba_kernel_matches_numpy_twin(shape, dtype, approximate, scale, transpose, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    if transpose:
        x = x.T  # non-contiguous input
    g = rng.standard_normal(x.shape).astype(dtype)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-6, atol=2e-6)
    # the twin runs in float64 (float32 NumPy loses the tails to cancellation in 1 + erf, 1 + tanh)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    fwd_numba = gelu_kernels.gelu_forward_numba(x, approximate)
    fwd_numpy = gelu_kernels.gelu_forward_numpy(x64, approximate)
    assert fwd_numba.shape == fwd_numpy.shape == x.shape
    assert fwd_numba.dtype == dtype
    np.testing.assert_allclose(fwd_numba, fwd_numpy, **tol)
    bwd_numba = gelu_kernels.gelu_backward_numba(x, g, approximate)
    bwd_numpy = gelu_kernels.gelu_backward_numpy(x64, g64, approximate)
    assert bwd_numba.dtype == dtype
    np.testing.assert_allclose(bwd_numba, bwd_numpy, **tol)
    assert np.isfinite(fwd_numba).all() and np.isfinite(bwd_numba).all()


def test_gelu_kernels_known_values():
    from math import erf, exp, pi, sqrt
    x = np.array([-1e4, -3.0, -1.0, 0.0, 1.0, 3.0, 1e4])
    cdf = np.array([0.5 * (1 + erf(v / sqrt(2))) for v in x])
    pdf = np.array([exp(-0.5 * v * v) / sqrt(2 * pi) for v in x])
    for fwd, bwd in ((gelu_kernels.gelu_forward_numba, gelu_kernels.gelu_backward_numba),
                     (gelu_kernels.gelu_forward_numpy, gelu_kernels.gelu_backward_numpy)):
        np.testing.assert_allclose(fwd(x, "none"), x * cdf, rtol=1e-15, atol=1e-300)
        np.testing.assert_allclose(bwd(x, np.ones_like(x), "none"), cdf + x * pdf, rtol=1e-15, atol=1e-300)
    np.testing.assert_allclose(gelu_kernels.gelu_forward_numba(x[1:-1], "tanh"), x[1:-1] * cdf[1:-1], atol=1e-3)


def test_use_kernels_switches_gelu(monkeypatch):
    calls = []
    for name in ("gelu_forward_numba", "gelu_forward_and_derivative_numba", "gelu_forward_numpy",
                 "gelu_forward_and_derivative_numpy"):
        original = getattr(gelu_kernels, name)
        monkeypatch.setattr(gelu_kernels, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    x = tl.randn(4, 5, dtype=np.float64, requires_grad=True)
    with backend.use_kernels("numpy"):
        assert backend.kernels() == "numpy"
        y_ref = F.gelu(x)  # y and dy/dx in one call; the backward multiplies by the saved dy/dx
        y_ref.sum().backward()
        with tl.no_grad():
            F.gelu(x)  # no graph: the forward alone
    assert calls == ["gelu_forward_and_derivative_numpy", "gelu_forward_numpy"]
    grad_ref, x.grad, calls[:] = x.grad.copy(), None, []
    with backend.use_kernels("numba"):
        y = F.gelu(x)
        y.sum().backward()
        with tl.no_grad():
            F.gelu(x)
    assert calls == ["gelu_forward_and_derivative_numba", "gelu_forward_numba"]
    # atol: where x << 0, 1 + erf(x / sqrt 2) is a difference of two numbers near 1, so the two libms'
    # erf (numba's and CPython's) may part by ~1e-16 absolute, which is 1e-11 relative there
    np.testing.assert_allclose(y.data, y_ref.data, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(x.grad, grad_ref, rtol=1e-14, atol=1e-15)
    with pytest.raises(ValueError, match="kernels"):
        backend.set_kernels("cuda-magic")


# =============================================================================================
# error messages: what was expected and what was received
# =============================================================================================


def test_linear_shape_error_names_both_shapes():
    with pytest.raises(ValueError) as err:
        F.linear(tl.randn(3, 4), tl.randn(5, 6))
    assert "(3, 4)" in str(err.value) and "(5, 6)" in str(err.value)


@pytest.mark.parametrize("fn", [F.cross_entropy, F.nll_loss])
def test_loss_target_errors(fn):
    x = tl.randn(3, 4)
    with pytest.raises(ValueError) as err:
        fn(x, np.array([0, 1]))
    assert "(2,)" in str(err.value) and "(3, 4)" in str(err.value)
    for bad in (4, -1):
        with pytest.raises(IndexError, match=f"target {bad} .*4 classes"):
            fn(x, np.array([0, bad, 1]))
    with pytest.raises(TypeError, match="integer"):
        F.nll_loss(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        fn(x, np.array([0, 1, 2]), weight=np.ones(3))
    fn(x, np.array([0, -100, 1]))  # the ignore_index is not out of range


def test_cross_entropy_other_errors():
    x = tl.randn(3, 4)
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(3, 4\)"):
        F.cross_entropy(x, np.ones((3, 5)))
    with pytest.raises(ValueError, match="avg"):
        F.cross_entropy(x, np.array([0, 1, 2]), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        F.cross_entropy(x, np.array([0, 1, 2]), label_smoothing=1.5)


def test_embedding_errors():
    w = tl.randn(5, 3)
    with pytest.raises(IndexError, match="index 7 .*5 rows"):
        F.embedding(np.array([0, 7]), w)
    with pytest.raises(IndexError, match="index -1"):
        F.embedding(np.array([0, -1]), w)
    with pytest.raises(TypeError, match="float64"):
        F.embedding(np.array([0.0, 1.0]), w)


def test_sdpa_errors():
    q = tl.randn(2, 4, 8)
    with pytest.raises(ValueError) as err:
        SDPA(q, tl.randn(2, 4, 6), tl.randn(2, 4, 6))
    assert "(2, 4, 8)" in str(err.value) and "(2, 4, 6)" in str(err.value)
    with pytest.raises(ValueError, match=r"\(3, 4, 8\)"):
        SDPA(q, tl.randn(3, 4, 8), tl.randn(3, 4, 8))
    with pytest.raises(ValueError, match=r"\(2, 4, 8\)"):
        SDPA(q, tl.randn(2, 5, 8), tl.randn(2, 4, 8))
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(2, 4, 5\)"):
        SDPA(q, tl.randn(2, 5, 8), tl.randn(2, 5, 8), attn_mask=np.ones((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="not both"):
        SDPA(q, q, q, attn_mask=np.ones((4, 4), dtype=bool), is_causal=True)
    with pytest.raises(ValueError, match="rank"):
        SDPA(tl.randn(8), tl.randn(8), tl.randn(8))


def test_layer_norm_errors():
    x = tl.randn(3, 4)
    with pytest.raises(ValueError, match=r"\(5,\).*\(3, 4\)"):
        F.layer_norm(x, (5,))
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(3, 4\)"):
        F.layer_norm(x, (3, 5))
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        F.layer_norm(x, (2, 3, 4))
    with pytest.raises(ValueError, match=r"weight.*\(5,\).*\(4,\)"):
        F.layer_norm(x, 4, tl.ones(5))


def test_other_argument_errors():
    x = tl.randn(3, 4)
    with pytest.raises(ValueError, match="1.5"):
        F.dropout(x, 1.5)
    with pytest.raises(ValueError, match="fast"):
        F.gelu(x, "fast")
    with pytest.raises(IndexError, match="dim 2"):
        F.softmax(x, 2)


# -- Function.fresh_grads: the claim that every gradient is a new array ---------------------------
def _fresh_cases(rng):
    x3 = rng.standard_normal((2, 5, 8))
    w = rng.standard_normal((6, 8))
    ids = np.array([[0, 3, 1], [2, 3, 3]])
    q = rng.standard_normal((1, 2, 70, 8))
    return {
        "linear": (x3, lambda x: F.linear(x, tl.tensor(w))),
        "linear (weight)": (w, lambda wt: F.linear(tl.tensor(x3), wt)),
        "matmul": (x3, lambda x: x @ tl.tensor(w.T)),
        "matmul (right)": (w.T, lambda wt: tl.tensor(x3) @ wt),
        "matmul (vector)": (w[0], lambda v: tl.tensor(w) @ v),
        "layer_norm": (x3, lambda x: F.layer_norm(x, (8,))),
        "embedding": (rng.standard_normal((4, 8)), lambda wt: F.embedding(ids, wt)),
        "gelu": (x3, F.gelu),
        "sdpa": (q, lambda x: F.scaled_dot_product_attention(x, x * 0.5, x, is_causal=True)),
        "softmax": (x3, lambda x: F.softmax(x, dim=-1)),
        "log_softmax": (x3, lambda x: F.log_softmax(x, dim=-1)),
        "cross_entropy": (rng.standard_normal((6, 8)), lambda x: F.cross_entropy(x, np.array([0, 7, 2, 2, 5, 1]))),
    }


@pytest.mark.parametrize("kernels", ["numba", "numpy"])
@pytest.mark.parametrize("name", list(_fresh_cases(np.random.default_rng(0))))
def test_ops_that_promise_fresh_gradients_keep_it(kernels, name):
    """A leaf's .grad may be the very array a fresh_grads op returned; if that array were one the op
    keeps (or the upstream gradient), adding into .grad would corrupt the next backward. Three
    backward passes through one retained graph must give exactly 3x the first gradient."""
    data, fn = _fresh_cases(np.random.default_rng(0))[name]
    with backend.use_kernels(kernels):
        x = tl.tensor(data, requires_grad=True)
        y = fn(x)
        g = np.random.default_rng(1).standard_normal(y.shape)
        y.backward(g, retain_graph=True)
        first = x.grad.copy()
        assert not np.shares_memory(x.grad, g)
        y.backward(g, retain_graph=True)
        y.backward(g)
    np.testing.assert_allclose(x.grad, 3 * first, rtol=1e-12, atol=1e-12)
