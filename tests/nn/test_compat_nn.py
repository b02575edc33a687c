"""The nn surface torch model files use, held to torch: attention with a learned (float, grad) mask
and grouped-query heads, pad, one_hot, silu, rms_norm, state_dict's shared memory, apply's order,
and the idioms of nanoGPT's and Llama-style model files."""
import warnings

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings

import tinyllm as tl
import tinyllm.nn as nn
import tinyllm.nn.functional as F
from tinyllm import checkpoint
from tinyllm.kernels import attention as attention_kernels

from helpers import broadcastable_to, check_op, shapes
from helpers import torch as torch_or_none  # for hypothesis tests (a fixture is not reset per example)

pytestmark = pytest.mark.torch

B, H, T, S, D = 2, 3, 4, 5, 6


def torch_sdpa(torch):
    return torch.nn.functional.scaled_dot_product_attention


# ---------------------------------------------------------------------------------------------
# scaled_dot_product_attention: a float mask that trains
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_shape", [(T, S), (B, 1, T, S), (B, H, T, S), (1, H, 1, S)])
def test_sdpa_float_mask_gets_torch_s_gradient(torch, mask_shape):
    check_op([(B, H, T, D), (B, H, S, D), (B, H, S, D), mask_shape], F.scaled_dot_product_attention,
             torch_sdpa(torch))


def test_sdpa_mask_gradient_alone_and_with_scale(torch):
    check_op([(B, H, T, D), (B, H, S, D), (B, H, S, D), (T, S)],
             lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m, scale=0.7),
             lambda q, k, v, m: torch_sdpa(torch)(q, k, v, m, scale=0.7),
             requires_grad=[False, False, False, True])


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_sdpa_mask_gradient_over_broadcast_shapes(data):
    torch = torch_or_none
    lead = data.draw(shapes(min_dims=0, max_dims=2, max_side=3))
    L, Sk = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    mask_shape = data.draw(broadcastable_to(lead + (L, Sk)))
    check_op([lead + (L, 3), lead + (Sk, 3), lead + (Sk, 2), mask_shape], F.scaled_dot_product_attention,
             torch_sdpa(torch))


def test_sdpa_mask_with_minus_inf_entries_matches_torch(torch):
    rng = np.random.default_rng(1)
    mask = rng.standard_normal((T, S))
    mask[:, 0] = -np.inf
    mask[2, 3] = -np.inf
    check_op([(B, H, T, D), (B, H, S, D), (B, H, S, D), mask], F.scaled_dot_product_attention,
             torch_sdpa(torch), gradcheck=False)


def test_sdpa_mask_grad_leaves_q_k_v_gradients_bit_identical():
    """The mask-gradient backward repeats the reference's arithmetic for q, k, v exactly."""
    rng = np.random.default_rng(2)
    arrays = [rng.standard_normal(s) for s in ((B, H, T, D), (B, H, S, D), (B, H, S, D))]
    mask = rng.standard_normal((1, H, T, S))
    g = rng.standard_normal((B, H, T, D))
    grads = []
    for mask_grad in (False, True):
        q, k, v = (tl.tensor(a, requires_grad=True) for a in arrays)
        m = tl.tensor(mask, requires_grad=mask_grad)
        F.scaled_dot_product_attention(q, k, v, m).backward(g)
        grads.append([q.grad, k.grad, v.grad])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


def test_sdpa_bool_mask_and_mask_without_grad_get_no_gradient():
    q = tl.randn(B, H, T, D, requires_grad=True)
    for mask in (tl.tensor(np.tril(np.ones((T, T), dtype=bool))), tl.randn(T, T)):
        out = F.scaled_dot_product_attention(q, q, q, mask)
        assert out._ctx.needs_input_grad[3] is False
        out.sum().backward()
        assert mask.grad is None


