"""The GPT model: golden comparisons with Hugging Face ``GPT2LMHeadModel`` on the same weights (logits
in float32, every gradient in float64), the HF checkpoint loader's key and layout handling, the
configuration options (sinusoidal positions, tanh GELU, untied head), initialisation, parameter
counts, finite differences, and the errors a user can hit."""
import json
import math
import os
import shutil

import numpy as np
import pytest

import tinyllm as tl
from tinyllm.models.gpt import GPT, GPTConfig, sinusoidal_positions

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _hf_model(tie=True, activation="gelu_new", seed=0, V=50, n_positions=32, n_embd=32, n_layer=2, n_head=4):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                                  n_head=n_head, activation_function=activation, tie_word_embeddings=tie,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # non-trivial biases and LayerNorm affines, so every parameter matters
        for name, p in hf.named_parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.1).add_(1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0)
    return hf


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    hf = _hf_model()
    path = tmp_path_factory.mktemp("hf_gpt2")
    hf.save_pretrained(path)
    return hf, str(path)


def _logits_match(hf, ours, ids, rtol=1e-4):
    import torch
    with torch.no_grad():
        want = hf(torch.tensor(ids)).logits.numpy()
    got, loss = ours(ids)
    assert loss is None
    assert got.dtype == np.float32 and got.shape == want.shape
    scale = np.abs(want).max()
    np.testing.assert_allclose(got.data, want, rtol=rtol, atol=rtol * scale)


# ---------------------------------------------------------------------------------------------
# Hugging Face: logits, loader, gradients
# ---------------------------------------------------------------------------------------------
def test_from_pretrained_logits_match_hf(hf_dir):
    hf, path = hf_dir
    ours = GPT.from_pretrained(path)
    assert ours.config.activation == "gelu_tanh" and ours.config.tie_weights and ours.config.bias
    assert ours.lm_head.weight is ours.wte.weight
    ids = np.random.default_rng(0).integers(0, 50, (3, 32))  # the full block
    _logits_match(hf, ours, ids)
    _logits_match(hf, ours, ids[:1, :1])  # one token


def test_from_pretrained_hub_layout(hf_dir, tmp_path):
    """The hub's gpt2 keys have no ``transformer.`` prefix and may carry attn.bias / attn.masked_bias
    mask buffers and an lm_head copy; all of that loads."""
    from safetensors.numpy import load_file, save_file
    hf, path = hf_dir
    raw = load_file(os.path.join(path, "model.safetensors"))
    hub = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in raw.items()}
    assert not any(k.startswith("transformer.") for k in hub)
    T = 32
    for i in range(2):
        hub[f"h.{i}.attn.bias"] = np.tril(np.ones((T, T), np.float32))[None, None]
        hub[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32).reshape(1, 1, 1, 1)
    hub["lm_head.weight"] = hub["wte.weight"].copy()
    save_file(hub, str(tmp_path / "model.safetensors"))
    shutil.copy(os.path.join(path, "config.json"), tmp_path / "config.json")
    ours = GPT.from_pretrained(str(tmp_path))
    _logits_match(hf, ours, np.random.default_rng(1).integers(0, 50, (2, 17)))


@pytest.mark.parametrize("tie, activation", [(False, "gelu_new"), (True, "gelu")])
def test_from_pretrained_untied_and_exact_gelu(tmp_path, tie, activation):
    hf = _hf_model(tie=tie, activation=activation, seed=3)
    hf.save_pretrained(tmp_path)
    ours = GPT.from_pretrained(str(tmp_path))
    assert ours.config.tie_weights == tie
    assert (ours.lm_head.weight is ours.wte.weight) == tie
    assert ours.config.activation == ("gelu" if activation == "gelu" else "gelu_tanh")
    _logits_match(hf, ours, np.random.default_rng(2).integers(0, 50, (2, 20)))


