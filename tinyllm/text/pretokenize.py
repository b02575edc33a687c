"""GPT-2 and GPT-4 pre-tokenization (the regex that cuts text into chunks before BPE), written for
Python's built-in ``re`` so that the third-party ``regex`` module is not needed.

The originals use ``\\p{L}`` (letters), ``\\p{N}`` (numbers) and ``\\s`` (the Unicode White_Space
property), which ``re`` does not have. Its nearest classes are wrong in both directions:
``[^\\W\\d_]`` also matches the 1,131 Nl/No "numbers" (``²``, ``½``, ``Ⅳ``), and ``re``'s ``\\s``
also matches U+001C..U+001F. So the classes are spelled out here as explicit ranges, built once from
``unicodedata`` on first use (a few milliseconds). White_Space is a short, fixed list (stable since Unicode
6.3), so it is written out by hand.

Two tricks keep it fast. ``re`` stores a class's BMP part as one bitmap but tests its astral ranges
one by one, so astral ranges would make every miss slow (3x slower on plain English); the classes
therefore cover only the BMP. A text that holds astral characters (emoji, math letters, ...) is
split on a copy in which each astral character is replaced by a BMP stand-in of the same class
(letter, number or other; no astral character is white space or one of the pattern's literals);
the two strings have equal length, so the match spans carry over to the original exactly.

What that buys: the split equals GPT-2's (as run by Hugging Face ``tokenizers``) on every code point
that is assigned in the running Python's Unicode database (``unicodedata.unidata_version``; 14.0 on
Python 3.11). A code point that is unassigned there counts as "other" (punctuation-like), as it does
in any regex engine whose tables are older than the text; tests/text checks this against HF code
point by code point.
"""
import functools
import re
import unicodedata

__all__ = ["GPT2_SPLIT_PATTERN", "GPT4_SPLIT_PATTERN", "PATTERNS", "Splitter", "get_splitter"]

# The originals, as written for the `regex` module (and tiktoken/HF); tests check the translation.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT4_SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}|"""
                      r""" ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""")
PATTERNS = {"gpt2": GPT2_SPLIT_PATTERN, "gpt4": GPT4_SPLIT_PATTERN}

# The White_Space property: 25 code points, none of them astral.
_WHITE_SPACE = "\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
# BMP stand-ins for astral characters, by major category: a letter, a digit, a symbol.
_STAND_IN = {"L": "\u4e00", "N": "\u0660", "other": "\u00a7"}


def _ranges(codepoints):
    """Sorted code points as the inside of a ``re`` character class: ``A-Za-z\xaa...``."""
    out, start, prev = [], None, None
    for cp in codepoints:
        if start is not None and cp == prev + 1:
            prev = cp
            continue
        if start is not None:
            out.append((start, prev))
        start = prev = cp
    if start is not None:
        out.append((start, prev))
    esc = lambda cp: re.escape(chr(cp))  # noqa: E731
    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in out)


@functools.lru_cache(maxsize=None)
def _bmp_classes():
    """The insides of ``re`` classes for \\p{L}, \\p{N} (BMP part) and \\s."""
    letters, numbers = [], []
    for cp in range(0x10000):
        major = unicodedata.category(chr(cp))[0]
        if major == "L":
            letters.append(cp)
        elif major == "N":
            numbers.append(cp)
    return _ranges(letters), _ranges(numbers), _WHITE_SPACE


def _translate(name):
    """The ``re`` spelling of GPT-2's or GPT-4's pattern, with BMP-only classes."""
    l, n, s = _bmp_classes()
    L, N, S, not_S, other = f"[{l}]", f"[{n}]", f"[{s}]", f"[^{s}]", f"[^{s}{l}{n}]"
    if name == "gpt2":
        return rf"""'s|'t|'re|'ve|'m|'ll|'d| ?{L}+| ?{N}+| ?{other}+|{S}+(?!{not_S})|{S}+"""
    # GPT-4's possessive `?+` and `++` change nothing here: a class without \p{L} cannot give a letter
    # back, and `[\r\n]*` can always match empty. Plain quantifiers keep Python 3.10 working.
    not_crlf_L_N = f"[^\\r\\n{l}{n}]"
    return (rf"""'(?i:[sdmt]|ll|ve|re)|{not_crlf_L_N}?{L}+|{N}{{1,3}}|"""
            rf""" ?{other}+[\r\n]*|{S}*[\r\n]|{S}+(?!{not_S})|{S}+""")


def _stand_in(match):
    major = unicodedata.category(match.group())[0]
    return _STAND_IN.get(major, _STAND_IN["other"])


class Splitter:
    """Cuts text into the chunks that BPE merges within: ``Splitter("gpt2").split("Hi there")``
    gives ``["Hi", " there"]``. ``pattern`` is ``"gpt2"``, ``"gpt4"``, or a raw ``re`` pattern."""

    def __init__(self, pattern="gpt2"):
        self.pattern = pattern
        self.named = pattern in PATTERNS
        try:
            self.regex = re.compile(_translate(pattern) if self.named else pattern)
        except re.error as e:
            hint = " (\\p{..} classes are only understood as 'gpt2' or 'gpt4')" if "\\p" in pattern else ""
            raise ValueError(f"split pattern {pattern!r} is not a valid `re` pattern: {e}{hint}") from None

    def split(self, text):
        """The chunks of ``text``, in order; they concatenate back to ``text``."""
        if not self.named:
            return [m.group() for m in self.regex.finditer(text)]
        if text.isascii() or max(text) < "\U00010000":
            return self.regex.findall(text)
        masked = _ASTRAL.sub(_stand_in, text)  # same length, same classes
        return [text[m.start():m.end()] for m in self.regex.finditer(masked)]

    def __repr__(self):
        return f"Splitter({self.pattern!r})"


@functools.lru_cache(maxsize=16)
def get_splitter(pattern="gpt2"):
    """A shared, cached :class:`Splitter` (building one costs a few milliseconds)."""
    return Splitter(pattern)
