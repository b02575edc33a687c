"""Golden training trajectories (llm.c's test_gpt2 idea): one small pre-norm transformer block with
an MLP head, built identically in tinyllm and torch, the same float64 weights and data, ten
optimizer steps; the loss at every step, the gradient norms and the final weights must agree."""
import numpy as np
import pytest

import tinyllm as tl
import tinyllm.nn.functional as F
from tinyllm import nn, optim
from tinyllm.nn.utils import clip_grad_norm_

from helpers import GOLDEN_B as B, GOLDEN_C as C, GOLDEN_N_CLASS as N_CLASS, GOLDEN_T as T, make_block_class

torch = pytest.importorskip("torch")
TF = torch.nn.functional

STEPS = 10


OurBlock, TorchBlock = make_block_class(nn, F), make_block_class(torch.nn, TF)


def make_pair(seed=0):
    torch.manual_seed(seed)
    theirs = TorchBlock().double()
    ours = OurBlock().to(np.float64)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    assert list(ours.state_dict()) == list(theirs.state_dict())
    return ours, theirs


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, T, C)), rng.integers(0, N_CLASS, B)


OPTIMIZERS = {  # name -> (tinyllm factory, torch factory, clip)
    "adamw": (lambda p: optim.AdamW(p, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1),
              lambda p: torch.optim.AdamW(p, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1), 1.0),
    "sgd": (lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), None),
    "sgd_clipped": (lambda p: optim.SGD(p, lr=0.1, momentum=0.9),
                    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), 0.5),
    "adagrad": (lambda p: optim.Adagrad(p, lr=0.1), lambda p: torch.optim.Adagrad(p, lr=0.1), None),
}


def test_forward_and_gradients_match_before_training():
    ours, theirs = make_pair()
    x, y = data()
    loss = F.cross_entropy(ours(tl.tensor(x)), y)
    loss_t = TF.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y))
    np.testing.assert_allclose(loss.item(), loss_t.item(), rtol=1e-12)
    loss.backward()
    loss_t.backward()
    theirs_grads = {n: p.grad.numpy() for n, p in theirs.named_parameters()}
    assert [n for n, _ in ours.named_parameters()] == list(theirs_grads)
    for name, p in ours.named_parameters():
        assert p.grad is not None and np.abs(p.grad).max() > 0, name
        np.testing.assert_allclose(p.grad, theirs_grads[name], rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_training_trajectory_matches_torch(name):
    make_ours, make_theirs, clip = OPTIMIZERS[name]
    ours, theirs = make_pair(seed=1)
    x, y = data(seed=2)
    x_t, y_t = torch.tensor(x), torch.tensor(y)
    opt, opt_t = make_ours(ours.parameters()), make_theirs(theirs.parameters())
    losses, losses_t, clipped = [], [], 0
    for _ in range(STEPS):
        opt.zero_grad()
        opt_t.zero_grad()
        loss = F.cross_entropy(ours(tl.tensor(x)), y)
        loss_t = TF.cross_entropy(theirs(x_t), y_t)
        loss.backward()
        loss_t.backward()
        if clip is not None:
            norm = clip_grad_norm_(ours.parameters(), clip)
            norm_t = torch.nn.utils.clip_grad_norm_(theirs.parameters(), clip)
            np.testing.assert_allclose(norm.item(), norm_t.item(), rtol=1e-9)
            clipped += norm.item() > clip
        opt.step()
        opt_t.step()
        losses.append(loss.item())
        losses_t.append(loss_t.item())

    np.testing.assert_allclose(losses, losses_t, rtol=1e-6)  # the requirement; in practice ~1e-13
    np.testing.assert_allclose(losses, losses_t, rtol=1e-10)
    assert losses[-1] < losses[0]  # it trained: a run that changes nothing cannot pass by accident
    if clip is not None:
        assert clipped > 0  # the clip was active at least once
    final_t = dict(theirs.named_parameters())
    for pname, p in ours.named_parameters():
        ref = final_t[pname].detach().numpy()
        np.testing.assert_allclose(p.data, ref, rtol=1e-8, atol=1e-10, err_msg=pname)
    initial = dict(make_pair(seed=1)[1].named_parameters())
    assert all(not np.allclose(p.data, initial[n].detach().numpy()) for n, p in ours.named_parameters())
