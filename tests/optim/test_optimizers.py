"""Optimizers against torch.optim (the oracle): same params, same gradients, same trajectory."""
import json

import numpy as np
import pytest

import tinyllm
from tinyllm import optim

SHAPES = [(3, 4), (5,), (2, 3, 2)]

SGD_CASES = [
    {},
    {"momentum": 0.9},
    {"momentum": 0.9, "dampening": 0.3},
    {"momentum": 0.8, "nesterov": True},
    {"weight_decay": 0.1},
    {"maximize": True},
    {"momentum": 0.9, "nesterov": True, "weight_decay": 0.05, "maximize": True},
]
ADAM_CASES = [
    {},
    {"amsgrad": True},
    {"weight_decay": 0.1},
    {"maximize": True},
    {"betas": (0.3, 0.6), "eps": 1e-3},  # 1 - beta1 > 0.5 takes lerp's other rounding branch
    {"amsgrad": True, "weight_decay": 0.05, "maximize": True, "lr": 0.01},
]
ADAMW_CASES = [{}, {"amsgrad": True}, {"weight_decay": 0.3, "lr": 0.02}, {"maximize": True}]
ADAGRAD_CASES = [
    {},
    {"lr_decay": 0.05},
    {"weight_decay": 0.1},
    {"initial_accumulator_value": 0.5},
    {"eps": 1e-3, "maximize": True},
    {"lr_decay": 0.01, "weight_decay": 0.02, "initial_accumulator_value": 0.1, "lr": 0.1},
]
CASES = ([("SGD", {"lr": 0.05, **c}) for c in SGD_CASES] + [("Adam", c) for c in ADAM_CASES]
         + [("AdamW", c) for c in ADAMW_CASES] + [("Adagrad", c) for c in ADAGRAD_CASES])


def case_id(case):
    name, kw = case
    return name + "-" + ("-".join(f"{k}={v}" for k, v in kw.items()) or "default")


def make_params(seed, dtype=np.float64, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def make_grads(seed, steps, dtype=np.float64, shapes=SHAPES):
    """Per step, one gradient per parameter; parameter 1 has no gradient on step 3 (it is skipped)."""
    rng = np.random.default_rng(seed + 1000)
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    if steps > 3:
        grads[3][1] = None
    return grads


def tl_params(arrays):
    return [tinyllm.Tensor(a.copy(), requires_grad=True) for a in arrays]


def run_tl(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else g.copy()
        opt.step()


def torch_opt(torch, name, params, kwargs):
    # foreach=False: torch's single-tensor path is the reference
    return getattr(torch.optim, name)(params, foreach=False, **kwargs)


def run_torch(torch, name, kwargs, arrays, grads, groups=None):
    params = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    spec = params if groups is None else [{"params": [params[i] for i in idx], **o} for idx, o in groups]
    opt = torch_opt(torch, name, spec, kwargs)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else torch.tensor(g.copy())
        opt.step()
    return [p.detach().numpy() for p in params], opt


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_torch_float64(case):
    torch = pytest.importorskip("torch")
    name, kwargs = case
    arrays, grads = make_params(0), make_grads(0, 12)
    params = tl_params(arrays)
    opt = getattr(optim, name)(params, **kwargs)
    run_tl(opt, params, grads)
    expected, topt = run_torch(torch, name, kwargs, arrays, grads)
    for p, e in zip(params, expected):
        assert p.data.dtype == np.float64
        np.testing.assert_allclose(p.data, e, rtol=1e-10, atol=1e-12)
    # the state itself matches torch's, key by key
    ours, theirs = opt.state_dict()["state"], topt.state_dict()["state"]
    assert sorted(ours) == sorted(theirs)
    for i in ours:
        assert sorted(ours[i]) == sorted(theirs[i])
        for k, v in ours[i].items():
            np.testing.assert_allclose(np.asarray(v), theirs[i][k].numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("name,kwargs", [("SGD", {"momentum": 0.9, "nesterov": True}),
                                         ("Adam", {"weight_decay": 0.01}), ("AdamW", {"amsgrad": True}),
                                         ("Adagrad", {"lr_decay": 0.01})])
def test_param_groups_with_own_options(name, kwargs):
    torch = pytest.importorskip("torch")
    arrays, grads = make_params(1), make_grads(1, 10)
    groups = [([0, 2], {"lr": 0.03}), ([1], {"lr": 0.002, "weight_decay": 0.2})]
    params = tl_params(arrays)
    opt = getattr(optim, name)([{"params": [params[i] for i in idx], **o} for idx, o in groups], **kwargs)
    assert [g["lr"] for g in opt.param_groups] == [0.03, 0.002]
    assert opt.param_groups[0]["weight_decay"] == kwargs.get("weight_decay", 0.01 if name == "AdamW" else 0)
    run_tl(opt, params, grads)
    expected, _ = run_torch(torch, name, kwargs, arrays, grads, groups)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.data, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_state_dict_round_trip(case):
    name, kwargs = case
    arrays, grads = make_params(2), make_grads(2, 10)
    groups = lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "lr": 0.004}]  # noqa: E731

    straight = tl_params(arrays)
    opt = getattr(optim, name)(groups(straight), **kwargs)
    run_tl(opt, straight, grads)

    first = tl_params(arrays)
    opt1 = getattr(optim, name)(groups(first), **kwargs)
    run_tl(opt1, first, grads[:5])
    sd = opt1.state_dict()
    # JSON-able apart from the arrays; 'step' is a plain float
    json.dumps(sd["param_groups"])
    for s in sd["state"].values():
        assert "step" not in s or type(s["step"]) is float
    run_tl(opt1, first, grads[5:6])  # later steps must not leak into the snapshot

    resumed = tl_params(arrays)  # replay the first 5 steps so the params match the snapshot
    run_tl(getattr(optim, name)(groups(resumed), **kwargs), resumed, grads[:5])
    for p, q in zip(resumed, first):
        assert not np.array_equal(p.data, q.data)  # first moved on by one more step
    fresh = getattr(optim, name)(groups(resumed), lr=0.5)  # different options, overwritten by the load
    fresh.load_state_dict(sd)
    assert fresh.param_groups[1]["lr"] == 0.004  # saved options win, as in torch
    run_tl(fresh, resumed, grads[5:])
    for p, q in zip(resumed, straight):
        np.testing.assert_array_equal(p.data, q.data)


def test_state_dict_indices_count_across_groups_and_accept_string_keys():
    ps = tl_params(make_params(3))
    opt = optim.Adam([{"params": ps[:1]}, {"params": ps[1:]}])
    for p in ps:
        p.grad = np.ones_like(p.data)
    opt.step()
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1, 2]]
    assert sorted(sd["state"]) == [0, 1, 2]
    as_json = {"state": {str(k): v for k, v in sd["state"].items()},
               "param_groups": json.loads(json.dumps(sd["param_groups"]))}
    opt2 = optim.Adam([{"params": ps[:1]}, {"params": ps[1:]}])
    opt2.load_state_dict(as_json)
    assert opt2.param_groups[0]["betas"] == (0.9, 0.999)
    np.testing.assert_array_equal(opt2.state[ps[2]]["exp_avg"], opt.state[ps[2]]["exp_avg"])


