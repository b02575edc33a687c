"""A GPT as GGUF, the file format of llama.cpp, under llama.cpp's "gpt2" architecture.

llama.cpp's gpt2 graph is tinyllm's GPT with learned positions: pre-norm LayerNorm blocks with biases,
a fused QKV projection laid out [q | k | v], GELU with the tanh approximation (ggml looks it up in an
fp16 table), a final LayerNorm and the lm_head (tied to the embedding when ``output.weight`` is absent).
GGUF lists a tensor's dimensions fastest first, so a Linear's (out, in) weight is written as it is and
llama.cpp reads it as {in, out}, the orientation its matmuls want: no transposes.

Tensor types follow llama.cpp's own convert script: with ``dtype`` f16 or q8_0 the 2-D weight matrices
(token_embd, attn_qkv, attn_output, ffn_up, ffn_down, output) take that type; the position table,
norms and biases stay f32. q8_0 quantizes blocks of 32 along a row, so a matrix whose rows are not a
multiple of 32 long is written as f16 instead (as the convert script falls back), with a note.

llama.cpp also needs a vocabulary: a byte-level BPE ("gpt2" tokenizer model) with one token string per
embedding row, token strings in GPT-2's ``bytes_to_unicode`` alphabet. ``_vocab`` builds it from each
tokenizer, so that llama.cpp tokenizes and detokenizes text as tinyllm does.
"""
import functools
import os

import numpy as np

from ..text.bpe import BPETokenizer
from ..text.char import CharTokenizer
from ..text.gpt2 import ENDOFTEXT, GPT2Tokenizer, bytes_to_unicode
from .common import ExportError, check_gpt, gpt2_notes, host_array, new_output_dir, position_table

__all__ = ["DTYPES", "gguf_tensors", "save_gguf", "to_gguf"]

ARCH = "gpt2"
DTYPES = ("f32", "f16", "q8_0")
# llama.cpp's pre-tokenizer (tokenizer.ggml.pre) for each of our split patterns. "dbrx" runs GPT-4's
# cl100k regex (llama.cpp spells it as llama3's) and merges by rank as we do; "llama-bpe" has the same
# regex but looks a whole chunk up in the vocabulary first (ignore_merges) and adds a BOS token.
PRE = {"gpt2": "gpt-2", "gpt4": "dbrx"}
# A character vocabulary's merges never cross a character, and every pre-tokenizer splits between
# characters, so any would do; "qwen2" is one that also leaves detokenized text alone (llama.cpp's
# clean_spaces, on for "gpt-2" and "dbrx", drops the space in " ." and " 's" in llama_detokenize).
CHAR_PRE = "qwen2"
LLAMA_DEFAULT_EOS = 11  # llama.cpp's gpt2 vocabulary takes this id as BOS and EOS when the file names none


def _gguf(who):
    try:
        import gguf
    except ImportError as e:
        raise ImportError(f"{who} needs the gguf package: pip install 'tinyllm[export]'") from e
    return gguf


def gguf_tensors(model):
    """(name, float32 array) for every tensor llama.cpp's gpt2 graph reads, in GGUF's order: the
    embeddings, then block by block, then the final norm and (when it is not tied) the lm_head.
    Missing biases (``bias=False``) are written as zeros, which is what they mean; a sinusoidal
    position table is written as the learned one it equals."""
    c = model.config
    a = host_array
    b = lambda layer, n: a(layer.bias) if layer.bias is not None else np.zeros(n, np.float32)  # noqa: E731
    out = [("token_embd.weight", a(model.wte.weight)),  # (vocab, C) -> {C, vocab}
           ("position_embd.weight", a(position_table(model)))]  # (block_size, C)
    C, F = c.n_embd, 4 * c.n_embd
    for i, blk in enumerate(model.h):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", a(blk.ln_1.weight)), (p + "attn_norm.bias", b(blk.ln_1, C)),
                (p + "attn_qkv.weight", a(blk.attn.c_attn.weight)),  # (3C, C): rows q, k, v
                (p + "attn_qkv.bias", b(blk.attn.c_attn, 3 * C)),
                (p + "attn_output.weight", a(blk.attn.c_proj.weight)),
                (p + "attn_output.bias", b(blk.attn.c_proj, C)),
                (p + "ffn_norm.weight", a(blk.ln_2.weight)), (p + "ffn_norm.bias", b(blk.ln_2, C)),
                (p + "ffn_up.weight", a(blk.mlp.c_fc.weight)), (p + "ffn_up.bias", b(blk.mlp.c_fc, F)),  # (4C, C)
                (p + "ffn_down.weight", a(blk.mlp.c_proj.weight)), (p + "ffn_down.bias", b(blk.mlp.c_proj, C))]
    out += [("output_norm.weight", a(model.ln_f.weight)), ("output_norm.bias", b(model.ln_f, C))]
    if model.lm_head.weight is not model.wte.weight:  # tied: llama.cpp reuses token_embd
        out.append(("output.weight", a(model.lm_head.weight)))
    return out


