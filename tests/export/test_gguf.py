"""tinyllm.export.gguf: a GPT written as GGUF reads back tensor for tensor and key for key with the gguf
package's reader, for each tokenizer and tensor type; and llama.cpp (llama-cpp-python, when installed)
runs it to tinyllm's logits and greedy tokens, and tokenizes and detokenizes text as tinyllm does."""
import numpy as np
import pytest

from tinyllm import backend
from tinyllm.models.gpt import GPT, GPTConfig
from tinyllm.text.bpe import BPETokenizer
from tinyllm.text.char import CharTokenizer
from tinyllm.text.gpt2 import GPT2Tokenizer, bytes_to_unicode

gguf = pytest.importorskip("gguf")

from tinyllm.export.common import ExportError  # noqa: E402
from tinyllm.export.gguf import gguf_tensors, save_gguf, to_gguf  # noqa: E402

TINY = dict(block_size=64, n_layer=2, n_head=2, n_embd=32, activation="gelu_tanh")
# newlines, tabs, runs of spaces, punctuation, and 2-, 3- and 4-byte UTF-8 characters
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\tSpeak, speak!  'Tis naïve, "
        "the café's crème — brûlée… 😀 ok?\n  indented line; x = 1 + 2.\n")
BYTE = bytes_to_unicode()
F32, F16, Q8_0 = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.Q8_0


def piece(data):
    return "".join(BYTE[b] for b in data)


def tiny_gpt(vocab_size, seed=0, **kw):
    """Random weights at the scale of a trained model (activations and logits of order one), with
    non-zero biases and norms so that a mix-up of any two tensors shows."""
    backend.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, **{**TINY, **kw}))
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if p.data.ndim == 2:
            p.data[...] = rng.normal(0.0, 0.5 / np.sqrt(p.data.shape[1]), p.data.shape)
        else:
            p.data[...] = (name.endswith("ln_1.weight") or name.endswith("ln_2.weight")
                           or name.endswith("ln_f.weight")) + rng.normal(0.0, 0.1, p.data.shape)
    return model.eval()


def char_tok():
    return CharTokenizer.from_text(TEXT)


def bpe_tok(pattern="gpt4"):
    tok = BPETokenizer(pattern).train(TEXT * 3 + " the then there other another", 300)
    tok.register_special_tokens({"<|endoftext|>": 300})
    return tok


def gpt2_tok():
    encoder = {BYTE[b]: b for b in range(256)}
    encoder.update({"Ġt": 256, "he": 257, "Ġthe": 258, "<|endoftext|>": 259})
    return GPT2Tokenizer(encoder, [("Ġ", "t"), ("h", "e"), ("Ġt", "he")])


TOKENIZERS = {"char": char_tok, "bpe": bpe_tok, "gpt2": gpt2_tok}


def fields(reader):
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def expected_vocab(tok, rows):
    """(token strings, token types, merges, eos) written independently of the exporter."""
    N, C, U = gguf.TokenType.NORMAL, gguf.TokenType.CONTROL, gguf.TokenType.UNUSED
    if isinstance(tok, CharTokenizer):
        tokens = [piece(ch.encode()) for ch in tok.chars]
        merges = []
        for ch in tok.chars:  # each multi-byte character rebuilt from its bytes, left to right
            p = [piece([b]) for b in ch.encode()]
            merges += [f"{''.join(p[:k])} {p[k]}" for k in range(1, len(p)) if f"{''.join(p[:k])} {p[k]}" not in merges]
        extra = rows - len(tokens)
        tokens += [f"<|unused_{i}|>" for i in range(len(tokens), rows - 1)] + ["<|endoftext|>"] if extra else []
        types = [N] * len(tok.chars) + ([U] * (extra - 1) + [C] if extra else [])
        return tokens, types, merges, (rows - 1 if extra else None)
    if isinstance(tok, GPT2Tokenizer):
        by_id = {i: s for s, i in tok.encoder.items()}
        merges = [f"{a} {b}" for a, b in tok.bpe_merges]
    else:
        by_id = {i: piece(b) for i, b in tok.vocab.items()} | {i: s for s, i in tok.special_tokens.items()}
        merges = [f"{piece(tok.vocab[a])} {piece(tok.vocab[b])}" for a, b in tok.merges]
    tokens = [by_id.get(i, f"<|unused_{i}|>") for i in range(rows)]
    types = [C if t in tok.special_tokens else N if i in by_id else U for i, t in enumerate(tokens)]
    return tokens, types, merges, tok.special_tokens.get("<|endoftext|>")


