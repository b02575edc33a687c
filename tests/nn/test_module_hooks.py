"""Module hooks against torch on the same weights: forward pre-hooks and forward hooks (order, replaced
args and outputs, kwargs, always_call, prepend), handles, and hooks never reaching state_dict."""
import copy

import numpy as np
import pytest

import tinyllm as tl
import tinyllm.nn.functional as F
from tinyllm import nn
from tinyllm.autograd.hooks import RemovableHandle

from helpers import GOLDEN_B as B, GOLDEN_C as C, GOLDEN_T as T, make_block_class

torch = pytest.importorskip("torch")
TF = torch.nn.functional

OurBlock, TorchBlock = make_block_class(nn, F), make_block_class(torch.nn, TF)


def linear_pair(n_in=4, n_out=3, seed=0):
    torch.manual_seed(seed)
    theirs = torch.nn.Linear(n_in, n_out).double()
    ours = nn.Linear(n_in, n_out).to(np.float64)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def block_pair(seed=0):
    torch.manual_seed(seed)
    theirs = TorchBlock().double()
    ours = OurBlock().to(np.float64)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def x_data(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape)


def copy_of(t):
    """A NumPy copy of a tinyllm or torch tensor."""
    return t.detach().numpy().copy()


def test_forward_pre_hook_replaces_args_as_torch():
    (ours, theirs), x = linear_pair(), x_data((2, 4))
    for m in (ours, theirs):
        m.register_forward_pre_hook(lambda mod, args: args[0] * 2)  # a non-tuple is wrapped in one
        m.register_forward_pre_hook(lambda mod, args: (args[0] + 1,))  # sees the previous hook's args
    np.testing.assert_allclose(ours(tl.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours(tl.tensor(x)).numpy(), x @ (2 * ours.weight.numpy().T) + ours.bias.numpy()
                               + ours.weight.numpy().sum(1), rtol=1e-12)


def test_forward_hook_sees_args_and_output_and_replaces_output():
    (ours, theirs), x = linear_pair(), x_data((2, 4))
    seen = {"ours": [], "theirs": []}
    for name, m in (("ours", ours), ("theirs", theirs)):
        m.register_forward_hook(lambda mod, args, out, name=name: seen[name].append(
            (mod, copy_of(args[0]), copy_of(out))))
        m.register_forward_hook(lambda mod, args, out: out * 3)
        m.register_forward_hook(lambda mod, args, out: None)  # None keeps the (already replaced) output
    out, out_t = ours(tl.tensor(x)), theirs(torch.tensor(x))
    np.testing.assert_allclose(out.numpy(), out_t.detach().numpy(), rtol=1e-12)
    (m, a, o), (m_t, a_t, o_t) = seen["ours"][0], seen["theirs"][0]
    assert m is ours and m_t is theirs
    np.testing.assert_allclose(a, a_t)
    np.testing.assert_allclose(o, o_t, rtol=1e-12)
    np.testing.assert_allclose(out.numpy(), 3 * o, rtol=1e-12)


def test_replaced_output_carries_gradients_as_torch():
    (ours, theirs), x = linear_pair(), x_data((2, 4))
    for m in (ours, theirs):
        m.register_forward_hook(lambda mod, args, out: out.tanh() * 2)
    ours(tl.tensor(x)).sum().backward()
    theirs(torch.tensor(x)).sum().backward()
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-10)


def test_hooks_on_a_gpt_block_submodules_match_torch():
    (ours, theirs), x = block_pair(), x_data((B, T, C))
    captured = {"ours": {}, "theirs": {}}
    for name, m in (("ours", ours), ("theirs", theirs)):
        m.ln_2.register_forward_hook(lambda mod, args, out, name=name: captured[name].__setitem__("ln_2", copy_of(out)))
        m.mlp.register_forward_pre_hook(lambda mod, args: (args[0] * 0.5,))
        m.mlp[1].register_forward_hook(lambda mod, args, out: out + 1.0)  # the GELU inside the MLP
        m.head.register_forward_hook(lambda mod, args, out, name=name: captured[name].__setitem__("head_in", copy_of(args[0])))
    out, out_t = ours(tl.tensor(x)), theirs(torch.tensor(x))
    np.testing.assert_allclose(out.numpy(), out_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    for key in ("ln_2", "head_in"):
        np.testing.assert_allclose(captured["ours"][key], captured["theirs"][key], rtol=1e-10, atol=1e-12)
    # and the hooks really changed the block: without them the outputs differ
    plain_ours, _ = block_pair()
    assert not np.allclose(plain_ours(tl.tensor(x)).numpy(), out.numpy())
    F.cross_entropy(out, np.array([0, 1, 2])).backward()
    TF.cross_entropy(out_t, torch.tensor([0, 1, 2])).backward()
    for (n, p), (_, p_t) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad, p_t.grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=n)