def test_sdpa_without_mask_still_runs_the_fused_kernel(monkeypatch):
    """No mask (or a mask without grad): the kernels that ran before, whose recipe training uses."""
    calls = []
    real = attention_kernels.attention_backward_numba

    def spy(*args, **kwargs):
        calls.append(kwargs.get("mask", args[8] if len(args) > 8 else None))
        return real(*args, **kwargs)

    monkeypatch.setattr(attention_kernels, "attention_backward_numba", spy)  # Kernel looks it up by name
    q = tl.randn(B, H, 16, 8, requires_grad=True)
    expected = attention_kernels.attention_forward.uses_numba(q.data, q.data, q.data, 1.0, True)
    F.scaled_dot_product_attention(q, q, q, is_causal=True).sum().backward()
    assert calls == ([None] if expected else [])


def test_sdpa_mask_gradient_through_the_dropout_path(torch):
    """dropout_p > 0 materialises the scores; a tiny p keeps every entry (scale 1), so torch's
    dropout-free gradient is the reference."""
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(s) for s in ((B, H, T, D), (B, H, S, D), (B, H, S, D), (H, T, S))]
    ours = [tl.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    g = rng.standard_normal((B, H, T, D))
    F.scaled_dot_product_attention(*ours, dropout_p=1e-300).backward(g)
    torch_sdpa(torch)(*theirs).backward(torch.tensor(g))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_sdpa_float32_mask_with_grad(torch):
    check_op([(B, H, T, D), (B, H, S, D), (B, H, S, D), (B, 1, T, S)], F.scaled_dot_product_attention,
             torch_sdpa(torch), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# scaled_dot_product_attention: grouped-query heads, broadcast batch dims, scale
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hq,hk,hv", [(4, 2, 2), (4, 1, 1), (6, 3, 2), (4, 4, 4), (2, 2, 1)])
@pytest.mark.parametrize("causal", [False, True])
def test_sdpa_enable_gqa_matches_torch(torch, hq, hk, hv, causal):
    check_op([(B, hq, T, D), (B, hk, T, D), (B, hv, T, D)],
             lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True),
             lambda q, k, v: torch_sdpa(torch)(q, k, v, is_causal=causal, enable_gqa=True))


def test_sdpa_enable_gqa_with_mask_and_scale(torch):
    check_op([(B, 4, T, D), (B, 2, S, D), (B, 2, S, D), (B, 4, T, S)],
             lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m, scale=0.25, enable_gqa=True),
             lambda q, k, v, m: torch_sdpa(torch)(q, k, v, m, scale=0.25, enable_gqa=True))


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([(1, 1), (2, 1), (2, 2), (4, 2), (6, 3), (6, 2)]), st.integers(1, 5), st.integers(1, 5),
       st.integers(1, 2))
def test_sdpa_enable_gqa_over_shapes(heads, L, Sk, batch):
    torch = torch_or_none
    hq, hkv = heads
    check_op([(batch, hq, L, 3), (batch, hkv, Sk, 3), (batch, hkv, Sk, 2)],
             lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
             lambda q, k, v: torch_sdpa(torch)(q, k, v, enable_gqa=True))


@pytest.mark.parametrize("qs,ks", [((B, 4, T, D), (1, 1, S, D)), ((B, 4, T, D), (4, S, D)),
                                   ((4, T, D), (B, 4, S, D)), ((B, 1, T, D), (B, 4, S, D))])
def test_sdpa_leading_dims_broadcast_as_torch(torch, qs, ks):
    check_op([qs, ks, ks], F.scaled_dot_product_attention, torch_sdpa(torch))