# -- the file, read back with gguf's reader --------------------------------------------------------
@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0"])
@pytest.mark.parametrize("kind", ["char", "bpe", "gpt2"])
def test_every_tensor_and_key_reads_back(tmp_path, kind, dtype):
    tok = TOKENIZERS[kind]()
    model = tiny_gpt(tok.vocab_size + 2)  # two rows past the tokenizer's ids
    assert to_gguf(model, tok, tmp_path / "out", dtype=dtype) == []
    r = gguf.GGUFReader(tmp_path / "out" / "model.gguf")
    kv, c = fields(r), model.config
    tokens, types, merges, eos = expected_vocab(tok, c.vocab_size)
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype]
    pre = {"char": "qwen2", "bpe": "dbrx", "gpt2": "gpt-2"}[kind]
    assert kv == {"general.architecture": "gpt2", "general.name": "tinyllm-gpt", "general.file_type": file_type,
                  "general.quantization_version": gguf.GGML_QUANT_VERSION,
                  "gpt2.context_length": 64, "gpt2.embedding_length": 32, "gpt2.feed_forward_length": 128,
                  "gpt2.block_count": 2, "gpt2.attention.head_count": 2,
                  "gpt2.attention.layer_norm_epsilon": pytest.approx(c.layer_norm_eps),
                  "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": pre, "tokenizer.ggml.tokens": tokens,
                  "tokenizer.ggml.token_type": types, "tokenizer.ggml.merges": merges,
                  "tokenizer.ggml.bos_token_id": eos, "tokenizer.ggml.eos_token_id": eos,
                  "tokenizer.ggml.add_bos_token": False}
    if kind == "char":
        assert "Ã ©" in merges and len(merges) > 3  # é is C3 A9; 😀's four bytes need a chain of three
    expected = dict(gguf_tensors(model))
    got = {t.name: t for t in r.tensors}
    assert list(got) == list(expected)
    known = {gguf.TENSOR_NAMES[t].format(bid=i) for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.GPT2]
             for i in range(c.n_layer)}
    for name, t in got.items():
        assert name.rsplit(".", 1)[0] in known  # a name llama.cpp's gpt2 architecture knows
        want = expected[name]
        assert list(t.shape) == list(want.shape[::-1])  # GGUF lists the fastest dimension first
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(want.shape)
        matrix = want.ndim == 2 and name != "position_embd.weight"  # llama.cpp's convert keeps the rest f32
        if not matrix or dtype == "f32":
            assert t.tensor_type == F32
            np.testing.assert_array_equal(values, want)
        elif dtype == "f16":
            assert t.tensor_type == F16
            np.testing.assert_array_equal(values, want.astype(np.float16).astype(np.float32))
        else:  # q8_0: per block of 32, int8 steps of max|w| / 127 and an f16 scale
            assert t.tensor_type == Q8_0
            amax = np.abs(want.reshape(-1, 32)).max(-1, keepdims=True)
            err = np.abs(values - want).reshape(-1, 32)
            assert (err <= amax * (0.5 / 127 + 2.0 ** -10)).all()
            assert err.max() > 0
    # the tensors are the model's own, in the orientation llama.cpp's gpt2 loader asks for
    blk = model.h[1]
    np.testing.assert_array_equal(expected["token_embd.weight"], model.wte.weight.data)  # {C, vocab}
    np.testing.assert_array_equal(expected["blk.1.attn_qkv.weight"], blk.attn.c_attn.weight.data)  # {C, 3C}
    np.testing.assert_array_equal(expected["blk.1.ffn_up.weight"], blk.mlp.c_fc.weight.data)  # {C, 4C}
    np.testing.assert_array_equal(expected["blk.1.ffn_down.bias"], blk.mlp.c_proj.bias.data)
    np.testing.assert_array_equal(expected["position_embd.weight"], model.wpe.weight.data)
    assert "output.weight" not in expected  # tied: llama.cpp falls back to token_embd


def test_untied_no_bias_sinusoidal_and_float64(tmp_path):
    with backend.default_dtype("float64"):
        model = tiny_gpt(90, tie_weights=False, bias=False, pos_encoding="sinusoidal")
    t = dict(gguf_tensors(model))
    assert all(a.dtype == np.float32 for a in t.values())
    np.testing.assert_array_equal(t["output.weight"], model.lm_head.weight.data.astype(np.float32))
    np.testing.assert_array_equal(t["position_embd.weight"], model.pos_table.data.astype(np.float32))
    assert not t["blk.0.attn_qkv.bias"].any() and t["blk.0.attn_qkv.bias"].shape == (96,)
    notes = to_gguf(model, CharTokenizer([chr(33 + i) for i in range(90)]), tmp_path / "o")
    assert [n.split(":")[0] for n in notes] == ["bias=False", "sinusoidal positions", "float64 weights",
                                                "no end-of-text token"]
    r = gguf.GGUFReader(tmp_path / "o" / "model.gguf")
    assert {t.name: t.tensor_type for t in r.tensors}["output.weight"] == F32


