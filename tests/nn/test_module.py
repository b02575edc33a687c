"""Module, Parameter and the basic layers: registration, traversal, modes, dtype casts, state_dict
round trips with real torch state_dicts, init statistics, containers, and clip_grad_norm_."""
import math
from collections import OrderedDict

import numpy as np
import pytest

import tinyllm as tl
from tinyllm import nn
from tinyllm.nn.utils import clip_grad_norm_

try:
    import torch
except ImportError:  # torch is only the oracle: tests marked `torch` are then skipped (conftest.py)
    torch = None


# ---------------------------------------------------------------------------------------------
# small models used throughout
# ---------------------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.ln = nn.LayerNorm(3)
        self.scale = nn.Parameter(np.ones(3, dtype=np.float32))
        self.register_buffer("running", np.zeros(3, dtype=np.float32))
        self.register_buffer("scratch", np.zeros(2, dtype=np.float32), persistent=False)

    def forward(self, x):
        return self.ln(self.fc(x)) * self.scale


class Tied(nn.Module):
    """An embedding and an output head sharing one weight, as GPT-2's wte / lm_head."""

    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(7, 4)
        self.lm_head = nn.Linear(4, 7, bias=False)
        self.lm_head.weight = self.wte.weight


if torch is not None:
    class TorchBlock(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 3)
            self.ln = torch.nn.LayerNorm(3)
            self.scale = torch.nn.Parameter(torch.ones(3))
            self.register_buffer("running", torch.zeros(3))
            self.register_buffer("scratch", torch.zeros(2), persistent=False)

    class TorchTied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = torch.nn.Embedding(7, 4)
            self.lm_head = torch.nn.Linear(4, 7, bias=False)
            self.lm_head.weight = self.wte.weight


def mlp_pair(dtype=np.float64):
    """The same Sequential(Linear, LayerNorm, GELU, Linear) in tinyllm and torch."""
    ours = nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 3)).to(dtype)
    theirs = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.LayerNorm(16), torch.nn.GELU(),
                                 torch.nn.Linear(16, 3)).double()
    return ours, theirs


def to_numpy_sd(module):
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# registration and traversal
# ---------------------------------------------------------------------------------------------


@pytest.mark.torch
def test_registration_names_match_torch():
    ours, theirs = Block(), TorchBlock()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert list(ours.state_dict()) == list(theirs.state_dict())  # non-persistent buffer left out
    assert "scratch" not in ours.state_dict()
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_children()] == ["fc", "ln"]
    assert list(ours.children()) == [ours.fc, ours.ln]
    assert list(ours.modules()) == [ours, ours.fc, ours.ln]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in ours.parameters())
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())


@pytest.mark.torch
def test_nested_names_match_torch():
    ours = nn.Sequential(OrderedDict(enc=nn.Sequential(nn.Linear(2, 3), nn.ReLU()),
                                     heads=nn.ModuleList([nn.Linear(3, 1), nn.Linear(3, 2, bias=False)]),
                                     extra=nn.ModuleDict({"ln": nn.LayerNorm(3)})))
    theirs = torch.nn.Sequential(OrderedDict(enc=torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()),
                                             heads=torch.nn.ModuleList([torch.nn.Linear(3, 1),
                                                                        torch.nn.Linear(3, 2, bias=False)]),
                                             extra=torch.nn.ModuleDict({"ln": torch.nn.LayerNorm(3)})))
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert list(ours.state_dict()) == list(theirs.state_dict())


@pytest.mark.torch
def test_tied_weights_dedup_in_parameters_but_not_in_state_dict():
    ours, theirs = Tied(), TorchTied()
    assert ours.lm_head.weight is ours.wte.weight
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()] == ["wte.weight"]
    assert len(list(ours.parameters())) == 1
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["wte.weight", "lm_head.weight"]
    # loading writes the shared array once; both names see it
    sd = to_numpy_sd(theirs)
    ours.load_state_dict(sd)
    np.testing.assert_array_equal(ours.lm_head.weight.data, sd["wte.weight"])
    assert ours.lm_head.weight is ours.wte.weight


def test_reassigning_and_deleting_attributes():
    m = Block()
    new_fc = nn.Linear(4, 3)
    m.fc = new_fc
    assert m.fc is new_fc and list(m.children())[0] is new_fc
    lin = nn.Linear(2, 3)
    lin.weight = nn.Parameter(np.zeros((3, 2), dtype=np.float32))  # keeps its place, as in torch
    assert list(lin.state_dict()) == ["weight", "bias"] and not lin.weight.data.any()
    m.fc = None  # like torch: a registered submodule may be set to None
    assert "fc.weight" not in dict(m.named_parameters())
    with pytest.raises(TypeError, match="scale"):
        m.scale = np.ones(3)  # a plain array is not a Parameter
    m.plain = 3  # ordinary attributes are not registered
    assert m.plain == 3 and "plain" not in dict(m.named_parameters())
    del m.ln
    assert [n for n, _ in m.named_children()] == []
    with pytest.raises(AttributeError, match="nope"):
        m.nope