def test_gradients_match_hf_in_float64(tmp_path):
    """Same weights, same batch, float64: the loss and every parameter's gradient agree with HF's
    (HF's Conv1D gradients transposed to our (out, in) Linear layout)."""
    torch = pytest.importorskip("torch", reason="torch is the oracle here (the torch extra)")
    hf = _hf_model(seed=5).double()
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = GPT.from_pretrained(str(tmp_path), dtype=np.float64)
    ids = np.random.default_rng(3).integers(0, 50, (2, 24))
    targets = np.random.default_rng(4).integers(0, 50, (2, 24))
    out = hf(torch.tensor(ids))
    want_loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, 50), torch.tensor(targets).reshape(-1))
    want_loss.backward()
    logits, loss = ours(ids, targets)
    loss.backward()
    assert abs(loss.item() - want_loss.item()) < 1e-10
    hf_grads = {}
    for name, p in hf.named_parameters():
        key = name[len("transformer."):] if name.startswith("transformer.") else name
        g = p.grad.numpy()
        hf_grads[key] = g.T if key.endswith(CONV1D) else g
    for name, p in ours.named_parameters():
        want = hf_grads["wte.weight" if name == "lm_head.weight" else name]  # tied: HF sums both uses into wte
        np.testing.assert_allclose(p.grad, want, rtol=1e-6, atol=1e-9 * max(1.0, np.abs(want).max()), err_msg=name)


def test_from_pretrained_errors(hf_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        GPT.from_pretrained(str(tmp_path))
    _, path = hf_dir
    shutil.copy(os.path.join(path, "model.safetensors"), tmp_path / "model.safetensors")
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    cfg["activation_function"] = "relu"
    with open(tmp_path / "config.json", "w") as f:
        json.dump(cfg, f)
    with pytest.raises(ValueError, match="activation_function"):
        GPT.from_pretrained(str(tmp_path))


def test_num_params_matches_hf(hf_dir):
    hf, path = hf_dir
    ours = GPT.from_pretrained(path)
    assert ours.num_params() == sum(p.numel() for p in hf.parameters())  # tied weight counted once
    assert ours.num_params(non_embedding=True) == ours.num_params() - 50 * 32 - 32 * 32


# ---------------------------------------------------------------------------------------------
# the model on its own
# ---------------------------------------------------------------------------------------------
def _small(**kw):
    cfg = dict(vocab_size=20, block_size=12, n_layer=2, n_head=2, n_embd=16)
    cfg.update(kw)
    return GPT(GPTConfig(**cfg))


def test_parameter_names_are_gpt2s():
    model = _small(bias=False)
    names = set(model.state_dict())
    for i in range(2):
        for part in ("ln_1.weight", "attn.c_attn.weight", "attn.c_proj.weight", "ln_2.weight",
                     "mlp.c_fc.weight", "mlp.c_proj.weight"):
            assert f"h.{i}.{part}" in names
    assert {"wte.weight", "wpe.weight", "ln_f.weight", "lm_head.weight"} <= names
    assert not any(n.endswith(".bias") for n in names)  # bias=False: none, LayerNorm included
    assert model.h[0].attn.c_attn.weight.shape == (48, 16)  # (out, in)


def test_initialisation_follows_gpt2():
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=100, block_size=64, n_layer=4, n_head=4, n_embd=128))
    sd = {n: p.data for n, p in model.named_parameters()}
    for name, w in sd.items():
        if name.endswith("c_proj.weight"):
            np.testing.assert_allclose(w.std(), 0.02 / math.sqrt(8), rtol=0.05, err_msg=name)
        elif name.endswith(("c_attn.weight", "c_fc.weight")) or name in ("wte.weight", "wpe.weight"):
            np.testing.assert_allclose(w.std(), 0.02, rtol=0.05, err_msg=name)
        elif name.endswith("bias"):
            assert not w.any(), name
        elif ".ln_" in name or name.startswith("ln_f"):
            assert np.all(w == 1), name
    assert model.lm_head.weight is model.wte.weight
    assert sd["wte.weight"].dtype == np.float32