def test_order_prepend_and_kwargs_as_torch():
    class Scale(nn.Module):
        def forward(self, x, scale=1.0):
            return x * scale

    class TScale(torch.nn.Module):
        def forward(self, x, scale=1.0):
            return x * scale

    logs = {}
    for name, m in (("ours", Scale()), ("theirs", TScale())):
        log = logs[name] = []
        m.register_forward_pre_hook(lambda mod, args: log.append("pre1"))
        m.register_forward_pre_hook(lambda mod, args, kwargs: (log.append("pre_kw"), (args, {"scale": 10.0}))[1],
                                    with_kwargs=True)
        m.register_forward_pre_hook(lambda mod, args: log.append("pre0"), prepend=True)
        m.register_forward_hook(lambda mod, args, out: log.append("post1"))
        m.register_forward_hook(lambda mod, args, kwargs, out: (log.append(f"post_kw{kwargs['scale']}"), out + 1)[1],
                                with_kwargs=True)
        m.register_forward_hook(lambda mod, args, out: log.append("post0"), prepend=True)
        lib = tl if name == "ours" else torch
        out = m(lib.tensor([1.0, 2.0]), scale=3.0)
        log.append([float(v) for v in out])
    assert logs["ours"] == logs["theirs"]
    assert logs["ours"][-1] == [11.0, 21.0]


def test_pre_hook_with_kwargs_must_return_a_pair():
    m = nn.Identity()
    m.register_forward_pre_hook(lambda mod, args, kwargs: args, with_kwargs=True)
    with pytest.raises(RuntimeError, match="forward pre-hook must return None or a tuple"):
        m(tl.tensor([1.0]))


def test_always_call_hook_runs_when_forward_raises():
    class Boom(nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    class TBoom(torch.nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    for m in (Boom(), TBoom()):
        log = []
        m.register_forward_hook(lambda mod, args, out: log.append(("always", out)), always_call=True)
        m.register_forward_hook(lambda mod, args, out: log.append("normal"))
        with pytest.raises(ValueError, match="boom"):
            m(1.0)
        assert log == [("always", None)]


def test_handles_remove_idempotently_and_as_context_managers():
    (ours, theirs), x = linear_pair(), x_data((2, 4))
    plain = ours(tl.tensor(x)).numpy()
    h1 = ours.register_forward_hook(lambda mod, args, out: out * 2)
    h2 = ours.register_forward_pre_hook(lambda mod, args: (args[0] * 0,), with_kwargs=False)
    assert isinstance(h1, RemovableHandle) and h1.id != h2.id
    h2.remove()
    np.testing.assert_allclose(ours(tl.tensor(x)).numpy(), 2 * plain)
    h1.remove()
    h1.remove()  # removing twice does nothing
    np.testing.assert_allclose(ours(tl.tensor(x)).numpy(), plain)
    assert not ours._forward_hooks and not ours._forward_pre_hooks
    with ours.register_forward_hook(lambda mod, args, out: out * 5, with_kwargs=False):
        np.testing.assert_allclose(ours(tl.tensor(x)).numpy(), 5 * plain)
    np.testing.assert_allclose(ours(tl.tensor(x)).numpy(), plain)
    h = ours.register_forward_hook(lambda mod, args, out: out, with_kwargs=True, always_call=True)
    assert h.id in ours._forward_hooks_with_kwargs and h.id in ours._forward_hooks_always_called
    h.remove()
    assert not ours._forward_hooks_with_kwargs and not ours._forward_hooks_always_called
    del ours
    h.remove()  # its module is gone: still nothing


def test_hooks_survive_state_dict_round_trips_and_to_without_being_saved():
    ours, theirs = block_pair()
    other, _ = block_pair(seed=3)
    x = tl.tensor(x_data((B, T, C)))
    calls = []
    ours.mlp.register_forward_hook(lambda mod, args, out: calls.append(1) or out * 0)
    sd = ours.state_dict()
    assert list(sd) == list(theirs.state_dict())  # nothing hook-shaped in it
    other.load_state_dict(sd)
    ours.load_state_dict(other.state_dict())
    ours.to(np.float32).to(np.float64)
    copied = copy.deepcopy(ours)
    out = ours(x)
    assert calls == [1]
    ours.mlp._forward_hooks.clear()
    assert not np.allclose(out.numpy(), ours(x).numpy())  # the hook (zeroing the MLP) was still live
    assert copied.mlp._forward_hooks  # deepcopy keeps hooks, as torch


def test_no_hooks_calls_forward_directly():
    m = nn.Linear(3, 2)
    calls = []
    m.forward = lambda x: calls.append(x) or "out"
    assert m("in") == "out" and calls == ["in"]
