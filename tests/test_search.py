"""Hyper-parameter search (tinyllm/search.py): grid order, seeded random draws within their ranges,
a tiny search end to end through the CLI (JSONL log, leaderboard, PNG), resuming, and bad spaces."""
import json
import os

import numpy as np
import pytest

from tinyllm import data
from tinyllm.cli import main
from tinyllm.search import grid_trials, random_trials, read_trials, run_search

TINY = {"n_layer": [1], "n_head": [2], "n_embd": [16], "block_size": [16], "batch_size": [4], "eval_iters": [2]}


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    data.prepare_text("the quick brown fox jumps over the lazy dog. " * 200, str(d))
    return str(d)


def test_grid_is_the_product_in_sorted_field_order():
    trials = grid_trials({"lr": [1, 2], "n_layer": [3, 4, 5]})
    assert trials == [{"lr": a, "n_layer": b} for a in (1, 2) for b in (3, 4, 5)]
    with pytest.raises(ValueError, match="grid search needs a list"):
        grid_trials({"lr": {"log_uniform": [1e-4, 1e-2]}})


def test_random_draws_are_seeded_and_in_range():
    space = {"lr": {"log_uniform": [1e-4, 1e-2]}, "dropout": {"uniform": [0.0, 0.2]},
             "n_layer": {"int": [1, 3]}, "n_embd": [32, 64]}
    a, b = random_trials(space, 50, seed=3), random_trials(space, 50, seed=3)
    assert a == b and a != random_trials(space, 50, seed=4)
    for t in a:
        assert 1e-4 <= t["lr"] <= 1e-2 and 0 <= t["dropout"] <= 0.2 and t["n_layer"] in (1, 2, 3) and t["n_embd"] in (32, 64)
    assert len({t["n_layer"] for t in a}) == 3  # both ends of the int range are reachable


def test_search_cli_end_to_end_and_resume(data_dir, tmp_path, capsys):
    space = dict(TINY, lr=[1e-3, 3e-3])
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(space))
    out = str(tmp_path / "search")
    args = ["search", "--data", data_dir, "--space", str(space_file), "--strategy", "grid", "--budget-iters", "6",
            "--out", out]
    assert main(args + ["--trials", "1"]) == 0
    assert [t["trial"] for t in read_trials(out)] == [0]
    assert main(args + ["--trials", "0"]) == 0  # resumes: only trial 1 runs now
    rows = read_trials(out)
    assert [t["trial"] for t in rows] == [0, 1] and all(np.isfinite(t["val_loss"]) for t in rows)
    assert {t["params"]["lr"] for t in rows} == {1e-3, 3e-3}
    printed = capsys.readouterr().out
    assert "| rank | trial | val loss |" in printed
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # the table is written all the same; the CLI says why there is no plot
        assert "(no plot: plotting needs matplotlib" in printed
    else:
        assert os.path.getsize(os.path.join(out, "leaderboard.png")) > 1000
    with pytest.raises(ValueError, match="different search"):
        run_search(data_dir, out, dict(space, lr=[1e-2]), "grid", 0, 6)


def test_bad_spaces(data_dir, tmp_path):
    for space, match in (({"learning_rate": [1]}, "not a TrainConfig field"), ({"lr": []}, "no candidates"),
                         ({"lr": {"normal": [0, 1]}}, "must be a list"), ({}, "non-empty")):
        with pytest.raises(ValueError, match=match):
            run_search(data_dir, str(tmp_path / "s"), space, "random", 1, 2)
    with pytest.raises(ValueError, match="strategy"):
        run_search(data_dir, str(tmp_path / "s2"), dict(TINY), "bayes", 1, 2)
