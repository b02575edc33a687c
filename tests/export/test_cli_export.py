"""``tinyllm export --run RUN --format hf|gguf|onnx --out DIR``: each format, from a trained run (exact GELU,
as the recipe has it), read back by the library that consumes it; LoRA runs export merged; what cannot be
exported gets one line and leaves nothing behind."""
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyllm import export
from tinyllm.cli import main
from tinyllm.runs import load_run

TEXT = "Now is the winter of our discontent\nMade glorious summer by this sun of York;\n" * 60
SMALL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
         "--eval-iters", "2", "--no-progress"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny GPT run (exact GELU, as the recipe), a LoRA run on it and an LSTM run."""
    root = tmp_path_factory.mktemp("export")
    (root / "a.txt").write_text(TEXT)
    data = str(root / "data")
    assert main(["prepare", "text", str(root / "a.txt"), "--out", data]) == 0
    gpt, lora, lstm = (str(root / n) for n in ("gpt", "lora", "lstm"))
    assert main(["train", "--data", data, "--out", gpt, "--max-iters", "20", "--eval-interval", "10"] + SMALL) == 0
    assert main(["train", "--data", data, "--out", lora, "--init-from", gpt, "--lora-rank", "2", "--max-iters", "10",
                 "--eval-interval", "10", "--block-size", "16", "--batch-size", "4", "--eval-iters", "2",
                 "--no-progress"]) == 0
    assert main(["train", "--data", data, "--out", lstm, "--model", "lstm", "--max-iters", "10",
                 "--eval-interval", "10", "--block-size", "16", "--batch-size", "4", "--eval-iters", "2",
                 "--no-progress"]) == 0
    return root, gpt, lora, lstm


def _prompt(tok):
    return np.array([tok.encode("Now is the")])


def test_hf_export_loads_in_transformers_with_the_same_logits_and_ids(runs, capsys):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    root, run, _, _ = runs
    out = str(root / "hf")
    assert main(["export", "--run", run, "--format", "hf", "--out", out]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    model, tok, _ = load_run(run)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out)
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = _prompt(tok)
    assert hf_tok(TEXT[:200])["input_ids"] == tok.encode(TEXT[:200])
    import torch
    with torch.no_grad():
        theirs = hf(torch.tensor(ids)).logits.numpy()
    ours = model(ids)[0].data
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5)
    umask = os.umask(0o022)
    os.umask(umask)
    for name in os.listdir(out):  # an export is for sharing: the user's umask, not private files
        assert os.stat(os.path.join(out, name)).st_mode & 0o777 == 0o666 & ~umask, name
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~umask


def test_gguf_export_reads_back_with_every_weight(runs, capsys):
    gguf = pytest.importorskip("gguf")
    root, run, _, _ = runs
    out = str(root / "gguf")
    assert main(["export", "--run", run, "--format", "gguf", "--out", out, "--checkpoint", "last"]) == 0
    printed = capsys.readouterr().out
    assert "note:" in printed and "tanh" in printed  # exact GELU: llama.cpp computes the tanh form
    model, tok, _ = load_run(run, "last")
    reader = gguf.GGUFReader(os.path.join(out, "model.gguf"))
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    np.testing.assert_array_equal(tensors["token_embd.weight"].reshape(model.wte.weight.shape),
                                  model.wte.weight.data)
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == tok.vocab_size
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (kept out of CI)")
    llm = llama_cpp.Llama(model_path=os.path.join(out, "model.gguf"), n_ctx=16, n_threads=1, verbose=False)
    assert llm.tokenize(TEXT[:100].encode(), add_bos=False, special=False) == tok.encode(TEXT[:100])


def test_onnx_export_runs_in_onnxruntime_with_the_same_logits(runs):
    ort = pytest.importorskip("onnxruntime")
    root, run, _, _ = runs
    out = str(root / "onnx")
    assert main(["export", "--run", run, "--format", "onnx", "--out", out]) == 0
    model, tok, _ = load_run(run)
    ids = _prompt(tok)
    sess = ort.InferenceSession(os.path.join(out, "model.onnx"), providers=["CPUExecutionProvider"])
    c = model.config
    feeds = {"input_ids": ids.astype(np.int64), "position_ids": np.arange(ids.shape[1], dtype=np.int64)[None]}
    for i in sess.get_inputs():
        if i.name not in feeds:
            feeds[i.name] = np.zeros((1, c.n_head, 0, c.n_embd // c.n_head), np.float32)
    logits = sess.run(["logits"], feeds)[0]
    np.testing.assert_allclose(logits, model(ids)[0].data, rtol=1e-5, atol=1e-5)


def test_a_lora_run_exports_with_its_adapters_merged(runs, capsys):
    gguf = pytest.importorskip("gguf")
    root, _, lora, _ = runs
    out = str(root / "lora_gguf")
    assert main(["export", "--run", lora, "--format", "gguf", "--out", out]) == 0
    assert "LoRA adapters folded into the weights" in capsys.readouterr().out
    from tinyllm.nn.lora import merge_lora
    model = merge_lora(load_run(lora)[0])
    reader = gguf.GGUFReader(os.path.join(out, "model.gguf"))
    qkv = next(t for t in reader.tensors if t.name == "blk.0.attn_qkv.weight")
    np.testing.assert_array_equal(np.asarray(qkv.data).reshape(model.h[0].attn.c_attn.weight.shape),
                                  model.h[0].attn.c_attn.weight.data)


def test_what_cannot_be_exported_is_one_line_and_leaves_nothing(runs, capsys):
    root, run, _, lstm = runs
    out = str(root / "never")
    assert main(["export", "--run", lstm, "--format", "onnx", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a 'lstm' model; only GPT runs can be exported" in err
    assert not os.path.exists(out)
    (root / "a_run_without_best").mkdir()
    assert main(["export", "--run", str(root / "a_run_without_best"), "--format", "hf", "--out", out]) == 2
    assert "has no 'best' checkpoint" in capsys.readouterr().err and not os.path.exists(out)


def test_a_failing_export_leaves_no_directory(runs, monkeypatch, capsys):
    root, run, _, _ = runs
    out = str(root / "half")

    def fail_midway(model, tokenizer, out_dir):
        with export.common.new_output_dir(out_dir, "to_onnx") as tmp:
            open(os.path.join(tmp, "model.onnx"), "wb").write(b"partial")
            raise OSError(28, "No space left on device", os.path.join(tmp, "model.onnx"))

    monkeypatch.setattr(export, "to_onnx", fail_midway)
    assert main(["export", "--run", run, "--format", "onnx", "--out", out]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert not os.path.exists(out) and not [p for p in os.listdir(root) if p.startswith(".half")]


def test_the_installed_command_prints_what_it_wrote(runs):
    pytest.importorskip("gguf")
    root, run, _, _ = runs
    out = str(root / "cli_q8")
    p = subprocess.run([sys.executable, "-m", "tinyllm", "export", "--run", run, "--format", "gguf", "--dtype",
                        "q8_0", "--out", out], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 0 and p.stderr == "" and f"wrote {out} (model.gguf)" in p.stdout, p.stderr
    assert os.path.getsize(os.path.join(out, "model.gguf")) > 0


def test_the_agreement_benchmark_measures_each_installed_format(runs):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("transformers")
    env = dict(os.environ)
    sys.path.insert(0, ROOT)
    try:
        from benchmarks import export_agreement  # a script: it sets thread variables for its own process
    finally:
        sys.path.remove(ROOT)
        os.environ.clear()
        os.environ.update(env)
    _, run, _, _ = runs
    config, rows, skipped = export_agreement.measure(run)
    got = {(r["format"], r["dtype"]): r for r in rows}
    for key in (("hf", "f32"), ("onnx", "f32")):
        assert got[key]["max_rel"] < 1e-5 and got[key]["argmax_agree"] == 1.0 and got[key]["greedy_same"] == 1.0
    assert got[("hf", "f32")]["beam_same"] == 1.0
    assert len(rows) + len(skipped) == len(export_agreement.CASES)