def tensor_type(name, shape, dtype):
    """The GGML type llama.cpp's convert script gives tensor ``name`` of ``shape`` in a ``dtype`` file:
    f32 for vectors and the position table, else ``dtype``; q8_0 only for rows a multiple of 32 long."""
    if dtype == "f32" or len(shape) < 2 or name == "position_embd.weight":
        return "f32"
    if dtype == "q8_0" and shape[-1] % 32:
        return "f16"
    return dtype


# -- the vocabulary ---------------------------------------------------------------------------------
def _piece(data, byte=bytes_to_unicode()):
    """A token's bytes as a GGUF token string in GPT-2's byte-level alphabet."""
    return "".join(byte[b] for b in data)


def _char_vocab(tok, who):
    """One token per character (its UTF-8 bytes in the byte-level alphabet) and the merges that build a
    multi-byte character back from its bytes: llama.cpp starts from one symbol per byte and merges by
    rank, so a 3-byte character needs the chain (b1, b2), (b1b2, b3). Only the final symbols are looked
    up in the vocabulary, so the partial ones (b1b2) need no token. No merge can cross two characters:
    each one's left side starts with a UTF-8 lead byte and its right side is a continuation byte."""
    tokens, merges = [], {}
    for ch in tok.chars:
        try:
            data = ch.encode("utf-8")
        except UnicodeEncodeError:
            raise ExportError(f"{who}: the character vocabulary holds the lone surrogate U+{ord(ch):04X}, which "
                              f"has no UTF-8 bytes; GGUF tokens are UTF-8 text") from None
        syms = [_piece([b]) for b in data]
        tokens.append("".join(syms))
        for k in range(1, len(syms)):
            merges.setdefault(f"{''.join(syms[:k])} {syms[k]}", None)
    return tokens, list(merges)


