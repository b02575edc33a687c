"""The baselines (LSTMLM, FeedForwardLM, TextVAE): golden gradients against an equivalent torch model,
gradchecks (the VAE's through the reparameterisation with a fixed eps), causality and context limits,
decoding that agrees with the full forward, and training / resume / sample / eval through
``tinyllm.train`` and the CLI on small synthetic text (no network)."""
import json
import os

import numpy as np
import pytest

import tinyllm as tl
from tinyllm import backend, data, runs, train
from tinyllm.cli import main
from tinyllm.metrics import evaluate_lm
from tinyllm.models import LSTMLM, FeedForwardLM, TextVAE

try:
    import torch
except ImportError:  # torch is only the oracle
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40

TINY = dict(n_embd=16, hidden_size=32, num_layers=1, block_size=16, batch_size=4, eval_interval=10, eval_iters=2,
            log_interval=5, warmup_iters=5, lr_decay_iters=40, max_iters=40, lr=1e-2, min_lr=1e-3, progress=False,
            context=4, latent_size=8, kl_anneal_iters=20)
MODELS = ["lstm", "ffn", "vae"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("baselines") / "data"
    data.prepare_text(TEXT, str(d), "char")
    return str(d)


def quiet(*args):
    pass


def _ids(rng, B, T, V):
    return rng.integers(0, V, size=(B, T))


def param_gradcheck(model, loss_fn, eps=1e-6, seed=0, rtol=1e-6, atol=1e-8):
    """<grad, v> of every parameter against the central difference of loss_fn along a random v."""
    rng = np.random.default_rng(seed)
    params = list(model.parameters())
    model.zero_grad()
    loss_fn().backward()
    vs = [rng.standard_normal(p.shape) for p in params]
    analytic = sum(float((p.grad * v).sum()) for p, v in zip(params, vs))
    values = []
    for sign in (1, -1):
        for p, v in zip(params, vs):
            p.data += sign * eps * v
        with tl.no_grad():
            values.append(loss_fn().item())
        for p, v in zip(params, vs):
            p.data -= sign * eps * v
    numeric = (values[0] - values[1]) / (2 * eps)
    assert abs(analytic - numeric) <= atol + rtol * abs(numeric), (analytic, numeric)


# ---------------------------------------------------------------------------------------------
# LSTMLM
# ---------------------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("tie, hidden", [(False, 12), (True, 8), (True, 12)])
def test_lstm_lm_loss_and_every_gradient_match_torch_float64(tie, hidden):
    V, C, L = 11, 8, 2

    class TorchLSTMLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = torch.nn.Embedding(V, C)
            self.lstm = torch.nn.LSTM(C, hidden, L)
            if tie and hidden != C:
                self.proj = torch.nn.Linear(hidden, C, bias=False)
            self.lm_head = torch.nn.Linear(C if tie else hidden, V)
            if tie:
                self.lm_head.weight = self.wte.weight

        def forward(self, idx, targets):
            out, _ = self.lstm(self.wte(idx.T))
            if hasattr(self, "proj"):
                out = self.proj(out)
            logits = self.lm_head(out).transpose(0, 1)
            return torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))

    with backend.default_dtype(np.float64):
        ours = LSTMLM(V, C, hidden, L, tie_weights=tie)
    ref = TorchLSTMLM().double()
    ref.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in ours.state_dict().items()})
    rng = np.random.default_rng(0)
    x, y = _ids(rng, 3, 7, V), _ids(rng, 3, 7, V)
    _, loss = ours(x, y)
    loss.backward()
    t_loss = ref(torch.from_numpy(x), torch.from_numpy(y))
    t_loss.backward()
    np.testing.assert_allclose(loss.item(), t_loss.item(), rtol=1e-7, atol=1e-7)
    t_params = dict(ref.named_parameters())
    names = [n for n, _ in ours.named_parameters()]
    assert names == list(t_params)
    for n, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, t_params[n].grad.numpy(), atol=1e-6, rtol=1e-6, err_msg=n)


