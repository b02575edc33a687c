"""A GPT as a Hugging Face directory: what ``save_pretrained`` of a ``GPT2LMHeadModel`` writes, and a
tokenizer that ``AutoTokenizer`` loads, so that ``AutoModelForCausalLM.from_pretrained(dir)``,
``pipeline("text-generation", model=dir)`` and the Hub take a tinyllm model as it is.

The weights are GPT-2's: tinyllm's parameter names with HF's ``transformer.`` prefix, and the four
Linear weights of each block transposed to Conv1D's (in, out). GPT-2 always has biases and a learned
position table, so ``bias=False`` is written as zero biases and sinusoidal positions as the table they
equal; both are exact, and the returned notes say so. An untied head is GPT-2's
``tie_word_embeddings=false`` with its own ``lm_head.weight``.

The tokenizer is written with the ``tokenizers`` library as ``tokenizer.json`` and adds no special
tokens, so its ids equal tinyllm's for the same text:

- ``CharTokenizer``: a WordLevel vocabulary of the characters (ids unchanged), every character its own
  piece (``Split(Regex("[\\s\\S]"), "isolated")``; Oniguruma rejects ``(?s).``) and a ``Fuse`` decoder.
  A character outside the vocabulary is an error, as in tinyllm: the vocabulary has no unknown token
  (adding one would give an id the model never saw).
- ``BPETokenizer`` and ``GPT2Tokenizer``: byte-level BPE, each token written as GPT-2's
  ``bytes_to_unicode`` string of its bytes, merges in rank order, tinyllm's split pattern as a ``Split``
  pre-tokenizer before ``ByteLevel``, and special tokens as added tokens (HF encodes them as tinyllm's
  ``encode(text, allowed_special="all")`` does). With GPT-2's split pattern ``vocab.json`` and
  ``merges.txt`` go beside it too, as on the Hub's ``gpt2``.
"""
import json
import os

import numpy as np

from ..text import BPETokenizer, CharTokenizer, GPT2Tokenizer
from ..text.gpt2 import ENDOFTEXT, bytes_to_unicode
from ..text.pretokenize import PATTERNS
from .common import ExportError, check_gpt, gpt2_notes, host_array, new_output_dir, position_table

__all__ = ["hf_config", "hf_state", "to_hf", "write_hf_tokenizer"]

_CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # Linear (out, in) -> Conv1D (in, out)


def _tokenizers():
    try:
        import tokenizers
    except ImportError as e:
        raise ImportError("the Hugging Face export needs the tokenizers package: "
                          "pip install 'tinyllm[export]'") from e
    return tokenizers


def _eos_id(tokenizer):
    """The id of ``<|endoftext|>`` when the tokenizer has it as a special token, else None."""
    if isinstance(tokenizer, (BPETokenizer, GPT2Tokenizer)):
        return tokenizer.special_tokens.get(ENDOFTEXT)
    return None


def hf_config(model, tokenizer=None):
    """config.json of a ``GPT2LMHeadModel`` with ``model``'s sizes. The keys are those transformers'
    ``GPT2Config`` writes that change the model; the rest keep its defaults."""
    c = model.config
    eos = _eos_id(tokenizer)
    tied = model.lm_head.weight is model.wte.weight  # what hf_state writes, whatever the config says
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.block_size,
        "n_ctx": c.block_size,  # older readers (and llama.cpp's convert_hf_to_gguf.py) look for n_ctx
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": None,  # GPT-2's 4 * n_embd, as tinyllm's MLP
        "activation_function": "gelu_new" if c.activation == "gelu_tanh" else "gelu",
        "layer_norm_epsilon": float(c.layer_norm_eps),
        "tie_word_embeddings": tied,
        # The dropouts tinyllm trained with, in GPT-2's three places (which are tinyllm's): fine-tuning
        # in transformers then regularizes as tinyllm did; inference (eval mode) ignores them.
        "resid_pdrop": float(c.dropout),
        "embd_pdrop": float(c.dropout),
        "attn_pdrop": float(c.dropout),
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "initializer_range": 0.02,
        # GPT2Config's defaults are 50256; without <|endoftext|> in the vocabulary there is none
        "bos_token_id": eos,
        "eos_token_id": eos,
        "pad_token_id": None,
        "use_cache": True,
        "dtype": "float32",
    }


