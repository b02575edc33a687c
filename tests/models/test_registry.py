"""The model registry: a model registered from outside the library trains, resumes and loads through
``train()``, ``runs`` and the CLI, none of which names it; the built-in entries build the recipe's models."""
import json
import os
from dataclasses import dataclass

import numpy as np
import pytest

from tinyllm import data, nn, runs, train
from tinyllm.cli import main
from tinyllm.models import GPT, GPTConfig, get_model, model_names, register_model
from tinyllm.models.config import ConfigDict
from tinyllm.models.registry import unregister_model
from tinyllm.nn import functional as F
from tinyllm.train_config import TrainConfig

TEXT = "the cat sat on the mat. the dog sat on the log. " * 60
SHORT = dict(block_size=8, batch_size=4, max_iters=30, eval_interval=10, eval_iters=2, log_interval=5,
             warmup_iters=3, lr_decay_iters=30, lr=5e-2, min_lr=5e-3, progress=False)


@dataclass
class BigramConfig(ConfigDict):
    vocab_size: int = 10
    init_scale: float = 1.0


class Bigram(nn.Module):
    """Next-token logits from the current token alone: one (vocab, vocab) table."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.table = nn.Embedding(config.vocab_size, config.vocab_size)
        self.table.weight.data *= config.init_scale

    def forward(self, idx, targets=None):
        logits = self.table(np.asarray(idx))  # (B, T, vocab)
        loss = None
        if targets is not None:
            B, T = np.shape(idx)
            loss = F.cross_entropy(logits.reshape(B * T, -1), np.asarray(targets).reshape(-1))
        return logits, loss


@pytest.fixture
def bigram():
    register_model("bigram", BigramConfig, Bigram, recipe=dict(init_scale=0.1))
    yield
    unregister_model("bigram")


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    data.prepare_text(TEXT, str(d), "char")
    return str(d)


def test_a_registered_model_trains_resumes_and_loads_without_touching_the_loop(bigram, data_dir, tmp_path):
    cfg = TrainConfig(model_type="bigram", **SHORT)
    assert cfg.model == BigramConfig(init_scale=0.1)  # the recipe over the config's defaults
    full = str(tmp_path / "full")
    result = train.train(data_dir, full, cfg, log=lambda *a: None)
    evals = [r for r in runs.read_metrics(full) if r["val_loss"] is not None]
    assert [r["iter"] for r in evals] == [0, 10, 20, 30] and result["iter"] == 30
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5  # it learns
    written = json.load(open(os.path.join(full, "config.json")))
    vocab = len(set(TEXT))
    assert written["train"]["model_type"] == "bigram"
    assert written["train"]["model"] == written["model"] == {"vocab_size": vocab, "init_scale": 0.1}

    part = str(tmp_path / "part")
    train.train(data_dir, part, TrainConfig(model_type="bigram", **dict(SHORT, max_iters=20)), log=lambda *a: None)
    train.train(data_dir, part, TrainConfig(model_type="bigram", **SHORT), resume=True, log=lambda *a: None)
    strip = lambda rows: [(r["iter"], r["train_loss"], r["val_loss"]) for r in rows]
    assert strip(runs.read_metrics(part)) == strip(runs.read_metrics(full))

    model, _, _ = runs.load_run(full, "last")
    assert isinstance(model, Bigram) and model.config == BigramConfig(vocab, 0.1)
    again, _, _ = runs.load_run(part, "last")
    np.testing.assert_array_equal(model.table.weight.data, again.table.weight.data)


def test_the_cli_trains_a_registered_model_and_its_flags(bigram, data_dir, tmp_path):
    run = str(tmp_path / "run")
    assert main(["train", "--data", data_dir, "--out", run, "--model", "bigram", "--init-scale", "0.5",
                 "--n-layer", "3",  # another model's flag: ignored, as for the built-in models
                 "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--block-size", "8",
                 "--batch-size", "2", "--no-progress"]) == 0
    written = json.load(open(os.path.join(run, "config.json")))["train"]
    assert written["model_type"] == "bigram" and written["model"]["init_scale"] == 0.5


def test_registry_lists_the_built_in_models_and_refuses_unknown_names():
    assert {"gpt", "lstm", "vae", "ffn"} <= set(model_names())
    with pytest.raises(ValueError, match=r"unknown model 'transformer-xl' \(available: gpt"):
        get_model("transformer-xl")
    with pytest.raises(ValueError, match="unknown model"):
        TrainConfig(model_type="transformer-xl")
    with pytest.raises(ValueError, match="not fields of GPTConfig"):
        register_model("gpt-typo", GPTConfig, GPT, recipe=dict(n_layers=2))
    assert "gpt-typo" not in model_names()
    with pytest.raises(TypeError, match="takes a GPTConfig"):
        TrainConfig(model_type="gpt", model=BigramConfig())


def test_the_default_config_builds_the_recipe_model():
    """nanoGPT's CPU recipe: 4 layers, 4 heads, width 128, block 64, no biases, tied lm_head."""
    cfg = TrainConfig()
    assert cfg.model_type == "gpt"
    assert cfg.model == GPTConfig(block_size=64, n_layer=4, n_head=4, n_embd=128, bias=False, tie_weights=True)
    model = runs.build_model(cfg, vocab_size=65)
    assert isinstance(model, GPT) and model.config.vocab_size == 65
    assert not any(name.endswith(".bias") for name in model.state_dict())
    assert get_model("gpt").default_config(block_size=32).block_size == 32
