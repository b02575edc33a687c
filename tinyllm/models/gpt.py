"""A GPT-2-style decoder-only Transformer, built only from ``tinyllm.nn``.

Pre-norm blocks (LayerNorm -> causal self-attention -> residual, LayerNorm -> GELU MLP -> residual),
a final LayerNorm and an lm_head tied to the token embedding. Parameter names are GPT-2's, so Hugging
Face checkpoints load with ``GPT.from_pretrained(dir)``. ``generate`` runs the shared loop of ``decoding.py``
on the KV cache.
"""
import json
import math
import os
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..autograd import Tensor, no_grad
from ..backend import default_dtype
from ..nn import functional as F
from .checks import token_ids
from .config import ConfigDict
from .decoding import decode, eval_mode


@dataclass
class GPTConfig(ConfigDict):
    vocab_size: int = 84
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    pos_encoding: str = "learned"  # or 'sinusoidal' ("Attention Is All You Need")
    tie_weights: bool = True
    activation: str = "gelu"  # or 'gelu_tanh' (GPT-2's "gelu_new")
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.pos_encoding not in ("learned", "sinusoidal"):
            raise ValueError(f"GPTConfig: pos_encoding must be 'learned' or 'sinusoidal', got {self.pos_encoding!r}")
        if self.activation not in ("gelu", "gelu_tanh"):
            raise ValueError(f"GPTConfig: activation must be 'gelu' or 'gelu_tanh', got {self.activation!r}")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPTConfig: {name} must be positive, got {getattr(self, name)}")