def test_sinusoidal_positions():
    pe = sinusoidal_positions(50, 16)
    pos, i = 7, 3
    np.testing.assert_allclose(pe[pos, 2 * i], math.sin(pos / 10000 ** (2 * i / 16)), rtol=1e-12)
    np.testing.assert_allclose(pe[pos, 2 * i + 1], math.cos(pos / 10000 ** (2 * i / 16)), rtol=1e-12)
    model = _small(pos_encoding="sinusoidal")
    assert "wpe.weight" not in model.state_dict() and "pos_table" not in model.state_dict()
    ids = np.random.default_rng(0).integers(0, 20, (2, 12))
    logits, loss = model(ids, ids)
    assert logits.shape == (2, 12, 20) and np.isfinite(loss.item())
    # the table is the same rows at any length: position 3's encoding does not depend on T
    with tl.no_grad():
        a, _ = model(ids[:, :4])
        b, _ = model(ids)
    np.testing.assert_allclose(a.data, b.data[:, :4], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw", [dict(), dict(pos_encoding="sinusoidal", activation="gelu_tanh", bias=False),
                                dict(tie_weights=False, dropout=0.0)])
def test_gradcheck_float64(kw):
    with tl.backend.default_dtype(np.float64):
        tl.manual_seed(1)
        model = _small(**kw)
    ids = np.random.default_rng(2).integers(0, 20, (2, 7))
    targets = np.random.default_rng(3).integers(0, 20, (2, 7))
    # a random direction over every parameter; central difference of the loss along it
    params = list(model.parameters())
    rng = np.random.default_rng(4)
    dirs = [rng.standard_normal(p.shape) for p in params]
    _, loss = model(ids, targets)
    loss.backward()
    analytic = sum(float(np.sum(p.grad * d)) for p, d in zip(params, dirs))
    eps = 1e-6
    values = []
    with tl.no_grad():
        for sign in (1, -1):
            for p, d in zip(params, dirs):
                p.data += sign * eps * d
            values.append(model(ids, targets)[1].item())
            for p, d in zip(params, dirs):
                p.data -= sign * eps * d
    numeric = (values[0] - values[1]) / (2 * eps)
    assert abs(analytic - numeric) <= 1e-7 + 1e-6 * abs(numeric), (analytic, numeric)


def test_causality():
    """Changing a later token never changes an earlier position's logits."""
    model = _small()
    ids = np.random.default_rng(0).integers(0, 20, (1, 12))
    other = ids.copy()
    other[0, 8:] = (other[0, 8:] + 1) % 20
    with tl.no_grad():
        a, _ = model(ids)
        b, _ = model(other)
    np.testing.assert_array_equal(a.data[:, :8], b.data[:, :8])
    assert not np.allclose(a.data[:, 8:], b.data[:, 8:])


def test_dropout_only_in_training():
    tl.manual_seed(0)
    model = _small(dropout=0.5)
    ids = np.random.default_rng(0).integers(0, 20, (2, 12))
    model.eval()
    with tl.no_grad():
        a, _ = model(ids)
        b, _ = model(ids)
    np.testing.assert_array_equal(a.data, b.data)
    model.train()
    with tl.no_grad():
        c, _ = model(ids)
    assert not np.allclose(a.data, c.data)


def test_bad_inputs_raise_clear_errors():
    model = _small()
    with pytest.raises(ValueError, match="block_size 12"):
        model(np.zeros((1, 13), dtype=np.int64))
    with pytest.raises(ValueError, match="token id 20 is outside the vocabulary"):
        model(np.array([[1, 20]]))
    with pytest.raises(ValueError, match="token id -1"):
        model(np.array([[-1, 2]]))
    with pytest.raises(ValueError, match=r"shape \(B, T\)"):
        model(np.zeros(5, dtype=np.int64))
    with pytest.raises(ValueError, match="integer token ids"):
        model(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="targets"):
        model(np.zeros((2, 3), dtype=np.int64), np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="pos_encoding"):
        GPTConfig(pos_encoding="rotary")
    with pytest.raises(ValueError, match="activation"):
        GPTConfig(activation="relu")


def test_loss_is_cross_entropy_of_the_logits_and_accepts_tensors():
    model = _small()
    ids = np.random.default_rng(0).integers(0, 20, (2, 12))
    targets = np.random.default_rng(1).integers(0, 20, (2, 12))
    targets[0, :3] = -1  # ignored, as nanoGPT
    logits, loss = model(tl.tensor(ids), tl.tensor(targets))
    lg = logits.data.astype(np.float64).reshape(-1, 20)
    t = targets.reshape(-1)
    logp = lg - lg.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    keep = t != -1
    np.testing.assert_allclose(loss.item(), -logp[keep, t[keep]].mean(), rtol=1e-6)
