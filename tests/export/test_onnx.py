"""tinyllm.export.onnx.to_onnx: the graph passes onnx.checker, and onnxruntime (CPU) runs it to tinyllm's
logits for the prompt and, feeding the cache back, to tinyllm's greedy tokens, at every graph optimisation
level. Needs onnx and onnxruntime (pip install 'tinyllm[export]'); skipped without them.

Logits are compared at 1e-5 relative to the largest logit: max |onnx - tinyllm| <= 1e-5 * max |tinyllm|.
The random models below are scaled so that their logits are O(1) (largest about 3 to 5), so that is an
absolute 3e-5 to 5e-5; the measured differences are about 2e-6 to 5e-6."""
import json
import os
import sys
import textwrap

import numpy as np
import pytest

from tinyllm import backend
from tinyllm.export.common import ExportError
from tinyllm.models.gpt import GPT, GPTConfig
from tinyllm.text.char import CharTokenizer

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from tinyllm.export import onnx as onnx_export  # noqa: E402
from tinyllm.export.onnx import to_onnx  # noqa: E402

TINY = dict(vocab_size=97, block_size=48, n_layer=2, n_head=2, n_embd=32)
TOL = 1e-5


def assert_close(got, ref, what=""):
    """Logits equal to 1e-5 relative to the largest of them (float32 sums in another order)."""
    err, scale = np.abs(got - ref).max(), np.abs(ref).max()
    assert err <= TOL * scale, f"{what}: max |diff| {err:.2e} > {TOL} * max |logit| {scale:.2f}"
LEVELS = {  # the default (no SessionOptions) is ORT_ENABLE_ALL; EXTENDED is where a graph that computes
    # its own positions went wrong, so every level is checked
    "default": None,
    "disable_all": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def tiny_gpt(seed=0, **kw):
    backend.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, **kw}))
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():  # non-zero biases and norms, so a mix-up of any two tensors shows
        if p.data.ndim == 2:  # scaled so that the logits are O(1), as a trained model's are
            p.data[...] = rng.normal(0.0, 0.2, p.data.shape)
        else:  # norm weights about 1, biases about 0
            norm_weight = name.endswith(".weight") and name.split(".")[-2].startswith("ln_")
            p.data[...] = rng.normal(1.0 if norm_weight else 0.0, 0.1, p.data.shape)
    return model.eval()


def session(path, level="default"):
    if LEVELS[level] is None:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    so = ort.SessionOptions()
    so.graph_optimization_level = LEVELS[level]
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def empty_cache(config, batch):
    hs = config.n_embd // config.n_head
    return {f"past_{kv}_{i}": np.zeros((batch, config.n_head, 0, hs), np.float32)
            for i in range(config.n_layer) for kv in ("key", "value")}


def run(sess, ids, past, start):
    """One call: logits (B, T, V) and the cache for the next call, with positions start .. start + T - 1."""
    ids = np.asarray(ids, np.int64)
    pos = np.broadcast_to(np.arange(start, start + ids.shape[1], dtype=np.int64), ids.shape)
    logits, *present = sess.run(None, {"input_ids": ids, "position_ids": np.ascontiguousarray(pos), **past})
    names = [o.name for o in sess.get_outputs()[1:]]
    return logits, {n.replace("present_", "past_"): a for n, a in zip(names, present)}


def export(model, tmp_path, name="out"):
    notes = to_onnx(model, None, tmp_path / name)
    return tmp_path / name / "model.onnx", notes


@pytest.fixture(scope="module")
def default_export(tmp_path_factory):
    model = tiny_gpt()
    path, _ = export(model, tmp_path_factory.mktemp("onnx"))
    return model, path


def test_checker_and_interface(default_export):
    model, path = default_export
    onnx.checker.check_model(str(path), full_check=True)  # full_check runs ONNX's shape inference too
    m = onnx.load(str(path))
    c = model.config
    assert [(o.domain, o.version) for o in m.opset_import] == [("", 17)]
    assert {n.op_type for n in m.graph.node} >= {"LayerNormalization", "Erf", "Softmax", "Concat", "Gather"}

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    ins = {v.name: (v.type.tensor_type.elem_type, dims(v)) for v in m.graph.input}
    outs = {v.name: (v.type.tensor_type.elem_type, dims(v)) for v in m.graph.output}
    I64, F32 = onnx.TensorProto.INT64, onnx.TensorProto.FLOAT
    assert ins == {"input_ids": (I64, ["batch", "seq"]), "position_ids": (I64, ["batch", "seq"]),
                   **{f"past_{kv}_{i}": (F32, ["batch", 2, "past_seq", 16])
                      for i in range(2) for kv in ("key", "value")}}
    assert outs == {"logits": (F32, ["batch", "seq", c.vocab_size]),
                    **{f"present_{kv}_{i}": (F32, ["batch", 2, "past_seq + seq", 16])
                       for i in range(2) for kv in ("key", "value")}}
    # the weights are stored once and as the model has them: the tied table once, Linear weights as (in, out)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    assert sum(a.shape == (c.vocab_size, c.n_embd) for a in inits.values()) == 1
    np.testing.assert_array_equal(inits["wte.weight"], model.wte.weight.data)
    np.testing.assert_array_equal(inits["h.1.mlp.c_fc.weight"], model.h[1].mlp.c_fc.weight.data.T)
    np.testing.assert_array_equal(inits["h.0.ln_2.bias"], model.h[0].ln_2.bias.data)
    assert not any(n.op_type == "Transpose" and set(n.input) & set(inits) for n in m.graph.node)
    weight_bytes = 4 * model.num_params()
    assert weight_bytes <= os.path.getsize(path) < weight_bytes + 10_000  # the graph itself is a few kB
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["model_type"] == "tinyllm-gpt" and json.loads(meta["config"]) == c.to_dict()