def sinusoidal_positions(n_positions, dim):
    """PE[pos, 2i] = sin(pos / 10000^(2i/dim)), PE[pos, 2i+1] = cos(...)   (Vaswani et al. 2017)."""
    pos = np.arange(n_positions)[:, None]
    freq = np.exp(-math.log(10000.0) * np.arange(0, dim, 2) / dim)  # (dim/2,)
    pe = np.zeros((n_positions, dim))
    pe[:, 0::2] = np.sin(pos * freq)
    pe[:, 1::2] = np.cos(pos * freq[: dim // 2])
    return pe


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cache=None, output_attentions=False):
        B, T, C = x.shape
        hs = C // self.n_head
        qkv = self.c_attn(x).reshape(B, T, 3, self.n_head, hs).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, nh, T, hs); 5 ops, where split + reshape + transpose took 9
        mask, causal = None, True
        if cache is not None:  # generation: prepend the cached keys/values of earlier positions
            past = len(cache)
            k, v = cache.append(k, v)  # (B, nh, past + T, hs)
            if past:
                causal = False
                if T > 1:  # query i sits at position past + i and may see keys 0 .. past + i
                    mask = np.arange(past + T)[None, :] <= (past + np.arange(T))[:, None]  # (T, past+T)
                # T == 1 (a decode step): the one query sees every key, so no mask at all
        p = self.dropout if self.training else 0.0
        if output_attentions and p > 0.0:
            # SDPA's own dropout path, written out so the dropped probabilities can be returned: the same
            # ops in the same order draw the same dropout mask, so y is what SDPA would have returned
            att = F.dropout(self._probabilities(q, k), p, True)  # (B, nh, T, past + T)
            y = att @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)  # (B, nh, T, hs)
            if output_attentions:  # the fused kernel keeps no T x T matrix: recompute it beside y, not into y
                with no_grad():
                    att = self._probabilities(q, k)
        y = y.transpose(1, 2).reshape(B, T, C)
        y = self.resid_dropout(self.c_proj(y))
        return (y, att.detach()) if output_attentions else y

    @staticmethod
    def _probabilities(q, k):
        """softmax(q k^T / sqrt(hs)) with query i (at position S - T + i) seeing keys 0 .. S - T + i."""
        T, S = q.shape[-2], k.shape[-2]
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, nh, T, S)
        hidden = np.arange(S)[None, :] > (S - T + np.arange(T))[:, None]  # (T, S): keys in the future
        return F.softmax(scores.masked_fill(hidden, -np.inf), dim=-1)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        # a module (nanoGPT's layout), so a forward pre-hook sees the GELU's input (train --log-stats)
        self.gelu = nn.GELU("tanh" if config.activation == "gelu_tanh" else "none")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    @property
    def approximate(self):  # the exports read and switch the GELU form here
        return self.gelu.approximate

    @approximate.setter
    def approximate(self, value):
        self.gelu.approximate = value

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, output_attentions=False):
        if output_attentions:
            a, att = self.attn(self.ln_1(x), cache, output_attentions=True)
            x = x + a
            return x + self.mlp(self.ln_2(x)), att
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """``logits, loss = model(idx, targets=None)`` with idx of shape (B, T).

    ``logits, loss, attentions = model(idx, output_attentions=True)`` also returns each layer's attention
    probabilities, as Hugging Face's ``output_attentions``: a tuple of n_layer Tensors, each
    (B, n_head, T, past + T), softmax(q k^T / sqrt(hs)) after the causal mask (exact zeros above the
    diagonal) and, in training with dropout, after dropout. They are detached (``requires_grad`` False):
    in eval the output is computed by the fused kernel, not from them, so no gradient would flow
    through them. The logits are the same with and without the flag.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.pos_encoding == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        else:
            pe = sinusoidal_positions(config.block_size, config.n_embd).astype(self.wte.weight.dtype)
            self.register_buffer("pos_table", Tensor(pe), persistent=False)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight
        self._init_weights()

    def _init_weights(self):
        """GPT-2 / nanoGPT: N(0, 0.02) weights, zero biases, residual projections N(0, 0.02/sqrt(2 n_layer))."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * self.config.n_layer))

    def num_params(self, non_embedding=False):
        """Number of parameters (tied weights counted once); ``non_embedding`` leaves out wte/wpe."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel()
            if self.config.pos_encoding == "learned":
                n -= self.wpe.weight.numel()
        return n

    def forward(self, idx, targets=None, caches=None, output_attentions=False):
        past = len(caches[0]) if caches else 0
        ids = token_ids(idx, "GPT", self.config.vocab_size, max_positions=self.config.block_size, past=past)
        B, T = ids.shape
        tok = self.wte(ids)  # (B, T, C)
        if self.config.pos_encoding == "learned":
            pos = self.wpe(np.arange(past, past + T))  # (T, C)
        else:
            pos = self.pos_table[past:past + T]
        x = self.drop(tok + pos)
        attentions = []
        for i, block in enumerate(self.h):
            cache = caches[i] if caches is not None else None
            if output_attentions:
                x, att = block(x, cache, output_attentions=True)
                attentions.append(att)  # (B, nh, T, past + T)
            else:
                x = block(x, cache)
        x = self.ln_f(x)
        logits = self.lm_head(x)  # (B, T, vocab)
        loss = None
        if targets is not None:
            t = targets.data if isinstance(targets, Tensor) else np.asarray(targets)
            if t.shape != (B, T):
                raise ValueError(f"GPT: targets must have the shape of idx {(B, T)}, got {t.shape}")
            loss = F.cross_entropy(logits.reshape(B * T, -1), t.reshape(-1), ignore_index=-1)
        return (logits, loss, tuple(attentions)) if output_attentions else (logits, loss)

    def new_caches(self):
        """Empty per-layer key/value caches for incremental decoding."""
        return [nn.KVCache() for _ in self.h]

    # -- decoding: the shared loop in decoding.py drives these two -----------------------------
    def decode_step(self, ids, caches):
        """Logits (N, V) of the token after ``ids`` (N, t), which extend the sequences in ``caches``;
        the caches then hold ``ids`` too."""
        logits, _ = self(ids, caches=caches)
        return logits.data[:, -1], caches

    @staticmethod
    def reorder_state(caches, rows):
        """Keep, repeat or reorder the batch rows of every layer's keys and values."""
        for cache in caches:
            cache.select_rows(rows)
        return caches

    def generate(self, input_ids, max_new_tokens=None, *, max_length=None, do_sample=False, temperature=1.0,
                 top_k=None, top_p=None, num_beams=1, no_repeat_ngram_size=0, num_return_sequences=1,
                 eos_token_id=None, pad_token_id=None, length_penalty=1.0, early_stopping=False, seed=None,
                 streamer=None, crop_context=False):
        """Continue ``input_ids`` (B, T) on the KV cache; returns int64 (B * num_return_sequences, T_out).

        Hugging Face ``generate``'s options and semantics for a decoder-only model, token for token
        (greedy, sampling, beam search; see ``decoding.decode``). The model is fed at most block_size
        positions. The model runs in eval mode and its train/eval flags are restored afterwards.
        ``streamer`` gets the tokens as they are chosen (``put``/``end``, as HF's streamers).

        ``crop_context=True`` (greedy and sampling only) lifts the block_size limit the way nanoGPT's
        ``sample.py`` does: once the sequence is longer than block_size, each next token is predicted
        from the last block_size tokens alone (a sliding window, recomputed without the cache). HF has
        no such mode; inside block_size the two agree token for token.
        """
        step, reorder, max_positions = self.decode_step, self.reorder_state, self.config.block_size
        if crop_context:
            if num_beams != 1:
                raise ValueError("generate: crop_context (a sliding window past block_size) supports greedy and "
                                 "sampling only, not beam search")
            step, reorder, max_positions = self._window_step, self._reorder_window, None
        state = (self.new_caches(), None) if crop_context else self.new_caches()
        with eval_mode(self):
            return decode(step, reorder, input_ids, state, max_new_tokens=max_new_tokens, max_length=max_length,
                          do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                          num_beams=num_beams, no_repeat_ngram_size=no_repeat_ngram_size,
                          num_return_sequences=num_return_sequences, eos_token_id=eos_token_id,
                          pad_token_id=pad_token_id, length_penalty=length_penalty, early_stopping=early_stopping,
                          seed=seed, streamer=streamer, vocab_size=self.config.vocab_size,
                          max_positions=max_positions)

    def _window_step(self, ids, state):
        """``decode_step`` on the last block_size tokens: once the caches are full, they are rebuilt from
        those tokens alone. The state is (caches, the last block_size tokens)."""
        caches, recent = state
        window = self.config.block_size
        recent = (ids if recent is None else np.concatenate([recent, ids], axis=1))[:, -window:]
        if len(caches[0]) + ids.shape[1] > window:
            caches, ids = self.new_caches(), recent
        logits, caches = self.decode_step(ids, caches)
        return logits, (caches, recent)

    def _reorder_window(self, state, rows):
        caches, recent = state
        return self.reorder_state(caches, rows), recent[rows]

    # -- Hugging Face GPT-2 checkpoints ------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path, dtype=np.float32):
        """Load a local Hugging Face GPT-2 directory (config.json + model.safetensors), without torch.

        Handles keys with or without the ``transformer.`` prefix, Conv1D weights stored as (in, out),
        ``attn.bias``/``attn.masked_bias`` mask buffers (ignored) and a tied ``lm_head``.
        """
        from safetensors.numpy import load_file

        cfg_path, weights_path = os.path.join(path, "config.json"), os.path.join(path, "model.safetensors")
        for p in (cfg_path, weights_path):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"from_pretrained: {p} not found (expected a Hugging Face GPT-2 "
                                        f"directory with config.json and model.safetensors)")
        with open(cfg_path) as f:
            hf = json.load(f)
        act = hf.get("activation_function", "gelu_new")
        if act not in ("gelu_new", "gelu_pytorch_tanh", "gelu"):
            raise ValueError(f"from_pretrained: unsupported activation_function {act!r}")
        n_embd = hf.get("n_embd", hf.get("hidden_size"))
        config = GPTConfig(vocab_size=hf["vocab_size"], block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
                           n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=n_embd, dropout=0.0, bias=True,
                           pos_encoding="learned", tie_weights=hf.get("tie_word_embeddings", True),
                           activation="gelu" if act == "gelu" else "gelu_tanh",
                           layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5))
        with default_dtype(dtype):
            model = cls(config)
        raw = load_file(weights_path)
        conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        state = {}
        for key, value in raw.items():
            name = key[len("transformer."):] if key.startswith("transformer.") else key
            if name.endswith(("attn.bias", "attn.masked_bias")) and name.count(".") == 3 and value.ndim == 4:
                continue  # causal-mask buffers, not parameters
            if name == "lm_head.weight" and config.tie_weights:
                continue
            if name.endswith(conv1d):
                value = value.T  # Conv1D stores (in, out); Linear wants (out, in)
            state[name] = value
        if config.tie_weights:
            state["lm_head.weight"] = state["wte.weight"]
        model.load_state_dict(state, strict=True)
        return model