def test_lstm_lm_is_causal_and_carries_state():
    with backend.default_dtype(np.float64):
        m = LSTMLM(13, 6, 10, 2)
    rng = np.random.default_rng(1)
    x = _ids(rng, 2, 9, 13)
    a, _ = m(x)
    x2 = x.copy()
    x2[:, 5:] = (x2[:, 5:] + 1) % 13
    b, _ = m(x2)
    np.testing.assert_allclose(a.data[:, :5], b.data[:, :5], atol=1e-12)
    assert not np.allclose(a.data[:, 5:], b.data[:, 5:])
    # the whole window at once == two halves with the state carried across (truncated BPTT's carry)
    m(x[:, :4])
    second, _ = m(x[:, 4:], state=m.last_state)
    np.testing.assert_allclose(second.data, a.data[:, 4:], atol=1e-12)


def test_lstm_lm_gradcheck_with_dropout_masks_fixed():
    with backend.default_dtype(np.float64):
        m = LSTMLM(9, 5, 7, 2, dropout=0.3, tie_weights=True)
    rng = np.random.default_rng(2)
    x, y = _ids(rng, 2, 6, 9), _ids(rng, 2, 6, 9)

    def loss():
        backend.manual_seed(5)  # the same dropout masks at every evaluation
        return m(x, y)[1]
    param_gradcheck(m, loss)


# ---------------------------------------------------------------------------------------------
# FeedForwardLM
# ---------------------------------------------------------------------------------------------
def test_ffn_sees_exactly_its_context_with_left_padding():
    with backend.default_dtype(np.float64):
        m = FeedForwardLM(10, context=3, n_embd=4, hidden=16)
    rng = np.random.default_rng(3)
    x = _ids(rng, 2, 8, 10)
    base, _ = m(x)
    x2 = x.copy()
    x2[:, 2] = (x2[:, 2] + 1) % 10  # token 2 is in the windows of positions 2, 3, 4 only
    changed = ~np.isclose(m(x2)[0].data, base.data).all(axis=(0, 2))
    assert changed.tolist() == [False, False, True, True, True, False, False, False]
    # position 1 sees (PAD, x0, x1): the same as scoring the 2-token window alone
    np.testing.assert_allclose(m(x[:, :2])[0].data, base.data[:, :2], atol=1e-12)


def test_ffn_gradcheck():
    with backend.default_dtype(np.float64):
        m = FeedForwardLM(7, context=3, n_embd=3, hidden=5)
    rng = np.random.default_rng(4)
    x, y = _ids(rng, 2, 5, 7), _ids(rng, 2, 5, 7)
    param_gradcheck(m, lambda: m(x, y)[1])


@pytest.mark.parametrize("kind", ["lstm", "ffn"])
def test_greedy_generate_agrees_with_the_full_forward(kind):
    tl.manual_seed(0)
    m = LSTMLM(12, 8, 16, 2) if kind == "lstm" else FeedForwardLM(12, context=4, n_embd=4, hidden=16)
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    out = m.generate(prompt, max_new_tokens=6)
    assert out.shape == (2, 9) and out.dtype == np.int64 and np.array_equal(out[:, :3], prompt)
    logits, _ = m(out[:, :-1])
    np.testing.assert_array_equal(logits.data[:, 2:].argmax(-1), out[:, 3:])
    a = m.generate(prompt, max_new_tokens=10, do_sample=True, temperature=0.9, top_k=5, top_p=0.9, seed=7)
    b = m.generate(prompt, max_new_tokens=10, do_sample=True, temperature=0.9, top_k=5, top_p=0.9, seed=7)
    np.testing.assert_array_equal(a, b)
    beams = m.generate(prompt, max_new_tokens=6, num_beams=3, num_return_sequences=2)  # the shared loop's beams
    assert beams.shape == (4, 9) and np.array_equal(beams[::2, :3], prompt)


