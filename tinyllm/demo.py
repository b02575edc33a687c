"""A one-minute demo of the whole stack: a small neural language model (Bengio-style: embeddings of
the previous few characters -> tanh hidden layer -> softmax) trained with AdamW on a built-in text,
then sampled. It needs no download and exercises Tensor, autograd, nn, F and optim end to end."""
import time

import numpy as np

from . import backend, nn
from . import optim
from .autograd import no_grad
from .nn import functional as F

TEXT = (
    "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer the slings "
    "and arrows of outrageous fortune, or to take arms against a sea of troubles and by opposing end "
    "them. To die, to sleep; no more; and by a sleep to say we end the heart-ache and the thousand "
    "natural shocks that flesh is heir to: 'tis a consummation devoutly to be wish'd. To die, to "
    "sleep; to sleep, perchance to dream: ay, there's the rub, for in that sleep of death what dreams "
    "may come, when we have shuffled off this mortal coil, must give us pause. "
)


class ContextMLP(nn.Module):
    """Embeddings of the previous ``context`` tokens, concatenated, then tanh MLP, then logits."""

    def __init__(self, vocab_size, context=4, n_embd=24, n_hidden=128):
        super().__init__()
        self.context = context
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.hidden = nn.Linear(context * n_embd, n_hidden)
        self.head = nn.Linear(n_hidden, vocab_size)

    def forward(self, idx):  # idx (B, context) -> logits (B, vocab)
        B = idx.shape[0]
        x = self.wte(idx).reshape(B, -1)  # (B, context * n_embd)
        return self.head(self.hidden(x).tanh())


def run(iters=1500, batch_size=64, lr=3e-3, seed=1337, sample_len=200, log=print):
    backend.manual_seed(seed)
    chars = sorted(set(TEXT))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in TEXT], dtype=np.int64)
    model = ContextMLP(len(chars))
    opt = optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    ctx = model.context
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for it in range(iters + 1):
        ix = rng.integers(0, len(data) - ctx, batch_size)
        x = np.stack([data[i:i + ctx] for i in ix])
        y = data[ix + ctx]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if it % 250 == 0:
            log(f"iter {it:5d}  loss {loss.item():.4f}")
    log(f"trained {iters} iterations in {time.perf_counter() - t0:.1f} s")
    out = list(data[:ctx])
    with no_grad():
        for _ in range(sample_len):
            probs = F.softmax(model(np.array([out[-ctx:]])), dim=-1).numpy()[0].astype(np.float64)
            out.append(int(rng.choice(len(chars), p=probs / probs.sum())))
    sample = "".join(chars[i] for i in out)
    log("sample: " + sample)
    return loss.item(), sample
