"""train --log-stats (tinyllm/stats.py) and plot --stats: each statistic against a computation of its own
on a tiny GPT, the training bit-identical with and without, hooks gone afterwards, and the plot's panels."""
import json
import os

import numpy as np
import pytest

from tinyllm import data, nn, optim, runs, stats, train
from tinyllm.autograd import no_grad
from tinyllm.cli import main
from tinyllm.models import GPT, GPTConfig, LSTMLM

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40
TINY = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, batch_size=4, eval_interval=10, eval_iters=2,
            log_interval=5, warmup_iters=5, max_iters=20, lr=1e-2, min_lr=1e-3, progress=False)
GPT_LAYERS = ["wte", "wpe", "h.0", "h.1", "ln_f"]


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "data"
    data.prepare_text(TEXT, str(d), "char")
    return str(d)


def _norm(arrays):
    return np.sqrt(sum(float((a.astype(np.float64) ** 2).sum()) for a in arrays))


def _tiny_gpt():
    np.random.seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16))
    with no_grad():  # wide c_fc weights put some GELU inputs below -3, so the count is not trivially 0
        model.h[0].mlp.c_fc.weight.data *= 60
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 11, (3, 8)), rng.integers(0, 11, (3, 8))
    return model, x, y


def test_one_step_matches_an_independent_computation():
    model, x, y = _tiny_gpt()
    names = dict(model.named_parameters())
    in_layer = {layer: [n for n in names if n == layer or n.startswith(layer + ".")] for layer in GPT_LAYERS}
    assert sorted(sum(in_layer.values(), [])) == sorted(names)  # every parameter in exactly one layer

    with no_grad():  # each layer's output and each GELU input, computed by walking the model by hand
        outputs, gelu_in = {}, {}
        outputs["wte"], outputs["wpe"] = model.wte(x).data, model.wpe(np.arange(8)).data
        h = model.wte(x) + model.wpe(np.arange(8))
        for i, blk in enumerate(model.h):
            a = h + blk.attn(blk.ln_1(h))
            gelu_in[f"h.{i}"] = blk.mlp.c_fc(blk.ln_2(a)).data
            h = a + blk.mlp(blk.ln_2(a))
            outputs[f"h.{i}"] = h.data
        outputs["ln_f"] = model.ln_f(h).data

    opt = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    with stats.TrainingStats(model) as st:
        st.start_step(True)
        _, loss = model(x, y)
        loss.backward()
        grads = {n: p.grad.copy() for n, p in names.items()}
        before = {n: p.data.copy() for n, p in names.items()}
        st.gradients_ready()
        nn.utils.clip_grad_norm_(model.parameters(), 1e-3)  # the recorded norms are the raw ones
        opt.step()
        st.step_done()
        row = st.pop()
    assert st.pop() == {}

    expected_keys = [f"{layer}/{s}" for layer in GPT_LAYERS for s in stats.STATISTICS
                     if s != "gelu_saturation" or layer.startswith("h.")]
    assert list(row) == expected_keys
    for layer, members in in_layer.items():
        assert row[f"{layer}/grad_norm"] == pytest.approx(_norm([grads[n] for n in members]), rel=1e-9)
        moved = _norm([names[n].data - before[n] for n in members])
        assert row[f"{layer}/update_ratio"] == pytest.approx(moved / _norm([before[n] for n in members]), rel=1e-9)
        out = outputs[layer].astype(np.float64)
        assert row[f"{layer}/act_mean"] == pytest.approx(out.mean(), rel=1e-9, abs=1e-12)
        assert row[f"{layer}/act_std"] == pytest.approx(out.std(), rel=1e-9)
    for layer, u in gelu_in.items():
        assert row[f"{layer}/gelu_saturation"] == np.count_nonzero(u < -3) / u.size
    assert 0 < row["h.0/gelu_saturation"] < 0.5 and row["h.1/gelu_saturation"] == 0
    assert 1e-4 < row["h.0/update_ratio"] < 1  # a real step was measured
    for key in ("h.0/grad_norm", "h.0/update_ratio", "h.0/act_std", "h.0/gelu_saturation"):
        assert key in row  # the names the issue gives


def test_unlogged_steps_record_nothing_and_micro_batches_merge():
    model, x, y = _tiny_gpt()
    with stats.TrainingStats(model) as st:
        st.start_step(False)
        model(x, y)[1].backward()
        st.gradients_ready()
        st.step_done()
        assert st.pop() == {}
        st.start_step(True)  # two micro-batches: the statistics of their union
        model(x[:1], y[:1])
        model(x[1:], y[1:])
        st.gradients_ready()
        st.step_done()
        row = st.pop()
    with no_grad():  # the same two forwards, their outputs joined
        whole = np.concatenate([model.h[1](model.h[0](model.wte(part) + model.wpe(np.arange(8)))).data
                                for part in (x[:1], x[1:])]).astype(np.float64)
    assert row["h.1/act_mean"] == pytest.approx(whole.mean(), rel=1e-9, abs=1e-12)
    assert row["h.1/act_std"] == pytest.approx(whole.std(), rel=1e-9)


def test_other_models_get_what_applies():
    np.random.seed(0)
    model = LSTMLM(11, n_embd=8, hidden_size=12, num_layers=2)
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    x = np.random.default_rng(0).integers(0, 11, (2, 5))
    with stats.TrainingStats(model) as st:
        st.start_step(True)
        model(x, x)[1].backward()
        st.gradients_ready()
        opt.step()
        st.step_done()
        row = st.pop()
    assert {k.split("/")[0] for k in row} == {"wte", "lstm", "lm_head"}
    assert not any(k.endswith("gelu_saturation") for k in row)
    lstm_grads = [p.grad for n, p in model.named_parameters() if n.startswith("lstm.")]
    assert row["lstm/grad_norm"] == pytest.approx(_norm(lstm_grads), rel=1e-9)
    assert row["lm_head/act_std"] > 0


