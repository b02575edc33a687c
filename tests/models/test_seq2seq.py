"""The encoder-decoder (tinyllm/models/seq2seq.py): padding masks on both sides, causality, finite
differences in float64, and decoding through tinyllm.generate (greedy equals a hand-written loop)."""
import numpy as np
import pytest

import tinyllm as tl
from tinyllm.models.seq2seq import BOS, EOS, PAD, Seq2SeqConfig, Seq2SeqTransformer


def _model(dtype=np.float32, **kw):
    with tl.backend.default_dtype(dtype):
        tl.manual_seed(0)
        cfg = dict(src_vocab_size=20, tgt_vocab_size=25, n_layer=2, n_head=2, n_embd=16, max_len=12)
        cfg.update(kw)
        model = Seq2SeqTransformer(Seq2SeqConfig(**cfg))
    for p in model.parameters():  # livelier than the 0.02 init, so differences show
        if p.ndim == 2:
            p.data[...] = np.random.default_rng(p.numel()).normal(0, 0.3, p.shape)
    return model.eval()


def test_source_padding_changes_nothing():
    model = _model()
    src = np.array([[5, 6, 7, EOS]])
    padded = np.array([[5, 6, 7, EOS, PAD, PAD, PAD]])
    tgt = np.array([[BOS, 9, 10]])
    with tl.no_grad():
        a, _ = model(src, tgt)
        b, _ = model(padded, tgt)
    np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-6)


def test_decoder_is_causal_and_loss_ignores_target_padding():
    model = _model()
    src = np.array([[5, 6, 7, EOS], [8, 9, EOS, PAD]])
    tgt = np.array([[BOS, 9, 10, 11], [BOS, 12, 13, 14]])
    other = tgt.copy()
    other[:, 3] = 4
    with tl.no_grad():
        a, _ = model(src, tgt)
        b, _ = model(src, other)
    np.testing.assert_array_equal(a.data[:, :3], b.data[:, :3])
    targets = np.array([[9, 10, 11, EOS], [12, EOS, PAD, PAD]])
    logits, loss = model(src, tgt, targets)
    lg = logits.data.astype(np.float64).reshape(-1, 25)
    t = targets.reshape(-1)
    logp = lg - lg.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    keep = t != PAD
    np.testing.assert_allclose(loss.item(), -logp[keep, t[keep]].mean(), rtol=1e-5)


def test_finite_differences_float64():
    model = _model(np.float64)
    model.train()
    src = np.array([[5, 6, EOS, PAD], [7, 8, 9, EOS]])
    tgt = np.array([[BOS, 3, 4], [BOS, 5, 6]])
    targets = np.array([[3, 4, EOS], [5, 6, EOS]])
    params = list(model.parameters())
    rng = np.random.default_rng(1)
    dirs = [rng.standard_normal(p.shape) for p in params]
    _, loss = model(src, tgt, targets)
    loss.backward()
    analytic = sum(float(np.sum(p.grad * d)) for p, d in zip(params, dirs))
    eps, values = 1e-6, []
    with tl.no_grad():
        for sign in (1, -1):
            for p, d in zip(params, dirs):
                p.data += sign * eps * d
            values.append(model(src, tgt, targets)[1].item())
            for p, d in zip(params, dirs):
                p.data -= sign * eps * d
    numeric = (values[0] - values[1]) / (2 * eps)
    assert abs(analytic - numeric) <= 1e-7 + 1e-6 * abs(numeric), (analytic, numeric)


def test_greedy_translate_equals_a_hand_written_loop_and_beams_run():
    model = _model()
    src = np.array([[5, 6, 7, EOS], [8, 9, EOS, PAD]])
    out = model.translate(src, max_new_tokens=8)
    with tl.no_grad():
        ids = np.full((2, 1), BOS)
        done = np.zeros(2, bool)
        for _ in range(8):
            logits, _ = model(src, ids)
            nxt = np.where(done, PAD, logits.data[:, -1].argmax(-1))
            ids = np.concatenate([ids, nxt[:, None]], axis=1)
            done |= nxt == EOS
            if done.all():
                break
    np.testing.assert_array_equal(out, ids[:, 1:])
    beams = model.translate(src, max_new_tokens=8, num_beams=3)
    assert beams.shape[0] == 2 and beams.shape[1] <= 8
    with pytest.raises(ValueError, match="max_len"):
        model(np.zeros((1, 13), dtype=np.int64), np.array([[BOS]]))