# ---------------------------------------------------------------------------------------------
# TextVAE
# ---------------------------------------------------------------------------------------------
def _vae(**kw):
    with backend.default_dtype(np.float64):
        return TextVAE(**dict(dict(vocab_size=9, n_embd=4, hidden_size=6, latent_size=3, num_layers=2), **kw))


def test_vae_loss_is_recon_plus_weighted_kl_and_gradcheck_through_the_reparameterisation():
    m = _vae(word_dropout=0.3)
    rng = np.random.default_rng(5)
    x, y = _ids(rng, 3, 6, 9), _ids(rng, 3, 6, 9)
    eps = rng.standard_normal((3, 3))
    m.set_kl_weight(0.7)
    _, loss = m(x, y, eps=eps)
    s = m.last_stats
    assert s["kl"] > 0 and s["kl_weight"] == 0.7
    np.testing.assert_allclose(loss.item(), s["recon"] + 0.7 * s["kl"], rtol=1e-12)

    def f():
        backend.manual_seed(9)  # the same word-dropout mask each time; eps is fixed
        return m(x, y, eps=eps)[1]
    param_gradcheck(m, f)
    # d loss / d mu and d logvar flow through z = mu + exp(logvar / 2) eps: the encoder gets gradients
    m.zero_grad()
    f().backward()
    assert np.abs(m.encoder.weight_ih_l0.grad).max() > 0 and np.abs(m.to_latent.weight.grad).max() > 0


def test_vae_kl_annealing_schedule():
    m = _vae(kl_anneal_iters=4)
    rng = np.random.default_rng(6)
    x, y = _ids(rng, 2, 5, 9), _ids(rng, 2, 5, 9)
    weights = []
    for _ in range(6):
        m(x, y)
        weights.append(m.last_stats["kl_weight"])
    assert weights == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert m.state_dict()["kl_step"].tolist() == [6]  # persisted, so resume continues the schedule
    m.eval()
    m(x, y)
    assert m.last_stats["kl_weight"] == 1.0 and m.kl_step.data[0] == 6  # eval: the true bound, no step
    m.train()
    m.set_kl_weight(0.1)
    assert m.kl_weight() == 0.1
    m.set_kl_weight(None)
    assert m.kl_weight() == 1.0
    assert _vae(kl_anneal_iters=0).kl_weight() == 1.0


def test_vae_logits_without_targets_give_the_elbo_to_any_cross_entropy():
    """evaluate_lm (the CLI's eval) scores the sink logits: it must report recon + KL per token."""
    m = _vae()
    m.eval()
    rng = np.random.default_rng(7)
    x, y = _ids(rng, 4, 6, 9), _ids(rng, 4, 6, 9)
    _, elbo = m(x, y)
    recon, kl = m.last_stats["recon"], m.last_stats["kl"]
    logits, _ = m(x)
    assert logits.shape == (4, 6, 10)
    p = np.exp(logits.data).sum(-1)
    np.testing.assert_allclose(p, 1.0, rtol=1e-12)  # a proper distribution over V + 1 outcomes
    ce = tl.nn.functional.cross_entropy(logits.reshape(-1, 10), y.reshape(-1)).item()
    np.testing.assert_allclose(ce, recon + kl, rtol=1e-10)
    np.testing.assert_allclose(ce, elbo.item(), rtol=1e-10)


def test_vae_sample_prior_reconstruct_interpolate():
    m = _vae()
    rng = np.random.default_rng(8)
    a, b = _ids(rng, 1, 7, 9)[0], _ids(rng, 1, 7, 9)[0]
    s = m.sample_prior(3, 10, seed=1)
    assert s.shape == (3, 10) and s.dtype == np.int64 and s.max() < 9  # never the UNK id
    np.testing.assert_array_equal(s, m.sample_prior(3, 10, seed=1))
    r = m.reconstruct(np.stack([a, b]))
    assert r.shape == (2, 7) and r[0, 0] == a[0] and r[1, 0] == b[0]
    path = m.interpolate(a, b, steps=4)
    assert path.shape == (4, 7) and (path[:, 0] == a[0]).all()
    np.testing.assert_array_equal(path[0], r[0])  # the path starts at mu(a), decoded like reconstruct
    assert m.training  # the helpers restore the mode
    g = m.generate(np.array([[1, 2]]), max_new_tokens=5, do_sample=True, seed=3)
    assert g.shape == (1, 7)
    np.testing.assert_array_equal(g, m.generate(np.array([[1, 2]]), max_new_tokens=5, do_sample=True, seed=3))


