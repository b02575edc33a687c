"""``Tensor.register_hook`` and ``retain_grad`` against torch: what each hook sees, what replaces what,
order, removal, in-place versions, and the fast path's buffer reuse never touching an array a hook
kept or returned. Every test runs in plain mode and on the fast path."""
import numpy as np
import pytest

import tinyllm as tl
import tinyllm.nn.functional as F
from tinyllm import backend, nn
from tinyllm.models.gpt import GPT, GPTConfig

from helpers import GOLDEN_B as B, GOLDEN_C as C, GOLDEN_T as T, make_block_class

torch = pytest.importorskip("torch")
TF = torch.nn.functional


@pytest.fixture(params=["plain", "fast"], autouse=True)
def mode(request):
    with backend.use_plain(request.param == "plain"):
        yield request.param


def pair(values):
    """The same float64 leaf in both libraries."""
    v = np.asarray(values, dtype=np.float64)
    return tl.tensor(v, requires_grad=True), torch.tensor(v, requires_grad=True)


def record(log):
    def hook(g):
        log.append(g.detach().numpy().copy())
    return hook


def assert_logs_equal(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12)


X = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]]


def expression(x, lib):
    """A small graph where ``y`` is used twice (a diamond) and the root depends on x through y only."""
    y = x * 3 + 1
    z = (y * y).sum() + (y.tanh() * x).sum()
    return y, z


@pytest.mark.parametrize("scale", [None, 2.5])
def test_leaf_hook_sees_the_summed_gradient_and_replaces_what_is_accumulated(scale):
    (x, xt), logs = pair(X), ([], [])
    for t, log in ((x, logs[0]), (xt, logs[1])):
        t.register_hook(record(log))
        if scale is not None:
            t.register_hook(lambda g: g * scale)
    for t, lib in ((x, tl), (xt, torch)):
        expression(t, lib)[1].backward()
    assert_logs_equal(*logs)
    assert len(logs[0]) == 1  # x is used twice, its hook runs once
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-12)
    if scale is not None:
        np.testing.assert_allclose(x.grad, logs[0][0] * scale, rtol=1e-12)


@pytest.mark.parametrize("scale", [None, -0.5])
def test_non_leaf_hook_replaces_the_gradient_that_flows_on(scale):
    (x, xt), logs = pair(X), ([], [])
    for t, lib, log in ((x, tl, logs[0]), (xt, torch, logs[1])):
        y, z = expression(t, lib)
        y.register_hook(record(log))
        if scale is not None:
            y.register_hook(lambda g: g * scale)
        z.backward()
    assert_logs_equal(*logs)
    assert len(logs[0]) == 1  # the diamond: y's hook sees the sum of both uses, once
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-12)


def test_hooks_run_in_order_each_seeing_the_previous_result_and_may_return_arrays():
    (x, xt), logs = pair(X), ([], [])
    for t, log, lib in ((x, logs[0], tl), (xt, logs[1], torch)):
        y, z = expression(t, lib)
        y.register_hook(lambda g: g + 1)
        y.register_hook(record(log))
        y.register_hook(lambda g: g * 2)
        y.register_hook(record(log))
        z.backward()
    assert_logs_equal(*logs)
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-12)
    x.grad = None
    y, z = expression(x, tl)
    y.register_hook(lambda g: np.full(g.shape, 2.0))  # an array (not a Tensor) is accepted too
    z.backward()
    xt.grad = None
    yt, zt = expression(xt, torch)
    yt.register_hook(lambda g: torch.full(g.shape, 2.0, dtype=g.dtype))
    zt.backward()
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-12)


def test_hook_on_the_root_and_a_hook_that_changes_the_shape():
    (x, xt) = pair(X)
    for t in (x, xt):
        z = (t * 2).sum()
        z.register_hook(lambda g: g * 5)
        z.backward()
    np.testing.assert_allclose(x.grad, xt.grad.numpy())
    y = x * 2
    y.register_hook(lambda g: g.sum())
    with pytest.raises(RuntimeError, match="has changed the size of value"):
        y.sum().backward()


def test_removed_hooks_do_not_run_and_removal_is_idempotent():
    x, _ = pair(X)
    calls = []
    h = x.register_hook(lambda g: calls.append(1) or g * 100)
    keep = x.register_hook(lambda g: calls.append(2))
    h.remove()
    h.remove()
    (x * 2).sum().backward()
    assert calls == [2]
    np.testing.assert_allclose(x.grad, 2.0)
    with x.register_hook(lambda g: g * 0):
        x.grad = None
        (x * 2).sum().backward()
        np.testing.assert_allclose(x.grad, 0.0)
    x.grad = None
    (x * 2).sum().backward()
    np.testing.assert_allclose(x.grad, 2.0)
    keep.remove()


def test_registering_on_a_tensor_that_needs_no_grad_raises_like_torch():
    for lib in (tl, torch):
        t = lib.tensor([1.0])
        with pytest.raises(RuntimeError, match="cannot register a hook on a tensor that doesn't require gradient"):
            t.register_hook(lambda g: g)
        with pytest.raises(RuntimeError, match="can't retain_grad on Tensor that has requires_grad=False"):
            t.retain_grad()