def test_registered_names_are_plain_attributes_kept_in_step_with_the_stores():
    # Module mirrors its registered entries into __dict__ (a read is a plain lookup, not __getattr__);
    # every way of changing an entry must keep that mirror and the ordered stores in step
    m = Block()
    lin = m.fc
    assert vars(m)["fc"] is lin and vars(lin)["weight"] is lin._parameters["weight"]
    lin.weight = w = nn.Parameter(np.ones((3, 4), dtype=np.float32))
    assert lin.weight is w and vars(lin)["weight"] is w and lin._parameters["weight"] is w
    lin.bias = None
    assert lin.bias is None and "bias" not in vars(lin) and lin._parameters["bias"] is None
    lin.register_parameter("bias", b := nn.Parameter(np.zeros(3, dtype=np.float32)))
    assert lin.bias is b and vars(lin)["bias"] is b
    lin.register_buffer("stat", np.arange(3.0))
    assert vars(lin)["stat"] is lin._buffers["stat"] and lin.stat.data.tolist() == [0.0, 1.0, 2.0]
    lin.stat = None
    assert lin.stat is None and "stat" not in vars(lin)
    lin.stat = np.ones(2)  # a buffer name takes a new array, wrapped
    assert vars(lin)["stat"] is lin._buffers["stat"] and lin.stat.data.tolist() == [1.0, 1.0]
    m.fc = nn.Parameter(np.zeros(2, dtype=np.float32))  # a submodule's name reused for a parameter
    assert "fc" not in m._modules and vars(m)["fc"] is m._parameters["fc"]
    del m.fc
    assert "fc" not in vars(m) and "fc" not in m._parameters
    with pytest.raises(AttributeError, match="fc"):
        m.fc
    from tinyllm.nn.module import replace_submodules
    n = replace_submodules(m, lambda name, child: nn.Identity() if name == "ln" else None)
    assert n == 1 and isinstance(m.ln, nn.Identity) and vars(m)["ln"] is m._modules["ln"]


def test_setattr_before_init_is_an_error():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.zeros(2))

    with pytest.raises(AttributeError, match="Module.__init__"):
        Bad()


def test_train_eval_propagate_and_change_dropout():
    m = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.Dropout(0.5), nn.ReLU()))
    assert all(mod.training for mod in m.modules())
    assert m.eval() is m
    assert not any(mod.training for mod in m.modules())
    x = tl.randn(50, 3)
    np.testing.assert_array_equal(m(x).data, m(x).data)  # eval: dropout is the identity
    m.train()
    assert all(mod.training for mod in m.modules())
    m[1].train(False)
    assert m.training and not m[1].training and not m[1][0].training


def test_zero_grad():
    m = Block()
    (m(tl.randn(2, 4)) ** 2).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_to_float64_casts_params_and_buffers_but_keeps_identity():
    m = Block()
    w = m.fc.weight
    assert w.dtype == np.float32
    before = w.data.copy()
    assert m.to(np.float64) is m
    assert m.fc.weight is w  # cast in place: optimizers holding the Parameter still see it
    assert all(p.dtype == np.float64 for p in m.parameters())
    assert isinstance(m.running, tl.Tensor)  # a registered array becomes a Tensor buffer, as in torch
    assert m.running.dtype == m.scratch.dtype == np.float64  # buffers are cast too, persistent or not
    np.testing.assert_array_equal(w.data, before.astype(np.float64))
    assert m(tl.randn(2, 4, dtype=np.float64)).dtype == np.float64
    m.float()
    assert all(p.dtype == np.float32 for p in m.parameters())
    m.double()
    assert all(p.dtype == np.float64 for p in m.parameters())


@pytest.mark.torch
def test_repr_shows_the_tree_like_torch():
    ours = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Sequential(nn.Embedding(5, 3, padding_idx=0), nn.ReLU()),
                         nn.Tanh(), nn.Linear(4, 2, bias=False))
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.GELU(),
                                 torch.nn.Sequential(torch.nn.Embedding(5, 3, padding_idx=0), torch.nn.ReLU()),
                                 torch.nn.Tanh(), torch.nn.Linear(4, 2, bias=False))
    assert repr(ours) == repr(theirs)
    r = repr(Block())
    assert r.startswith("Block(\n  (fc): Linear(in_features=4, out_features=3, bias=True)\n  (ln): LayerNorm((3,)")


