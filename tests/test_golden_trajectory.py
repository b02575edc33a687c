"""Golden training trajectories (llm.c's test_gpt2 idea): one small pre-norm transformer block with
an MLP head, built identically in tinyllm and torch, the same float64 weights and data, ten
optimizer steps; the loss at every step, the gradient norms and the final weights must agree."""
import numpy as np
import pytest

import tinyllm as tl
import tinyllm.nn.functional as F
from tinyllm import nn, optim
from tinyllm.nn.utils import clip_grad_norm_

torch = pytest.importorskip("torch")
TF = torch.nn.functional

B, T, C, N_HEAD, N_CLASS, STEPS = 3, 5, 8, 2, 4, 10


def make_block_class(nn_, F_):
    """The same model class over either library (``nn_``/``F_`` = tinyllm's or torch's)."""

    class Block(nn_.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn_.LayerNorm(C)
            # no key bias: it adds the same q.b_k to every score of a row, so softmax ignores it and
            # its gradient is rounding noise (~1e-17), which Adagrad would blow up to ~1e-7 steps
            self.q, self.k, self.v = nn_.Linear(C, C), nn_.Linear(C, C, bias=False), nn_.Linear(C, C)
            self.c_proj = nn_.Linear(C, C)
            self.ln_2 = nn_.LayerNorm(C)
            self.mlp = nn_.Sequential(nn_.Linear(C, 4 * C), nn_.GELU(), nn_.Linear(4 * C, C))
            self.head = nn_.Linear(C, N_CLASS)

        def forward(self, x):
            Bx, Tx, Cx = x.shape
            h = self.ln_1(x)
            hs = Cx // N_HEAD
            q = self.q(h).reshape(Bx, Tx, N_HEAD, hs).transpose(1, 2)  # (B, H, T, hs)
            k = self.k(h).reshape(Bx, Tx, N_HEAD, hs).transpose(1, 2)
            v = self.v(h).reshape(Bx, Tx, N_HEAD, hs).transpose(1, 2)
            y = F_.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hs)
            y = y.transpose(1, 2).reshape(Bx, Tx, Cx)  # (B, T, C)
            x = x + self.c_proj(y)
            x = x + self.mlp(self.ln_2(x))
            return self.head(x.mean(1))  # (B, N_CLASS)

    return Block


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
