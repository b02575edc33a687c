"""An LSTM language model (Embedding -> multi-layer LSTM -> Linear), built only from ``tinyllm.nn``.

``logits, loss = model(idx, targets)`` works exactly like GPT's, so the same training loop, evaluation
and CLI drive it. Every batch starts from a zero state: on nanoGPT's random windows of ``block_size``
tokens that *is* truncated back-propagation through time with a window of ``block_size``. The final
(h, c) of each call is kept (detached) in ``model.last_state``, and ``forward(..., state=...)`` takes
one back, so a caller reading contiguous windows can carry the state across them. ``generate``
runs the shared decoding loop (``decoding.py``) on the carried (h, c).
"""
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..autograd import Tensor
from ..nn import functional as F
from .checks import token_ids
from .config import ConfigDict
from .decoding import decode, eval_mode


def lm_loss(logits, targets, name):
    """Mean next-token cross-entropy of logits (B, T, V) against targets (B, T); -1 targets are ignored.
    Shared by the recurrent and feed-forward baselines."""
    B, T, V = logits.shape
    t = targets.data if isinstance(targets, Tensor) else np.asarray(targets)
    if t.shape != (B, T):
        raise ValueError(f"{name}: targets must have the shape of idx {(B, T)}, got {t.shape}")
    return F.cross_entropy(logits.reshape(B * T, V), t.reshape(-1), ignore_index=-1)


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
@dataclass
class LSTMLMConfig(ConfigDict):
    vocab_size: int = 84
    n_embd: int = 128
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0
    tie_weights: bool = False


class LSTMLM(nn.Module):
    """``logits, loss = model(idx, targets=None, state=None)`` with idx of shape (B, T).

    Embedding (n_embd) -> dropout -> LSTM (num_layers x hidden_size, dropout between layers) -> dropout
    -> Linear to the vocabulary (Zaremba et al. 2014's layout). With ``tie_weights`` the output layer
    shares the embedding matrix (Press & Wolf 2017); when hidden_size != n_embd a bias-free Linear
    ``proj`` maps the LSTM output down to n_embd first, so tying works at any width.
    """

    def __init__(self, vocab_size, n_embd=128, hidden_size=256, num_layers=2, dropout=0.0, tie_weights=False):
        super().__init__()
        self.config = c = LSTMLMConfig(vocab_size, n_embd, hidden_size, num_layers, dropout, tie_weights)
        for name in ("vocab_size", "n_embd", "hidden_size", "num_layers"):
            if getattr(c, name) < 1:
                raise ValueError(f"LSTMLM: {name} must be positive, got {getattr(c, name)}")
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(n_embd, hidden_size, num_layers, dropout=dropout)  # time-major inside
        out_width = hidden_size
        if tie_weights and hidden_size != n_embd:
            self.proj = nn.Linear(hidden_size, n_embd, bias=False)
            out_width = n_embd
        self.lm_head = nn.Linear(out_width, vocab_size)
        # torch's default inits (N(0, 1) embeddings): Zaremba's U(-0.1, 0.1), made for SGD at lr 1, keeps
        # AdamW on the unigram plateau far longer (benchmarks/README, design notes).
        if tie_weights:
            self.lm_head.weight = self.wte.weight
        self.last_state = None

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None, state=None):
        ids = token_ids(idx, "LSTMLM", self.config.vocab_size)
        x = self.drop(self.wte(ids.T))  # (T, B, C): time-major, so the LSTM needs no transposes
        out, (h, c) = self.lstm(x, state)  # (T, B, H), and (L, B, H) twice
        self.last_state = (h.detach(), c.detach())
        out = self.drop(out)
        if "proj" in self._modules:
            out = self.proj(out)
        logits = self.lm_head(out).transpose(0, 1)  # (B, T, V)
        loss = lm_loss(logits, targets, "LSTMLM") if targets is not None else None
        return logits, loss

    # -- decoding: the shared loop in decoding.py drives these two -----------------------------
    def decode_step(self, ids, state):
        """Logits (N, V) of the token after ``ids`` (N, t) and the new (h, c); ``state`` None: a zero state."""
        logits, _ = self.forward(ids, state=state)
        return logits.data[:, -1], self.last_state

    @staticmethod
    def reorder_state(state, rows):
        """Keep, repeat or reorder the batch rows of (h, c), each (num_layers, N, hidden)."""
        h, c = state
        return h[:, rows], c[:, rows]

    def generate(self, input_ids, max_new_tokens=None, *, max_length=None, do_sample=False, temperature=1.0,
                 top_k=None, top_p=None, num_beams=1, no_repeat_ngram_size=0, num_return_sequences=1,
                 eos_token_id=None, pad_token_id=None, length_penalty=1.0, early_stopping=False, seed=None,
                 streamer=None):
        """The prompt plus new tokens: int64 (B * num_return_sequences, T_out), with ``tinyllm.generate``'s
        options (greedy, sampling, beam search). The prompt is read once, then one token per step on the
        carried (h, c): no length limit."""
        with eval_mode(self):
            return decode(self.decode_step, self.reorder_state, input_ids, None, max_new_tokens=max_new_tokens,
                          max_length=max_length, do_sample=do_sample, temperature=temperature, top_k=top_k,
                          top_p=top_p, num_beams=num_beams, no_repeat_ngram_size=no_repeat_ngram_size,
                          num_return_sequences=num_return_sequences, eos_token_id=eos_token_id,
                          pad_token_id=pad_token_id, length_penalty=length_penalty, early_stopping=early_stopping,
                          streamer=streamer, seed=seed,
                          vocab_size=self.config.vocab_size, name="LSTMLM.generate")