def test_pure_ascii_vocabulary_writes_an_empty_merges_key(tmp_path):
    # GGUFWriter drops an empty array; llama.cpp refuses a gpt2 vocabulary without the key
    tok = CharTokenizer.from_text("hello world")
    save_gguf(tiny_gpt(tok.vocab_size), tmp_path / "m.gguf", tok)
    f = gguf.GGUFReader(tmp_path / "m.gguf").fields["tokenizer.ggml.merges"]
    # the parts after the key: value type, element type, length (the reader lists no element type
    # in ``types`` for an empty array)
    assert [int(p[0]) for p in f.parts[2:]] == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING, 0]
    assert f.contents() == []


def test_q8_0_falls_back_to_f16_for_rows_not_a_multiple_of_32(tmp_path):
    tok = char_tok()
    notes = to_gguf(tiny_gpt(tok.vocab_size, n_embd=48), tok, tmp_path / "o", dtype="q8_0")
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(tmp_path / "o" / "model.gguf").tensors}
    assert types["token_embd.weight"] == types["blk.0.attn_qkv.weight"] == types["blk.1.ffn_up.weight"] == F16
    assert types["blk.0.ffn_down.weight"] == Q8_0  # its rows are 4 * 48 = 192 long
    assert types["position_embd.weight"] == types["blk.0.ffn_up.bias"] == F32
    (note,) = [n for n in notes if n.startswith("q8_0")]
    assert "token_embd.weight" in note and "ffn_down" not in note and "written as f16" in note


def test_notes_exact_gelu_and_end_of_text(tmp_path):
    tok = char_tok()  # more than 11 characters and no spare row: llama.cpp's default EOS id is a character
    notes = to_gguf(tiny_gpt(tok.vocab_size, activation="gelu"), tok, tmp_path / "a")
    assert len(notes) == 2 and notes[0].startswith("exact GELU") and "tanh" in notes[0]
    assert "at most " in notes[0] and "argmaxes" in notes[0]
    assert f"id 11 ({tok.chars[11]!r})" in notes[1] and "--ignore-eos" in notes[1]
    assert to_gguf(tiny_gpt(tok.vocab_size + 1), tok, tmp_path / "b") == []  # a spare row takes <|endoftext|>


def test_refusals(tmp_path):
    tok = char_tok()
    model = tiny_gpt(tok.vocab_size)
    with pytest.raises(ExportError, match="dtype 'q4_0'.*allowed: f32, f16, q8_0"):
        to_gguf(model, tok, tmp_path / "a", dtype="q4_0")
    assert not (tmp_path / "a").exists()
    with pytest.raises(ExportError, match="only a tinyllm GPT"):
        to_gguf(object(), tok, tmp_path / "b")
    with pytest.raises(ExportError, match="tokenizer has 46 ids but the model's embedding has 40 rows"):
        to_gguf(tiny_gpt(40), CharTokenizer([chr(48 + i) for i in range(46)]), tmp_path / "c")
    with pytest.raises(ExportError, match="tokenizer must be a CharTokenizer, BPETokenizer, GPT2Tokenizer or None"):
        to_gguf(model, {"a": 0}, tmp_path / "d")
    with pytest.raises(ExportError, match="lone surrogate U\\+D800"):
        to_gguf(tiny_gpt(2), CharTokenizer(["a", "\ud800"]), tmp_path / "e")
    dup = bpe_tok()
    dup.register_special_tokens({"a": 301})  # the same text as the byte token 'a'
    with pytest.raises(ExportError, match="ids 97 and 301 are the same token 'a'"):
        to_gguf(tiny_gpt(302), dup, tmp_path / "f")
    with pytest.raises(ExportError, match="vocab_size >= 257"):
        to_gguf(tiny_gpt(84), None, tmp_path / "g")
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "keep").write_text("x")
    with pytest.raises(ExportError, match="not an empty directory"):
        to_gguf(model, tok, tmp_path / "h")


# -- llama.cpp itself ------------------------------------------------------------------------------
def load_llama(path):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    # an f32 KV cache (llama.cpp's default is f16), so the comparison measures the export
    return llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=1, n_threads_batch=1, logits_all=True,
                           type_k=0, type_v=0, use_mmap=False, verbose=False)


