"""Run directories: the config layouts a run may hold (the nested one written now and the flat one older
runs wrote, with the model's fields beside the training ones), loading and resuming runs in either, and
``TrainConfig.from_flat`` as the CLI and search use it."""
import json
import os
from dataclasses import asdict

import numpy as np
import pytest

from tinyllm import data, runs, train
from tinyllm.models import FeedForwardLMConfig, GPTConfig, LSTMLMConfig, TextVAEConfig
from tinyllm.train_config import TrainConfig, flat_names

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40

# The flat TrainConfig older runs recorded: every model's fields beside the training ones.
OLD_FLAT = {
    "model": "gpt", "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0, "bias": False,
    "pos_encoding": "learned", "activation": "gelu", "tie_weights": True, "hidden_size": 256, "num_layers": 2,
    "context": 8, "latent_size": 32, "kl_anneal_iters": 1000, "word_dropout": 0.25, "batch_size": 12,
    "max_iters": 2000, "lr": 1e-3, "min_lr": 1e-4, "warmup_iters": 100, "lr_decay_iters": 2000, "decay_lr": True,
    "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.1, "grad_clip": 1.0, "eval_interval": 250, "eval_iters": 20,
    "log_interval": 10, "seed": 1337, "dtype": "float32", "device": "cpu", "init_from": "", "lora_rank": 0,
    "lora_alpha": 16.0, "lora_targets": "c_attn,c_proj,c_fc", "progress": True,
}
TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, eval_interval=10, eval_iters=2,
            log_interval=5, warmup_iters=5, lr_decay_iters=30, max_iters=30, lr=1e-2, min_lr=1e-3, dropout=0.1,
            progress=False)


def old_layout(cfg):
    """``cfg`` as the flat TrainConfig wrote it."""
    m = cfg.model
    flat = dict(OLD_FLAT, model=cfg.model_type)
    flat.update({k: v for k, v in asdict(m).items() if k in OLD_FLAT})
    flat.update({k: v for k, v in asdict(cfg).items() if k in OLD_FLAT and k != "model"})
    return flat


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    data.prepare_text(TEXT, str(d), "char")
    return str(d)


def test_the_flat_layout_reads_as_the_model_it_built():
    assert TrainConfig.from_dict(OLD_FLAT) == TrainConfig()  # the recipe, either way
    lstm = TrainConfig.from_dict(dict(OLD_FLAT, model="lstm", n_embd=16, hidden_size=32, num_layers=1))
    assert lstm.model_type == "lstm" and lstm.model == LSTMLMConfig(n_embd=16, hidden_size=32, num_layers=1,
                                                                    tie_weights=True)
    ffn = TrainConfig.from_dict(dict(OLD_FLAT, model="ffn", hidden_size=24, context=4))
    assert ffn.model == FeedForwardLMConfig(context=4, n_embd=128, hidden=24)  # hidden_size meant ffn's hidden
    vae = TrainConfig.from_dict(dict(OLD_FLAT, model="vae"))
    assert vae.model == TextVAEConfig(n_embd=128, hidden_size=256, latent_size=32, num_layers=2)
    gpt = TrainConfig.from_dict(dict(OLD_FLAT, block_size=16, n_layer=1, bias=True, some_newer_key=1))
    assert gpt.block_size == gpt.model.block_size == 16 and gpt.model.n_layer == 1 and gpt.model.bias


def test_the_nested_layout_round_trips():
    cfg = TrainConfig(model_type="lstm", model=LSTMLMConfig(vocab_size=30, n_embd=8), lr=3e-3)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["model_type"] == "lstm" and d["model"]["n_embd"] == 8 and "n_layer" not in d
    assert TrainConfig.from_dict(d) == cfg
    assert TrainConfig.from_dict(dict(d, some_newer_key=1)) == cfg