def test_sdpa_head_mismatch_errors(torch):
    q, k = tl.randn(B, 4, T, D), tl.randn(B, 2, S, D)
    with pytest.raises(ValueError, match=r"\(2, 4, 4, 6\).*\(2, 2, 5, 6\)"):  # no enable_gqa: as torch, refused
        F.scaled_dot_product_attention(q, k, k)
    with pytest.raises(RuntimeError):
        torch_sdpa(torch)(torch.zeros(B, 4, T, D), torch.zeros(B, 2, S, D), torch.zeros(B, 2, S, D))
    with pytest.raises(RuntimeError, match="3 heads of key must divide the 4 heads"):
        F.scaled_dot_product_attention(q, tl.randn(B, 3, S, D), tl.randn(B, 3, S, D), enable_gqa=True)
    with pytest.raises(RuntimeError, match="value"):
        F.scaled_dot_product_attention(tl.randn(B, 1, T, D), tl.randn(B, 1, S, D), tl.randn(B, 4, S, D),
                                       enable_gqa=True)
    with pytest.raises(IndexError, match="head dim"):
        F.scaled_dot_product_attention(tl.randn(T, D), tl.randn(S, D), tl.randn(S, D), enable_gqa=True)


# ---------------------------------------------------------------------------------------------
# pad
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pad", [(1, 2), (0, 0, 2, 1), (-1, 2, 1, -1), (1, 1, 1, 1, 1, 1), (-1, -1), (2, -3),
                                 [0, 1]])
def test_constant_pad_matches_torch(torch, pad):
    check_op([(2, 3, 4)], lambda x: F.pad(x, pad, value=0.5), lambda x: torch.nn.functional.pad(x, pad, value=0.5))
    check_op([(2, 3, 4)], lambda x: F.pad(x, pad), lambda x: torch.nn.functional.pad(x, pad))


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_constant_pad_over_shapes_and_crops(data):
    torch = torch_or_none
    shape = data.draw(shapes(min_dims=1, max_dims=4))
    k = data.draw(st.integers(1, len(shape)))
    pad = []
    for n in reversed(shape[len(shape) - k:]):
        before = data.draw(st.integers(-n, 3))
        after = data.draw(st.integers(-(n + before) if before < 0 else -n, 3))
        pad += [before, after]
    value = data.draw(st.sampled_from([0.0, -1.5, float("inf")]))
    check_op([shape], lambda x: F.pad(x, pad, value=value),
             lambda x: torch.nn.functional.pad(x, pad, value=value), gradcheck=value != float("inf"))


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("shape,pad", [((2, 3, 4), (1, 2)), ((2, 3, 4), (2, 1, 1, 0)), ((1, 2, 3, 4), (1, 2, 2, 1)),
                                       ((1, 2, 3, 3, 4), (1, 2, 2, 1, 0, 2)), ((2, 5), (-1, 2)), ((2, 5), (2, -1)),
                                       ((2, 5), (-2, 3)), ((2, 5), (3, -2)), ((3, 4), (0, 0))])
def test_index_pad_modes_match_torch(torch, mode, shape, pad):
    check_op([shape], lambda x: F.pad(x, pad, mode=mode), lambda x: torch.nn.functional.pad(x, pad, mode=mode))


def test_pad_of_integer_tensor_truncates_the_value_as_torch(torch):
    ours = F.pad(tl.tensor(np.arange(3)), (1, 1), value=2.7)
    theirs = torch.nn.functional.pad(torch.arange(3), (1, 1), value=2.7)
    assert ours.dtype == theirs.numpy().dtype
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_pad_errors():
    x = tl.randn(2, 3)
    with pytest.raises(ValueError, match="even length"):
        F.pad(x, (1,))
    with pytest.raises(ValueError, match="3 dims.*only 2"):
        F.pad(x, (1, 1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="negative size -1"):
        F.pad(x, (-2, -2))
    with pytest.raises(NotImplementedError, match="'foo'"):
        F.pad(x, (1, 1), mode="foo")
    with pytest.raises(ValueError, match="at most 2"):
        F.pad(x, (3, 3), mode="reflect")
    with pytest.raises(ValueError, match="at most 3"):
        F.pad(x, (4, 4), mode="circular")
    with pytest.raises(NotImplementedError, match="last 1, 2 or 3 dims"):
        F.pad(tl.randn(3), (1, 1), mode="reflect")
    with pytest.raises(ValueError, match="takes no value"):
        F.pad(x, (1, 1), mode="reflect", value=3.0)


# ---------------------------------------------------------------------------------------------
# one_hot
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ids,num_classes", [(np.array([0, 2, 1]), -1), (np.array([[0, 2], [1, 1]]), 5),
                                             (np.array([], dtype=np.int64), 3), (np.array(4), -1),
                                             (np.array([3, 3, 3]), 4)])