def hf_state(model):
    """The ``GPT2LMHeadModel`` state dict of ``model`` as float32 arrays, named as ``save_pretrained``
    names them."""
    c = model.config
    zeros = lambda n: np.zeros(n, np.float32)  # noqa: E731

    def add(name, layer, n_out):
        w = host_array(layer.weight)
        state[f"{name}.weight"] = np.ascontiguousarray(w.T) if name.endswith(_CONV1D) else w
        state[f"{name}.bias"] = host_array(layer.bias) if layer.bias is not None else zeros(n_out)

    C = c.n_embd
    state = {"transformer.wte.weight": host_array(model.wte.weight),
             "transformer.wpe.weight": host_array(position_table(model))}
    for i, blk in enumerate(model.h):
        p = f"transformer.h.{i}."
        add(p + "ln_1", blk.ln_1, C)
        add(p + "attn.c_attn", blk.attn.c_attn, 3 * C)
        add(p + "attn.c_proj", blk.attn.c_proj, C)
        add(p + "ln_2", blk.ln_2, C)
        add(p + "mlp.c_fc", blk.mlp.c_fc, 4 * C)
        add(p + "mlp.c_proj", blk.mlp.c_proj, C)
    add("transformer.ln_f", model.ln_f, C)
    if model.lm_head.weight is not model.wte.weight:  # tied: transformers ties it back from wte
        state["lm_head.weight"] = host_array(model.lm_head.weight)
    return state


def _check_tokenizer(tokenizer, vocab_size, who):
    """A tokenizer of a kind HF can hold, with no id past the model's ``vocab_size``."""
    if not isinstance(tokenizer, (CharTokenizer, BPETokenizer, GPT2Tokenizer)):
        raise ExportError(f"{who}: tokenizer must be a CharTokenizer, BPETokenizer, GPT2Tokenizer or None, "
                          f"got {type(tokenizer).__name__}")
    n = tokenizer.vocab_size
    if vocab_size is not None and n > vocab_size:
        raise ExportError(f"{who}: the tokenizer has ids up to {n - 1}, past the model's vocab_size {vocab_size}; "
                          f"export the tokenizer the model was trained with")


