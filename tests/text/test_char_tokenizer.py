"""CharTokenizer: vocabulary, round trips, errors, JSON save/load."""
import json

import numpy as np
import pytest
from hypothesis import given, strategies as st

from tinyllm.text import CharTokenizer, load_tokenizer


def test_vocabulary_is_sorted_unique_characters():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.vocab_size == 8
    assert tok.encode("hole") == [3, 5, 4, 2]
    assert tok.decode([3, 5, 4, 2]) == "hole"


@given(st.text(min_size=1), st.data())
def test_round_trip_any_text(corpus, data):
    tok = CharTokenizer.from_text(corpus)
    text = data.draw(st.text(st.sampled_from(sorted(set(corpus)))))
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_decode_accepts_numpy_arrays():
    tok = CharTokenizer.from_text("abc")
    assert tok.decode(np.array([2, 0, 1], dtype=np.uint16)) == "cab"


def test_unknown_character_error_names_it():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"'é' \(U\+00E9\) at index 2 is not in the vocabulary of 3"):
        tok.encode("abé")


@pytest.mark.parametrize("bad", [[3], [-1], [0, 99]])
def test_decode_out_of_range_ids(bad):
    with pytest.raises(ValueError, match=r"out of range \(expected 0 <= id < 3\)"):
        CharTokenizer.from_text("abc").decode(bad)


def test_decode_rejects_floats_and_bare_ints():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(TypeError):
        tok.decode([1.0])
    with pytest.raises(TypeError, match="single int"):
        tok.decode(1)


def test_invalid_vocabularies():
    with pytest.raises(ValueError, match="appears twice"):
        CharTokenizer(["a", "b", "a"])
    with pytest.raises(ValueError, match="one character"):
        CharTokenizer(["ab"])


def test_save_load_json(tmp_path):
    text = "To be, or not to be 😀\u0301\ud800"  # a lone surrogate is a legal str character
    tok = CharTokenizer.from_text(text)
    path = tmp_path / "tok.json"
    tok.save(path)
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved["type"] == "char"
    for loaded in (CharTokenizer.load(path), load_tokenizer(str(path))):
        assert isinstance(loaded, CharTokenizer)
        assert loaded.chars == tok.chars
        assert loaded.decode(loaded.encode(text)) == text


def test_load_wrong_type(tmp_path):
    path = tmp_path / "tok.json"
    path.write_text(json.dumps({"type": "bpe"}))
    with pytest.raises(ValueError, match="type 'char', got 'bpe'"):
        CharTokenizer.load(path)