def test_one_hot_matches_torch_exactly(torch, ids, num_classes):
    ours = F.one_hot(tl.tensor(ids), num_classes)
    theirs = torch.nn.functional.one_hot(torch.tensor(ids), num_classes)
    assert ours.dtype == theirs.numpy().dtype == np.int64 and not ours.requires_grad
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_one_hot_errors(torch):
    for ids, n, ours_error, pattern in [([-1, 2], -1, ValueError, "non-negative"),
                                        ([0, 3], 3, ValueError, "3 is out of range for num_classes=3"),
                                        (np.array([], dtype=np.int64), -1, ValueError, "empty")]:
        with pytest.raises(ours_error, match=pattern):
            F.one_hot(tl.tensor(np.array(ids, dtype=np.int64)), n)
        with pytest.raises(RuntimeError):  # torch refuses the same input
            torch.nn.functional.one_hot(torch.tensor(np.array(ids, dtype=np.int64)), n)
    with pytest.raises(TypeError, match="int64"):
        F.one_hot(tl.tensor(np.array([0, 1], dtype=np.int32)))


# ---------------------------------------------------------------------------------------------
# silu, gelu
# ---------------------------------------------------------------------------------------------


def test_silu_matches_torch(torch):
    check_op([(5, 4)], F.silu, torch.nn.functional.silu, low=-30, high=30)
    check_op([(3, 4)], lambda x: nn.SiLU()(x), torch.nn.SiLU(), dtype=np.float32)


@settings(max_examples=20, deadline=None)
@given(shapes(min_dims=0, max_dims=3))
def test_silu_over_shapes(shape):
    torch = torch_or_none
    check_op([shape], F.silu, torch.nn.functional.silu, low=-8, high=8)


def test_silu_extremes_without_warnings(torch):
    for dtype in (np.float64, np.float32):
        data = np.array([-1000.0, 1000.0, -100.0, 100.0, 0.0, -np.inf, np.inf, np.nan], dtype=dtype)
        x = tl.tensor(data, requires_grad=True)
        xt = torch.tensor(data, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = F.silu(x)
            y.backward(np.ones_like(data))
        yt = torch.nn.functional.silu(xt)
        yt.backward(torch.ones_like(yt))
        # float32: torch's exp(100) overflows, so silu(-100) is -0 there, a denormal -3.8e-42 here
        tol, tiny = (1e-14, 0.0) if dtype == np.float64 else (1e-6, 1e-38)
        np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=tol, atol=tiny)  # nan where torch's is
        np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=tol, atol=tiny)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_functional_and_module_match_torch(torch, approximate):
    check_op([(4, 5)], lambda x: F.gelu(x, approximate=approximate),
             lambda x: torch.nn.functional.gelu(x, approximate=approximate), low=-6, high=6)
    check_op([(4, 5)], lambda x: nn.GELU(approximate=approximate)(x),
             lambda x: torch.nn.GELU(approximate=approximate)(x), low=-6, high=6)
    assert repr(nn.GELU(approximate=approximate)) == repr(torch.nn.GELU(approximate=approximate))


def test_gelu_refuses_an_unknown_approximation():
    with pytest.raises(ValueError, match="'fast'"):
        nn.GELU(approximate="fast")


