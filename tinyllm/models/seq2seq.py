"""An encoder-decoder Transformer ("Attention Is All You Need", pre-norm), built only from ``tinyllm.nn``.

    memory = Encoder(src)                   N x [self-attention (padding-masked) -> MLP], sinusoidal positions
    logits = Decoder(tgt_in, memory)        N x [causal self-attention -> cross-attention -> MLP]

Padding masks work on both sides: encoder keys and cross-attention keys skip the source's padding, and
target padding is ignored by the loss (``ignore_index`` = pad). ``translate`` decodes greedily or with
beam search through the shared decoding loop (``decoding.py``); its state is the source memory and
the target prefix, whose rows follow the beams.
"""
from dataclasses import dataclass

import numpy as np

from .. import nn
from ..autograd import Tensor, no_grad
from ..nn import functional as F
from .checks import token_ids
from .config import ConfigDict
from .decoding import decode, eval_mode
from .gpt import sinusoidal_positions

PAD, BOS, EOS, UNK = 0, 1, 2, 3  # tinyllm.translation's SPECIALS


@dataclass
class Seq2SeqConfig(ConfigDict):
    src_vocab_size: int = 64
    tgt_vocab_size: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    max_len: int = 64
    dropout: float = 0.0


class Attention(nn.Module):
    """Multi-head attention: queries from x, keys and values from ``kv`` (x itself for self-attention)."""

    def __init__(self, c):
        super().__init__()
        self.n_head = c.n_head
        self.q = nn.Linear(c.n_embd, c.n_embd)
        self.kv = nn.Linear(c.n_embd, 2 * c.n_embd)
        self.proj = nn.Linear(c.n_embd, c.n_embd)

    def forward(self, x, kv, mask=None, causal=False):
        B, T, C = x.shape
        S, hs = kv.shape[1], C // self.n_head
        q = self.q(x).reshape(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k, v = (t.reshape(B, S, self.n_head, hs).transpose(1, 2) for t in self.kv(kv).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.fc, self.proj = nn.Linear(c.n_embd, 4 * c.n_embd), nn.Linear(4 * c.n_embd, c.n_embd)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x):
        return self.drop(self.proj(F.gelu(self.fc(x))))


class EncoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1, self.attn, self.ln_2, self.mlp = nn.LayerNorm(c.n_embd), Attention(c), nn.LayerNorm(c.n_embd), MLP(c)

    def forward(self, x, src_mask):
        h = self.ln_1(x)
        x = x + self.attn(h, h, mask=src_mask)
        return x + self.mlp(self.ln_2(x))


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1, self.self_attn = nn.LayerNorm(c.n_embd), Attention(c)
        self.ln_2, self.cross_attn = nn.LayerNorm(c.n_embd), Attention(c)
        self.ln_3, self.mlp = nn.LayerNorm(c.n_embd), MLP(c)

    def forward(self, x, memory, src_mask):
        h = self.ln_1(x)
        x = x + self.self_attn(h, h, causal=True)
        x = x + self.cross_attn(self.ln_2(x), memory, mask=src_mask)
        return x + self.mlp(self.ln_3(x))


class Seq2SeqTransformer(nn.Module):
    def __init__(self, config):
        super().__init__()
        c = self.config = config
        self.src_emb = nn.Embedding(c.src_vocab_size, c.n_embd)
        self.tgt_emb = nn.Embedding(c.tgt_vocab_size, c.n_embd)
        self.register_buffer("pos", Tensor(sinusoidal_positions(c.max_len, c.n_embd).astype(self.src_emb.weight.dtype)),
                             persistent=False)
        self.encoder = nn.ModuleList(EncoderLayer(c) for _ in range(c.n_layer))
        self.decoder = nn.ModuleList(DecoderLayer(c) for _ in range(c.n_layer))
        self.ln_enc, self.ln_dec = nn.LayerNorm(c.n_embd), nn.LayerNorm(c.n_embd)
        self.lm_head = nn.Linear(c.n_embd, c.tgt_vocab_size, bias=False)
        self.drop = nn.Dropout(c.dropout)
        self.scale = float(np.sqrt(c.n_embd))
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def encode(self, src):
        """(memory (B, S, C), src_mask (B, 1, 1, S) with True where a key may be attended)."""
        src = token_ids(src, "Seq2SeqTransformer", self.config.src_vocab_size, what="src",
                        max_positions=self.config.max_len, positions_name="max_len")
        mask = (src != PAD)[:, None, None, :]
        x = self.drop(self.src_emb(src) * self.scale + self.pos[:src.shape[1]])
        for layer in self.encoder:
            x = layer(x, mask)
        return self.ln_enc(x), mask

    def decode(self, tgt_in, memory, src_mask):
        tgt_in = token_ids(tgt_in, "Seq2SeqTransformer", self.config.tgt_vocab_size, what="tgt",
                           max_positions=self.config.max_len, positions_name="max_len")
        x = self.drop(self.tgt_emb(tgt_in) * self.scale + self.pos[:tgt_in.shape[1]])
        for layer in self.decoder:
            x = layer(x, memory, src_mask)
        return self.lm_head(self.ln_dec(x))

    def forward(self, src, tgt_in, targets=None):
        """``logits, loss``: targets are the decoder inputs shifted by one; PAD targets are ignored."""
        memory, mask = self.encode(src)
        logits = self.decode(tgt_in, memory, mask)
        loss = None
        if targets is not None:
            t = targets.data if isinstance(targets, Tensor) else np.asarray(targets)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.reshape(-1), ignore_index=PAD)
        return logits, loss

    # -- decoding: the shared loop in decoding.py drives these two -----------------------------
    def decode_step(self, ids, state):
        """Logits (N, V) of the target token after ``ids`` (N, t). The state is (source memory, its mask,
        the target prefix so far or None); the decoder reads the whole prefix again at every step."""
        memory, src_mask, prefix = state
        prefix = ids if prefix is None else np.concatenate([prefix, ids], axis=1)
        logits = self.decode(prefix, memory, src_mask)
        return logits.data[:, -1], (memory, src_mask, prefix)

    @staticmethod
    def reorder_state(state, rows):
        """Keep, repeat or reorder the batch rows of the memory, its mask and the prefix."""
        memory, src_mask, prefix = state
        return memory[rows], src_mask[rows], None if prefix is None else prefix[rows]

    def translate(self, src, max_new_tokens=None, num_beams=1, **kwargs):
        """Target ids (B * num_return_sequences, T_out) after BOS, stopping at EOS: greedy, sampling or
        beam search with ``tinyllm.generate``'s options, in eval mode."""
        src = token_ids(src, "Seq2SeqTransformer.translate", self.config.src_vocab_size, what="src",
                        max_positions=self.config.max_len, positions_name="max_len")
        with eval_mode(self):
            with no_grad():
                memory, mask = self.encode(src)
            bos = np.full((memory.shape[0], 1), BOS, dtype=np.int64)
            out = decode(self.decode_step, self.reorder_state, bos, (memory, mask, None),
                         max_new_tokens=max_new_tokens or self.config.max_len - 1, num_beams=num_beams,
                         eos_token_id=EOS, pad_token_id=PAD, vocab_size=self.config.tgt_vocab_size,
                         max_positions=self.config.max_len, name="Seq2SeqTransformer.translate", **kwargs)
        return out[:, 1:]