# ---------------------------------------------------------------------------------------------
# state_dict and load_state_dict
# ---------------------------------------------------------------------------------------------


def test_state_dict_holds_detached_tensors_sharing_the_parameters_memory():
    m = Block()
    sd = m.state_dict()
    assert all(type(v) is tl.Tensor and not v.requires_grad for v in sd.values())
    np.copyto(sd["fc.weight"].data, 123.0)  # as torch: writing into the state_dict writes the model
    assert (m.fc.weight.data == 123.0).all()
    assert sd["fc.weight"].shape == (3, 4) and sd["fc.bias"].shape == (3,)
    np.copyto(sd["running"].data, 7.0)  # buffers too
    assert (m.running.data == 7.0).all()
    assert m.state_dict(keep_vars=True)["fc.weight"] is m.fc.weight
    assert list(m.state_dict(prefix="block.")) == ["block." + k for k in sd]


def test_load_state_dict_casts_dtype_in_place():
    m = Block()  # float32
    w = m.fc.weight
    sd = {k: np.random.default_rng(0).standard_normal(v.shape) for k, v in Block().state_dict().items()}
    result = m.load_state_dict(sd)
    assert result == ([], []) and result.missing_keys == [] and result.unexpected_keys == []
    assert m.fc.weight is w and w.dtype == np.float32
    np.testing.assert_array_equal(w.data, sd["fc.weight"].astype(np.float32))
    assert m.running.dtype == np.float32
    np.testing.assert_array_equal(m.running.data, sd["running"].astype(np.float32))


def test_load_state_dict_errors_name_the_keys():
    m = Block()
    good = {k: v.numpy().copy() for k, v in m.state_dict().items()}  # a snapshot, not the live tensors
    bad = dict(good)
    del bad["ln.bias"]
    bad["fc.extra"] = np.zeros(2)
    bad["fc.weight"] = np.zeros((4, 3))
    before = m.fc.bias.data.copy()
    bad["fc.bias"] = before + 1
    with pytest.raises(nn.StateDictError) as err:
        m.load_state_dict(bad)
    msg = str(err.value)
    assert "ln.bias" in msg and "fc.extra" in msg and "fc.weight" in msg
    assert "(4, 3)" in msg and "(3, 4)" in msg
    assert "missing" in msg.lower() and "unexpected" in msg.lower()
    np.testing.assert_array_equal(m.fc.bias.data, before)  # nothing was written

    # strict=False: missing / unexpected are returned, not raised ...
    lenient = dict(good)
    del lenient["ln.bias"]
    lenient["fc.extra"] = np.zeros(2)
    lenient["fc.bias"] = good["fc.bias"] + 1
    missing, unexpected = m.load_state_dict(lenient, strict=False)
    assert missing == ["ln.bias"] and unexpected == ["fc.extra"]
    np.testing.assert_array_equal(m.fc.bias.data, good["fc.bias"] + 1)
    # ... but a wrong shape is still an error, as in torch
    lenient["fc.weight"] = np.zeros((4, 3))
    with pytest.raises(nn.StateDictError, match=r"fc\.weight"):
        m.load_state_dict(lenient, strict=False)


@pytest.mark.torch
def test_torch_agrees_about_the_same_bad_state_dict():
    """Our strict/lenient verdicts match torch's on the same dict."""
    ours, theirs = Block(), TorchBlock()
    sd = to_numpy_sd(theirs)
    del sd["ln.weight"]
    sd["bogus"] = np.zeros(1, dtype=np.float32)
    r_ours = ours.load_state_dict(sd, strict=False)
    r_theirs = theirs.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    assert list(r_ours.missing_keys) == list(r_theirs.missing_keys)
    assert list(r_ours.unexpected_keys) == list(r_theirs.unexpected_keys)


@pytest.mark.torch
def test_load_real_torch_mlp_state_dict_and_match_outputs_and_grads():
    tl.manual_seed(0)
    torch.manual_seed(0)
    ours, theirs = mlp_pair()
    ours.load_state_dict(to_numpy_sd(theirs))
    x = np.random.default_rng(1).standard_normal((5, 2, 6))
    y_ours, y_theirs = ours(tl.tensor(x)), theirs(torch.tensor(x))
    assert y_ours.dtype == np.float64
    np.testing.assert_allclose(y_ours.data, y_theirs.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(2).standard_normal(y_ours.shape)
    y_ours.backward(g)
    y_theirs.backward(torch.tensor(g))
    grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, grads[name].grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.torch
def test_torch_tensors_load_directly():
    ours, theirs = mlp_pair()
    ours.load_state_dict(theirs.state_dict())  # torch tensors, not converted
    for k, v in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k], v.numpy())


