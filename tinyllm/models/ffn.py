"""Bengio et al. (2003)'s feed-forward neural language model, built only from ``tinyllm.nn``.

The next token is predicted from the previous ``context`` tokens only: their embeddings are
concatenated, go through one tanh hidden layer, then a softmax over the vocabulary:

    y = lm_head(tanh(hidden([C(w_{t-n+1}), ..., C(w_t)])))

``logits, loss = model(idx, targets)`` scores every position of a (B, T) window at once, like GPT.
Positions with fewer than ``context - 1`` tokens before them in the window are padded on the left with
a dedicated PAD token whose id is ``vocab_size`` (an extra embedding row that no real token uses), so
padding never pretends to be text. (Bengio's optional direct input-to-output connections are left
out, as in most re-implementations.)
"""
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..autograd import cat
from .checks import token_ids
from .config import ConfigDict
from .decoding import decode, eval_mode
from .lstm_lm import lm_loss


@dataclass
class FeedForwardLMConfig(ConfigDict):
    vocab_size: int = 84
    context: int = 8
    n_embd: int = 64
    hidden: int = 512
    dropout: float = 0.0


class FeedForwardLM(nn.Module):
    """``logits, loss = model(idx, targets=None)``: position t sees tokens t-context+1 .. t of idx."""

    def __init__(self, vocab_size, context=8, n_embd=64, hidden=512, dropout=0.0):
        super().__init__()
        self.config = c = FeedForwardLMConfig(vocab_size, context, n_embd, hidden, dropout)
        for name in ("vocab_size", "context", "n_embd", "hidden"):
            if getattr(c, name) < 1:
                raise ValueError(f"FeedForwardLM: {name} must be positive, got {getattr(c, name)}")
        self.pad_id = vocab_size
        self.wte = nn.Embedding(vocab_size + 1, n_embd)  # row vocab_size is PAD
        self.hidden = nn.Linear(context * n_embd, hidden)
        self.drop = nn.Dropout(dropout)
        self.lm_head = nn.Linear(hidden, vocab_size)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None):
        ids = token_ids(idx, "FeedForwardLM", self.config.vocab_size)
        B, T = ids.shape
        n = self.config.context
        padded = np.concatenate([np.full((B, n - 1), self.pad_id, dtype=ids.dtype), ids], axis=1)  # (B, T+n-1)
        e = self.wte(padded)  # (B, T+n-1, C): each token embedded once
        # window of position t = padded[t .. t+n-1] (oldest first); concatenated: (B, T, n*C)
        x = cat([e[:, j:j + T] for j in range(n)], dim=-1) if n > 1 else e
        h = self.drop(self.hidden(x).tanh())  # (B, T, hidden)
        logits = self.lm_head(h)  # (B, T, V)
        loss = lm_loss(logits, targets, "FeedForwardLM") if targets is not None else None
        return logits, loss

    # -- decoding: the shared loop in decoding.py drives these two -----------------------------
    def decode_step(self, ids, state):
        """Logits (N, V) of the token after ``ids`` (N, t); the state is the last ``context`` tokens so far."""
        seen = ids if state is None else np.concatenate([state, ids], axis=1)
        logits, _ = self.forward(seen[:, -self.config.context:])
        return logits.data[:, -1], seen[:, -self.config.context:]

    @staticmethod
    def reorder_state(state, rows):
        return state[rows]

    def generate(self, input_ids, max_new_tokens=None, *, max_length=None, do_sample=False, temperature=1.0,
                 top_k=None, top_p=None, num_beams=1, no_repeat_ngram_size=0, num_return_sequences=1,
                 eos_token_id=None, pad_token_id=None, length_penalty=1.0, early_stopping=False, seed=None,
                 streamer=None):
        """The prompt plus new tokens: int64 (B * num_return_sequences, T_out), with ``tinyllm.generate``'s
        options (greedy, sampling, beam search)."""
        with eval_mode(self):
            return decode(self.decode_step, self.reorder_state, input_ids, None, max_new_tokens=max_new_tokens,
                          max_length=max_length, do_sample=do_sample, temperature=temperature, top_k=top_k,
                          top_p=top_p, num_beams=num_beams, no_repeat_ngram_size=no_repeat_ngram_size,
                          num_return_sequences=num_return_sequences, eos_token_id=eos_token_id,
                          pad_token_id=pad_token_id, length_penalty=length_penalty, early_stopping=early_stopping,
                          streamer=streamer, seed=seed,
                          vocab_size=self.config.vocab_size, name="FeedForwardLM.generate")
