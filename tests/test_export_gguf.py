"""tinyllm.export.save_gguf: a GPT written as GGUF reads back tensor for tensor and key for key (needs the
gguf package), and llama.cpp runs it to the same logits and greedy tokens as tinyllm (needs llama_cpp)."""
import numpy as np
import pytest

from tinyllm import backend
from tinyllm.models.gpt import GPT, GPTConfig

gguf = pytest.importorskip("gguf")

from tinyllm.export import gguf_tensors, save_gguf  # noqa: E402

TINY = dict(vocab_size=300, block_size=64, n_layer=2, n_head=2, n_embd=32, activation="gelu_tanh")


def tiny_gpt(seed=0, **kw):
    backend.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, **kw}))
    rng = np.random.default_rng(seed)
    for p in model.parameters():  # non-zero biases and norms, so a mix-up of any two tensors shows
        p.data[...] = rng.normal(0.0, 0.1 if p.data.ndim == 1 else 0.05, p.data.shape)
    return model


def fields(reader):
    return {k: f.contents() for k, f in reader.fields.items()}


def test_every_tensor_and_key_reads_back(tmp_path):
    model = tiny_gpt()
    path = save_gguf(model, tmp_path / "m.gguf")
    r = gguf.GGUFReader(path)
    kv = fields(r)
    c = model.config
    assert kv["general.architecture"] == "gpt2" and kv["general.file_type"] == gguf.LlamaFileType.ALL_F32
    assert (kv["gpt2.context_length"], kv["gpt2.embedding_length"], kv["gpt2.feed_forward_length"],
            kv["gpt2.block_count"], kv["gpt2.attention.head_count"]) == (64, 32, 128, 2, 2)
    assert kv["gpt2.attention.layer_norm_epsilon"] == pytest.approx(c.layer_norm_eps)
    assert kv["tokenizer.ggml.model"] == "gpt2" and len(kv["tokenizer.ggml.tokens"]) == c.vocab_size
    assert len(set(kv["tokenizer.ggml.tokens"])) == c.vocab_size  # llama.cpp looks tokens up by text
    assert kv["tokenizer.ggml.eos_token_id"] == c.vocab_size - 1
    expected = dict(gguf_tensors(model))
    got = {t.name: t for t in r.tensors}
    assert list(got) == list(expected)
    known = {gguf.TENSOR_NAMES[t].format(bid=i) for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.GPT2]
             for i in range(c.n_layer)}
    for name, t in got.items():  # every name is one llama.cpp's gpt2 architecture knows
        assert name.rsplit(".", 1)[0] in known
        assert t.tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_array_equal(np.asarray(t.data).reshape(expected[name].shape), expected[name])
        assert list(t.shape) == list(expected[name].shape[::-1])  # GGUF lists the fastest dimension first
    # the tensors are the model's own, in the orientation llama.cpp's gpt2 loader asks for
    blk = model.h[1]
    np.testing.assert_array_equal(expected["token_embd.weight"], model.wte.weight.data)  # {C, vocab}
    np.testing.assert_array_equal(expected["blk.1.attn_qkv.weight"], blk.attn.c_attn.weight.data)  # {C, 3C}
    np.testing.assert_array_equal(expected["blk.1.ffn_up.weight"], blk.mlp.c_fc.weight.data)  # {C, 4C}
    np.testing.assert_array_equal(expected["blk.1.ffn_down.bias"], blk.mlp.c_proj.bias.data)
    assert "output.weight" not in expected  # tied: llama.cpp falls back to token_embd


def test_untied_no_bias_sinusoidal_and_float64():
    with backend.default_dtype("float64"):
        model = tiny_gpt(tie_weights=False, bias=False, pos_encoding="sinusoidal")
    t = dict(gguf_tensors(model))
    assert all(a.dtype == np.float32 for a in t.values())
    np.testing.assert_array_equal(t["output.weight"], model.lm_head.weight.data.astype(np.float32))
    np.testing.assert_array_equal(t["position_embd.weight"], model.pos_table.data.astype(np.float32))
    assert not t["blk.0.attn_qkv.bias"].any() and t["blk.0.attn_qkv.bias"].shape == (96,)


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="gelu_tanh"):
        save_gguf(tiny_gpt(activation="gelu"), tmp_path / "a.gguf")
    save_gguf(tiny_gpt(activation="gelu"), tmp_path / "a.gguf", approximate_gelu=True)
    with pytest.raises(ValueError, match="vocab_size >= 258"):
        save_gguf(tiny_gpt(vocab_size=84), tmp_path / "b.gguf")
    with pytest.raises(TypeError, match="GPT"):
        save_gguf(object(), tmp_path / "c.gguf")


def test_gpt2_tokenizer_goes_in(tmp_path):
    from tinyllm.text.gpt2 import GPT2Tokenizer, bytes_to_unicode
    byte = bytes_to_unicode()
    encoder = {byte[b]: b for b in range(256)}
    encoder.update({"Ġt": 256, "he": 257, "Ġthe": 258, "<|endoftext|>": 259})
    tok = GPT2Tokenizer(encoder, [("Ġ", "t"), ("h", "e"), ("Ġt", "he")])
    model = tiny_gpt(vocab_size=262)  # two rows past the tokenizer's ids
    kv = fields(gguf.GGUFReader(save_gguf(model, tmp_path / "t.gguf", tok)))
    tokens, types = kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"]
    assert tokens[:260] == sorted(encoder, key=encoder.get) and kv["tokenizer.ggml.merges"] == ["Ġ t", "h e", "Ġt he"]
    assert [types[i] for i in (0, 258, 259, 260)] == [gguf.TokenType.NORMAL, gguf.TokenType.NORMAL,
                                                      gguf.TokenType.CONTROL, gguf.TokenType.UNUSED]
    assert kv["tokenizer.ggml.eos_token_id"] == 259
    assert tok.encode(" the") == [258]


# -- llama.cpp itself ------------------------------------------------------------------------------
@pytest.fixture
def llama_pair(tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    model = tiny_gpt()
    llm = llama_cpp.Llama(model_path=str(save_gguf(model, tmp_path / "m.gguf")), n_ctx=64, n_threads=1,
                          n_threads_batch=1, logits_all=True, type_k=0, type_v=0, use_mmap=False, verbose=False)
    return model, llm


def test_llama_cpp_computes_the_same_logits(llama_pair):
    model, llm = llama_pair
    ids = np.random.default_rng(1).integers(0, TINY["vocab_size"], 20)
    llm.reset()
    llm.eval([int(i) for i in ids])
    theirs = np.asarray(llm.scores[:len(ids)])
    model.eval()
    ours = model(ids[None])[0].data[0]
    # ggml's GELU reads an fp16 table, so llama.cpp is close, not bit-equal
    np.testing.assert_allclose(theirs, ours, atol=2e-3, rtol=0)
    assert (theirs.argmax(-1) == ours.argmax(-1)).all()


def run_llama(llm, prompt, n):
    llm.reset()
    out = []
    for tok in llm.generate(prompt, temp=0.0, repeat_penalty=1.0):
        out.append(tok)
        if len(out) == n:
            return np.array(out)


def test_llama_cpp_gives_the_same_greedy_tokens(llama_pair):
    model, llm = llama_pair
    prompt = [int(i) for i in np.random.default_rng(2).integers(0, TINY["vocab_size"], 8)]
    ours = model.generate(np.array([prompt]), max_new_tokens=40)[0, len(prompt):]
    np.testing.assert_array_equal(run_llama(llm, prompt, 40), ours)
    np.testing.assert_array_equal(run_llama(llm, prompt, 40), ours)  # again: no state kept between calls
