"""BPETokenizer: incremental training against a naive reference, exact round trips of any Unicode,
the long-chunk merge loop, special tokens, save/load and error messages."""
import functools
import json
import random
import time
from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from tinyllm.text import BPETokenizer, load_tokenizer
from tinyllm.text.pretokenize import get_splitter

WORDS = ("the of and to in is you that it he was for on are as with his they at be this have from "
         "or one had by word but not what all were we when your can said there use an each which she "
         "do how their if will up other about out many then them these so some her would make like him "
         "naïve café Straße добрый день 日本語 ✓ 😀 👍🏽 e\u0301 can't won't I'm we'll 1 42 2024 3.14").split()


def synthetic_text(n_words, seed=0):
    rng = random.Random(seed)
    out = []
    for _ in range(n_words):
        w = rng.choice(WORDS)
        out.append(w.capitalize() if rng.random() < 0.1 else w)
        out.append(rng.choice([" "] * 12 + [", ", ".\n", "  ", "\n\n", "! "]))
    return "".join(out)


def reference_train(text, vocab_size, pattern):
    """minbpe's algorithm, recounting every pair before each merge; ties go to the smallest pair."""
    chunks = [list(c.encode("utf-8")) for c in get_splitter(pattern).split(text)]
    merges = {}
    for new_id in range(256, vocab_size):
        counts = Counter(p for ids in chunks for p in zip(ids, ids[1:]))
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges[best] = new_id
        new_chunks = []
        for ids in chunks:
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            new_chunks.append(out)
        chunks = new_chunks
    return merges, [i for ids in chunks for i in ids]


@functools.lru_cache(maxsize=None)
def trained(pattern="gpt4", vocab_size=600):
    return BPETokenizer(pattern).train(synthetic_text(3000), vocab_size)


# ---------------------------------------------------------------- training
def test_wikipedia_example():
    # aaabdaaabac: aa -> 256, then ab and (256, a) tie at 2 and the smaller pair (97, 98) wins.
    tok = BPETokenizer().train("aaabdaaabac", 256 + 3)
    assert tok.merges == {(97, 97): 256, (97, 98): 257, (256, 257): 258}
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tok.decode([258, 100, 258, 97, 99]) == "aaabdaaabac"


def test_ties_go_to_the_smallest_pair():
    # every pair occurs once; (32, 99) = b" c" is the smallest, then b"ab", then b" c" + b"d"
    tok = BPETokenizer("gpt2").train("ab cd", 259)
    assert list(tok.merges.items()) == [((32, 99), 256), ((97, 98), 257), ((256, 100), 258)]


@settings(max_examples=60)
@given(text=st.text(st.sampled_from(list("aab  c\n'é😀1")), max_size=120),
       n_merges=st.integers(0, 40), pattern=st.sampled_from(["gpt2", "gpt4"]))
def test_incremental_training_equals_naive_reference(text, n_merges, pattern):
    tok = BPETokenizer(pattern).train(text, 256 + n_merges)
    ref_merges, ref_ids = reference_train(text, 256 + n_merges, pattern)
    assert list(tok.merges.items()) == list(ref_merges.items())
    # applying the merges by rank (encode) lands where training left each chunk
    assert tok.encode(text) == ref_ids


def test_training_is_deterministic_and_reaches_vocab_size():
    text = synthetic_text(2000, seed=1)
    a, b = BPETokenizer().train(text, 400), BPETokenizer().train(text, 400)
    assert a.merges == b.merges and len(a.merges) == 144 and a.vocab_size == 400


def test_training_stops_when_pairs_run_out():
    tok = BPETokenizer().train("ab ab", 1000)
    assert tok.merges == {(97, 98): 256, (32, 256): 257}
    assert tok.vocab_size == 258


def test_training_on_a_larger_text_is_fast():
    # ~0.5 MB; the incremental trainer needs well under a second here, while minbpe's recount-
    # everything loop takes about 25 s per MB at this size. The bound is loose for slow CI machines.
    text = synthetic_text(90_000, seed=2)
    start = time.perf_counter()
    BPETokenizer().train(text, 512)
    assert time.perf_counter() - start < 10


def test_vocab_size_must_cover_the_bytes():
    with pytest.raises(ValueError, match=r"vocab_size must be an int >= 256 .*got 100"):
        BPETokenizer().train("hello", 100)


def test_verbose_training_prints_merges(capsys):
    BPETokenizer().train("hello hello", 258, verbose=True)
    out = capsys.readouterr().out
    assert "merge 1/2:" in out and "b'el'" in out


# ---------------------------------------------------------------- encode / decode
@given(text=st.text())
def test_round_trip_any_unicode(text):
    for tok in (trained("gpt4"), trained("gpt2")):
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text


@given(data=st.binary())
def test_round_trip_byte_like_text(data):
    # every byte value as a character, and any UTF-8 that the bytes happen to form
    tok = trained()
    for text in (data.decode("latin-1"), data.decode("utf-8", errors="replace")):
        assert tok.decode(tok.encode(text)) == text