# ---------------------------------------------------------------------------------------------
# training, resume, CLI
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_each_model_trains_and_its_loss_goes_down(model, data_dir, tmp_path):
    run = str(tmp_path / model)
    cfg = train.TrainConfig.from_flat(model=model, **TINY)
    result = train.train(data_dir, run, cfg, log=quiet)
    evals = [r for r in runs.read_metrics(run) if r["val_loss"] is not None]
    assert [r["iter"] for r in evals] == [0, 10, 20, 30, 40] and result["iter"] == 40
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.3, [r["val_loss"] for r in evals]
    assert json.load(open(os.path.join(run, "config.json")))["model"]["vocab_size"] == len(set(TEXT))
    if model == "vae":
        for r in evals:  # the VAE's val loss is its bound: recon + KL per token
            assert r["recon"] > 0 and r["kl"] >= 0
            assert abs(r["val_loss"] - (r["recon"] + r["kl"])) < 1e-5
    else:
        assert all("recon" not in r for r in evals)
    m, _, _ = runs.load_run(run, "best")
    assert type(m).__name__ == {"lstm": "LSTMLM", "ffn": "FeedForwardLM", "vae": "TextVAE"}[model]


@pytest.mark.parametrize("model", ["lstm", "vae"])
def test_resume_is_bit_identical(model, data_dir, tmp_path):
    cfg = dict(TINY, model=model, dropout=0.1, num_layers=2, max_iters=30)  # dropout, word dropout, eps: all resume
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    train.train(data_dir, full, train.TrainConfig.from_flat(**cfg), log=quiet)
    train.train(data_dir, part, train.TrainConfig.from_flat(**dict(cfg, max_iters=20)), log=quiet)
    train.train(data_dir, part, train.TrainConfig.from_flat(**cfg), resume=True, log=quiet)
    strip = lambda rows: [(r["iter"], r["train_loss"], r["val_loss"], r.get("kl")) for r in rows]
    assert strip(runs.read_metrics(full)) == strip(runs.read_metrics(part))
    ma, _, _ = runs.load_run(full, "last")
    mb, _, _ = runs.load_run(part, "last")
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert ka == kb and np.array_equal(va, vb)


@pytest.mark.parametrize("model", MODELS)
def test_cli_train_sample_eval(model, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    d, run = str(tmp_path / "d"), str(tmp_path / "r")
    assert main(["prepare", "text", str(corpus), "--out", d]) == 0
    flags = ["--model", model, "--max-iters", "10", "--eval-interval", "5", "--eval-iters", "2", "--n-embd", "16",
             "--hidden-size", "24", "--num-layers", "1", "--context", "4", "--latent-size", "4", "--block-size", "16",
             "--batch-size", "4", "--no-progress", "--warmup-iters", "2"]
    assert main(["train", "--data", d, "--out", run] + flags) == 0
    capsys.readouterr()
    assert main(["sample", "--run", run, "--prompt", "First", "--max-new-tokens", "30", "--seed", "1"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("First") and len(first.rstrip("\n")) >= 30
    assert main(["sample", "--run", run, "--prompt", "First", "--max-new-tokens", "30", "--seed", "1"]) == 0
    assert capsys.readouterr().out == first
    assert main(["eval", "--run", run]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "accuracy" in out
    model_obj, _, run_config = runs.load_run(run)
    r = evaluate_lm(model_obj, data.load_split(d, "val"), 16)
    assert np.isfinite(r["loss"]) and r["loss"] > 0