# ---------------------------------------------------------------------------------------------
# rms_norm
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,norm", [((2, 3, 4), (4,)), ((2, 3, 4), (3, 4)), ((5, 4), 4), ((4,), (4,))])
@pytest.mark.parametrize("eps", [None, 1e-3])
def test_rms_norm_matches_torch(torch, dtype, shape, norm, eps):
    wshape = (norm,) if isinstance(norm, int) else norm
    check_op([shape, wshape], lambda x, w: F.rms_norm(x, norm, w, eps),
             lambda x, w: torch.nn.functional.rms_norm(x, [norm] if isinstance(norm, int) else norm, w, eps),
             dtype=dtype)
    check_op([shape], lambda x: F.rms_norm(x, norm, eps=eps),
             lambda x: torch.nn.functional.rms_norm(x, [norm] if isinstance(norm, int) else norm, eps=eps),
             dtype=dtype)


@settings(max_examples=25, deadline=None)
@given(shapes(min_dims=1, max_dims=4), st.data())
def test_rms_norm_over_shapes(shape, data):
    torch = torch_or_none
    k = data.draw(st.integers(1, len(shape)))
    norm = shape[len(shape) - k:]
    check_op([shape, norm], lambda x, w: F.rms_norm(x, norm, w),
             lambda x, w: torch.nn.functional.rms_norm(x, norm, w))