def test_retain_grad_sees_the_hooked_gradient_and_accumulates_out_of_place():
    (x, xt) = pair(X)
    ys = []
    for t, lib in ((x, tl), (xt, torch)):
        y, z = expression(t, lib)
        y.retain_grad()
        y.register_hook(lambda g: g * 10)  # registered after retain_grad: torch still applies it first
        z.backward(retain_graph=True)
        first = y.grad
        first_copy = np.array(first).copy() if lib is tl else first.numpy().copy()
        z.backward()
        ys.append((y, first, first_copy))
    (y, first, first_copy), (yt, first_t, first_copy_t) = ys
    assert y.retains_grad and yt.retains_grad and not x.retains_grad and not xt.retains_grad
    np.testing.assert_allclose(first_copy, first_copy_t, rtol=1e-12)
    np.testing.assert_allclose(y.grad, yt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(y.grad, 2 * first_copy, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(first), first_copy)  # the first .grad was not written into
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-12)
    assert x.retain_grad() is x and x.grad is not None  # a no-op on a leaf


def test_in_place_op_keeps_earlier_hooks_on_the_old_version_as_torch():
    (x, xt), logs = pair(X), ([], [])
    for t, log in ((x, logs[0]), (xt, logs[1])):
        y = t * 3
        y.register_hook(lambda g, log=log: log.append(("old", g.detach().numpy().copy())))
        y.mul_(2)
        y.register_hook(lambda g, log=log: log.append(("new", g.detach().numpy().copy())))
        (y * y).sum().backward()
    assert [n for n, _ in logs[0]] == [n for n, _ in logs[1]] == ["new", "old"]
    assert_logs_equal([g for _, g in logs[0]], [g for _, g in logs[1]])
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-12)


def test_tensor_hooks_on_a_block_match_torch():
    """Hooks registered from forward hooks on a transformer block's intermediates (LayerNorm out,
    attention projections, the MLP's GELU), some scaling, some recording."""
    OurBlock, TorchBlock = make_block_class(nn, F), make_block_class(torch.nn, TF)
    torch.manual_seed(0)
    theirs = TorchBlock().double()
    ours = OurBlock().to(np.float64)
    ours.load_state_dict(theirs.state_dict())
    x = np.random.default_rng(0).standard_normal((B, T, C))
    logs = {}
    for name, m in (("ours", ours), ("theirs", theirs)):
        log = logs[name] = []
        m.ln_1.register_forward_hook(lambda mod, a, out, log=log: out.register_hook(record(log)) and None)
        m.q.register_forward_hook(lambda mod, a, out: out.register_hook(lambda g: g * 3) and None)
        m.mlp[1].register_forward_hook(lambda mod, a, out: out.register_hook(lambda g: g.tanh()) and None)
        m.mlp[1].register_forward_hook(lambda mod, a, out, log=log: out.register_hook(record(log)) and None)
    lib_x = (tl.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True))
    F.cross_entropy(ours(lib_x[0]), np.array([0, 1, 2])).backward()
    TF.cross_entropy(theirs(lib_x[1]), torch.tensor([0, 1, 2])).backward()
    assert_logs_equal(logs["ours"], logs["theirs"])
    assert len(logs["ours"]) == 2
    for (n, p), (_, p_t) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad, p_t.grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=n)
    np.testing.assert_allclose(lib_x[0].grad, lib_x[1].grad.numpy(), rtol=1e-8, atol=1e-12)


def test_arrays_a_hook_kept_or_returned_are_never_written_into():
    """The fast path adds into gradient buffers it owns and hands them to leaves as .grad: a hook that
    keeps its argument, or returns a new array, must find it unchanged after two more backwards."""
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)).to(np.float64)
    ids = np.random.default_rng(0).integers(0, 11, (2, 9))
    kept = []

    def keep(g):
        kept.append((g, g.numpy().copy()))

    def keep_and_replace(g):
        new = g * 1.0
        kept.append((new, new.numpy().copy()))
        return new

    for i, p in enumerate(model.parameters()):
        p.register_hook(keep if i % 2 else keep_and_replace)
    # non-leaves: attention's packed qkv projection (split into q, k, v) and the block output
    model.h[0].attn.c_attn.register_forward_hook(lambda mod, a, out: out.register_hook(keep) and None)
    model.h[0].register_forward_hook(lambda mod, a, out: out.register_hook(keep_and_replace) and None)
    for _ in range(3):
        _, loss = model(ids[:, :-1], ids[:, 1:])
        loss.backward()
    assert len(kept) == 3 * (len(list(model.parameters())) + 2)
    # attention's packed q, k, v: the fast path may take their gradients' shared buffer as it is
    w = tl.tensor(np.random.default_rng(1).standard_normal((16, 48)), requires_grad=True)
    x = tl.tensor(np.random.default_rng(2).standard_normal((2, 8, 16)))
    w.register_hook(keep)
    for _ in range(2):
        qkv = (x @ w).reshape(2, 8, 3, 2, 8).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        qkv.register_hook(keep)
        q, k, v = qkv[0], qkv[1], qkv[2]
        F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()
    for g, snapshot in kept:
        np.testing.assert_array_equal(g.numpy(), snapshot)


def test_a_20000_op_chain_with_hooks_does_not_recurse():
    x = tl.tensor([1.0], requires_grad=True)
    y, calls = x, []
    for i in range(20000):
        y = y * 1.0
        if i == 10000:
            y.register_hook(lambda g: calls.append(1) or g * 2)
    x.register_hook(lambda g: g + 1)
    y.sum().backward()
    assert calls == [1]
    np.testing.assert_allclose(x.grad, [3.0])