def _hooks_left(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _capture_models(monkeypatch):
    built = []
    initial_model = runs.initial_model

    def capture(*args, **kwargs):
        model, saved, cfg = initial_model(*args, **kwargs)
        built.append(model)
        return model, saved, cfg
    monkeypatch.setattr(runs, "initial_model", capture)
    return built


def test_training_is_bit_identical_with_stats_and_the_hooks_go(data_dir, tmp_path, monkeypatch):
    built = _capture_models(monkeypatch)
    plain, logged = str(tmp_path / "plain"), str(tmp_path / "logged")
    train.train(data_dir, plain, train.TrainConfig.from_flat(**TINY), log=lambda *a: None)
    train.train(data_dir, logged, train.TrainConfig.from_flat(**TINY, log_stats=True), log=lambda *a: None)
    a, b = runs.read_metrics(plain), runs.read_metrics(logged)
    assert [(r["iter"], r["train_loss"], r["val_loss"]) for r in a] == \
           [(r["iter"], r["train_loss"], r["val_loss"]) for r in b]
    for (name, p), q in zip(built[0].named_parameters(), built[1].parameters()):
        assert np.array_equal(p.data, q.data), name
    assert _hooks_left(built[1]) == 0
    assert all("/" not in k for r in a for k in r)
    # every row after a step carries the statistics: logged-loss rows (5, 15) and evaluations (10, 20)
    with_stats = {r["iter"]: r for r in b if "h.0/grad_norm" in r}
    assert sorted(with_stats) == [5, 10, 15, 20]
    assert all(set(r) >= {f"{layer}/grad_norm" for layer in GPT_LAYERS} for r in with_stats.values())
    assert with_stats[10]["val_loss"] is not None and with_stats[5]["val_loss"] is None


def test_hooks_are_removed_when_training_fails(data_dir, tmp_path, monkeypatch):
    built = _capture_models(monkeypatch)
    calls = []
    get_batch = data.get_batch

    def failing(*args):
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("disk gone")
        return get_batch(*args)
    monkeypatch.setattr(data, "get_batch", failing)
    with pytest.raises(RuntimeError, match="disk gone"):
        train.train(data_dir, str(tmp_path / "run"), train.TrainConfig.from_flat(**TINY, log_stats=True),
                    log=lambda *a: None)
    assert built and _hooks_left(built[0]) == 0


def test_cli_trains_with_log_stats_and_plots_them(data_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from tinyllm.plot import stats_figure, stats_series
    run = str(tmp_path / "run")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if k != "progress"]
    assert main(["train", "--data", data_dir, "--out", run, "--log-stats", "--no-progress", *flags]) == 0
    assert json.load(open(os.path.join(run, "last", "config.json")))["train"]["log_stats"] is True
    assert main(["plot", "--run", run, "--stats"]) == 0
    png = os.path.join(run, "stats.png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    series = stats_series(runs.read_metrics(run))
    assert list(series) == list(stats.STATISTICS)
    assert list(series["grad_norm"]) == GPT_LAYERS and list(series["gelu_saturation"]) == ["h.0", "h.1"]
    assert series["act_std"]["h.0"][0] == [5, 10, 15, 20]
    fig = stats_figure(series)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert len(panels) == 5
    ratio = next(ax for title, ax in panels.items() if title.startswith("update"))
    assert ratio.get_yscale() == "log"
    assert sorted(line.get_label() for line in ratio.get_lines()) == sorted(GPT_LAYERS + ["_guide"])
    guide = next(line for line in ratio.get_lines() if line.get_label() == "_guide")
    assert list(guide.get_ydata()) == [1e-3, 1e-3]
    gelu = next(ax for title, ax in panels.items() if title.startswith("saturated"))
    assert [line.get_label() for line in gelu.get_lines()] == ["h.0", "h.1"]
    h0 = next(line for line in gelu.get_lines() if line.get_label() == "h.0")
    assert list(h0.get_ydata()) == series["gelu_saturation"]["h.0"][1]

    plain = str(tmp_path / "plain")
    assert main(["train", "--data", data_dir, "--out", plain, "--no-progress", *flags]) == 0
    capsys.readouterr()
    assert main(["plot", "--run", plain, "--stats"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.endswith("train with --log-stats")


def test_resume_may_switch_statistics_on_and_the_losses_stay_the_same(data_dir, tmp_path):
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if k not in ("progress", "max_iters")]
    flags.append("--lr-decay-iters=20")  # the same schedule whether the run stops at 10 or not
    whole, part = str(tmp_path / "whole"), str(tmp_path / "part")
    assert main(["train", "--data", data_dir, "--out", whole, "--no-progress", "--max-iters=20", *flags]) == 0
    assert main(["train", "--data", data_dir, "--out", part, "--no-progress", "--max-iters=10", *flags]) == 0
    assert main(["train", "--out", part, "--resume", "--max-iters", "20", "--log-stats"]) == 0
    rows = runs.read_metrics(part)
    assert not any("h.0/grad_norm" in r for r in rows if r["iter"] <= 10)
    assert all("h.0/grad_norm" in r for r in rows if r["iter"] > 10)
    key = lambda rs: [(r["iter"], r["train_loss"], r["val_loss"]) for r in rs]  # noqa: E731
    assert key(rows) == key(runs.read_metrics(whole))
