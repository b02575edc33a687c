"""The `re` translation of GPT-2's and GPT-4's split patterns against the originals, as run by the
`regex` module and by Hugging Face `tokenizers` (each test skips when its oracle is missing)."""
import itertools
import unicodedata

import pytest
from hypothesis import given, strategies as st

from tinyllm.text.pretokenize import PATTERNS, Splitter, get_splitter

# Characters assigned in this Python's Unicode database; unassigned ones are documented as "other".
assigned = st.characters(blacklist_categories=("Cn", "Cs"))
# Texts built from the characters the patterns care about, so contractions, runs and mixes happen.
tricky = st.text(st.sampled_from(list("aZé日'sStTlLdDmMvVrRe1٣²½Ⅳ !?.\t\n\r\x0b\x0c\x85\xa0\u3000\u2028\x1c_")
                                 + ["😀", "𝐀", "𝟏", "\U000e0001"]), max_size=40)

ASSIGNED = [chr(i) for i in range(0x110000) if unicodedata.category(chr(i)) not in ("Cn", "Cs")]


def _probe(c):
    """``c`` after and before each kind of neighbour the patterns distinguish."""
    return f"a{c}1{c}!{c} {c}\t{c}'{c}\r\n{c}  {c}"


def _boundaries(chunks):
    return list(itertools.accumulate(map(len, chunks)))


@pytest.mark.parametrize("name", ["gpt2", "gpt4"])
@given(text=st.text())
def test_chunks_concatenate_back_to_the_text(name, text):
    assert "".join(get_splitter(name).split(text)) == text


def test_known_gpt2_split():
    got = get_splitter("gpt2").split("Hello, world! It's 2024...  \n\n  ok ½Ⅳ x²")
    # `\s+(?!\S)` leaves the last space to join " ok"; '½' and 'Ⅳ' are numbers (No, Nl), not letters
    assert got == ["Hello", ",", " world", "!", " It", "'s", " 2024", "...", "  \n\n ", " ok",
                   " ½Ⅳ", " x", "²"]


def test_known_gpt4_split():
    got = get_splitter("gpt4").split("I'LL pay 1234567 dollars!\n\n  ok")
    assert got == ["I", "'LL", " pay", " ", "123", "456", "7", " dollars", "!\n\n", " ", " ok"]


def test_re_classes_are_not_the_naive_ones():
    # [^\W\d_] would call '²' a letter and re's \s would call U+001C white space; GPT-2 does neither.
    assert get_splitter("gpt2").split("x²") == ["x", "²"]
    assert get_splitter("gpt2").split("a\x1cb") == ["a", "\x1c", "b"]


def test_custom_and_invalid_patterns():
    assert Splitter(r"\w+|\W").split("ab, c") == ["ab", ",", " ", "c"]
    with pytest.raises(ValueError, match=r"only understood as 'gpt2' or 'gpt4'"):
        Splitter(r"\p{L}+")


# ---------------------------------------------------------------- against the `regex` module
@pytest.mark.parametrize("name", ["gpt2", "gpt4"])
@given(text=st.one_of(st.text(assigned), tricky))
def test_split_matches_regex_module(name, text):
    regex = pytest.importorskip("regex")
    assert get_splitter(name).split(text) == regex.findall(PATTERNS[name], text)


@pytest.mark.parametrize("name", ["gpt2", "gpt4"])
def test_every_bmp_code_point_matches_regex_module(name):
    regex = pytest.importorskip("regex")
    sp, rx = get_splitter(name), regex.compile(PATTERNS[name])
    bmp = [c for c in ASSIGNED if c < "\U00010000"]
    for k in range(0, len(bmp), 1024):
        text = "".join(map(_probe, bmp[k:k + 1024]))
        if sp.split(text) != rx.findall(text):
            bad = [c for c in bmp[k:k + 1024] if sp.split(_probe(c)) != rx.findall(_probe(c))]
            pytest.fail(f"{name}: split differs from `regex` around {[f'U+{ord(c):04X}' for c in bad[:10]]}")


# ---------------------------------------------------------------- against Hugging Face
def _hf_boundaries(text):
    pre_tokenizers = pytest.importorskip("tokenizers.pre_tokenizers")
    pt = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return [end for _, (_, end) in pt.pre_tokenize_str(text)]


def _check_against_hf(chars, batch=2048):
    sp = get_splitter("gpt2")
    for k in range(0, len(chars), batch):
        text = "".join(map(_probe, chars[k:k + batch]))
        if _boundaries(sp.split(text)) != _hf_boundaries(text):
            bad = [c for c in chars[k:k + batch]
                   if _boundaries(sp.split(_probe(c))) != _hf_boundaries(_probe(c))]
            pytest.fail(f"GPT-2 split differs from Hugging Face around {[f'U+{ord(c):04X}' for c in bad[:10]]}")


def test_bmp_and_sampled_astral_code_points_match_hf():
    # (all 282k assigned code points agree too; that sweep takes ~15 s, so only every 17th astral one)
    pytest.importorskip("tokenizers")
    bmp = [c for c in ASSIGNED if c < "\U00010000"]
    astral = [c for c in ASSIGNED if c >= "\U00010000"]
    _check_against_hf(bmp + astral[::17])


@given(text=st.one_of(st.text(assigned), tricky))
def test_split_matches_hf(text):
    pytest.importorskip("tokenizers")
    assert _boundaries(get_splitter("gpt2").split(text)) == _hf_boundaries(text)
