"""to_hf against transformers itself: the exported directory must load with AutoModelForCausalLM and
AutoTokenizer and give tinyllm's logits, generated tokens and token ids, and GPT.from_pretrained must
read it back exactly."""
import json
import os

import numpy as np
import pytest

from tinyllm.backend import default_dtype
from tinyllm.export.common import ExportError
from tinyllm.export.hf import to_hf, write_hf_tokenizer
from tinyllm.models.gpt import GPT, GPTConfig
from tinyllm.text import BPETokenizer, CharTokenizer, GPT2Tokenizer, load_tokenizer

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
tokenizers = pytest.importorskip("tokenizers")
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

# Training-like text: newlines (single and double), runs of spaces, a tab, punctuation, digits and
# non-ASCII letters, so every tokenizer meets what a real corpus gives it.
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.  \"Is't so?\" -- naïve café, 3 Äpfel; 42 times!\n"
        "\tIndented line... and   three spaces.\n") * 20


def random_gpt(seed=0, dtype=np.float32, **overrides):
    """A tiny GPT with random weights everywhere, biases and LayerNorm gains included, so that any
    transposed, swapped or dropped tensor changes the logits."""
    cfg = dict(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_embd=32)
    cfg.update(overrides)
    with default_dtype(dtype):
        model = GPT(GPTConfig(**cfg))
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        gain = 1.0 if name.split(".")[-2].startswith("ln") and name.endswith("weight") else 0.0
        p.data[...] = gain + rng.normal(0, 0.2, p.data.shape)
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The models are tiny: torch's thread pool only costs time here (10x on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def char_tok():
    return CharTokenizer.from_text(TEXT)


@pytest.fixture(scope="module")
def bpe_tok():
    tok = BPETokenizer()  # GPT-4's split pattern
    tok.train(TEXT, vocab_size=300)
    tok.register_special_tokens({"<|endoftext|>": 300})
    return tok


@pytest.fixture(scope="module")
def gpt2_tok(tmp_path_factory):
    """A GPT2Tokenizer from vocab.json + merges.txt that `tokenizers` trained on the text."""
    hf = tokenizers.ByteLevelBPETokenizer(add_prefix_space=False)
    hf.train_from_iterator([TEXT], vocab_size=320, min_frequency=2, special_tokens=["<|endoftext|>"],
                           show_progress=False)
    vocab, merges = hf.save_model(str(tmp_path_factory.mktemp("gpt2_files")))
    return GPT2Tokenizer.from_files(vocab, merges)


