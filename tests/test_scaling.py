"""benchmarks/scaling.py: the fit recovers a known exponent from synthetic losses, and a tiny study
runs end to end on synthetic text (table, JSON and plot written)."""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
scaling = pytest.importorskip("scaling")

from tinyllm import data  # noqa: E402


def test_fit_recovers_a_known_law():
    ns = np.geomspace(1e4, 1e6, 7)
    losses = scaling.law(ns, 3e3, 0.35, 1.2)
    fits = scaling.fit(ns, losses)
    wf = fits["with_floor"]
    assert wf["alpha"] == pytest.approx(0.35, rel=1e-3) and wf["l_inf"] == pytest.approx(1.2, rel=1e-3)
    assert wf["alpha_ci95"][0] <= 0.35 <= wf["alpha_ci95"][1]
    pure = scaling.fit(ns, (5e3 / ns) ** 0.2)["power_law"]
    assert pure["alpha"] == pytest.approx(0.2, rel=1e-9) and pure["n_c"] == pytest.approx(5e3, rel=1e-6)


def test_tiny_study_end_to_end(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib", reason="the study writes a PNG: needs the plot extra")
    d = tmp_path / "data"
    data.prepare_text("all the world's a stage, and all the men and women merely players. " * 200, str(d))
    monkeypatch.setattr(scaling, "QUICK_SIZES", [(1, 2, 8), (1, 2, 16), (2, 2, 24), (2, 2, 32)])
    stem = str(tmp_path / "scaling")
    scaling.main(["--quick", "--data", str(d), "--iters", "4", "--out", stem])
    with open(stem + ".json") as f:
        result = json.load(f)
    assert len(result["rows"]) == 4 and all(np.isfinite(r["val_loss"]) for r in result["rows"])
    assert "alpha" in result["fits"]["power_law"]
    assert os.path.getsize(stem + ".png") > 1000
    assert "non-embedding N" in open(stem + ".md").read()