def test_rms_norm_extremes(torch):
    """rms_norm(c x) = rms_norm(x) and its gradient scales by 1/c: at magnitudes 1e+-150 tinyllm keeps
    both exact, held to torch on the unscaled input (torch's own backward loses them there)."""
    rng = np.random.default_rng(4)
    for scale in (1e150, 1e-150, 1e100):
        x, w, g = rng.standard_normal((3, 8)), rng.standard_normal(8), rng.standard_normal((3, 8))
        ours = tl.tensor(x * scale, requires_grad=True)
        out = F.rms_norm(ours, (8,), tl.tensor(w), eps=0.0)
        out.backward(g)
        ref = torch.tensor(x, requires_grad=True)
        ref_out = torch.nn.functional.rms_norm(ref, (8,), torch.tensor(w), eps=0.0)
        ref_out.backward(torch.tensor(g))
        np.testing.assert_allclose(out.numpy(), ref_out.detach().numpy(), rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(ours.grad * scale, ref.grad.numpy(), rtol=1e-12, atol=1e-12)
    zeros = tl.tensor(np.zeros((2, 4)), requires_grad=True)
    out = F.rms_norm(zeros, (4,))  # eps keeps an all-zero row finite
    out.sum().backward()
    assert np.isfinite(out.numpy()).all() and np.isfinite(zeros.grad).all()


def test_rms_norm_module_matches_torch(torch):
    for args, kwargs in [((4,), {}), ((4,), {"eps": 1e-3}), (([3, 4],), {"elementwise_affine": False})]:
        ours, theirs = nn.RMSNorm(*args, **kwargs, dtype=np.float64), torch.nn.RMSNorm(*args, **kwargs).double()
        assert repr(ours) == repr(theirs)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        if ours.weight is not None:
            rng = np.random.default_rng(5)
            w = rng.standard_normal(ours.weight.shape)
            ours.load_state_dict({"weight": w})
            theirs.load_state_dict({"weight": torch.tensor(w)})
        x = np.random.default_rng(6).standard_normal((2, 3, 4))
        np.testing.assert_allclose(ours(tl.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(),
                                   rtol=1e-12, atol=1e-12)


def test_rms_norm_errors():
    x = tl.randn(2, 3)
    with pytest.raises(ValueError, match=r"\(2,\).*\(2, 3\)"):
        F.rms_norm(x, (2,))
    with pytest.raises(ValueError, match=r"weight.*\(2,\).*\(3,\)"):
        F.rms_norm(x, (3,), tl.ones(2))


# ---------------------------------------------------------------------------------------------
# state_dict: detached tensors that share the parameters' memory
# ---------------------------------------------------------------------------------------------


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.ln = nn.LayerNorm(4)
        self.register_buffer("steps", np.zeros(2))


def test_state_dict_write_through_loads_weights_as_torch(torch):
    ours = TwoLayer()
    theirs = torch.nn.Linear(3, 4).double()
    sd = ours.state_dict()
    with tl.no_grad():
        for k in ("weight", "bias"):
            np.copyto(sd["fc." + k].data, theirs.state_dict()[k].numpy())
    x = np.random.default_rng(7).standard_normal((2, 3))
    np.testing.assert_allclose(ours.fc(tl.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-12)
    # the same idiom in torch, for the record
    tsd = theirs.state_dict()
    assert tsd["weight"].data_ptr() == theirs.weight.data_ptr() and not tsd["weight"].requires_grad
    assert all(not v.requires_grad and v.grad is None for v in sd.values())
    assert all(np.shares_memory(sd[k].data, t.data) for k, t in ours.state_dict(keep_vars=True).items())


def test_state_dict_snapshot_needs_a_copy():
    m = TwoLayer()
    live = m.state_dict()
    snapshot = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    m.fc.weight.data += 1.0
    np.testing.assert_array_equal(live["fc.weight"].numpy(), m.fc.weight.data)
    np.testing.assert_array_equal(snapshot["fc.weight"] + 1.0, m.fc.weight.data)
    m.load_state_dict(snapshot)
    np.testing.assert_array_equal(snapshot["fc.weight"], m.fc.weight.data)


def test_load_state_dict_takes_numpy_tensors_and_torch(torch):
    src = TwoLayer()
    for convert in (lambda v: v, lambda v: v.numpy().copy(), lambda v: torch.tensor(v.numpy())):
        dst = TwoLayer()
        dst.load_state_dict({k: convert(v) for k, v in src.state_dict().items()})
        for (k, a), (_, b) in zip(dst.state_dict().items(), src.state_dict().items()):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
    src.load_state_dict(src.state_dict())  # a module's own live tensors load back unchanged


def test_checkpoint_bytes_are_those_of_the_numpy_state_dict(tmp_path):
    m = TwoLayer()

    class NumpyCopies:  # what state_dict used to return
        def state_dict(self):
            return {k: v.numpy().copy() for k, v in m.state_dict().items()}

    checkpoint.save_checkpoint(tmp_path / "tensors", m)
    checkpoint.save_checkpoint(tmp_path / "arrays", NumpyCopies())
    for name in (checkpoint.MODEL_FILE, checkpoint.MANIFEST_FILE):
        assert (tmp_path / "tensors" / name).read_bytes() == (tmp_path / "arrays" / name).read_bytes()
    other = TwoLayer()
    checkpoint.load_checkpoint(tmp_path / "tensors", model=other)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k].numpy(), v.numpy())


# ---------------------------------------------------------------------------------------------
# Module.apply's order, and the idioms of nanoGPT's and Llama-style model files
# ---------------------------------------------------------------------------------------------


def _tree(lib):
    class Node(lib.Module):
        def __init__(self, name, kids=()):
            super().__init__()
            self.name = name
            for i, kid in enumerate(kids):
                self.add_module(f"c{i}", kid)

    shared = Node("shared")
    return Node("root", [Node("a", [Node("a1"), Node("a2", [Node("a2x")])]), Node("b", [shared]), shared])


def test_apply_visits_children_first_in_registration_order_as_torch(torch):
    ours, theirs = [], []
    _tree(nn).apply(lambda m: ours.append(m.name))
    _tree(torch.nn).apply(lambda m: theirs.append(m.name))
    assert ours == theirs == ["a1", "a2x", "a2", "a", "shared", "b", "shared", "root"]
    m = _tree(nn)
    assert m.apply(lambda _: None) is m


def test_nanogpt_module_idioms(torch):
    tl.manual_seed(0)

    class Attn(nn.Module):
        def __init__(self, block_size=8):
            super().__init__()
            self.c_attn = nn.Linear(4, 12, bias=False)
            self.register_buffer("bias", tl.tensor(np.tril(np.ones((block_size, block_size)))).reshape(
                1, 1, block_size, block_size))

    class GPTish(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(wte=nn.Embedding(10, 4), wpe=nn.Embedding(8, 4),
                                                  drop=nn.Dropout(0.1), h=nn.ModuleList([Attn() for _ in range(2)]),
                                                  ln_f=nn.LayerNorm(4, bias=False)))
            self.lm_head = nn.Linear(4, 10, bias=False)
            self.transformer.wte.weight = self.lm_head.weight  # weight tying
            self.apply(self._init_weights)

        def _init_weights(self, module):
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

    m = GPTish()
    assert m.transformer.wte.weight is m.lm_head.weight
    names = [n for n, _ in m.named_parameters()]
    assert names == ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.0.c_attn.weight",
                     "transformer.h.1.c_attn.weight", "transformer.ln_f.weight"]
    param_dict = {pn: p for pn, p in m.named_parameters()}
    assert [pn for pn, p in param_dict.items() if p.dim() >= 2] == names[:4]
    assert "lm_head.weight" in m.state_dict() and "transformer.h.0.bias" in m.state_dict()
    assert m.training and not m.eval().transformer.drop.training and m.train().transformer.drop.training
    # crop_block_size: a Parameter of a slice is a view of the rows, and buffers slice
    old = m.transformer.wpe.weight
    m.transformer.wpe.weight = nn.Parameter(m.transformer.wpe.weight[:5])
    assert m.transformer.wpe.weight.shape == (5, 4) and m.transformer.wpe.weight.requires_grad
    assert np.shares_memory(m.transformer.wpe.weight.data, old.data)
    for block in m.transformer.h:
        block.bias = block.bias[:, :, :5, :5]
    assert m.state_dict()["transformer.h.0.bias"].shape == (1, 1, 5, 5)
    assert m.transformer.h[0].bias[:, :, :3, :3].shape == (1, 1, 3, 3)
    assert [type(p) for p in m.parameters()].count(nn.Parameter) == 5
    # LayerNorm(bias=False) has torch's keys
    assert list(nn.LayerNorm(4, bias=False).state_dict()) == list(torch.nn.LayerNorm(4, bias=False).state_dict())


