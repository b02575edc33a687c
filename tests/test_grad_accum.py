"""Gradient accumulation: K micro-batches of b sequences make the same optimizer step as one batch of K*b
(the model is fed exactly the same token rows both ways), resume stays exact with several micro-batch
streams, and the setting is checked like the others."""
import json
import os

import numpy as np
import pytest

from tinyllm import checkpoint, data, distributed, runs
from tinyllm import train as train_module
from tinyllm.cli import main
from tinyllm.train import TrainConfig, train
from tinyllm.train_config import ConfigError

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40

TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, eval_interval=1000, eval_iters=2, log_interval=1,
            warmup_iters=2, lr_decay_iters=6, max_iters=6, lr=1e-2, min_lr=1e-3, progress=False)


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    data.prepare_text(TEXT, str(d), "char")
    return str(d)


def _windows(split, ix, block_size):
    x = np.stack([split[i:i + block_size] for i in ix]).astype(np.int64)
    y = np.stack([split[i + 1:i + 1 + block_size] for i in ix]).astype(np.int64)
    return x, y


class _Rows:
    """Training windows in call order: call after call, the next ``batch_size`` starts of one fixed list."""

    def __init__(self, n_tokens, block_size, seed=0):
        self.starts = np.random.default_rng(seed).integers(0, n_tokens - block_size, 100_000)
        self.used = 0

    def take(self, n):
        ix = self.starts[self.used:self.used + n]
        self.used += n
        return ix


def _patch_rows(monkeypatch, data_dir, block_size):
    evals = set()
    make_eval_rng = distributed.eval_rng

    def eval_rng(*args):
        gen = make_eval_rng(*args)
        evals.add(id(gen))
        return gen

    real = data.get_batch
    rows = _Rows(len(data.load_split(data_dir, "train")), block_size)

    def get_batch(split, batch_size, bs, rng):
        if id(rng) in evals:
            return real(split, batch_size, bs, rng)
        return _windows(split, rows.take(batch_size), bs)

    monkeypatch.setattr(distributed, "eval_rng", eval_rng)
    monkeypatch.setattr(train_module.data, "get_batch", get_batch)


def _train_losses(run):
    return [(r["iter"], r["train_loss"]) for r in runs.read_metrics(run) if r["val_loss"] is None]


def _weights(run):
    return checkpoint.load_checkpoint(os.path.join(run, runs.LAST)).state_dict


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("accum", [2, 3])
def test_micro_batches_make_the_same_step_as_one_big_batch(data_dir, tmp_path, monkeypatch, dtype, tol, accum):
    b = 2
    with monkeypatch.context() as m:
        _patch_rows(m, data_dir, TINY["block_size"])
        train(data_dir, str(tmp_path / "big"), TrainConfig.from_flat(**TINY, dtype=dtype, batch_size=accum * b))
    with monkeypatch.context() as m:
        _patch_rows(m, data_dir, TINY["block_size"])
        train(data_dir, str(tmp_path / "accum"), TrainConfig.from_flat(**TINY, dtype=dtype, batch_size=b,
                                                                       grad_accum_steps=accum))
    big, acc = _train_losses(str(tmp_path / "big")), _train_losses(str(tmp_path / "accum"))
    assert [i for i, _ in big] == [i for i, _ in acc] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([v for _, v in acc], [v for _, v in big], rtol=tol)
    w_big, w_acc = _weights(str(tmp_path / "big")), _weights(str(tmp_path / "accum"))
    assert set(w_big) == set(w_acc)
    for name in w_big:
        assert w_acc[name].dtype == np.dtype(dtype)
        np.testing.assert_allclose(w_acc[name], w_big[name], rtol=tol, atol=tol, err_msg=name)
    assert _train_losses(str(tmp_path / "big"))[0][1] != _train_losses(str(tmp_path / "big"))[-1][1]  # it trained


def test_one_micro_batch_is_the_plain_loop_and_the_log_states_the_effective_batch(data_dir, tmp_path):
    lines_plain, lines_one = [], []
    train(data_dir, str(tmp_path / "plain"), TrainConfig.from_flat(**TINY, batch_size=4), log=lines_plain.append)
    train(data_dir, str(tmp_path / "one"), TrainConfig.from_flat(**TINY, batch_size=4, grad_accum_steps=1),
          log=lines_one.append)
    losses = lambda run: [(r["train_loss"], r["val_loss"]) for r in runs.read_metrics(run)]  # noqa: E731
    assert losses(str(tmp_path / "plain")) == losses(str(tmp_path / "one"))
    assert "effective batch: 4 sequences x 1 micro-batch x 1 process = 4 sequences, 64 tokens per iteration" \
        in lines_one
    lines = []
    train(data_dir, str(tmp_path / "acc"), TrainConfig.from_flat(**TINY, batch_size=4, grad_accum_steps=3),
          log=lines.append)
    assert "effective batch: 4 sequences x 3 micro-batches x 1 process = 12 sequences, 192 tokens per iteration" \
        in lines


def test_resume_with_micro_batches_is_exact(data_dir, tmp_path):
    cfg = dict(TINY, batch_size=2, grad_accum_steps=3, eval_interval=3)
    train(data_dir, str(tmp_path / "whole"), TrainConfig.from_flat(**cfg))
    train(data_dir, str(tmp_path / "split"), TrainConfig.from_flat(**dict(cfg, max_iters=3)))
    state = runs.last_state(str(tmp_path / "split"))
    assert state["world_size"] == 1 and len(state["shard_rngs"]) == 3
    train(data_dir, str(tmp_path / "split"), TrainConfig(max_iters=6, progress=False), resume=True)
    assert runs.read_metrics(str(tmp_path / "split")) == [
        {**r, "ms_per_iter": s["ms_per_iter"]} for r, s in zip(runs.read_metrics(str(tmp_path / "whole")),
                                                               runs.read_metrics(str(tmp_path / "split")))]
    for name, w in _weights(str(tmp_path / "whole")).items():
        assert np.array_equal(w, _weights(str(tmp_path / "split"))[name]), name


def test_grad_accum_steps_is_checked(data_dir, tmp_path, capsys):
    with pytest.raises(ConfigError, match="grad_accum_steps must be a positive integer, got 0"):
        TrainConfig(grad_accum_steps=0).validate()
    assert main(["train", "--data", data_dir, "--out", str(tmp_path / "r"), "--grad-accum-steps", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["tinyllm train: error: --grad-accum-steps must be a positive integer, got 0"]
    assert not os.path.exists(tmp_path / "r")


def test_shard_zero_is_the_one_process_stream():
    a, b = distributed.shard_rng(1337, 0), np.random.default_rng(1337)
    assert np.array_equal(a.integers(0, 1000, 50), b.integers(0, 1000, 50))
    draws = [distributed.shard_rng(1337, j).integers(0, 2**62, 4).tolist() for j in range(4)]
    draws += [distributed.eval_rng(1337, r).integers(0, 2**62, 4).tolist() for r in range(3)]
    assert len({tuple(d) for d in draws}) == len(draws)  # every stream its own
    assert json.dumps(distributed.shard_rng(1, 5).bit_generator.state)  # checkpointable as JSON
