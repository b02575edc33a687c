"""int8 post-training quantisation (tinyllm/nn/quantized.py): the per-channel rounding bound, layers
against their float originals, a quantized GPT (tied weights stay tied, logits stay close, state saves
and loads), and the `quantize` CLI feeding `eval` and `sample`."""
import os

import numpy as np
import pytest

import tinyllm as tl
from tinyllm import checkpoint, data, nn
from tinyllm.cli import main
from tinyllm.models import GPT, GPTConfig
from tinyllm.nn.quantized import QuantizedEmbedding, QuantizedLinear, dequantize, quantize_, quantize_per_channel


def test_per_channel_rounding_bound():
    w = np.random.default_rng(0).standard_normal((16, 40)).astype(np.float32) * np.logspace(-3, 2, 16)[:, None]
    w[3] = 0.0  # an all-zero row
    q, scale = quantize_per_channel(w)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (16,)
    assert q.min() >= -127 and q.max() <= 127 and np.all(np.abs(q).max(axis=1)[np.arange(16) != 3] == 127)
    err = np.abs(dequantize(q, scale) - w)
    assert np.all(err <= scale[:, None] / 2 * (1 + 1e-6))
    assert not q[3].any()


def test_layers_match_their_float_versions():
    tl.manual_seed(0)
    lin, emb = nn.Linear(32, 24), nn.Embedding(50, 16)
    x = tl.randn(5, 7, 32)
    ql = QuantizedLinear.from_float(lin)
    want, got = lin(x).data, ql(x).data
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=0.02 * np.abs(want).max())
    np.testing.assert_array_equal(ql.bias.data, lin.bias.data)
    ids = np.array([[1, 49, 3], [0, 0, 7]])
    qe = QuantizedEmbedding.from_float(emb)
    np.testing.assert_allclose(qe(ids).data, emb(ids).data, atol=np.abs(emb.weight.data).max() / 127)
    with pytest.raises(IndexError, match="out of range"):
        qe(np.array([50]))


def _gpt():
    tl.manual_seed(1)
    return GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=32))


def test_quantized_gpt_keeps_ties_and_logits(tmp_path):
    model = _gpt()
    ids = np.random.default_rng(0).integers(0, 40, (2, 16))
    with tl.no_grad():
        want = model(ids)[0].data
    quantize_(model)
    assert isinstance(model.lm_head, QuantizedLinear) and isinstance(model.wte, QuantizedEmbedding)
    assert model.lm_head.weight_int8 is model.wte.weight_int8  # tied: one int8 copy
    assert not list(model.parameters()) or all(p.ndim == 1 for p in model.parameters())  # only LayerNorms left
    with tl.no_grad():
        got = model(ids)[0].data
    np.testing.assert_allclose(got, want, atol=0.05 * np.abs(want).max())
    assert np.abs(got - want).mean() < 0.01 * np.abs(want).mean() + 1e-3
    checkpoint.save_checkpoint(str(tmp_path / "q"), model)
    fresh = quantize_(_gpt())
    checkpoint.load_checkpoint(str(tmp_path / "q"), fresh)
    with tl.no_grad():
        np.testing.assert_array_equal(fresh(ids)[0].data, got)


def test_quantize_cli_feeds_eval_and_sample(tmp_path, capsys):
    d = tmp_path / "data"
    data.prepare_text("to be or not to be, that is the question. " * 300, str(d))
    run, qrun = str(tmp_path / "run"), str(tmp_path / "run_q")
    assert main(["train", "--data", str(d), "--out", run, "--max-iters", "30", "--eval-interval", "15",
                 "--eval-iters", "2", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--block-size", "16",
                 "--batch-size", "4", "--no-progress"]) == 0
    assert main(["quantize", "--run", run, "--out", qrun]) == 0
    out = capsys.readouterr().out
    assert "int8" in out
    float_size = os.path.getsize(os.path.join(run, "best", "model.safetensors"))
    int8_size = os.path.getsize(os.path.join(qrun, "best", "model.safetensors"))
    assert int8_size < 0.5 * float_size
    assert main(["eval", "--run", run]) == 0
    assert main(["eval", "--run", qrun]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    losses = [float(l.split()[2]) for l in lines if l.startswith("val loss")]
    assert len(losses) == 2 and abs(losses[0] - losses[1]) < 0.05
    assert main(["sample", "--run", qrun, "--prompt", "to be", "--max-new-tokens", "30"]) == 0
    assert capsys.readouterr().out.startswith("to be")


@pytest.mark.parametrize("M", [1, 3, 16, 17, 100])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_int8_kernel_matches_numpy_twin(M, dtype):
    from tinyllm.kernels import int8
    rng = np.random.default_rng(M)
    x = rng.standard_normal((M, 70)).astype(dtype)
    q, scale = quantize_per_channel(rng.standard_normal((33, 70)))
    want = int8.int8_linear_numpy(x, q, scale)
    got = int8.int8_linear_numba(x, q, scale)
    assert got.dtype == want.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=(1e-5 if dtype == np.float32 else 1e-12) * np.abs(want).max())
    np.testing.assert_allclose(int8.linear(x, q, scale), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_quantized_linear_passes_gradients_to_its_input():
    tl.manual_seed(0)
    lin = nn.Linear(8, 4)
    ql = QuantizedLinear.from_float(lin)
    x = tl.randn(3, 8, requires_grad=True)
    ql(x).sum().backward()
    w = dequantize(ql.weight_int8.data, ql.weight_scale.data)
    np.testing.assert_allclose(x.grad, np.tile(w.sum(axis=0), (3, 1)), rtol=1e-5)