def test_encoding_compresses_and_uses_merges():
    tok = trained()
    text = synthetic_text(500, seed=3)
    ids = tok.encode(text)
    assert len(ids) < len(text.encode("utf-8")) / 2.5
    assert tok.decode(ids) == text


def test_decode_of_a_cut_multibyte_character():
    tok = BPETokenizer()  # bytes only
    ids = tok.encode("é")
    assert ids == [0xC3, 0xA9]
    assert tok.decode(ids[:1]) == "\ufffd"
    assert tok.decode_bytes(ids[:1]) == b"\xc3"


def test_lone_surrogate_error():
    with pytest.raises(ValueError, match=r"lone surrogate U\+D800 .*no UTF-8 encoding"):
        trained().encode("ok \ud800 no")


@pytest.mark.parametrize("bad", [[-1], [600], [10**9]])
def test_decode_bad_ids(bad):
    with pytest.raises(ValueError, match="out of range"):
        trained().decode(bad)


@settings(max_examples=50)
@given(ids=st.lists(st.sampled_from([97, 98, 32, 0xC3, 0xA9]), max_size=400))
def test_long_chunk_loop_equals_short_loop(ids):
    tok = BPETokenizer().train("ab aab abb ba aaaa bbbb éé aé ab" * 3, 300)
    assert tok._bpe_long(list(ids)) == tok._bpe_short(list(ids))


def test_long_runs_encode_quickly_and_exactly():
    tok = trained()
    for text in ("a" * 20000, " " * 20000, "é" * 5000, "ab" * 10000):
        start = time.perf_counter()
        assert tok.decode(tok.encode(text)) == text
        assert time.perf_counter() - start < 5


# ---------------------------------------------------------------- special tokens
@pytest.fixture
def special_tok():
    tok = BPETokenizer().train(synthetic_text(300), 300)
    tok.register_special_tokens({"<|endoftext|>": 100257, "<|fim|>": 300})
    return tok


def test_special_tokens_all(special_tok):
    text = "hello<|endoftext|> world<|fim|>"
    ids = special_tok.encode(text, allowed_special="all")
    assert ids.count(100257) == 1 and ids[-1] == 300
    assert special_tok.decode(ids) == text
    assert special_tok.vocab_size == 100258


def test_special_tokens_raise_by_default(special_tok):
    with pytest.raises(ValueError, match=r"contains the special token\(s\) \['<\|endoftext\|>'\]"):
        special_tok.encode("a<|endoftext|>b")
    assert special_tok.encode("no specials here") == special_tok.encode("no specials here", "all")


def test_special_tokens_none_and_subsets(special_tok):
    text = "a<|endoftext|>b<|fim|>"
    plain = special_tok.encode(text, allowed_special="none")
    assert 100257 not in plain and 300 not in plain and special_tok.decode(plain) == text
    subset = special_tok.encode(text, allowed_special={"<|fim|>"})
    assert 100257 not in subset and subset[-1] == 300 and special_tok.decode(subset) == text
    with pytest.raises(ValueError, match="not registered special tokens"):
        special_tok.encode(text, allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="allowed_special must be"):
        special_tok.encode(text, allowed_special="some")


def test_longer_special_token_wins():
    tok = BPETokenizer()
    tok.register_special_tokens({"<|end|>": 1000, "<|end|>!": 1001})
    assert tok.encode("<|end|>!<|end|>", allowed_special="all") == [1001, 1000]


def test_special_token_id_errors(special_tok):
    with pytest.raises(ValueError, match=r"has id 65, which is already the ordinary token b'A'"):
        special_tok.register_special_tokens({"<x>": 65})
    with pytest.raises(ValueError, match="share the id"):
        special_tok.register_special_tokens({"<y>": 300})
    with pytest.raises(ValueError, match="below vocab_size"):
        special_tok.train("more text", 400)


# ---------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path, special_tok):
    path = tmp_path / "bpe.json"
    special_tok.save(path)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["type"] == "bpe" and saved["pattern"] == "gpt4"
    text = synthetic_text(200, seed=5) + "<|endoftext|>"
    for loaded in (BPETokenizer.load(path), load_tokenizer(str(path))):
        assert isinstance(loaded, BPETokenizer)
        assert loaded.merges == special_tok.merges
        assert loaded.special_tokens == special_tok.special_tokens
        assert loaded.encode(text, "all") == special_tok.encode(text, "all")


def test_load_tokenizer_from_directory(tmp_path):
    tok = trained("gpt2")
    tok.save(tmp_path / "tokenizer.json")
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.pattern == "gpt2" and loaded.merges == tok.merges


def test_load_rejects_bad_files(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"type": "bpe", "pattern": "gpt4", "merges": [[97, 300]]}))
    with pytest.raises(ValueError, match=r"merge 0 \(97, 300\) uses an id not yet defined"):
        BPETokenizer.load(path)
    path.write_text(json.dumps({"type": "sentencepiece"}))
    with pytest.raises(ValueError, match="records type 'sentencepiece'"):
        load_tokenizer(str(path))
    with pytest.raises(FileNotFoundError, match="neither tokenizer.json"):
        load_tokenizer(str(tmp_path))