def logits_pair(llm, model, ids):
    llm.reset()
    llm.eval([int(i) for i in ids])
    theirs = np.array(llm.scores[:len(ids)])  # a copy: scores is llama's own buffer, reused by later calls
    return theirs, model(np.asarray(ids)[None])[0].data[0]


def greedy(llm, prompt, n):
    llm.reset()
    out = []
    for t in llm.generate(prompt, temp=0.0, repeat_penalty=1.0):
        out.append(int(t))
        if len(out) == n:
            return out


@pytest.mark.parametrize("kw, atol", [({}, 1e-3),  # tanh GELU: the function llama.cpp computes
                                      ({"activation": "gelu"}, 2e-3),  # exact GELU, computed as tanh
                                      ({"tie_weights": False, "bias": False, "pos_encoding": "sinusoidal"}, 1e-3)])
def test_llama_cpp_f32_logits_and_greedy_tokens(tmp_path, kw, atol):
    tok = char_tok()
    model = tiny_gpt(tok.vocab_size, **kw)
    save_gguf(model, tmp_path / "m.gguf", tok)
    llm = load_llama(tmp_path / "m.gguf")
    ids = tok.encode(TEXT)[:48]
    theirs, ours = logits_pair(llm, model, ids)
    # measured: 4-5e-4 (tanh; ggml reads GELU from an fp16 table), 5-6e-4 (exact GELU)
    np.testing.assert_allclose(theirs, ours, atol=atol, rtol=0)
    assert (theirs.argmax(-1) == ours.argmax(-1)).all()
    prompt = ids[:8]
    want = model.generate(np.array([prompt]), max_new_tokens=20)[0, 8:].tolist()
    assert greedy(llm, prompt, 20) == want
    assert greedy(llm, prompt, 20) == want  # again: no state kept between calls


@pytest.mark.parametrize("dtype, atol", [("f16", 5e-3), ("q8_0", 0.1)])
def test_llama_cpp_f16_and_q8_0_logits_are_close(tmp_path, dtype, atol):
    tok = char_tok()
    model = tiny_gpt(tok.vocab_size)
    save_gguf(model, tmp_path / "m.gguf", tok, dtype)
    theirs, ours = logits_pair(load_llama(tmp_path / "m.gguf"), model, tok.encode(TEXT)[:48])
    # measured: f16 1.0-1.2e-3; q8_0 2-4e-2 (llama.cpp also rounds the activations to 8 bits for q8_0)
    np.testing.assert_allclose(theirs, ours, atol=atol, rtol=0)
    assert (theirs.argmax(-1) == ours.argmax(-1)).mean() >= 0.9


@pytest.mark.parametrize("kind", ["char", "bpe", "bpe-gpt2", "gpt2"])
def test_llama_cpp_tokenizes_and_detokenizes_as_tinyllm(tmp_path, kind):
    tok = {"char": char_tok, "bpe": bpe_tok, "bpe-gpt2": lambda: bpe_tok("gpt2"), "gpt2": gpt2_tok}[kind]()
    text = TEXT if kind != "gpt2" else " the other then, the end\n\n  the"
    save_gguf(tiny_gpt(tok.vocab_size), tmp_path / "m.gguf", tok)
    llm = load_llama(tmp_path / "m.gguf")
    ids = tok.encode(text)
    assert len(ids) < len(text.encode()) or kind == "char"  # the merges are in use
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == ids
    assert llm.detokenize(ids).decode() == text
    if kind == "char":  # each character a token of its own, multi-byte ones too
        assert llm.tokenize("é—😀".encode(), add_bos=False, special=False) == tok.encode("é—😀")


def test_llama_cpp_loads_an_ascii_vocabulary_without_newline(tmp_path):
    # no merges (the key is written empty), and no "\n", which llama.cpp tokenizes while loading: it
    # logs a warning and leaves the linefeed token unset
    tok = CharTokenizer.from_text("hello, world")
    save_gguf(tiny_gpt(tok.vocab_size), tmp_path / "m.gguf", tok)
    llm = load_llama(tmp_path / "m.gguf")
    assert llm.tokenize(b"hello, world", add_bos=False, special=False) == tok.encode("hello, world")
    assert llm.n_vocab() == tok.vocab_size


def test_llama_cpp_end_of_text_token_is_as_the_note_says(tmp_path):
    tok = char_tok()
    save_gguf(tiny_gpt(tok.vocab_size), tmp_path / "a.gguf", tok)
    assert load_llama(tmp_path / "a.gguf").token_eos() == 11  # the note's claim: its default id
    save_gguf(tiny_gpt(tok.vocab_size + 1), tmp_path / "b.gguf", tok)
    assert load_llama(tmp_path / "b.gguf").token_eos() == tok.vocab_size  # the spare row's <|endoftext|>