def _vocab(tokenizer, vocab_size, who):
    """(tokens, token types, merges, pre-tokenizer, eos id or None, notes) for llama.cpp's "gpt2"
    tokenizer model, one token per embedding row; rows the tokenizer does not fill get unused filler
    tokens. ``tokenizer=None`` gives a stand-in (the 256 bytes, ``<|endoftext|>`` on the last row)
    that is enough to run the model on token ids."""
    gguf = _gguf(who)
    normal, control, unused = gguf.TokenType.NORMAL, gguf.TokenType.CONTROL, gguf.TokenType.UNUSED
    by_id, special, merges, notes, pre = {}, {}, [], [], "gpt-2"
    if tokenizer is None:
        if vocab_size < 257:
            raise ExportError(f"{who}: without a tokenizer the vocabulary is the 256 bytes and {ENDOFTEXT}, which "
                              f"needs vocab_size >= 257; this model has {vocab_size}")
        by_id = {i: _piece([i]) for i in range(256)}
        special = {ENDOFTEXT: vocab_size - 1}
        notes.append("no tokenizer: the vocabulary is a byte-level stand-in, so llama.cpp runs the model on "
                     "token ids but its text in and out means nothing")
    elif isinstance(tokenizer, CharTokenizer):
        tokens, merges = _char_vocab(tokenizer, who)
        by_id, pre = dict(enumerate(tokens)), CHAR_PRE
    elif isinstance(tokenizer, GPT2Tokenizer):
        special = dict(tokenizer.special_tokens)
        by_id = {i: s for s, i in tokenizer.encoder.items() if s not in special}
        merges = [f"{a} {b}" for a, b in tokenizer.bpe_merges]
    elif isinstance(tokenizer, BPETokenizer):
        vocab, special = tokenizer.vocab, dict(tokenizer.special_tokens)
        by_id = {i: _piece(v) for i, v in vocab.items()}
        merges = [f"{_piece(vocab[a])} {_piece(vocab[b])}" for a, b in tokenizer.merges]  # rank order
        if tokenizer.pattern not in PRE:
            raise ExportError(f"{who}: llama.cpp has no pre-tokenizer for the split pattern {tokenizer.pattern!r}; "
                              f"allowed: {sorted(PRE)}")
        pre = PRE[tokenizer.pattern]
    else:
        raise ExportError(f"{who}: tokenizer must be a CharTokenizer, BPETokenizer, GPT2Tokenizer or None, "
                          f"got {type(tokenizer).__name__}")
    n = max([*by_id, *special.values()]) + 1
    if n > vocab_size:
        raise ExportError(f"{who}: the tokenizer has {n} ids but the model's embedding has {vocab_size} rows; "
                          f"export the tokenizer the model was trained with")
    if isinstance(tokenizer, CharTokenizer) and vocab_size > n:
        special = {ENDOFTEXT: vocab_size - 1}  # a spare row, so that no character is llama.cpp's EOS
    ids = {i: s for s, i in special.items()}
    tokens = [ids.get(i) or by_id.get(i) or f"<|unused_{i}|>" for i in range(vocab_size)]
    types = [control if i in ids else normal if i in by_id else unused for i in range(vocab_size)]
    if len(set(tokens)) < len(tokens):  # llama.cpp refuses a vocabulary that repeats a token
        first = {}
        a, b = next((first[t], i) for i, t in enumerate(tokens) if first.setdefault(t, i) != i)
        raise ExportError(f"{who}: ids {a} and {b} are the same token {tokens[a]!r}; llama.cpp needs distinct "
                          f"tokens")
    eos = special.get(ENDOFTEXT)
    if eos is None and vocab_size > LLAMA_DEFAULT_EOS:
        byte = {c: b for b, c in bytes_to_unicode().items()}
        text = bytes(byte[c] for c in tokens[LLAMA_DEFAULT_EOS]).decode("utf-8", "replace")
        notes.append(f"no end-of-text token: llama.cpp's gpt2 vocabulary always has one and takes id "
                     f"{LLAMA_DEFAULT_EOS} ({text!r}), so llama-cli and llama-server stop when the model writes it; "
                     f"pass --ignore-eos to write through it")
    return tokens, [int(t) for t in types], merges, pre, eos, notes


# -- the file ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _writer_class():
    gguf = _gguf("save_gguf")

    class Writer(gguf.GGUFWriter):
        """GGUFWriter that can write an empty array: its ``add_array`` drops one and ``_pack_val`` refuses
        it, but llama.cpp refuses a "gpt2" vocabulary without the merges key ("cannot find tokenizer
        merges"), which a character vocabulary of one-byte characters has none of. GGUF allows it: the
        element type, then the length 0."""

        def _pack_val(self, val, vtype, add_vtype, sub_type=None):
            if vtype == gguf.GGUFValueType.ARRAY and sub_type is not None and len(val) == 0:
                return (self._pack("I", vtype) if add_vtype else b"") + self._pack("I", sub_type) + self._pack("Q", 0)
            return super()._pack_val(val, vtype, add_vtype, sub_type)

    return Writer


def _gelu_effect(model, n=64):
    """How far the tanh GELU moves this model's logits from the exact one: (max |difference|, argmaxes
    changed) on ``n`` seeded random tokens, computed by tinyllm with each GELU in turn."""
    from ..autograd import no_grad
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (1, min(n, model.config.block_size)))
    training, logits = model.training, []
    try:
        model.eval()
        with no_grad():
            for approximate in ("none", "tanh"):
                for blk in model.h:
                    blk.mlp.approximate = approximate
                logits.append(host_array(model(ids)[0], np.float64)[0])
    finally:
        for blk in model.h:
            blk.mlp.approximate = "none"
        model.train(training)
    exact, tanh = logits
    return float(np.abs(exact - tanh).max()), int((exact.argmax(-1) != tanh.argmax(-1)).sum()), ids.shape[1]


