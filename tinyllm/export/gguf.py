"""A GPT as GGUF, the file format of llama.cpp, under llama.cpp's "gpt2" architecture.

llama.cpp's gpt2 graph is tinyllm's GPT with learned positions: pre-norm LayerNorm blocks with biases,
a fused QKV projection laid out [q | k | v], GELU with the tanh approximation (ggml looks it up in an
fp16 table), a final LayerNorm and the lm_head (tied to the embedding when ``output.weight`` is absent).
GGUF lists a tensor's dimensions fastest first, so a Linear's (out, in) weight is written as it is and
llama.cpp reads it as {in, out}, the orientation its matmuls want: no transposes.

llama.cpp also needs a vocabulary: a byte-level BPE ("gpt2" tokenizer model) with one token string per
embedding row. ``save_gguf`` takes it from a ``GPT2Tokenizer``, or builds one when there is none: the 256
byte tokens in GPT-2's order, one merge, ``<|endoftext|>`` on the last row and unused filler tokens in
between, which is enough to run the model on token ids (random weights, benchmarks).
"""
import numpy as np

from ..models.gpt import GPT
from ..text.gpt2 import ENDOFTEXT, GPT2Tokenizer, bytes_to_unicode

__all__ = ["gguf_tensors", "save_gguf"]

ARCH = "gpt2"


def _array(t):
    """A parameter's values as a C-contiguous float32 array (GGUF's F32), copying only if needed."""
    a = t.data if hasattr(t, "data") else t
    if not isinstance(a, np.ndarray):  # a cupy array: GGUF is written from host memory
        a = a.get()
    return np.ascontiguousarray(a, dtype=np.float32)


def _check(model, approximate_gelu):
    if not isinstance(model, GPT):
        raise TypeError(f"save_gguf: expected a tinyllm GPT, got {type(model).__name__}")
    c = model.config
    if c.activation != "gelu_tanh" and not approximate_gelu:
        raise ValueError(f"save_gguf: llama.cpp's gpt2 graph uses the tanh-approximated GELU, this model uses "
                         f"{c.activation!r}; build it with GPTConfig(activation='gelu_tanh'), or pass "
                         f"approximate_gelu=True to accept the difference in llama.cpp's outputs")


def gguf_tensors(model):
    """(name, float32 array) for every tensor llama.cpp's gpt2 graph reads, in GGUF's order: the
    embeddings, then block by block, then the final norm and (when it is not tied) the lm_head.
    Missing biases (``bias=False``) are written as zeros, which is what they mean; a sinusoidal
    position table is written as the learned one it equals."""
    c = model.config
    zeros = lambda n: np.zeros(n, np.float32)  # noqa: E731
    b = lambda layer, n: _array(layer.bias) if layer.bias is not None else zeros(n)  # noqa: E731
    out = [("token_embd.weight", _array(model.wte.weight))]  # (vocab, C) -> {C, vocab}
    pos = model.wpe.weight if c.pos_encoding == "learned" else model.pos_table
    out.append(("position_embd.weight", _array(pos)))  # (block_size, C)
    C, F = c.n_embd, 4 * c.n_embd
    for i, blk in enumerate(model.h):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", _array(blk.ln_1.weight)), (p + "attn_norm.bias", b(blk.ln_1, C)),
                (p + "attn_qkv.weight", _array(blk.attn.c_attn.weight)),  # (3C, C): rows q, k, v
                (p + "attn_qkv.bias", b(blk.attn.c_attn, 3 * C)),
                (p + "attn_output.weight", _array(blk.attn.c_proj.weight)),
                (p + "attn_output.bias", b(blk.attn.c_proj, C)),
                (p + "ffn_norm.weight", _array(blk.ln_2.weight)), (p + "ffn_norm.bias", b(blk.ln_2, C)),
                (p + "ffn_up.weight", _array(blk.mlp.c_fc.weight)), (p + "ffn_up.bias", b(blk.mlp.c_fc, F)),  # (4C, C)
                (p + "ffn_down.weight", _array(blk.mlp.c_proj.weight)), (p + "ffn_down.bias", b(blk.mlp.c_proj, C))]
    out += [("output_norm.weight", _array(model.ln_f.weight)), ("output_norm.bias", b(model.ln_f, C))]
    if model.lm_head.weight is not model.wte.weight:  # tied: llama.cpp reuses token_embd
        out.append(("output.weight", _array(model.lm_head.weight)))
    return out


