"""A text VAE (Bowman et al. 2016, "Generating Sentences from a Continuous Space"), built only from
``tinyllm.nn``.

    encoder:  LSTM over the window's embeddings; its last hidden state -> Linear -> (mu, log sigma^2)
    z = mu + sigma * eps,  eps ~ N(0, I)                              (the reparameterisation trick)
    decoder:  LSTM whose initial h is tanh(Linear(z)) and whose input at every step is
              [embedding of the previous token ; z]; then Linear to the vocabulary

It trains on the same (B, T) windows as GPT: the encoder reads x, the decoder reads x (teacher forcing)
and predicts y = x shifted by one. The loss is the negative ELBO per token,

    loss = recon + kl_weight * KL / T,   recon = mean_t -log p(y_t | y_<t, z),
    KL = KL(q(z|x) || N(0, I)) = 1/2 sum(mu^2 + sigma^2 - 1 - log sigma^2)   (per window, in nats)

and ``model.last_stats`` holds ``recon`` and ``kl`` (per token, unweighted) of the last call.
Bowman's two tricks against posterior collapse are both here:

- KL annealing: in training, kl_weight rises linearly from 0 to 1 over ``kl_anneal_iters`` training
  steps. The model counts its own steps (one per training-mode forward with targets) in the
  persistent buffer ``kl_step``, so checkpoints and resume carry the schedule; ``set_kl_weight(w)``
  pins a weight instead (``None`` goes back to the schedule). In eval mode the weight is always 1, so
  validation losses are the true bound.
- word dropout: in training, each decoder input token is replaced, with probability
  ``word_dropout``, by a dedicated UNK token (id ``vocab_size``, an extra embedding row no real token
  uses), so the decoder must lean on z. The encoder always sees the real tokens. UNK is also the
  start token when decoding from z alone (``sample_prior``).

The bound. -ELBO >= -log p(y | x_0): it is an upper bound on the loss per token that GPT and the
LSTM report. In eval mode eps is a fixed draw (seed 0), so evaluation is deterministic and still an
unbiased one-sample estimate of the bound. ``model(idx)`` without targets returns logits with one
extra column, a "KL sink" holding probability 1 - exp(-KL/T) at every position (the real tokens'
probabilities are scaled by exp(-KL/T)); any per-token cross-entropy on those logits, e.g.
``tinyllm.metrics.evaluate_lm`` and ``python -m tinyllm eval``, therefore reports exactly
recon + KL/T: the negative ELBO per token, not the reconstruction loss alone (the encoder has seen
the targets, so reconstruction alone would be no bound at all). Its argmax accuracy counts the sink
as a wrong guess.
"""
from dataclasses import dataclass

import numpy as np

from .. import backend, nn
from ..autograd import Tensor, cat, no_grad
from ..nn import functional as F
from .checks import token_ids
from .config import ConfigDict
from .decoding import decode, eval_mode
from .lstm_lm import lm_loss


@dataclass
class TextVAEConfig(ConfigDict):
    vocab_size: int = 84
    n_embd: int = 64
    hidden_size: int = 256
    latent_size: int = 32
    num_layers: int = 1
    word_dropout: float = 0.25
    kl_anneal_iters: int = 1000
    dropout: float = 0.0