def save_gguf(model, path, tokenizer=None, dtype="f32", *, name="tinyllm-gpt", who="save_gguf"):
    """Write ``model`` (a tinyllm GPT) to the file ``path`` as GGUF for llama.cpp's gpt2 graph, its 2-D
    weights in ``dtype`` (f32, f16 or q8_0), with ``tokenizer``'s vocabulary (see ``to_gguf``; None:
    a byte-level stand-in, enough to run on token ids). Returns the notes, as ``to_gguf`` does."""
    gguf = _gguf(who)
    check_gpt(model, who)
    if dtype not in DTYPES:
        raise ExportError(f"{who}: dtype {dtype!r} is not one GGUF export writes; allowed: {', '.join(DTYPES)}")
    c = model.config
    notes = list(gpt2_notes(model))
    if c.activation != "gelu_tanh":
        diff, changed, n = _gelu_effect(model)
        notes.append(f"exact GELU: llama.cpp's gpt2 graph only has the tanh approximation, so llama.cpp computes "
                     f"a slightly different function; on {n} random tokens it moves this model's logits by at "
                     f"most {diff:.1e} and changes {changed} of {n} argmaxes")
    tokens, types, merges, pre, eos, vocab_notes = _vocab(tokenizer, c.vocab_size, who)
    notes += vocab_notes

    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    w = _writer_class()(str(path), ARCH)
    w.add_name(name)
    w.add_file_type(file_type)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(c.block_size)
    w.add_embedding_length(c.n_embd)
    w.add_feed_forward_length(4 * c.n_embd)
    w.add_block_count(c.n_layer)
    w.add_head_count(c.n_head)
    w.add_layer_norm_eps(float(c.layer_norm_eps))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_key_value(gguf.Keys.Tokenizer.MERGES, merges, gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.STRING)
    if eos is not None:
        w.add_bos_token_id(eos)  # GPT-2's one special token is both
        w.add_eos_token_id(eos)
    w.add_add_bos_token(False)  # tinyllm starts a text with no special token
    fallback = []
    for tname, arr in gguf_tensors(model):
        t = tensor_type(tname, arr.shape, dtype)
        if t != dtype and dtype == "q8_0" and arr.ndim == 2 and tname != "position_embd.weight":
            fallback.append(tname)
        w.add_tensor(tname, gguf.quants.quantize(arr, qtype[t]), raw_dtype=qtype[t])
    if fallback:
        notes.append(f"q8_0 quantizes rows in blocks of 32 values; {', '.join(fallback)} have rows of another "
                     f"length, so they are written as f16")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return notes


def to_gguf(model, tokenizer, out_dir, dtype="f32"):
    """Write ``model`` (a tinyllm GPT) as ``out_dir/model.gguf`` for llama.cpp (``llama-cli -m``,
    ``llama-server``, ``llama-quantize``, llama-cpp-python), under its "gpt2" architecture.

    ``dtype``: ``"f32"`` (default), ``"f16"`` or ``"q8_0"`` for the 2-D weight matrices; the position
    table, norms and biases stay f32, as llama.cpp's convert script writes them. ``tokenizer``: the
    model's CharTokenizer, BPETokenizer or GPT2Tokenizer; llama.cpp then tokenizes and detokenizes text
    as tinyllm does (llama.cpp's C ``llama_detokenize``, unlike the token pieces that llama-cli prints and
    llama-cpp-python joins, also drops the space before , . ! ? for a BPE vocabulary, as its "gpt-2" and
    "dbrx" pre-tokenizers ask). None writes a byte-level stand-in vocabulary: llama.cpp runs the model on
    token ids, but text means nothing. Returns notes on what was converted (a model with exact GELU runs in
    llama.cpp with the tanh GELU: the note gives the difference this makes). Needs the gguf package
    (``pip install 'tinyllm[export]'``)."""
    _gguf("to_gguf")
    check_gpt(model, "to_gguf")
    with new_output_dir(out_dir, "to_gguf") as tmp:
        return save_gguf(model, os.path.join(tmp, "model.gguf"), tokenizer, dtype, who="to_gguf")