CONFIGS = {
    "gelu-tied": dict(),
    "gelu_tanh": dict(activation="gelu_tanh"),
    "untied": dict(tie_weights=False),
    "no-bias": dict(bias=False),
    "sinusoidal": dict(pos_encoding="sinusoidal", activation="gelu_tanh", tie_weights=False, layer_norm_eps=1e-2),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_prefill_logits_every_config_and_level(name, tmp_path):
    model = tiny_gpt(seed=1, **CONFIGS[name])
    path, _ = export(model, tmp_path)
    onnx.checker.check_model(str(path), full_check=True)
    ids = np.random.default_rng(2).integers(0, model.config.vocab_size, (2, 11))  # batch 2
    ref = model(ids)[0].data
    assert 1.0 < np.abs(ref).max() < 20.0  # O(1) logits, as the tolerance assumes
    for level in LEVELS:
        logits, cache = run(session(path, level), ids, empty_cache(model.config, 2), 0)
        assert_close(logits, ref, f"{name} {level}")
        assert cache["past_key_1"].shape == (2, 2, 11, 16)


def test_no_bias_and_sinusoidal_graph(tmp_path):
    model = tiny_gpt(bias=False, pos_encoding="sinusoidal")
    path, notes = export(model, tmp_path)
    m = onnx.load(str(path))
    names = {t.name for t in m.graph.initializer}
    assert not any(n.endswith(".bias") for n in names)  # no zero biases stored, no Adds run
    assert all(len(n.input) == 2 for n in m.graph.node if n.op_type == "LayerNormalization")
    assert notes == ["sinusoidal positions: stored as a constant (block_size, n_embd) table of the same values"]
    np.testing.assert_array_equal(
        onnx.numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "wpe.weight")),
        model.pos_table.data)


@pytest.mark.parametrize("activation,fused", [("gelu", "BiasGelu"), ("gelu_tanh", "FastGelu")])
def test_onnxruntime_fuses_the_gelu(activation, fused, tmp_path):
    """GELU is written as its formula in the node forms ONNX Runtime's extended level turns into one kernel."""
    path, _ = export(tiny_gpt(activation=activation), tmp_path)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    assert ops.count(fused) == 2 and not {"Erf", "Tanh", "Pow"} & set(ops)


def tinyllm_steps(model, ids, steps):
    """tinyllm's own greedy loop on its cache: the tokens and the logits of every step."""
    caches, tokens, all_logits = model.new_caches(), ids, []
    step_ids = ids
    for _ in range(steps):
        logits, caches = model.decode_step(step_ids, caches)
        all_logits.append(logits)
        step_ids = logits.argmax(-1)[:, None]
        tokens = np.concatenate([tokens, step_ids], axis=1)
    return tokens, all_logits


def onnx_steps(sess, config, ids, steps):
    past, n, step_ids, tokens, all_logits = empty_cache(config, ids.shape[0]), 0, ids, ids, []
    for _ in range(steps):
        logits, past = run(sess, step_ids, past, n)
        n += step_ids.shape[1]
        all_logits.append(logits[:, -1])
        step_ids = logits[:, -1].argmax(-1)[:, None]
        tokens = np.concatenate([tokens, step_ids], axis=1)
    assert past["past_value_0"].shape[2] == tokens.shape[1] - 1  # the cache grew one position a step
    return tokens, all_logits


@pytest.mark.parametrize("name,batch,prompt", [("gelu-tied", 2, 9), ("gelu_tanh", 1, 1), ("untied", 2, 9),
                                               ("sinusoidal", 2, 27), ("no-bias", 1, 5)])