class TextVAE(nn.Module):
    """``logits, loss = model(idx, targets)``; loss is the negative ELBO per token (see the module doc)."""

    EVAL_SEED = 0

    def __init__(self, vocab_size, n_embd=64, hidden_size=256, latent_size=32, num_layers=1, word_dropout=0.25,
                 kl_anneal_iters=1000, dropout=0.0):
        super().__init__()
        self.config = c = TextVAEConfig(vocab_size, n_embd, hidden_size, latent_size, num_layers, word_dropout,
                                        kl_anneal_iters, dropout)
        for name in ("vocab_size", "n_embd", "hidden_size", "latent_size", "num_layers"):
            if getattr(c, name) < 1:
                raise ValueError(f"TextVAE: {name} must be positive, got {getattr(c, name)}")
        if not 0.0 <= word_dropout <= 1.0:
            raise ValueError(f"TextVAE: word_dropout must be in [0, 1], got {word_dropout}")
        self.unk_id = vocab_size
        self.wte = nn.Embedding(vocab_size + 1, n_embd)  # row vocab_size is UNK (word dropout, start token)
        self.encoder = nn.LSTM(n_embd, hidden_size, num_layers, dropout=dropout)
        self.to_latent = nn.Linear(hidden_size, 2 * latent_size)  # -> [mu ; log sigma^2]
        self.latent_to_state = nn.Linear(latent_size, num_layers * hidden_size)  # -> decoder h_0 of each layer
        self.decoder = nn.LSTM(n_embd + latent_size, hidden_size, num_layers, dropout=dropout)
        self.lm_head = nn.Linear(hidden_size, vocab_size)
        # torch's default inits (N(0, 1) embeddings): faster than U(-0.1, 0.1) with AdamW (see lstm_lm.py)
        self.register_buffer("kl_step", Tensor(np.zeros(1, dtype=np.int64)))
        self._kl_weight = None
        self.last_stats = None

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    # -- KL annealing ---------------------------------------------------------------------------
    def set_kl_weight(self, weight):
        """Pin the training KL weight (``None``: back to the linear schedule over kl_anneal_iters)."""
        self._kl_weight = None if weight is None else float(weight)

    def kl_weight(self):
        if not self.training:
            return 1.0
        if self._kl_weight is not None:
            return self._kl_weight
        n = self.config.kl_anneal_iters
        return 1.0 if n <= 0 else min(1.0, int(self.kl_step.data[0]) / n)

    # -- the pieces -----------------------------------------------------------------------------
    def encode(self, idx):
        """(mu, logvar), each (B, latent), of q(z | idx)."""
        ids = token_ids(idx, "TextVAE", self.config.vocab_size)
        _, (h, _) = self.encoder(self.wte(ids.T))  # h: (L, B, H)
        stats = self.to_latent(h[-1])  # (B, 2 * latent)
        k = self.config.latent_size
        return stats[:, :k], stats[:, k:]

    def initial_state(self, z):
        """Decoder (h_0, c_0) from z: h_0 = tanh(Linear(z)) per layer, c_0 = 0."""
        B, L, H = z.shape[0], self.config.num_layers, self.config.hidden_size
        h0 = self.latent_to_state(z).tanh().reshape(B, L, H).transpose(0, 1)  # (L, B, H)
        return h0, np.zeros((L, B, H), dtype=z.dtype)

    def decode(self, z, ids, state=None):
        """Logits (B, T, V) of the token after each of ``ids`` (B, T), given z, and the new state."""
        T, B = ids.shape[1], ids.shape[0]
        emb = self.wte(ids.T)  # (T, B, C)
        zz = z.unsqueeze(0).expand(T, B, z.shape[1])  # (T, B, latent): z is fed at every step
        out, state = self.decoder(cat([emb, zz], dim=-1), self.initial_state(z) if state is None else state)
        return self.lm_head(out).transpose(0, 1), state  # (B, T, V)

    def _word_dropout(self, ids):
        p = self.config.word_dropout
        if not self.training or p == 0:
            return ids
        return np.where(backend.rng().random(ids.shape) < p, self.unk_id, ids)

    def _eps(self, shape, dtype):
        rng = backend.rng() if self.training else np.random.default_rng(self.EVAL_SEED)
        return rng.standard_normal(shape).astype(dtype)

    # -- forward: the negative ELBO per token ----------------------------------------------------
    def forward(self, idx, targets=None, eps=None):
        """``logits, loss``. ``eps`` (B, latent) fixes the reparameterisation noise (for gradchecks)."""
        ids = token_ids(idx, "TextVAE", self.config.vocab_size)
        B, T = ids.shape
        mu, logvar = self.encode(ids)
        eps = self._eps(mu.shape, mu.dtype) if eps is None else (eps.data if isinstance(eps, Tensor) else eps)
        z = mu + (logvar * 0.5).exp() * Tensor(np.asarray(eps, dtype=mu.dtype))  # (B, latent)
        logits, _ = self.decode(z, self._word_dropout(ids))  # (B, T, V)
        kl = ((mu * mu + logvar.exp() - 1.0 - logvar) * 0.5).sum(dim=1)  # (B,) nats per window
        kl_tok = kl.sum() * (1.0 / (B * T))
        if targets is None:
            self.last_stats = {"kl": kl_tok.item()}
            return self._with_kl_sink(logits, kl * (1.0 / T)), None
        recon = lm_loss(logits, targets, "TextVAE")
        w = self.kl_weight()
        loss = recon + kl_tok * w
        self.last_stats = {"recon": recon.item(), "kl": kl_tok.item(), "kl_weight": w}
        if self.training:
            self.kl_step.data += 1
        return logits, loss

    @staticmethod
    def _with_kl_sink(logits, k):
        """[log p(v|z) - k, log(1 - exp(-k))] per position: normalised log-probabilities over V + 1
        outcomes whose cross-entropy on a real token is -log p(y|z) + k (k = KL / T of that row)."""
        k = k.reshape(-1, 1, 1)  # (B, 1, 1)
        logp = F.log_softmax(logits, dim=-1) - k  # (B, T, V)
        kd = np.maximum(k.data, 1e-12)  # log(0) would be -inf, and 0 * -inf is nan in a cross-entropy
        sink = Tensor(np.broadcast_to(np.log(-np.expm1(-kd)), logits.shape[:2] + (1,)).astype(logits.dtype))
        return cat([logp, sink], dim=-1)  # (B, T, V + 1)

    # -- decoding: the shared loop in decoding.py drives these two -----------------------------
    def decode_step(self, ids, state):
        """Logits (N, V) of the token after ``ids`` (N, t); the state is (z, the decoder's (h, c) or None)."""
        z, lstm_state = state
        logits, lstm_state = self.decode(z, ids, lstm_state)
        return logits.data[:, -1], (z, lstm_state)

    @staticmethod
    def reorder_state(state, rows):
        """Keep, repeat or reorder the batch rows of z (N, latent) and of (h, c), each (num_layers, N, hidden)."""
        z, lstm_state = state
        return z[rows], None if lstm_state is None else tuple(s[:, rows] for s in lstm_state)

    # -- sampling, reconstruction, interpolation ------------------------------------------------
    def _decode_from(self, z, first, length, do_sample=False, temperature=1.0, seed=None):
        """Tokens (N, length) decoded from latent codes z (N, latent) after the start tokens ``first`` (N,)."""
        z = Tensor(np.asarray(z.data if isinstance(z, Tensor) else z, dtype=self.lm_head.weight.dtype))
        first = np.asarray(first, dtype=np.int64)[:, None]  # may be UNK, outside the vocabulary
        out = decode(self.decode_step, self.reorder_state, first, (z, None), max_new_tokens=length,
                     do_sample=do_sample, temperature=temperature, seed=seed, name="TextVAE")
        return out[:, 1:]

    def sample_prior(self, n, length, seed=None, temperature=1.0, do_sample=True):
        """n sequences of ``length`` tokens from z ~ N(0, I), each decoded after the UNK start token."""
        rng = np.random.default_rng(seed) if seed is not None else backend.rng()
        z = rng.standard_normal((n, self.config.latent_size))
        with eval_mode(self):
            return self._decode_from(z, np.full(n, self.unk_id), length, do_sample, temperature,
                                     seed=None if seed is None else seed + 1)

    def reconstruct(self, idx):
        """Greedy decoding from z = mu(idx): (B, T) tokens, the first copied from idx (the decoder
        always starts from the window's first token, as in training)."""
        ids = token_ids(idx, "TextVAE", self.config.vocab_size)
        with eval_mode(self):
            with no_grad():
                mu, _ = self.encode(ids)
            rest = self._decode_from(mu, ids[:, 0], ids.shape[1] - 1) if ids.shape[1] > 1 else ids[:, :0]
            return np.concatenate([ids[:, :1].astype(np.int64), rest], axis=1)

    def interpolate(self, idx_a, idx_b, steps=5):
        """Greedy decodings (steps, T) along the line from mu(a) to mu(b), all from a's first token."""
        a = np.asarray(idx_a.data if isinstance(idx_a, Tensor) else idx_a).reshape(1, -1)
        b = np.asarray(idx_b.data if isinstance(idx_b, Tensor) else idx_b).reshape(1, -1)
        with eval_mode(self):
            with no_grad():
                za, zb = self.encode(a)[0].data, self.encode(b)[0].data
            alpha = np.linspace(0.0, 1.0, steps)[:, None]
            z = (1 - alpha) * za + alpha * zb  # (steps, latent)
            rest = self._decode_from(z, np.full(steps, a[0, 0]), a.shape[1] - 1) if a.shape[1] > 1 \
                else np.zeros((steps, 0), dtype=np.int64)
            return np.concatenate([np.full((steps, 1), a[0, 0], dtype=np.int64), rest], axis=1)

    def generate(self, input_ids, max_new_tokens=None, *, max_length=None, do_sample=False, temperature=1.0,
                 top_k=None, top_p=None, num_beams=1, no_repeat_ngram_size=0, num_return_sequences=1,
                 eos_token_id=None, pad_token_id=None, length_penalty=1.0, early_stopping=False, seed=None,
                 streamer=None):
        """Continue the prompt from one z ~ N(0, I) per row (seeded): int64 (B * num_return_sequences, T_out),
        with ``tinyllm.generate``'s options (greedy, sampling, beam search)."""
        ids = token_ids(input_ids, "TextVAE.generate", self.config.vocab_size, what="input_ids", one_row=True)
        rng = np.random.default_rng(seed) if seed is not None else backend.rng()
        z = Tensor(rng.standard_normal((ids.shape[0], self.config.latent_size)).astype(self.lm_head.weight.dtype))
        with eval_mode(self):
            return decode(self.decode_step, self.reorder_state, ids, (z, None), max_new_tokens=max_new_tokens,
                          max_length=max_length, do_sample=do_sample, temperature=temperature, top_k=top_k,
                          top_p=top_p, num_beams=num_beams, no_repeat_ngram_size=no_repeat_ngram_size,
                          num_return_sequences=num_return_sequences, eos_token_id=eos_token_id,
                          pad_token_id=pad_token_id, length_penalty=length_penalty, early_stopping=early_stopping,
                          streamer=streamer,
                          seed=None if seed is None else seed + 1, vocab_size=self.config.vocab_size,
                          name="TextVAE.generate")
