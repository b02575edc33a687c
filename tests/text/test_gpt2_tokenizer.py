"""GPT2Tokenizer against Hugging Face: a byte-level BPE trained by `tokenizers`, saved as vocab.json +
merges.txt, must encode and decode identically in tinyllm, `tokenizers` and `transformers`."""
import json
import random
import unicodedata

import pytest
from hypothesis import given, settings, strategies as st

from tinyllm.text import GPT2Tokenizer, load_tokenizer
from tinyllm.text.gpt2 import bytes_to_unicode

tokenizers = pytest.importorskip("tokenizers")

WORDS = ("the of and to in is you that it he was for on are as with his they at be this have from "
         "I'm you're we've she'll he'd it's can't DON'T 'tis o'clock "
         "naïve café Straße façade ÆON œuvre добрый день мир 日本語 東京 한국어 مرحبا שלום "
         "नमस्ते ﷺ e\u0301 n\u0303 😀 👍🏽 👨‍👩‍👧 🇫🇷 ✓ → € £ ½ ² Ⅳ ٣٤ १२ 0 7 42 2024 3.14 1,000,000 "
         "x_y foo-bar a.b.c <b> {} [] ... !!! ??? ---").split()
SEPARATORS = [" "] * 20 + [", ", ".\n", "  ", "\n\n", "! ", "\t", " \n ", "\r\n", "   "]

TRICKY = [
    "", " ", "  ", "\n", "a", "Hello world", "Hello  world", "Hello   world ", "  leading and trailing  ",
    "it's I'm you're we've she'll he'd can't 'S 'T 'Re DON'T", "'s's''s 'll'll",
    "123 4567 89012345 3.14159 1,000,000 ½ ² Ⅳ ٣٤ १२", "x1 y22 z333", "tab\there\tand\nnewline\r\n",
    "line1\n\nline3\n\n\n", " \n \n ", "\u00a0nbsp\u3000ideo\u2028sep\x85nel\x1cfs",
    "naïve café Straße ÆON", "добрый день, мир!", "日本語のテキスト", "한국어 텍스트", "مرحبا بالعالم",
    "e\u0301\u0301 n\u0303 a\u030a", "😀👍🏽👨‍👩‍👧🇫🇷 emoji", "𝐀𝐁𝐂 𝟏𝟐𝟑 math", "\U000e0001\U000e0067 tags",
    "mixed日本ab12 34cd!!?..", "<|endoftext|>", "a<|endoftext|>b", "<|endoftext|><|endoftext|>",
    "<|endof", "a" * 3000, " " * 500, "é" * 700, "ab" * 2000 + "c", "\x00\x01\x7f\x80\xff",
]


SYLLABLES = "ka to ri sen ma lu de qua ing er th é ñø ж да 日 本 한 글 ع ب 😀 7 42 ' - .".split()


def synthetic_text(n_words, seed=0):
    """Known words mixed with made-up ones, so the BPE has thousands of distinct chunks to learn from."""
    rng = random.Random(seed)

    def word():
        if rng.random() < 0.5:
            return rng.choice(WORDS)
        return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4)))
    return "".join(word() + rng.choice(SEPARATORS) for _ in range(n_words))


@pytest.fixture(scope="module")
def hf_files(tmp_path_factory):
    hf = tokenizers.ByteLevelBPETokenizer(add_prefix_space=False)
    corpus = [synthetic_text(4000, seed=s) for s in range(3)] + ["a" * 64, " " * 64, "é" * 32]
    hf.train_from_iterator(corpus, vocab_size=1000, min_frequency=2,
                           special_tokens=["<|endoftext|>"], show_progress=False)
    d = tmp_path_factory.mktemp("hf_gpt2")
    vocab, merges = hf.save_model(str(d))
    return hf, d, vocab, merges


@pytest.fixture(scope="module")
def ours(hf_files):
    _, _, vocab, merges = hf_files
    return GPT2Tokenizer.from_files(vocab, merges)


def test_files_look_like_gpt2(hf_files, ours):
    _, _, vocab, merges = hf_files
    with open(merges, encoding="utf-8") as f:
        assert f.readline().startswith("#version")
    assert ours.special_tokens == {"<|endoftext|>": 0}
    assert ours.vocab_size == 1000 and len(ours.bpe_merges) == 1000 - 257
    assert max(len(b) for b in ours.vocab.values()) >= 6          # long tokens
    assert sum(max(b) >= 0x80 for b in ours.vocab.values()) > 50   # and many non-ASCII ones


@pytest.mark.parametrize("text", TRICKY, ids=lambda t: ascii(t)[:30])
def test_tricky_strings_match_hf(hf_files, ours, text):
    hf = hf_files[0]
    ids = ours.encode(text, allowed_special="all")
    assert ids == hf.encode(text).ids
    assert ours.decode(ids) == text