# name -> (GPTConfig overrides, model dtype, tokenizer fixture); vocab_size defaults to the tokenizer's
CONFIGS = {
    "gelu-tied-char": (dict(), np.float32, "char_tok"),
    "gelu_tanh-untied-bpe": (dict(activation="gelu_tanh", tie_weights=False, vocab_size=301), np.float32, "bpe_tok"),
    "nobias-sinusoidal-gpt2": (dict(bias=False, pos_encoding="sinusoidal", vocab_size=320), np.float32, "gpt2_tok"),
    "float64-untied-sinusoidal": (dict(tie_weights=False, pos_encoding="sinusoidal"), np.float64, "char_tok"),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def exported(request, tmp_path_factory):
    overrides, dtype, tok_name = CONFIGS[request.param]
    tok = request.getfixturevalue(tok_name)
    model = random_gpt(seed=len(request.param), dtype=dtype, **{"vocab_size": tok.vocab_size, **overrides})
    out = str(tmp_path_factory.mktemp("hf") / "export")
    notes = to_hf(model, tok, out)
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    return dict(name=request.param, model=model, tok=tok, dir=out, notes=notes, hf=hf.eval(), info=info)


def prompt_ids(ex, n=12):
    return np.array([ex["tok"].encode(TEXT[:200])[:n], ex["tok"].encode(TEXT[60:260])[:n]])


def test_files_and_config(exported):
    files = set(os.listdir(exported["dir"]))
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json"} <= files
    with open(os.path.join(exported["dir"], "config.json")) as f:
        cfg = json.load(f)
    c = exported["model"].config
    assert cfg["model_type"] == "gpt2" and cfg["architectures"] == ["GPT2LMHeadModel"]
    assert (cfg["vocab_size"], cfg["n_positions"], cfg["n_embd"], cfg["n_layer"], cfg["n_head"]) == \
        (c.vocab_size, c.block_size, c.n_embd, c.n_layer, c.n_head)
    assert cfg["activation_function"] == {"gelu": "gelu", "gelu_tanh": "gelu_new"}[c.activation]
    assert cfg["tie_word_embeddings"] == c.tie_weights
    from safetensors import safe_open
    with safe_open(os.path.join(exported["dir"], "model.safetensors"), "np") as f:
        assert f.metadata() == {"format": "pt"}
        keys = set(f.keys())
        assert all(f.get_tensor(k).dtype == np.float32 for k in keys)
    assert ("lm_head.weight" in keys) == (not c.tie_weights)  # a tied head is left out
    assert all(k.startswith("transformer.") for k in keys - {"lm_head.weight"})  # as save_pretrained writes


def test_transformers_loads_every_tensor(exported):
    info, hf = exported["info"], exported["hf"]
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    tied = hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    assert tied == exported["model"].config.tie_weights  # an untied head really is its own tensor


def test_notes(exported):
    notes, c = exported["notes"], exported["model"].config
    assert any("bias=False" in n for n in notes) == (not c.bias)
    assert any("sinusoidal" in n for n in notes) == (c.pos_encoding == "sinusoidal")
    assert any("float64" in n for n in notes) == (exported["model"].lm_head.weight.data.dtype == np.float64)
    assert any("untied lm_head" in n for n in notes) == (not c.tie_weights)


def test_logits_equal_tinyllm(exported):
    ids = prompt_ids(exported, n=exported["model"].config.block_size)
    ours = exported["model"](ids)[0].data.astype(np.float64)
    with torch.no_grad():
        theirs = exported["hf"](torch.tensor(ids)).logits.double().numpy()
    diff = np.abs(theirs - ours).max()
    rel = diff / np.abs(ours).max()
    print(f"{exported['name']}: max |logit diff| {diff:.3g} abs, {rel:.3g} relative to max |logit|")
    assert rel < 1e-5


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_equal_tokens(exported, num_beams):
    ids = prompt_ids(exported, n=6)
    eos = exported["hf"].generation_config.eos_token_id
    ours = exported["model"].generate(ids, max_new_tokens=20, num_beams=num_beams, eos_token_id=eos,
                                      pad_token_id=eos)
    theirs = exported["hf"].generate(torch.tensor(ids), attention_mask=torch.ones(ids.shape, dtype=torch.long),
                                     max_new_tokens=20, do_sample=False, num_beams=num_beams,
                                     pad_token_id=eos).numpy()
    np.testing.assert_array_equal(theirs, ours)


def test_reimport_gives_same_state_dict(exported):
    model = exported["model"]
    back = GPT.from_pretrained(exported["dir"])
    want = {k: v.numpy().astype(np.float32) for k, v in model.state_dict().items()}
    got = {k: v.numpy() for k, v in back.state_dict().items()}
    if model.config.pos_encoding == "sinusoidal":  # GPT-2 has the learned table it equals
        want["wpe.weight"] = model.pos_table.numpy().astype(np.float32)
    for k in got.keys() - want.keys():  # bias=False: the zero biases GPT-2 must have
        assert k.endswith(".bias") and not got[k].any(), k
        want[k] = got[k]
    assert got.keys() == want.keys()
    for k in got:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_pipeline_runs(exported):
    pipe = transformers.pipeline("text-generation", model=exported["dir"])
    prompt = TEXT[:15]
    out = pipe(prompt, max_new_tokens=8, do_sample=False)
    assert out[0]["generated_text"].startswith(prompt)
    # the pipeline's tokens are tinyllm's greedy tokens
    ids = np.array([exported["tok"].encode(prompt)])
    eos = exported["hf"].generation_config.eos_token_id
    want = exported["tok"].decode(exported["model"].generate(ids, max_new_tokens=8, eos_token_id=eos,
                                                             pad_token_id=eos)[0].tolist())
    assert out[0]["generated_text"] == want


# ---------------------------------------------------------------- tokenizers


@pytest.fixture(scope="module", params=["char_tok", "bpe_tok", "bpe_gpt2_pattern", "gpt2_tok"])
def tok_pair(request, tmp_path_factory):
    if request.param == "bpe_gpt2_pattern":
        ours = BPETokenizer("gpt2").train(TEXT, vocab_size=290)
    else:
        ours = request.getfixturevalue(request.param)
    out = tmp_path_factory.mktemp("tok")
    notes = write_hf_tokenizer(ours, str(out))
    return ours, transformers.AutoTokenizer.from_pretrained(str(out)), notes, str(out)


EXTRA = ["", " ", "\n\n\n", "  leading and trailing  ", "naïve café Äpfel", "it's I'm you're 1234567",
         "tab\there", "\r\n", "a" * 200 + " " * 70]


def test_tokenizer_ids_equal(tok_pair):
    ours, theirs, _, _ = tok_pair
    texts = [TEXT, TEXT[7:300]] + EXTRA + ["日本語 and emoji 😀👍🏽", "\x00\x7f controls"]
    if isinstance(ours, CharTokenizer):  # only the characters it has (see the unknown-character test)
        texts = [t for t in texts if set(t) <= set(ours.chars)]
        assert len(texts) >= 5
    for text in texts:
        ids = ours.encode(text)
        assert theirs.encode(text) == ids, text  # no special tokens added
        assert theirs(text)["input_ids"] == ids
        assert theirs.decode(ids) == text
        assert ours.decode(theirs.encode(text)) == text


def test_tokenizer_special_tokens(tok_pair):
    ours, theirs, _, _ = tok_pair
    if not getattr(ours, "special_tokens", None):
        pytest.skip("no special tokens")
    text = "Speak, speak.<|endoftext|>All:<|endoftext|>"
    assert theirs.encode(text) == ours.encode(text, allowed_special="all")
    assert theirs.decode(ours.encode(text, allowed_special="all")) == text
    assert theirs.eos_token == "<|endoftext|>"


def test_char_tokenizer_unknown_character_raises(char_tok, tmp_path):
    notes = write_hf_tokenizer(char_tok, str(tmp_path))
    assert any("outside its vocabulary" in n for n in notes)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    with pytest.raises(Exception, match="UNK"):
        theirs.encode("Speak 日本")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        char_tok.encode("Speak 日本")


def test_tokenizer_config_classes(tok_pair):
    ours, theirs, _, out = tok_pair
    with open(os.path.join(out, "tokenizer_config.json")) as f:
        cfg = json.load(f)
    gpt2_layout = not isinstance(ours, CharTokenizer) and ours.pattern == "gpt2"
    assert cfg["tokenizer_class"] == ("GPT2Tokenizer" if gpt2_layout else "PreTrainedTokenizerFast")
    assert os.path.isfile(os.path.join(out, "vocab.json")) == gpt2_layout
    if gpt2_layout:  # the vocab.json + merges.txt alone (older readers) give the same ids
        slow = GPT2Tokenizer.from_files(os.path.join(out, "vocab.json"), os.path.join(out, "merges.txt"))
        assert slow.encode(TEXT) == ours.encode(TEXT)


def test_load_tokenizer_reads_the_export_back(tok_pair):
    ours, _, _, out = tok_pair
    back = load_tokenizer(out)
    assert type(back) is type(ours)
    assert back.encode(TEXT) == ours.encode(TEXT)
    if not isinstance(ours, CharTokenizer):
        assert back.special_tokens == ours.special_tokens


def test_tokenizer_none_writes_model_only(tmp_path):
    notes = to_hf(random_gpt(), None, str(tmp_path / "m"))
    assert any("no tokenizer" in n for n in notes)
    assert sorted(os.listdir(tmp_path / "m")) == ["config.json", "generation_config.json", "model.safetensors"]
    with open(tmp_path / "m" / "config.json") as f:
        cfg = json.load(f)
    assert cfg["bos_token_id"] is None and cfg["eos_token_id"] is None  # not GPT2Config's 50256


# ---------------------------------------------------------------- refusals


def test_refuses_non_gpt(tmp_path):
    from tinyllm import nn
    with pytest.raises(ExportError, match="only a tinyllm GPT"):
        to_hf(nn.Linear(2, 2), None, str(tmp_path / "x"))
    assert not os.path.exists(tmp_path / "x")


def test_refuses_int8(tmp_path):
    from tinyllm.nn.quantized import quantize_
    with pytest.raises(ExportError, match="int8"):
        to_hf(quantize_(random_gpt()), None, str(tmp_path / "x"))


def test_refuses_non_empty_out_dir_and_leaves_it(tmp_path, char_tok):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an empty directory"):
        to_hf(random_gpt(), char_tok, str(tmp_path))
    assert os.listdir(tmp_path) == ["keep.txt"] and (tmp_path / "keep.txt").read_text() == "mine"


def test_refuses_tokenizer_larger_than_vocab(tmp_path, bpe_tok):
    with pytest.raises(ExportError, match=r"ids up to 300, past the model's vocab_size 64"):
        to_hf(random_gpt(vocab_size=64), bpe_tok, str(tmp_path / "x"))
    assert not os.path.exists(tmp_path / "x")  # nothing half written
    assert os.listdir(tmp_path) == []


def test_refuses_unknown_tokenizer(tmp_path):
    with pytest.raises(ExportError, match="tokenizer must be a CharTokenizer"):
        to_hf(random_gpt(), object(), str(tmp_path / "x"))


def test_load_tokenizer_reads_hub_style_gpt2_json(tmp_path):
    """The Hub's gpt2 tokenizer.json (ByteLevel with its built-in GPT-2 regex), as `tokenizers` writes it."""
    hf = tokenizers.ByteLevelBPETokenizer(add_prefix_space=False)
    hf.train_from_iterator([TEXT], vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False)
    hf.save(str(tmp_path / "tokenizer.json"))
    back = load_tokenizer(str(tmp_path))
    assert isinstance(back, GPT2Tokenizer)
    for text in (TEXT, "naïve 日本 😀  x", "a<|endoftext|>b"):
        assert back.encode(text, allowed_special="all") == hf.encode(text).ids


def test_load_tokenizer_refuses_other_hf_json(tmp_path):
    tok = tokenizers.Tokenizer(tokenizers.models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    tok.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(ValueError, match="Hugging Face tokenizer.json of a kind tinyllm cannot run exactly"):
        load_tokenizer(str(tmp_path))


def test_bpe_custom_split_pattern_is_written_with_a_note(tmp_path):
    ours = BPETokenizer(r"\w+|\s+|[^\w\s]+").train(TEXT, vocab_size=280)
    notes = write_hf_tokenizer(ours, str(tmp_path))
    assert any("custom split pattern" in n for n in notes)
    theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    assert theirs.encode(TEXT) == ours.encode(TEXT)


def test_refuses_bpe_tokens_with_equal_bytes(tmp_path):
    # "ab"+"c" and "a"+"bc" both make b"abc": two ids that one HF vocabulary entry cannot hold
    merges = [[97, 98], [256, 99], [98, 99], [97, 258]]
    ours = BPETokenizer.from_dict({"type": "bpe", "pattern": "gpt4", "merges": merges})
    with pytest.raises(ExportError, match=r"BPE tokens 257 and 259 have the same bytes b'abc'"):
        to_hf(random_gpt(vocab_size=260), ours, str(tmp_path / "x"))
    assert os.listdir(tmp_path) == []
