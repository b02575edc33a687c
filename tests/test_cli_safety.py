"""The CLI never loses a run and never shows a traceback: every bad invocation exits non-zero with one
line on stderr that names the problem and leaves existing runs byte-for-byte unchanged; SIGINT saves
a checkpoint that resumes bit-identically; sample streams its text; --help describes every flag."""
import hashlib
import inspect
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinyllm import cli, data, runs, train
from tinyllm.cli import main
from tinyllm.models import GPT
from tinyllm.train_config import TrainConfig

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40
TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, eval_interval=10, eval_iters=2,
            log_interval=5, max_iters=10, lr=1e-2, min_lr=1e-3, progress=False)
TINY_FLAGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
              "--eval-iters", "2", "--no-progress"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A data directory, a run, its quantized copy and the bad inputs the table points at."""
    tmp = tmp_path_factory.mktemp("cli")
    d, run, qrun = str(tmp / "data"), str(tmp / "run"), str(tmp / "qrun")
    data.prepare_text(TEXT, d, "char")
    train.train(d, run, TrainConfig.from_flat(**TINY), log=lambda *a: None)
    runs.quantize_run(run, qrun)
    (tmp / "corpus.txt").write_text(TEXT)
    (tmp / "binary.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff" * 10)
    (tmp / "a_dir").mkdir()
    (tmp / "a_file").write_text("not a directory")
    hf = tmp / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"vocab_size": 30, "n_positions": 32, "n_layer": "2", "n_head": 2,
                                                "n_embd": 16}))
    (tmp / "space_bad.json").write_text(json.dumps({"n_layer": [1], "lr": [1e-3, "fast"]}))
    (tmp / "space_range.json").write_text(json.dumps({"dropout": {"uniform": [0.0, 2.0]}}))
    (tmp / "space_broken.json").write_text("{not json")
    return {"tmp": str(tmp), "data": d, "run": run, "qrun": qrun, "new": str(tmp / "new")}


def _bad_invocations(w):
    t, d, run, qrun, new = w["tmp"], w["data"], w["run"], w["qrun"], w["new"]
    tr = ["train", "--data", d, "--out", new] + TINY_FLAGS
    on_run = ["train", "--data", d, "--out", run] + TINY_FLAGS
    return [
        # train: each numeric setting at 0, negative, huge, wrong types, and what the issue lists
        (tr + ["--eval-interval", "0"], "--eval-interval must be a positive integer, got 0"),
        (tr + ["--dtype", "abc"], "argument --dtype: invalid choice: 'abc'"),
        (tr + ["--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
        (tr + ["--max-iters", "-5"], "--max-iters must be a positive integer, got -5"),
        (tr + ["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (on_run + ["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (on_run + ["--batch-size", "0", "--overwrite"], "--batch-size must be a positive integer, got 0"),
        (tr + ["--batch-size", str(10 ** 12)], "--batch-size 1000000000000 needs at least"),
        (tr + ["--batch-size", "abc"], "argument --batch-size: invalid int value: 'abc'"),
        (tr + ["--block-size", "100000"], "--block-size must be below the"),
        (tr + ["--n-embd", str(10 ** 9)], "--n-embd 1000000000 needs at least"),
        (tr + ["--n-head", "3"], "divisible by n_head"),
        (tr + ["--n-layer", "0"], "--n-layer must be a positive integer, got 0"),
        (tr + ["--lr", "nan"], "--lr must be a finite number, got nan"),
        (tr + ["--lr", "-1"], "--lr must be > 0, got -1.0"),
        (tr + ["--lr", "1e999"], "--lr must be a finite number, got inf"),
        (tr + ["--beta2", "1"], "--beta2 must be in [0, 1), got 1.0"),
        (tr + ["--dropout", "1.5"], "--dropout must be in [0, 1), got 1.5"),
        (tr + ["--weight-decay", "-0.1"], "--weight-decay must be >= 0"),
        (tr + ["--warmup-iters", "-1"], "--warmup-iters must be a non-negative integer, got -1"),
        (tr + ["--eval-iters", "0"], "--eval-iters must be a positive integer, got 0"),
        (tr + ["--log-interval", "-3"], "--log-interval must be a positive integer, got -3"),
        (tr + ["--seed", "-1"], "--seed must be a non-negative integer, got -1"),
        (tr + ["--model", "transformer"], "argument --model/--model-type: invalid choice"),
        (tr + ["--pos-encoding", "rope"], "argument --pos-encoding: invalid choice"),
        (tr + ["--lora-rank", "4"], "--lora-rank needs init_from"),
        (tr + ["--init-from", os.path.join(t, "nowhere")], "--init-from must be a tinyllm run or a Hugging Face"),
        (tr + ["--init-from", os.path.join(t, "hf")], "n_layer must be a positive integer, got '2'"),
        (["train", "--data", os.path.join(t, "nowhere"), "--out", new], "no meta.json"),
        (["train", "--data", d, "--out", os.path.join(t, "a_file")] + TINY_FLAGS, "is a file"),
        (on_run, "already holds a run at iteration 10"),
        (["train", "--out", run, "--resume", "--lr", "1"], "--lr cannot be changed"),
        (["train", "--out", run, "--resume", "--max-iters", "5"], "--max-iters must be at least 10"),
        (["train", "--out", run, "--resume", "--overwrite"], "exclude each other"),
        (["train", "--out", new, "--resume"], "nothing to resume"),
        (["train", "--max-iters"], "argument --max-iters: expected one argument"),
        (["train", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        # sample
        (["sample", "--run", run, "--max-new-tokens", str(10 ** 12)], "ask for fewer new tokens"),
        (["sample", "--run", run, "--max-new-tokens", "0"], "--max-new-tokens must be a positive integer, got 0"),
        (["sample", "--run", run, "--temperature", "0"], "--greedy"),
        (["sample", "--run", run, "--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
        (["sample", "--run", run, "--top-k", "-1"], "--top-k must be a non-negative integer"),
        (["sample", "--run", run, "--num-beams", "0"], "--num-beams must be a positive integer, got 0"),
        (["sample", "--run", run, "--num-beams", "2", "--max-new-tokens", "500"], "block_size"),
        (["sample", "--run", os.path.join(t, "nowhere")], "has no 'best' checkpoint"),
        (["sample", "--run", run, "--seed", "-4"], "--seed must be a non-negative integer, got -4"),
        # prepare
        (["prepare", "text", os.path.join(t, "binary.bin"), "--out", new], "is not UTF-8 text"),
        (["prepare", "text", os.path.join(t, "a_dir"), "--out", new], "is a directory"),
        (["prepare", "text", os.path.join(t, "nowhere.txt"), "--out", new], "no such file"),
        (["prepare", "text", "--out", new], "give the text file"),
        (["prepare", "text", os.path.join(t, "corpus.txt"), "--out", new, "--vocab-size", "100"],
         "only with --tokenizer bpe"),
        (["prepare", "text", os.path.join(t, "corpus.txt"), "--out", new, "--tokenizer", "bpe", "--vocab-size", "10"],
         "--vocab-size must be at least 256"),
        (["prepare", "translation", "--out", new, "--pairs", "0"], "--pairs must be a positive integer, got 0"),
        (["prepare", "poetry"], "argument source: invalid choice: 'poetry'"),
        (["prepare", "text", os.path.join(t, "corpus.txt"), "--out", d], "already holds data prepared from"),
        (["prepare", "shakespeare", "--out", d], "already holds data prepared from"),
        (["prepare", "text", os.path.join(t, "corpus.txt"), "--out", run], "already holds files"),
        (["prepare", "text", os.path.join(t, "corpus.txt"), "--out", os.path.join(t, "a_file")], "is a file"),
        # eval, quantize, merge, plot, search, demo
        (["eval", "--run", run, "--max-batches", "0"], "--max-batches must be a positive integer, got 0"),
        (["eval", "--run", os.path.join(t, "nowhere")], "has no 'best' checkpoint"),
        (["quantize", "--run", run, "--out", run], "is the run"),
        (["quantize", "--run", run, "--out", qrun], "already exists"),
        (["quantize", "--run", qrun, "--out", new], "already quantized"),
        (["quantize", "--run", os.path.join(t, "a_dir"), "--out", new], "is not a run directory"),
        (["merge", "--run", run, "--out", new], "not a LoRA run"),
        (["merge", "--run", run, "--out", run], "is the run"),
        (["plot", "--run", qrun], "quantized copy"),
        (["search", "--data", d, "--out", new, "--space", os.path.join(t, "space_bad.json")],
         "lr must be a finite number, got 'fast'"),
        (["search", "--data", d, "--out", new, "--space", os.path.join(t, "space_range.json")],
         "must be in [0, 1), got 2.0"),
        (["search", "--data", d, "--out", new, "--space", os.path.join(t, "space_broken.json")], "is not valid JSON"),
        (["search", "--data", d, "--out", new, "--space", os.path.join(t, "nowhere.json")], "is not a file"),
        (["search", "--data", d, "--out", new, "--space", os.path.join(t, "space_bad.json"), "--budget-iters", "0"],
         "--budget-iters must be a positive integer, got 0"),
        (["search", "--data", os.path.join(t, "nowhere"), "--out", new, "--space", os.path.join(t, "space_bad.json")],
         "no meta.json"),
        (["demo", "--iters", "0"], "--iters must be a positive integer, got 0"),
        # export
        (["export", "--run", run, "--format", "hf", "--out", run], "already exists and is not an empty directory"),
        (["export", "--run", run, "--format", "gguf", "--out", d], "already exists and is not an empty directory"),
        (["export", "--run", qrun, "--format", "gguf", "--out", new], "is an int8 run: export the float run"),
        (["export", "--run", os.path.join(t, "a_dir"), "--format", "onnx", "--out", new], "has no 'best' checkpoint"),
        (["export", "--run", os.path.join(t, "nowhere"), "--format", "hf", "--out", new], "does not exist"),
        (["export", "--run", run, "--format", "hf", "--dtype", "q8_0", "--out", new], "applies to the gguf format only"),
        (["export", "--run", run, "--format", "gguf", "--dtype", "q4", "--out", new], "argument --dtype: invalid choice"),
        (["export", "--run", run, "--format", "pt", "--out", new], "argument --format: invalid choice: 'pt'"),
        (["export", "--run", run, "--format", "hf"], "the following arguments are required: --out"),
        (["nonsense"], "invalid choice: 'nonsense'"),
    ]


def _tree_hash(path):
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            p = os.path.join(root, name)
            h.update(os.path.relpath(p, path).encode())
            with open(p, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def test_every_bad_invocation_is_one_line_and_touches_nothing(world, capsys):
    cases = _bad_invocations(world)
    assert len(cases) >= 30
    before = {k: _tree_hash(world[k]) for k in ("run", "qrun", "data")}
    failures = []
    for argv, expected in cases:
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        lines = err.splitlines()
        if not (code and code != 0 and len(lines) == 1 and expected in lines[0] and "Traceback" not in err
                and lines[0].startswith("tinyllm")):
            failures.append(f"{argv}: exit {code}, stderr {err!r} (expected one line with {expected!r})")
        if os.path.exists(world["new"]):
            failures.append(f"{argv}: created {world['new']}")
    assert not failures, "\n".join(failures)
    assert before == {k: _tree_hash(world[k]) for k in ("run", "qrun", "data")}


@pytest.mark.parametrize("argv, expected", [
    (["train", "--eval-interval", "0", "--data", "{data}", "--out", "{new}"], "--eval-interval must be"),
    (["prepare", "text", "{tmp}/a_dir"], "is a directory"),
    (["sample", "--run", "{run}", "--max-new-tokens", "1000000000000"], "ask for fewer new tokens"),
])
def test_no_traceback_reaches_the_terminal(world, argv, expected):
    argv = [a.format(**world) for a in argv]
    p = subprocess.run([sys.executable, "-m", "tinyllm"] + argv, capture_output=True, text=True, cwd=world["tmp"],
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and expected in p.stderr, p.stderr


def _strip(rows):
    return [(r["iter"], r["train_loss"], r["val_loss"], r["lr"]) for r in rows]


def _same_weights(a, b):
    ma, _, _ = runs.load_run(a, "last")
    mb, _, _ = runs.load_run(b, "last")
    return all(ka == kb and np.array_equal(va, vb)
               for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()))


def test_sigint_mid_run_saves_a_checkpoint_that_resumes_bit_identically(world, tmp_path):
    cfg = dict(TINY, max_iters=400, eval_interval=100, dropout=0.1)
    full = str(tmp_path / "full")
    train.train(world["data"], full, TrainConfig.from_flat(**cfg), log=lambda *a: None)

    part = str(tmp_path / "part")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in cfg.items() if k != "progress"] + ["--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "tinyllm", "train", "--data", world["data"], "--out", part] + flags,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    metrics = os.path.join(part, runs.METRICS_FILE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # wait until training is under way
        if os.path.exists(metrics) and any(json.loads(line)["iter"] >= 15 for line in open(metrics) if line.strip()):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "interrupted at iter" in err and f"continue with: python -m tinyllm train --out {part} --resume" in err
    stopped_at = runs.last_state(part)["iter"]
    assert 15 <= stopped_at < 400 and f"iter {stopped_at}:" in err

    assert main(["train", "--out", part, "--resume", "--no-progress"]) == 0
    assert _strip(runs.read_metrics(part)) == _strip(runs.read_metrics(full))
    assert _same_weights(part, full)


def test_sigterm_in_process_raises_training_interrupted_and_restores_handlers(world, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = train.model_loss

    def terminate_at_7(model, x, y):
        calls["n"] += 1
        if calls["n"] == 2 * TINY["eval_iters"] + 7:  # the 7th training step (after the first eval)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(model, x, y)
    monkeypatch.setattr(train, "model_loss", terminate_at_7)
    previous = signal.getsignal(signal.SIGTERM)
    run = str(tmp_path / "run")
    with pytest.raises(train.TrainingInterrupted) as info:
        train.train(world["data"], run, TrainConfig.from_flat(**dict(TINY, max_iters=30)), log=lambda *a: None)
    assert info.value.signum == signal.SIGTERM and info.value.iter == 7
    assert runs.last_state(run)["iter"] == 7 and signal.getsignal(signal.SIGTERM) is previous


def test_overwrite_says_what_it_removes_and_removes_only_the_run(world, tmp_path, capsys):
    run = str(tmp_path / "run")
    args = ["train", "--data", world["data"], "--out", run, "--max-iters", "3"] + TINY_FLAGS
    assert main(args) == 0
    (tmp_path / "run" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(args + ["--overwrite"]) == 0
    out = capsys.readouterr().out
    assert f"overwriting {run}: removing a run at iteration 3 (best/, config.json, last/, metrics.jsonl, " \
           f"tokenizer.json)" in out
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    assert main(["train", "--data", world["data"], "--out", str(tmp_path)] + TINY_FLAGS) == 2  # not a run: refused


def test_sample_streams_and_ctrl_c_keeps_the_text(world, capsys, monkeypatch):
    args = ["sample", "--run", world["run"], "--prompt", "First", "--max-new-tokens", "30", "--seed", "1"]
    assert main(args) == 0
    whole = capsys.readouterr().out
    model, tok, _ = runs.load_run(world["run"])
    ids = model.generate(np.array([tok.encode("First")]), 30, do_sample=True, temperature=0.8, seed=1,
                         crop_context=True)
    assert whole == tok.decode([int(i) for i in ids[0]]) + "\n"  # streaming prints what decoding the end would

    real_put = cli._PrintStreamer.put

    def interrupted_put(self, ids):
        real_put(self, ids)
        if self.count >= len("First") + 10:
            raise KeyboardInterrupt
    monkeypatch.setattr(cli._PrintStreamer, "put", interrupted_put)
    assert main(args) == 130
    out, err = capsys.readouterr()
    assert out == whole[:len("First") + 10] + "\n"
    assert err.splitlines() == ["tinyllm sample: interrupted after 10 new tokens (the text above is what was "
                                "generated)"]


def test_help_describes_every_flag_with_choices_and_defaults(capsys):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        for action in p._actions:
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest} has no help"
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for expected in ("{gpt,", "{learned,sinusoidal}", "{gelu,gelu_tanh}", "{float32,float64}",
                     "default: data/shakespeare", "default: runs/shakespeare", "(default: --max-iters)"):
        assert expected in " ".join(text.split()), expected
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("tinyllm ")
    assert not any(p.kind == p.VAR_KEYWORD for p in inspect.signature(GPT.generate).parameters.values())


def test_a_short_run_fits_its_schedule_and_the_recipe_keeps_its_own():
    recipe = TrainConfig()
    assert (recipe.max_iters, recipe.warmup_iters, recipe.lr_decay_iters) == (2000, 100, 2000)
    short = TrainConfig.from_flat(max_iters=50)
    assert (short.warmup_iters, short.lr_decay_iters) == (5, 50)
    assert train.learning_rate(50, short) == short.min_lr and train.learning_rate(5, short) == short.lr
    assert TrainConfig.from_flat(max_iters=50, lr_decay_iters=30, warmup_iters=0).lr_decay_iters == 30


def test_prepare_refuses_other_data_unless_overwrite_and_skips_the_same_shakespeare(world, tmp_path, capsys):
    out = str(tmp_path / "data")
    corpus = os.path.join(world["tmp"], "corpus.txt")
    assert main(["prepare", "text", corpus, "--out", out]) == 0
    (tmp_path / "other.txt").write_text(TEXT[::-1])
    capsys.readouterr()
    assert main(["prepare", "text", str(tmp_path / "other.txt"), "--out", out, "--overwrite"]) == 0
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    assert meta["source"] == str(tmp_path / "other.txt")
    # the set-up command can be re-run: the same Shakespeare data is a no-op (and needs no network)
    meta.update(source=data.SHAKESPEARE_SPEC, tokenizer="char")
    (tmp_path / "data" / "meta.json").write_text(json.dumps(meta))
    before = _tree_hash(out)
    capsys.readouterr()
    assert main(["prepare", "shakespeare", "--out", out]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert _tree_hash(out) == before
    assert main(["prepare", "shakespeare", "--out", out, "--tokenizer", "bpe"]) == 2
