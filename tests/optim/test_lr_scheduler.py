"""Learning-rate schedules: torch's schedulers as the oracle, nanoGPT's get_lr as the reference."""
import json
import math

import numpy as np
import pytest

import tinyllm
from tinyllm import optim
from tinyllm.optim import lr_scheduler


def nanogpt_get_lr(it, learning_rate, min_lr, warmup_iters, lr_decay_iters):
    """Copied from nanoGPT's train.py."""
    # 1) linear warmup for warmup_iters steps
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    # 2) if it > lr_decay_iters, return min learning rate
    if it > lr_decay_iters:
        return min_lr
    # 3) in between, use cosine decay down to min learning rate
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # coeff ranges 0..1
    return min_lr + coeff * (learning_rate - min_lr)


def two_group_sgd(lrs=(0.1, 0.03)):
    ps = [tinyllm.Tensor(np.ones(3), requires_grad=True) for _ in lrs]
    return optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(ps, lrs)])


def torch_two_group_sgd(torch, lrs=(0.1, 0.03)):
    ps = [torch.ones(3, requires_grad=True) for _ in lrs]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(ps, lrs)])


def lr_sequence(sched, n):
    out = [sched.get_last_lr()]
    for _ in range(n):
        sched.optimizer.step()
        sched.step()
        out.append(sched.get_last_lr())
    return out


@pytest.mark.parametrize("step_size,gamma", [(3, 0.1), (1, 0.7), (5, 0.5)])
def test_steplr_matches_torch(step_size, gamma):
    torch = pytest.importorskip("torch")
    ours = lr_sequence(lr_scheduler.StepLR(two_group_sgd(), step_size, gamma), 30)
    theirs = lr_sequence(torch.optim.lr_scheduler.StepLR(torch_two_group_sgd(torch), step_size, gamma), 30)
    assert ours == theirs  # the same float operations, so bit-identical


def test_lambdalr_matches_torch():
    torch = pytest.importorskip("torch")
    fns = [lambda e: 0.95 ** e, lambda e: 1.0 / (1 + e)]
    ours = lr_sequence(lr_scheduler.LambdaLR(two_group_sgd(), fns), 20)
    theirs = lr_sequence(torch.optim.lr_scheduler.LambdaLR(torch_two_group_sgd(torch), fns), 20)
    assert ours == theirs
    single = lr_sequence(lr_scheduler.LambdaLR(two_group_sgd(), lambda e: 0.5 ** e), 3)
    assert single[3] == [0.1 * 0.125, 0.03 * 0.125]
    with pytest.raises(ValueError, match="Expected 2 lr_lambdas"):
        lr_scheduler.LambdaLR(two_group_sgd(), [lambda e: 1.0])


def test_scheduler_sets_optimizer_lr_and_initial_lr():
    opt = two_group_sgd()
    sched = lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    assert sched.base_lrs == [0.1, 0.03] and sched.last_epoch == 0
    assert [g["initial_lr"] for g in opt.param_groups] == [0.1, 0.03]
    sched.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr() == [0.05, 0.015]
    sched.step(epoch=6)  # closed form
    assert sched.get_last_lr() == [0.1 * 0.125, 0.03 * 0.125]


@pytest.mark.parametrize("warmup,decay", [(10, 50), (0, 20), (5, 6), (1, 1), (8, 3)])
def test_cosine_with_warmup_is_nanogpts_get_lr(warmup, decay):
    for it in range(70):
        if warmup == decay and it == warmup:  # nanoGPT divides by zero here; we return min_lr
            assert lr_scheduler.cosine_with_warmup(it, 6e-4, 6e-5, warmup, decay) == 6e-5
            continue
        assert lr_scheduler.cosine_with_warmup(it, 6e-4, 6e-5, warmup, decay) == \
            nanogpt_get_lr(it, 6e-4, 6e-5, warmup, decay), it


def test_cosine_with_warmup_landmarks():
    f = lambda it: lr_scheduler.cosine_with_warmup(it, 1.0, 0.1, 10, 110)  # noqa: E731
    assert f(0) == pytest.approx(1 / 11)
    assert f(10) == 1.0            # end of warmup: the peak
    assert f(60) == pytest.approx(0.55)  # halfway down the cosine
    assert f(110) == pytest.approx(0.1) and f(111) == 0.1 and f(10 ** 6) == 0.1


def test_cosine_warmup_scheduler_follows_the_function_per_group():
    opt = two_group_sgd((6e-4, 3e-4))
    sched = lr_scheduler.CosineWarmupLR(opt, warmup_iters=5, lr_decay_iters=40, min_lr=[6e-5, 3e-5])
    for it, lrs in enumerate(lr_sequence(sched, 50)):
        assert lrs == [nanogpt_get_lr(it, 6e-4, 6e-5, 5, 40), nanogpt_get_lr(it, 3e-4, 3e-5, 5, 40)]
    with pytest.raises(ValueError, match="Expected 2 min_lr"):
        lr_scheduler.CosineWarmupLR(two_group_sgd(), 5, 40, min_lr=[1e-5])


@pytest.mark.parametrize("make", [
    lambda opt: lr_scheduler.StepLR(opt, 3, 0.5),
    lambda opt: lr_scheduler.CosineWarmupLR(opt, 4, 20, 1e-3),
    lambda opt: lr_scheduler.LambdaLR(opt, lambda e: 0.9 ** e),
])
def test_scheduler_state_dict_round_trip(make):
    opt = two_group_sgd()
    sched = make(opt)
    lr_sequence(sched, 7)
    state = json.loads(json.dumps(sched.state_dict()))  # JSON-able, for checkpoints
    opt_sd = opt.state_dict()
    expected = lr_sequence(sched, 10)[1:]

    opt2 = two_group_sgd()
    sched2 = make(opt2)
    opt2.load_state_dict(opt_sd)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == 7
    assert lr_sequence(sched2, 10)[1:] == expected


def test_resuming_with_last_epoch_needs_initial_lr():
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(two_group_sgd(), 3, last_epoch=4)
    with pytest.raises(TypeError, match="is not an Optimizer"):
        lr_scheduler.StepLR(object(), 3)