def test_layer_norm_without_bias_matches_torch(torch):
    check_op([(2, 3, 4), (4,)], lambda x, w: F.layer_norm(x, w.shape, w, None, 1e-5),
             lambda x, w: torch.nn.functional.layer_norm(x, w.shape, w, None, 1e-5))


def test_init_functions_statistics_and_gains(torch):
    tl.manual_seed(1)
    w = nn.Parameter(np.zeros((400, 300)))
    nn.init.trunc_normal_(w, mean=0.5, std=1.0, a=-1.0, b=2.0)
    assert w.data.min() >= -1.0 and w.data.max() <= 2.0 and abs(w.data.mean() - 0.5) < 0.02
    nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")
    assert abs(w.data.std() - np.sqrt(2.0 / 400)) < 0.002
    for name, param in [("linear", None), ("tanh", None), ("relu", None), ("leaky_relu", None),
                        ("leaky_relu", 0.2), ("selu", None), ("sigmoid", None)]:
        assert nn.init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))
    assert nn.Parameter().shape == (0,)


def test_sdpa_mask_gradients_are_fresh_arrays():
    """The fast path adds into the arrays a backward returns (fresh_grads): with the mask's gradient
    too, it must give the plain path's numbers, bitwise."""
    rng = np.random.default_rng(8)
    arrays = [rng.standard_normal(s) for s in ((B, H, T, D), (B, H, S, D), (B, H, S, D), (B, H, T, S))]
    results = []
    for plain in (False, True):
        with tl.backend.use_plain(plain):
            xs = [tl.tensor(a, requires_grad=True) for a in arrays]
            for _ in range(2):
                y = F.scaled_dot_product_attention(*xs)
                total = (y * y).sum() + y.sum() + sum((x * x).sum() for x in xs)
                total.backward()
            results.append([x.grad.copy() for x in xs])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
