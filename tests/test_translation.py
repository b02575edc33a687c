"""The synthetic translation task and parallel-file preparation (tinyllm/translation.py): seeded,
the three rules (lexicon, order, agreement) hold on every sentence, and the files are written."""
import json
import os

import pytest

from tinyllm.cli import main
from tinyllm.translation import GENDER_SUFFIX, SPECIALS, TranslationTask, prepare_pair


def test_seeded_and_distinct():
    a, b = TranslationTask(3).pairs(50, 1), TranslationTask(3).pairs(50, 1)
    assert a == b and a != TranslationTask(4).pairs(50, 1) and a != TranslationTask(3).pairs(50, 2)
    lex = TranslationTask(3).lexicon
    assert len(set(lex.values())) == len(lex)  # one-to-one


def _parse_source(task, words):
    """Split a source sentence into (subject, verb, object, adverb) phrases."""
    phrases, i = [], 0
    for _ in range(2):
        det = words[i]
        i += 1
        adjs = []
        while task.pos[words[i]] == "adj":
            adjs.append(words[i])
            i += 1
        noun = words[i]
        i += 1
        plural = i < len(words) and words[i] == "s"
        i += plural
        phrases.append((det, adjs, noun, plural))
        if len(phrases) == 1:
            verb = words[i]
            i += 1
    adv = words[i] if i < len(words) else None
    return phrases[0], verb, phrases[1], adv


def test_every_sentence_follows_the_rules():
    task = TranslationTask(0)
    for src, tgt in task.pairs(300, 5):
        subj, verb, obj, adv = _parse_source(task, src.split())
        want = [task.lexicon[adv]] if adv else []
        for det, adjs, noun, plural in (subj, obj):  # SOV, adjectives after the noun, agreement
            suffix = GENDER_SUFFIX[(task.gender[noun], "pl" if plural else "sg")]
            want += [task.lexicon[det] + suffix, task.lexicon[noun] + ("i" if plural else "")]
            want += [task.lexicon[a] + suffix for a in adjs]
        want.append(task.lexicon[verb] + ("n" if subj[3] else ""))  # the verb agrees with its subject
        assert tgt.split() == want, (src, tgt)


def test_prepare_translation_and_parallel_cli(tmp_path, capsys):
    out = str(tmp_path / "tr")
    assert main(["prepare", "translation", "--out", out, "--pairs", "200", "--seed", "2"]) == 0
    assert "180 train / 20 val" in capsys.readouterr().out
    for name in ("train.src", "train.tgt", "val.src", "val.tgt"):
        with open(os.path.join(out, name)) as f:
            assert len(f.read().splitlines()) == (180 if name.startswith("train") else 20)
    vocab = json.load(open(os.path.join(out, "vocab.tgt.json")))
    assert [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])][:4] == SPECIALS
    (tmp_path / "a.txt").write_text("hello world\nhow are you\n")
    (tmp_path / "b.txt").write_text("hallo welt\nwie geht es\n")
    assert main(["prepare", "parallel", str(tmp_path / "a.txt"), "--target", str(tmp_path / "b.txt"),
                 "--out", str(tmp_path / "pp")]) == 0
    (tmp_path / "c.txt").write_text("only one line\n")
    with pytest.raises(ValueError, match="must be aligned"):
        prepare_pair(str(tmp_path / "a.txt"), str(tmp_path / "c.txt"), str(tmp_path / "bad"))