@pytest.mark.torch
def test_our_state_dict_loads_into_torch():
    tl.manual_seed(3)
    ours, theirs = mlp_pair()
    theirs.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(4).standard_normal((7, 6))
    np.testing.assert_allclose(ours(tl.tensor(x)).data, theirs(torch.tensor(x)).detach().numpy(),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.torch
def test_embedding_state_dict_both_directions():
    theirs = torch.nn.Embedding(11, 5, padding_idx=2).double()
    ours = nn.Embedding(11, 5, padding_idx=2, dtype=np.float64)
    ours.load_state_dict(to_numpy_sd(theirs))
    ids = np.array([[0, 2, 10], [3, 3, 1]])
    np.testing.assert_array_equal(ours(ids).data, theirs(torch.tensor(ids)).detach().numpy())
    tl.manual_seed(5)
    ours2 = nn.Embedding(11, 5, dtype=np.float64)
    theirs.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in ours2.state_dict().items()})
    np.testing.assert_array_equal(theirs(torch.tensor(ids)).detach().numpy(), ours2(ids).data)


# ---------------------------------------------------------------------------------------------
# layers: layouts and initialisation
# ---------------------------------------------------------------------------------------------


def test_linear_layout_and_init_statistics():
    tl.manual_seed(0)
    fan_in = 64
    lin = nn.Linear(fan_in, 512)
    assert lin.weight.shape == (512, fan_in) and lin.bias.shape == (512,)
    assert lin.weight.dtype == np.float32
    bound = 1 / math.sqrt(fan_in)
    w, b = lin.weight.data, lin.bias.data
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    assert w.min() < -0.98 * bound and w.max() > 0.98 * bound  # fills the interval...
    assert abs(w.std() - bound / math.sqrt(3)) < 0.02 * bound  # ...uniformly (std of U(-a, a) is a/sqrt 3)
    assert abs(w.mean()) < 0.02 * bound
    if torch is not None:
        ref = torch.nn.Linear(fan_in, 512).weight.detach().numpy()
        assert abs(w.std() - ref.std()) < 0.03 * bound
    assert nn.Linear(3, 2, bias=False).bias is None
    x = tl.randn(2, 5, fan_in)
    assert lin(x).shape == (2, 5, 512)


def test_embedding_and_layernorm_init():
    tl.manual_seed(0)
    emb = nn.Embedding(1000, 64, padding_idx=-1)
    assert emb.padding_idx == 999
    w = emb.weight.data
    assert not w[999].any()
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1.0) < 0.02
    ln = nn.LayerNorm((3, 4))
    assert ln.weight.shape == ln.bias.shape == (3, 4)
    assert (ln.weight.data == 1).all() and (ln.bias.data == 0).all()
    assert nn.LayerNorm(4, elementwise_affine=False).weight is None
    assert nn.LayerNorm(4, bias=False).bias is None
    assert [n for n, _ in nn.LayerNorm(4, bias=False).named_parameters()] == ["weight"]


def test_init_is_reproducible_with_manual_seed():
    tl.manual_seed(7)
    a = nn.Linear(5, 5).weight.data.copy()
    tl.manual_seed(7)
    b = nn.Linear(5, 5).weight.data.copy()
    c = nn.Linear(5, 5).weight.data.copy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


# ---------------------------------------------------------------------------------------------
# containers
# ---------------------------------------------------------------------------------------------


@pytest.mark.torch
def test_sequential_like_torch():
    ours = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    theirs = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    assert len(ours) == 3 and isinstance(ours[1], nn.ReLU) and ours[-1] is list(ours)[2]
    # a slice keeps the original names, so its state_dict keys match torch's
    assert list(ours[1:].state_dict()) == list(theirs[1:].state_dict()) == ["2.weight", "2.bias"]
    assert ours[1:][1] is ours[2]
    ours.append(nn.Tanh())
    assert len(ours) == 4 and isinstance(ours[3], nn.Tanh)
    named = nn.Sequential(OrderedDict(a=nn.Linear(2, 2), b=nn.ReLU()))
    assert [n for n, _ in named.named_children()] == ["a", "b"] and named.a is named[0]
    x = tl.randn(4, 2)
    np.testing.assert_allclose(named(x).data, named.b(named.a(x)).data)