def _vocab(tokenizer, vocab_size):
    """(tokens, token types, merges, eos id or None) for llama.cpp's "gpt2" tokenizer model, one token
    per embedding row. Rows the tokenizer does not fill get unused filler tokens."""
    import gguf

    normal, control, unused = gguf.TokenType.NORMAL, gguf.TokenType.CONTROL, gguf.TokenType.UNUSED
    if tokenizer is None:
        # llama.cpp tokenizes "\n" at load time and so needs every byte; GGUF cannot hold an empty
        # merge list, so one harmless merge (two spaces) goes in with its token.
        if vocab_size < 258:
            raise ValueError(f"save_gguf: without a tokenizer the vocabulary is the 256 bytes, '  ' and "
                             f"{ENDOFTEXT}, which needs vocab_size >= 258; this model has {vocab_size}")
        byte = bytes_to_unicode()
        tokens = [byte[i] for i in range(256)] + [byte[32] * 2]
        merges = [f"{byte[32]} {byte[32]}"]
        fill = vocab_size - len(tokens) - 1
        tokens += [f"<|unused_{i}|>" for i in range(fill)] + [ENDOFTEXT]
        types = [normal] * 257 + [unused] * fill + [control]
        return tokens, types, merges, vocab_size - 1
    if not isinstance(tokenizer, GPT2Tokenizer):
        raise TypeError(f"save_gguf: tokenizer must be a GPT2Tokenizer or None, got {type(tokenizer).__name__}")
    by_id = {i: s for s, i in tokenizer.encoder.items()}
    if max(by_id) >= vocab_size:
        raise ValueError(f"save_gguf: the tokenizer has id {max(by_id)}, past the model's vocab_size {vocab_size}")
    special = set(tokenizer.special_tokens)
    tokens = [by_id.get(i, f"<|unused_{i}|>") for i in range(vocab_size)]
    types = [control if t in special else normal if i in by_id else unused for i, t in enumerate(tokens)]
    merges = [f"{a} {b}" for a, b in tokenizer.bpe_merges]
    if not merges:
        raise ValueError("save_gguf: llama.cpp needs at least one BPE merge, and this tokenizer has none")
    return tokens, types, merges, tokenizer.special_tokens.get(ENDOFTEXT)


def save_gguf(model, path, tokenizer=None, *, name="tinyllm-gpt", approximate_gelu=False):
    """Write ``model`` (a tinyllm GPT) to ``path`` as a GGUF file for llama.cpp, all tensors float32.

    ``tokenizer``: a ``GPT2Tokenizer`` whose vocabulary goes into the file, or None for a byte-level
    stand-in (enough to run on token ids). llama.cpp computes GELU with the tanh approximation, so the
    model must use ``activation='gelu_tanh'`` unless ``approximate_gelu=True``. Returns ``path``.
    Needs the ``gguf`` package (``pip install 'tinyllm[export]'``).
    """
    try:
        import gguf
    except ImportError as e:
        raise ImportError("save_gguf needs the gguf package: pip install 'tinyllm[export]'") from e
    _check(model, approximate_gelu)
    c = model.config
    tokens, types, merges, eos = _vocab(tokenizer, c.vocab_size)
    w = gguf.GGUFWriter(str(path), ARCH)
    w.add_name(name)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(c.block_size)
    w.add_embedding_length(c.n_embd)
    w.add_feed_forward_length(4 * c.n_embd)
    w.add_block_count(c.n_layer)
    w.add_head_count(c.n_head)
    w.add_layer_norm_eps(float(c.layer_norm_eps))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")  # GPT-2's split pattern, as GPT2Tokenizer uses
    w.add_token_list(tokens)
    w.add_token_types([int(t) for t in types])
    w.add_token_merges(merges)
    if eos is not None:
        w.add_bos_token_id(eos)
        w.add_eos_token_id(eos)
    w.add_add_bos_token(False)  # GPT-2 starts a text with no special token
    for tname, arr in gguf_tensors(model):
        w.add_tensor(tname, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