assigned = st.characters(blacklist_categories=("Cn", "Cs"))  # see tinyllm/text/pretokenize.py
pieces = st.sampled_from(WORDS + SEPARATORS + ["<|endoftext|>", "'", "'s", " '", "1", " 12", "\u0301"])


@settings(max_examples=100)
@given(text=st.one_of(st.text(assigned), st.lists(pieces, max_size=30).map("".join),
                      st.lists(st.one_of(pieces, st.text(assigned, max_size=3)), max_size=20).map("".join)))
def test_random_text_matches_hf(hf_files, ours, text):
    hf = hf_files[0]
    ids = ours.encode(text, allowed_special="all")
    assert ids == hf.encode(text).ids
    assert ours.decode(ids) == text


@settings(max_examples=100)
@given(ids=st.lists(st.integers(0, 999), max_size=40))
def test_decode_matches_hf_including_broken_utf8(hf_files, ours, ids):
    # random ids often cut multi-byte characters; both sides must put U+FFFD in the same places
    assert ours.decode(ids) == hf_files[0].decode(ids, skip_special_tokens=False)


def test_matches_transformers(hf_files, ours):
    transformers = pytest.importorskip("transformers")
    tok = transformers.GPT2TokenizerFast.from_pretrained(str(hf_files[1]))
    texts = TRICKY + [synthetic_text(200, seed=s) for s in range(10, 15)]
    for text in texts:
        ids = ours.encode(text, allowed_special="all")
        assert ids == tok.encode(text), text
        assert ours.decode(ids) == tok.decode(ids)


def test_endoftext_needs_allowed_special(ours):
    with pytest.raises(ValueError, match="special token"):
        ours.encode("a<|endoftext|>b")
    assert 0 not in ours.encode("a<|endoftext|>b", allowed_special="none")


def test_save_load_and_load_tokenizer(tmp_path, hf_files, ours):
    path = tmp_path / "gpt2.json"
    ours.save(path)
    assert json.loads(path.read_text(encoding="utf-8"))["type"] == "gpt2"
    text = synthetic_text(300, seed=7) + "<|endoftext|>"
    for loaded in (GPT2Tokenizer.load(path), load_tokenizer(str(path)), load_tokenizer(str(hf_files[1]))):
        assert isinstance(loaded, GPT2Tokenizer)
        assert loaded.encode(text, "all") == ours.encode(text, "all")


# ---------------------------------------------------------------- file format and errors
def test_bytes_to_unicode():
    table = bytes_to_unicode()
    assert len(table) == 256 and len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("a")] == "a"
    assert all(unicodedata.category(c)[0] in "LNPS" for c in table.values())  # printable, no spaces


def _write(tmp_path, vocab, merges_text):
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text(merges_text, encoding="utf-8")
    return tmp_path / "vocab.json", tmp_path / "merges.txt"


def _byte_vocab():
    return {c: i for i, c in enumerate(bytes_to_unicode().values())}


def test_minimal_files_without_header(tmp_path):
    vocab = _byte_vocab()
    vocab["Ġa"] = 256
    tok = GPT2Tokenizer.from_files(*_write(tmp_path, vocab, "Ġ a\n"))
    assert tok.special_tokens == {}
    assert tok.encode(" a a") == [256, 256]
    assert tok.decode([256]) == " a"


def test_malformed_merges_line(tmp_path):
    with pytest.raises(ValueError, match=r"merges.txt line 2 should be two tokens .*got 'a b c'"):
        GPT2Tokenizer.from_files(*_write(tmp_path, _byte_vocab(), "#version: 0.2\na b c\n"))


def test_merge_result_missing_from_vocab(tmp_path):
    with pytest.raises(ValueError, match=r"merge 0 \('a' 'b'\) needs \['ab'\]"):
        GPT2Tokenizer.from_files(*_write(tmp_path, _byte_vocab(), "a b\n"))


def test_vocab_outside_byte_alphabet(tmp_path):
    vocab = _byte_vocab()
    vocab["a b"] = 256  # a raw space is not in GPT-2's byte alphabet
    with pytest.raises(ValueError, match=r"'a b' \(id 256\) is not in GPT-2's byte-level alphabet"):
        GPT2Tokenizer.from_files(*_write(tmp_path, vocab, ""))


def test_missing_byte_is_reported_when_used(tmp_path):
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values()) if c != "z"}
    tok = GPT2Tokenizer.from_files(*_write(tmp_path, vocab, ""))
    assert tok.decode(tok.encode("abc")) == "abc"
    with pytest.raises(ValueError, match=r"byte 0x7a \(in 'z'\) has no token"):
        tok.encode("z")