def _char_tokenizer(tokenizer):
    tk = _tokenizers()
    # The unknown token is named but not in the vocabulary: an unknown character then raises, as
    # tinyllm's encode does, rather than getting an id the model never learned.
    tok = tk.Tokenizer(tk.models.WordLevel({ch: i for i, ch in enumerate(tokenizer.chars)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tk.pre_tokenizers.Split(tk.Regex(r"[\s\S]"), "isolated")
    tok.decoder = tk.decoders.Fuse()
    return tok


def _byte_level_tokenizer(tokenizer, who):
    """A ``tokenizers`` byte-level BPE equal to ``tokenizer`` (BPETokenizer or GPT2Tokenizer)."""
    tk = _tokenizers()
    if isinstance(tokenizer, GPT2Tokenizer):
        vocab = {s: i for s, i in tokenizer.encoder.items() if s not in tokenizer.special_tokens}
        merges = list(tokenizer.bpe_merges)
    else:
        byte = bytes_to_unicode()
        text = {i: "".join(byte[b] for b in bs) for i, bs in tokenizer.vocab.items()}
        vocab = {}
        for i, s in sorted(text.items()):
            if s in vocab:  # HF's vocabulary maps a string to one id; tinyllm would use both
                raise ExportError(f"{who}: BPE tokens {vocab[s]} and {i} have the same bytes "
                                  f"{tokenizer.vocab[i]!r}; a Hugging Face vocabulary cannot hold both")
            vocab[s] = i
        merges = [(text[a], text[b]) for a, b in tokenizer.merges]
    pattern = PATTERNS.get(tokenizer.pattern, tokenizer.pattern)
    try:
        split = tk.pre_tokenizers.Split(tk.Regex(pattern), "isolated")
    except Exception as e:  # tokenizers raises a plain Exception for a pattern Oniguruma rejects
        raise ExportError(f"{who}: the split pattern {tokenizer.pattern!r} is not one Oniguruma (tokenizers' "
                          f"regex engine) accepts: {e}") from None
    for s, i in tokenizer.special_tokens.items():
        if s in vocab and vocab[s] != i:
            raise ExportError(f"{who}: special token {s!r} (id {i}) is spelled like the ordinary token {vocab[s]}; "
                              f"a Hugging Face vocabulary cannot hold both")
        # in the model's vocabulary too (as in the Hub's gpt2), so that it keeps its id as an added token
        vocab[s] = i
    tok = tk.Tokenizer(tk.models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False, ignore_merges=False))
    tok.pre_tokenizer = tk.pre_tokenizers.Sequence(
        [split, tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = tk.decoders.ByteLevel()
    tok.add_special_tokens([tk.AddedToken(s, special=True, normalized=False) for s in tokenizer.special_tokens])
    moved = {s: tok.token_to_id(s) for s, i in tokenizer.special_tokens.items() if tok.token_to_id(s) != i}
    if moved:  # cannot happen while the tokens are in the vocabulary above; checked, since ids must not move
        raise ExportError(f"{who}: tokenizers gives the special tokens {moved} other ids than tinyllm")
    return tok


def write_hf_tokenizer(tokenizer, out_dir, *, vocab_size=None, model_max_length=None, who="write_hf_tokenizer"):
    """Write ``tokenizer`` (CharTokenizer, BPETokenizer or GPT2Tokenizer) into the existing directory
    ``out_dir`` as Hugging Face tokenizer files: ``tokenizer.json``, ``tokenizer_config.json`` and,
    for GPT-2's split pattern, ``vocab.json`` + ``merges.txt``. ``vocab_size``: the model's, which
    every id must be below; ``model_max_length``: its block_size. Returns notes (empty when nothing
    needs saying)."""
    _check_tokenizer(tokenizer, vocab_size, who)
    notes, gpt2_files = [], False
    config = {"tokenizer_class": "PreTrainedTokenizerFast",
              "clean_up_tokenization_spaces": False,  # would turn " ." into "."
              "add_bos_token": False, "add_eos_token": False, "add_prefix_space": False}
    if isinstance(tokenizer, CharTokenizer):
        tok = _char_tokenizer(tokenizer)
        notes.append("character tokenizer: a character outside its vocabulary cannot be encoded "
                     "(no unknown token), as in tinyllm")
    else:
        tok = _byte_level_tokenizer(tokenizer, who)
        if tokenizer.pattern not in PATTERNS:
            notes.append(f"custom split pattern {tokenizer.pattern!r}: written as it is for Oniguruma, whose "
                         f"classes may differ from Python's re; check the ids on your text")
        gpt2_files = tokenizer.pattern == "gpt2" and not tokenizer.special_tokens.keys() - {ENDOFTEXT}
        if ENDOFTEXT in tokenizer.special_tokens:
            config.update(bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    if gpt2_files:  # GPT-2's own layout, which readers without tokenizer.json (older tools) take
        tok.model.save(out_dir)
        config["tokenizer_class"] = "GPT2Tokenizer"
    if model_max_length is not None:
        config["model_max_length"] = int(model_max_length)
    _write_json(os.path.join(out_dir, "tokenizer_config.json"), config)
    return notes


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def to_hf(model, tokenizer, out_dir):
    """Write ``model`` (a float tinyllm GPT) and ``tokenizer`` to the new directory ``out_dir`` as a Hugging
    Face GPT-2 model: config.json, generation_config.json, model.safetensors (float32) and the tokenizer
    files (see :func:`write_hf_tokenizer`). ``tokenizer`` may be None: the model alone is written, and
    transformers then runs on token ids. Returns notes on what was converted."""
    from safetensors.numpy import save

    who = "to_hf"
    check_gpt(model, who)
    c = model.config
    if tokenizer is not None:  # refused before any work; write_hf_tokenizer checks the same
        _check_tokenizer(tokenizer, c.vocab_size, who)
    notes = list(gpt2_notes(model))
    if model.lm_head.weight is not model.wte.weight:
        notes.append("untied lm_head: written as lm_head.weight with tie_word_embeddings=false")
    config = hf_config(model, tokenizer)
    state = hf_state(model)
    with new_output_dir(out_dir, who) as tmp:
        _write_json(os.path.join(tmp, "config.json"), config)
        _write_json(os.path.join(tmp, "generation_config.json"),
                    {"_from_model_config": True, "bos_token_id": config["bos_token_id"],
                     "eos_token_id": config["eos_token_id"]})
        # save() to bytes, then an ordinary open(): save_file makes the file private (0600), and an
        # export is meant to be shared
        with open(os.path.join(tmp, "model.safetensors"), "wb") as f:
            f.write(save(state, metadata={"format": "pt"}))
        if tokenizer is None:
            notes.append("no tokenizer: only the model was written; transformers runs it on token ids")
        else:
            notes += write_hf_tokenizer(tokenizer, tmp, vocab_size=c.vocab_size, model_max_length=c.block_size,
                                        who=who)
    return notes