def test_modulelist_like_torch():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(layers) == 3 and [n for n, _ in layers.named_children()] == ["0", "1", "2"]
    layers.append(nn.ReLU()).extend([nn.Tanh()])
    assert len(layers) == 5 and isinstance(layers[-1], nn.Tanh)
    new = nn.Linear(2, 2)
    layers[-5] = new
    assert layers[0] is new and dict(layers.named_parameters())["0.weight"] is new.weight
    assert len(layers[1:3]) == 2 and layers[1:3][0] is layers[1]
    assert len(list(layers.parameters())) == 6
    with pytest.raises(NotImplementedError):
        layers(tl.randn(1, 2))


def test_moduledict_like_torch():
    d = nn.ModuleDict({"q": nn.Linear(2, 2), "k": nn.Linear(2, 2, bias=False)})
    assert list(d) == ["q", "k"] and list(d.keys()) == ["q", "k"] and "q" in d and "v" not in d
    d["v"] = nn.Linear(2, 3)
    assert len(d) == 3 and d["v"].out_features == 3
    assert [n for n, _ in d.named_parameters()] == ["q.weight", "q.bias", "k.weight", "v.weight", "v.bias"]
    assert [k for k, _ in d.items()] == ["q", "k", "v"] and list(d.values())[2] is d["v"]


# ---------------------------------------------------------------------------------------------
# clip_grad_norm_
# ---------------------------------------------------------------------------------------------


def _grad_pairs(scale, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (4,), (2, 2, 2)]
    ours, theirs = [], []
    for s in shapes:
        g = rng.standard_normal(s) * scale
        p = nn.Parameter(np.zeros(s))
        p.grad = g.copy()
        t = torch.zeros(s, dtype=torch.float64, requires_grad=True)
        t.grad = torch.tensor(g)
        ours.append(p)
        theirs.append(t)
    return ours, theirs


@pytest.mark.torch
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("scale,max_norm", [(1.0, 0.5), (1e-3, 1.0)])  # clipped, and not clipped
def test_clip_grad_norm_matches_torch(norm_type, scale, max_norm):
    ours, theirs = _grad_pairs(scale)
    before = [p.grad.copy() for p in ours]
    total = clip_grad_norm_(ours, max_norm, norm_type=norm_type)
    total_t = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type=norm_type)
    assert isinstance(total, tl.Tensor)
    np.testing.assert_allclose(total.item(), total_t.item(), rtol=1e-12)
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12, atol=1e-15)
    clipped = total.item() > max_norm
    assert clipped == (scale == 1.0)
    if not clipped:  # coef = min(max_norm / (norm + 1e-6), 1) = 1: gradients unchanged
        for p, b in zip(ours, before):
            np.testing.assert_array_equal(p.grad, b)


def test_clip_grad_norm_skips_params_without_grad_and_takes_a_generator():
    m = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    m[0](tl.randn(4, 3)).sum().backward()  # only the first layer gets gradients
    g0 = np.concatenate([p.grad.ravel() for p in m[0].parameters()])
    total = clip_grad_norm_(m.parameters(), 1e-3)
    np.testing.assert_allclose(total.item(), np.linalg.norm(g0.astype(np.float64)), rtol=1e-6)
    new = np.concatenate([p.grad.ravel() for p in m[0].parameters()])
    np.testing.assert_allclose(np.linalg.norm(new.astype(np.float64)), 1e-3, rtol=1e-4)
    assert all(p.grad is None for p in m[1].parameters())


def test_clip_grad_norm_nonfinite():
    p = nn.Parameter(np.zeros(2))
    p.grad = np.array([np.inf, 1.0])
    with pytest.raises(RuntimeError, match="inf"):
        clip_grad_norm_([p], 1.0, error_if_nonfinite=True)


@pytest.mark.torch
def test_clip_grad_norm_with_a_nan_gradient_spreads_it_like_torch():
    # the coefficient is NaN, and torch multiplies every gradient by it; the skip for an unclipped
    # step (coef == 1) must not skip this
    grads = [np.array([np.nan, 1.0]), np.array([2.0, 3.0])]
    ours = [nn.Parameter(np.zeros(2)) for _ in grads]
    theirs = [torch.zeros(2, dtype=torch.float64, requires_grad=True) for _ in grads]
    for p, t, g in zip(ours, theirs, grads):
        p.grad, t.grad = g.copy(), torch.tensor(g)
    clip_grad_norm_(ours, 1.0)
    torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    for p, t in zip(ours, theirs):
        np.testing.assert_array_equal(p.grad, t.grad.numpy())
    assert np.isnan(ours[1].grad).all()
