"""An LSTM language model (Embedding -> multi-layer LSTM -> Linear), built only from ``tinyllm.nn``.

``logits, loss = model(idx, targets)`` works exactly like GPT's, so the same training loop, evaluation
and CLI drive it. Every batch starts from a zero state: on nanoGPT's random windows of ``block_size``
tokens that *is* truncated back-propagation through time with a window of ``block_size``. The final
(h, c) of each call is kept (detached) in ``model.last_state``, and ``forward(..., state=...)`` takes
one back, so a caller reading contiguous windows can carry the state across them.

This file also holds the few helpers the recurrent baselines share (token-id checks, the loss, and a
step-wise sampling loop with ``generate``'s argument names).
"""
from dataclasses import dataclass

import numpy as np

from .. import backend, nn
from ..autograd import Tensor, no_grad
from ..nn import functional as F
from .config import ConfigDict


# ---------------------------------------------------------------------------------------------
# helpers shared by the baselines
# ---------------------------------------------------------------------------------------------
def token_ids(idx, vocab_size, name):
    """``idx`` as a (B, T) integer NumPy array, checked against the vocabulary."""
    ids = idx.data if isinstance(idx, Tensor) else np.asarray(idx)
    if ids.ndim != 2:
        raise ValueError(f"{name}: idx must have shape (B, T), got {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise ValueError(f"{name}: idx must hold integer token ids, got dtype {ids.dtype}")
    if ids.shape[1] == 0:
        raise ValueError(f"{name}: idx is empty (T = 0)")
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids.min() if ids.min() < 0 else ids.max()
        raise ValueError(f"{name}: token id {int(bad)} is outside the vocabulary (size {vocab_size})")
    return ids


def lm_loss(logits, targets, name):
    """Mean next-token cross-entropy of logits (B, T, V) against targets (B, T); -1 targets are ignored."""
    B, T, V = logits.shape
    t = targets.data if isinstance(targets, Tensor) else np.asarray(targets)
    if t.shape != (B, T):
        raise ValueError(f"{name}: targets must have the shape of idx {(B, T)}, got {t.shape}")
    return F.cross_entropy(logits.reshape(B * T, V), t.reshape(-1), ignore_index=-1)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sample_loop(step, input_ids, max_new_tokens=None, max_length=None, do_sample=False, temperature=1.0,
                top_k=None, top_p=None, num_beams=1, no_repeat_ngram_size=0, eos_token_id=None,
                pad_token_id=None, seed=None, name="generate", **unsupported):
    """Greedy or sampled decoding with ``tinyllm.generate``'s argument names and warpers (HF order:
    no-repeat-ngram, then temperature, top-k, top-p), for models that step a recurrent state.

    ``step(new_ids (N, t), state) -> (last-position logits (N, V), state)``; the first call gets the
    whole prompt and ``state=None``. Returns int64 (N, T + new): the prompt and the new tokens. Rows
    that emit ``eos_token_id`` are padded with ``pad_token_id`` (default: that eos id) afterwards.
    Beam search is GPT-only (``tinyllm.generate``); ``num_beams > 1`` is an error here.
    """
    from ..generate import no_repeat_ngram, temperature_warp, top_k_filter, top_p_filter
    if unsupported:
        raise TypeError(f"{name}: unsupported argument(s) {sorted(unsupported)}")
    if num_beams != 1:
        raise ValueError(f"{name}: beam search is implemented for GPT only (tinyllm.generate); got num_beams={num_beams}")
    ids = input_ids.data if isinstance(input_ids, Tensor) else np.asarray(input_ids)
    ids = ids[None, :] if ids.ndim == 1 else ids
    if ids.ndim != 2 or ids.dtype.kind not in "iu" or ids.shape[1] == 0:
        raise ValueError(f"{name}: input_ids must be a non-empty (B, T) or (T,) integer array, got "
                         f"shape {ids.shape} and dtype {ids.dtype}")
    T = ids.shape[1]
    n_new = max_new_tokens if max_new_tokens is not None else (max_length - T if max_length is not None else 20)
    if int(n_new) != n_new or n_new < 1:
        raise ValueError(f"{name}: asks for {n_new} new tokens (max_new_tokens={max_new_tokens}, "
                         f"max_length={max_length}, prompt of {T}); need at least 1")
    if do_sample and not temperature > 0:
        raise ValueError(f"{name}: temperature must be > 0 when sampling, got {temperature!r}")
    rng = np.random.default_rng(seed) if seed is not None else backend.rng()
    eos = None if eos_token_id is None else np.atleast_1d(np.asarray(eos_token_id, dtype=np.int64))
    pad = int(eos[0]) if pad_token_id is None and eos is not None else pad_token_id
    out = np.empty((ids.shape[0], T + int(n_new)), dtype=np.int64)
    out[:, :T] = ids
    unfinished = np.ones(ids.shape[0], dtype=bool)
    with no_grad():
        logits, state = step(ids.astype(np.int64), None)
        for cur in range(T, out.shape[1]):
            scores = np.asarray(logits, dtype=np.float32)
            if no_repeat_ngram_size:
                scores = no_repeat_ngram(out[:, :cur], scores, no_repeat_ngram_size)
            if do_sample:
                if temperature != 1.0:
                    scores = temperature_warp(scores, temperature)
                if top_k:
                    scores = top_k_filter(scores, top_k)
                if top_p is not None and top_p < 1.0:
                    scores = top_p_filter(scores, top_p)
                cdf = np.cumsum(_softmax(scores.astype(np.float64)), axis=-1)
                u = rng.random(len(cdf)) * cdf[:, -1]
                nxt = np.minimum((cdf <= u[:, None]).sum(axis=-1), scores.shape[-1] - 1)
            else:
                nxt = scores.argmax(axis=-1)
            if eos is not None:
                nxt = np.where(unfinished, nxt, pad)
                unfinished &= ~np.isin(nxt, eos)
            out[:, cur] = nxt
            if cur + 1 == out.shape[1] or (eos is not None and not unfinished.any()):
                return out[:, :cur + 1]
            logits, state = step(nxt[:, None].astype(np.int64), state)
    return out


def run_in_eval_mode(model, fn):
    """Call ``fn()`` with ``model`` in eval mode, then restore every submodule's mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        return fn()
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)


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
        # torch's default inits (N(0, 1) embeddings). Zaremba's U(-0.1, 0.1), made for SGD at lr 1, kept
        # AdamW 1e-3 on the unigram plateau (~3.3 nats) for hundreds of steps on Shakespeare: at step 300
        # of a 2 x 64 model the loss was 3.31 tied / 3.16 untied, against 2.43 / 2.83 with N(0, 1).
        if tie_weights:
            self.lm_head.weight = self.wte.weight
        self.last_state = None

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None, state=None):
        ids = token_ids(idx, self.config.vocab_size, "LSTMLM")
        x = self.drop(self.wte(ids.T))  # (T, B, C): time-major, so the LSTM needs no transposes
        out, (h, c) = self.lstm(x, state)  # (T, B, H), and (L, B, H) twice
        self.last_state = (h.detach(), c.detach())
        out = self.drop(out)
        if "proj" in self._modules:
            out = self.proj(out)
        logits = self.lm_head(out).transpose(0, 1)  # (B, T, V)
        loss = lm_loss(logits, targets, "LSTMLM") if targets is not None else None
        return logits, loss

    def step(self, ids, state):
        """Logits of the last position (N, V) and the new state, for decoding."""
        logits, _ = self.forward(ids, state=state)
        return logits.data[:, -1], self.last_state

    def generate(self, input_ids, max_new_tokens=None, do_sample=False, temperature=1.0, top_k=None, top_p=None,
                 seed=None, **kwargs):
        """The prompt plus new tokens (int64 (B, T + new)), ``tinyllm.generate``'s argument names.

        The prompt is read once, then one token per step on the carried (h, c): no length limit."""
        return run_in_eval_mode(self, lambda: sample_loop(
            self.step, input_ids, max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k,
            top_p=top_p, seed=seed, name="LSTMLM.generate", **kwargs))