def _trained_adam(shapes=SHAPES, groups=None):
    ps = tl_params(make_params(4, shapes=shapes))
    opt = optim.Adam(ps if groups is None else [{"params": [ps[i] for i in g]} for g in groups])
    for p in ps:
        p.grad = np.ones_like(p.data)
    opt.step()
    return ps, opt


def test_load_state_dict_errors_name_the_mismatch():
    _, opt = _trained_adam()
    sd = opt.state_dict()

    _, two_groups = _trained_adam(groups=[[0], [1, 2]])
    with pytest.raises(ValueError, match=r"1 parameter group\(s\), the optimizer has 2"):
        two_groups.load_state_dict(sd)

    _, short = _trained_adam(shapes=SHAPES[:2])
    with pytest.raises(ValueError, match=r"parameter group 0 has 3 parameter\(s\) in the state dict, 2 in"):
        short.load_state_dict(sd)

    _, other = _trained_adam(shapes=[(4, 3), (5,), (2, 3, 2)])
    before = other.state_dict()
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\].*shape \(3, 4\).*shape \(4, 3\)"):
        other.load_state_dict(sd)
    np.testing.assert_array_equal(other.state_dict()["state"][0]["exp_avg"], before["state"][0]["exp_avg"])

    bad = {"state": {7: sd["state"][0]}, "param_groups": sd["param_groups"]}
    with pytest.raises(ValueError, match="parameter 7"):
        opt.load_state_dict(bad)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})


def test_load_casts_state_to_param_dtype_and_copies():
    ps64, opt64 = _trained_adam()
    sd = opt64.state_dict()
    ps32 = [tinyllm.Tensor(p.data.astype(np.float32), requires_grad=True) for p in ps64]
    opt32 = optim.Adam(ps32)
    opt32.load_state_dict(sd)
    for p in ps32:
        assert opt32.state[p]["exp_avg"].dtype == np.float32
    sd["state"][0]["exp_avg"][...] = 123.0  # the loaded optimizer must own its arrays
    assert not np.any(opt32.state[ps32[0]]["exp_avg"] == 123.0)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float32_params_stay_float32_and_track_torch(case):
    torch = pytest.importorskip("torch")
    name, kwargs = case
    arrays, grads = make_params(5, np.float32), make_grads(5, 10, np.float32)
    params = tl_params(arrays)
    opt = getattr(optim, name)(params, **kwargs)
    run_tl(opt, params, grads)
    expected, _ = run_torch(torch, name, kwargs, arrays, grads)
    for p, e in zip(params, expected):
        assert p.data.dtype == np.float32
        np.testing.assert_allclose(p.data, e, rtol=2e-5, atol=2e-6)
    for s in opt.state.values():
        for k, v in s.items():
            if k != "step":
                assert v.dtype == np.float32, k