def test_greedy_decode_through_the_cache(name, batch, prompt, tmp_path):
    """20 steps, past half of block_size (48) for the longer prompts; the last reaches block_size itself."""
    model = tiny_gpt(seed=3, **CONFIGS[name])
    path, _ = export(model, tmp_path)
    ids = np.random.default_rng(4).integers(0, model.config.vocab_size, (batch, prompt))
    steps = 48 - prompt + 1 if prompt == 27 else 20  # 22 steps: the last one feeds position 47, the table's last
    expected = model.generate(ids, max_new_tokens=steps, do_sample=False)
    ref_tokens, ref_logits = tinyllm_steps(model, ids, steps)
    np.testing.assert_array_equal(ref_tokens, expected)
    assert len(set(expected[:, prompt:].ravel().tolist())) > 2  # not one token over and over
    for level in LEVELS:
        tokens, logits = onnx_steps(session(path, level), model.config, ids, steps)
        np.testing.assert_array_equal(tokens, expected)
        for i, (a, b) in enumerate(zip(logits, ref_logits)):
            assert_close(a, b, f"{name} {level} step {i}")


def test_chunks_on_a_cache_see_the_right_keys(default_export):
    """Several tokens on a non-empty cache (the mask's P > 0, T > 1 case) give the logits of one prefill."""
    model, path = default_export
    ids = np.random.default_rng(5).integers(0, model.config.vocab_size, (2, 30))
    ref = model(ids)[0].data
    for level in ("disable_all", "all"):
        sess, past, got, n = session(path, level), empty_cache(model.config, 2), [], 0
        for chunk in (ids[:, :7], ids[:, 7:8], ids[:, 8:25], ids[:, 25:]):
            logits, past = run(sess, chunk, past, n)
            got.append(logits)
            n += chunk.shape[1]
        assert_close(np.concatenate(got, axis=1), ref, level)


def test_float64_model_is_written_as_float32(tmp_path):
    with backend.default_dtype("float64"):
        model = tiny_gpt(seed=6)
    path, notes = export(model, tmp_path)
    assert notes == ["float64 weights: written as float32"]
    ids = np.random.default_rng(7).integers(0, 97, (1, 12))
    logits, _ = run(session(path), ids, empty_cache(model.config, 1), 0)
    assert logits.dtype == np.float32
    assert_close(logits, model(ids)[0].data)  # float64 tinyllm against float32 weights and arithmetic


def test_large_weights_go_to_external_data(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 1000)
    model = tiny_gpt(seed=8)
    path, notes = export(model, tmp_path)
    assert sorted(os.listdir(path.parent)) == ["model.onnx", "model.onnx.data"]
    assert os.path.getsize(path) < 50_000 and "model.onnx.data" in notes[-1]
    onnx.checker.check_model(str(path), full_check=True)
    ids = np.random.default_rng(9).integers(0, 97, (1, 6))
    logits, _ = run(session(path), ids, empty_cache(model.config, 1), 0)
    assert_close(logits, model(ids)[0].data)


def test_docstring_example_runs_as_written(tmp_path, monkeypatch):
    """The module docstring's example (the README's) prints tinyllm's greedy continuation."""
    tokenizer = CharTokenizer.from_text("Hello, world! abcdefghijklmnopqrstuvwxyz")
    model = tiny_gpt(seed=10, vocab_size=tokenizer.vocab_size)
    code = textwrap.dedent(onnx_export.__doc__.split("with onnxruntime::\n")[1].split("\n\nPositions")[0])
    monkeypatch.chdir(tmp_path)
    printed = []
    exec(compile(code, "docstring", "exec"), {"model": model, "tokenizer": tokenizer, "print": printed.append})
    ids = np.array([tokenizer.encode("Hello")])
    assert printed == [tokenizer.decode(model.generate(ids, max_new_tokens=20, do_sample=False)[0].tolist())]


def test_refusals_leave_everything_untouched(tmp_path, monkeypatch):
    from tinyllm.models.lstm_lm import LSTMLM
    from tinyllm.nn.quantized import quantize_
    with pytest.raises(ExportError, match="only a tinyllm GPT"):
        to_onnx(LSTMLM(20, n_embd=8, hidden_size=8, num_layers=1), None, tmp_path / "a")
    with pytest.raises(ExportError, match="int8"):
        to_onnx(quantize_(tiny_gpt()), None, tmp_path / "b")
    assert not os.listdir(tmp_path)  # nothing written, not even a temporary directory
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not an empty directory"):
        to_onnx(tiny_gpt(), None, full)
    assert os.listdir(full) == ["keep.txt"] and (full / "keep.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["full"]
    (tmp_path / "empty").mkdir()  # an empty directory is fine
    to_onnx(tiny_gpt(), None, tmp_path / "empty")
    assert os.listdir(tmp_path / "empty") == ["model.onnx"]
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the package were not installed
    with pytest.raises(ImportError, match=r"pip install 'tinyllm\[export\]'"):
        to_onnx(tiny_gpt(), None, tmp_path / "c")
