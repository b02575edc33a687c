"""``GPT(ids, output_attentions=True)``: each layer's attention probabilities against Hugging Face
``GPT2LMHeadModel(..., output_attentions=True)`` on the same weights (float32 and float64, batch 2, with
and without past keys), their structure (rows sum to 1, zeros above the diagonal), and logits that are
the same with and without the flag (eval, and training with dropout)."""
import numpy as np
import pytest

import tinyllm as tl
from tinyllm import backend
from tinyllm.models.gpt import GPT, GPTConfig


def _hf_pair(tmp_path, dtype=np.float32, V=40, n_positions=24, n_embd=32, n_layer=2, n_head=4, seed=0):
    """A random HF GPT-2 (eager attention, the one that returns weights) and tinyllm's GPT loaded from
    its save_pretrained directory; float64 casts the same float32 weights up on both sides."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                                  n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    cfg._attn_implementation = "eager"
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # larger q/k weights than the 0.02 init, so the maps are far from uniform
        for name, p in hf.named_parameters():
            if name.endswith("attn.c_attn.weight"):
                p.normal_(0.0, 0.2)
            elif p.dim() == 1:
                p.normal_(0.0, 0.1).add_(1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0)
    hf.save_pretrained(tmp_path)
    ours = GPT.from_pretrained(str(tmp_path), dtype=dtype)
    if dtype == np.float64:
        hf = hf.double()
    return hf, ours


def _hf_attentions(hf, ids, past=None):
    import torch
    with torch.no_grad():
        out = hf(torch.tensor(ids), cache=past, use_cache=True, output_attentions=True)
    return [a.numpy() for a in out.attentions], out.cache, out.logits.numpy()


def _check_structure(attentions, B, H, T, S):
    for a in attentions:
        p = a.numpy()
        assert p.shape == (B, H, T, S)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-6)
        future = np.arange(S)[None, :] > (S - T + np.arange(T))[:, None]  # query i sits at S - T + i
        assert np.all(p[..., future] == 0.0) and np.all(p[..., ~future] > 0.0)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-6), (np.float64, 1e-12)])
def test_attentions_match_hf(tmp_path, dtype, tol):
    hf, ours = _hf_pair(tmp_path, dtype)
    ids = np.random.default_rng(1).integers(0, 40, (2, 24))  # batch 2, the full block
    want, _, _ = _hf_attentions(hf, ids)
    logits, loss, attentions = ours(ids, output_attentions=True)
    assert loss is None and isinstance(attentions, tuple) and len(attentions) == 2
    assert all(isinstance(a, tl.Tensor) and not a.requires_grad and a.dtype == dtype for a in attentions)
    _check_structure(attentions, 2, 4, 24, 24)
    for got, w in zip(attentions, want):
        assert np.abs(got.numpy() - w).max() <= tol
    assert np.abs(attentions[0].numpy() - 1 / np.arange(1, 25)[:, None]).max() > 0.1  # not uniform


def test_attentions_with_past_keys_match_hf(tmp_path):
    """A prompt of 10 tokens, then 5 more on the KV cache, then one decode step: each chunk's
    attentions are (B, H, T, past + T) and equal HF's with its past_key_values."""
    hf, ours = _hf_pair(tmp_path, np.float64)
    ids = np.random.default_rng(2).integers(0, 40, (2, 16))
    caches, past = ours.new_caches(), None
    for a, b in [(0, 10), (10, 15), (15, 16)]:
        want, past, want_logits = _hf_attentions(hf, ids[:, a:b], past)
        logits, _, attentions = ours(ids[:, a:b], caches=caches, output_attentions=True)
        _check_structure(attentions, 2, 4, b - a, b)
        for got, w in zip(attentions, want):
            assert np.abs(got.numpy() - w).max() <= 1e-12
        np.testing.assert_allclose(logits.numpy(), want_logits, rtol=0, atol=1e-10)
    # the whole sequence at once gives the same rows as the cached chunks did
    _, _, full = ours(ids, output_attentions=True)
    np.testing.assert_allclose(full[1].numpy()[:, :, 15:, :], attentions[1].numpy(), rtol=0, atol=1e-12)


def test_logits_identical_with_and_without_the_flag(tmp_path):
    _, ours = _hf_pair(tmp_path)
    ids = np.random.default_rng(3).integers(0, 40, (2, 24))
    targets = np.random.default_rng(4).integers(0, 40, (2, 24))
    plain = ours(ids, targets)
    assert len(plain) == 2
    logits, loss, _ = ours(ids, targets, output_attentions=True)
    assert np.array_equal(logits.numpy(), plain[0].numpy()) and loss.item() == plain[1].item()


def test_training_with_dropout_same_logits_and_gradients():
    """In training with dropout the flag writes SDPA's dropout path out by hand: on the same seed the
    same dropout mask is drawn, so logits, loss and gradients are bit-identical, and the returned maps
    are the dropped-out probabilities (entries 0 or p / (1 - dropout))."""
    with backend.default_dtype(np.float64):
        model = GPT(GPTConfig(vocab_size=20, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.25))
    model.train()
    ids = np.random.default_rng(5).integers(0, 20, (2, 8))
    runs = []
    for flag in (False, True):
        tl.manual_seed(7)
        model.zero_grad()
        out = model(ids, ids, output_attentions=True) if flag else model(ids, ids)
        out[1].backward()
        runs.append((out, [p.grad.copy() for p in model.parameters()]))
    (plain, g0), (flagged, g1) = runs
    assert np.array_equal(plain[0].numpy(), flagged[0].numpy()) and plain[1].item() == flagged[1].item()
    assert all(np.array_equal(a, b) for a, b in zip(g0, g1))
    att = flagged[2][0].numpy()
    assert np.any((att == 0.0) & ~np.triu(np.ones((8, 8), bool), 1))  # some dropped below the diagonal
    assert not np.allclose(att.sum(-1), 1.0)  # rescaled by 1 / (1 - p): rows no longer sum to 1
    # one layer on its own (the block input has no embedding dropout): the kept entries are the eval
    # probabilities scaled by 1 / (1 - p)
    attn = model.h[0].attn
    x = tl.Tensor(np.random.default_rng(6).standard_normal((2, 8, 16)))
    _, dropped = attn(x, output_attentions=True)
    attn.eval()
    _, clean = attn(x, output_attentions=True)
    dropped, clean = dropped.numpy(), clean.numpy()
    kept = dropped != 0
    assert 0 < (~kept).sum() - 2 * 2 * 28 < 2 * 2 * 36  # 28 future entries per map, plus some dropped
    np.testing.assert_allclose(dropped[kept], clean[kept] / 0.75, rtol=1e-12)


def test_generate_unaffected_and_default_return():
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=8)).eval()
    ids = np.array([[1, 2, 3]])
    out = model.generate(ids, max_new_tokens=5)
    assert out.shape == (1, 8)
    assert len(model(ids)) == 2
    _, _, att = model(ids, output_attentions=True)
    assert len(att) == 1 and att[0].shape == (1, 2, 3, 3)