def test_params_without_grad_are_untouched_and_get_no_state():
    a, b = tl_params(make_params(6)[:2])
    before = b.data.copy()
    opt = optim.SGD([a, b], lr=0.1, momentum=0.9)
    a.grad = np.ones_like(a.data)
    opt.step()
    np.testing.assert_array_equal(b.data, before)
    assert b not in opt.state and a in opt.state


def test_zero_grad():
    a, b = tl_params(make_params(7)[:2])
    opt = optim.SGD([a, b])
    a.grad, b.grad = np.ones_like(a.data), np.ones_like(b.data)
    opt.zero_grad(set_to_none=False)
    assert np.all(a.grad == 0) and np.all(b.grad == 0)
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_step_works_with_autograd_and_closure():
    x = tinyllm.Tensor(np.array([3.0, -2.0]), requires_grad=True)
    opt = optim.SGD([x], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (x * x).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert float(loss.data) == 13.0
    np.testing.assert_array_equal(x.data, [1.5, -1.0])  # x - 0.25 * 2x


def test_add_param_group_and_group_checks():
    a, b, c = tl_params(make_params(8))
    opt = optim.Adagrad([a], lr=0.1)
    opt.add_param_group({"params": b, "lr": 0.2})
    assert opt.param_groups[1]["lr"] == 0.2 and opt.param_groups[1]["eps"] == 1e-10
    assert opt.state[b]["step"] == 0.0 and np.all(opt.state[b]["sum"] == 0)
    with pytest.raises(ValueError, match="more than one parameter group"):
        opt.add_param_group({"params": [c, a]})
    with pytest.raises(ValueError, match="duplicate"):
        optim.SGD([c, c])
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([])
    with pytest.raises(TypeError, match="single Tensor"):
        optim.SGD(a)
    with pytest.raises(TypeError, match="set"):
        optim.SGD({a, b})
    named = optim.SGD([("w", a), ("b", b)])
    assert named.param_groups[0]["param_names"] == ["w", "b"]
    assert named.state_dict()["param_groups"][0]["param_names"] == ["w", "b"]


@pytest.mark.parametrize("make,match", [
    (lambda p: optim.SGD(p, lr=-1), "Invalid learning rate"),
    (lambda p: optim.SGD(p, momentum=-0.1), "Invalid momentum"),
    (lambda p: optim.SGD(p, weight_decay=-1), "Invalid weight_decay"),
    (lambda p: optim.SGD(p, nesterov=True), "Nesterov momentum requires a momentum"),
    (lambda p: optim.SGD(p, momentum=0.9, dampening=0.1, nesterov=True), "zero dampening"),
    (lambda p: optim.Adam(p, lr=-1e-3), "Invalid learning rate"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.999)), "beta parameter at index 0"),
    (lambda p: optim.Adam(p, betas=(0.9, -0.1)), "beta parameter at index 1"),
    (lambda p: optim.Adam(p, eps=-1), "Invalid epsilon"),
    (lambda p: optim.AdamW(p, weight_decay=-1), "Invalid weight_decay"),
    (lambda p: optim.Adagrad(p, lr_decay=-1), "Invalid lr_decay"),
    (lambda p: optim.Adagrad(p, initial_accumulator_value=-1), "Invalid initial_accumulator_value"),
])
def test_invalid_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make(tl_params(make_params(9)))


def test_package_exports():
    from tinyllm.optim import SGD, Adagrad, Adam, AdamW, Optimizer, lr_scheduler  # noqa: F401
    assert issubclass(AdamW, Adam) and issubclass(Adagrad, Optimizer)
    assert hasattr(lr_scheduler, "StepLR")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_scalar_params_with_numpy_scalar_grads(case):
    """A 0-d parameter whose gradient arrives as a NumPy scalar (np.float64, not an array) still keeps
    its state in place."""
    torch = pytest.importorskip("torch")
    name, kwargs = case
    shapes = [(), (2,)]
    arrays, grads = make_params(10, shapes=shapes), make_grads(10, 8, shapes=shapes)
    params = tl_params(arrays)
    opt = getattr(optim, name)(params, **kwargs)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = None if g is None else (g[()] if g.ndim == 0 else g.copy())
        opt.step()
    expected, _ = run_torch(torch, name, kwargs, arrays, grads)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.data, e, rtol=1e-10, atol=1e-12)