def test_from_flat_routes_each_name_and_refuses_unknown_ones():
    cfg = TrainConfig.from_flat(n_layer=2, n_embd=32, block_size=32, lr=3e-4)
    assert cfg.lr == 3e-4 and cfg.block_size == 32
    assert cfg.model == GPTConfig(block_size=32, n_layer=2, n_embd=32, bias=False)
    ffn = TrainConfig.from_flat(model="ffn", hidden_size=24, n_layer=9)  # n_layer: another model's, ignored
    assert ffn.model_type == "ffn" and ffn.model.hidden == 24
    assert TrainConfig.from_flat(model_type="vae", latent_size=4).model.latent_size == 4
    with pytest.raises(ValueError, match="'n_layers' is not a TrainConfig field"):
        TrainConfig.from_flat(n_layers=2)
    assert {"n_layer", "hidden_size", "hidden", "lr", "model"} <= flat_names() and "vocab_size" not in flat_names()


def test_a_run_in_the_flat_layout_loads_and_resumes_bit_identically(data_dir, tmp_path, monkeypatch):
    full = str(tmp_path / "full")
    train.train(data_dir, full, TrainConfig.from_flat(**TINY), log=lambda *a: None)

    old = str(tmp_path / "old")
    with monkeypatch.context() as m:  # the first 20 iterations write config.json and checkpoints as older runs did
        m.setattr(TrainConfig, "to_dict", old_layout)
        train.train(data_dir, old, TrainConfig.from_flat(**dict(TINY, max_iters=20)), log=lambda *a: None)
    for path in (os.path.join(old, "config.json"), os.path.join(old, "last", "config.json")):
        written = json.load(open(path))["train"]
        assert written["model"] == "gpt" and written["n_layer"] == 1 and "model_type" not in written
    model, _, run_config = runs.load_run(old, "last")
    assert model.config.n_layer == 1 and model.config.bias is False and run_config["train"]["n_embd"] == 16

    train.train(data_dir, old, TrainConfig(max_iters=30, progress=False), resume=True, log=lambda *a: None)
    strip = lambda rows: [(r["iter"], r["train_loss"], r["val_loss"], r["lr"]) for r in rows]
    assert strip(runs.read_metrics(old)) == strip(runs.read_metrics(full))
    ma, _, _ = runs.load_run(full, "last")
    mb, _, _ = runs.load_run(old, "last")
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert ka == kb and np.array_equal(va, vb)
    assert json.load(open(os.path.join(old, "config.json")))["train"]["model_type"] == "gpt"  # rewritten nested


def test_resume_takes_the_runs_own_config(data_dir, tmp_path):
    """Only max_iters, progress and device come from the caller: the run keeps its shape and schedule."""
    run = str(tmp_path / "run")
    train.train(data_dir, run, TrainConfig.from_flat(**dict(TINY, max_iters=10)), log=lambda *a: None)
    train.train(data_dir, run, TrainConfig(max_iters=20, lr=0.5, progress=False), resume=True, log=lambda *a: None)
    written = json.load(open(os.path.join(run, "config.json")))["train"]
    assert written["max_iters"] == 20 and written["lr"] == TINY["lr"] and written["model"]["n_embd"] == 16
    assert [r["iter"] for r in runs.read_metrics(run) if r["val_loss"] is not None] == [0, 10, 20]


def test_quantize_and_merge_read_the_flat_layout(data_dir, tmp_path, monkeypatch):
    run = str(tmp_path / "run")
    with monkeypatch.context() as m:
        m.setattr(TrainConfig, "to_dict", old_layout)
        train.train(data_dir, run, TrainConfig.from_flat(**dict(TINY, max_iters=10)), log=lambda *a: None)
    before, after = runs.quantize_run(run, str(tmp_path / "q"))
    assert after < before
    q, _, _ = runs.load_run(str(tmp_path / "q"))
    assert q.config.n_embd == 16
    with pytest.raises(ValueError, match="not a LoRA run"):
        runs.merge_run(run, str(tmp_path / "merged"))
