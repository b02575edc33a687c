"""The benchmark runner (benchmarks/run.py and the harness, report and sections it is built from): its
turn-taking, its report files on a made-up result set, the torch twin of the recipe model, and small
smoke runs of the sections. A few seconds each."""
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `pytest` run as a script does not put the repo root on the path
    sys.path.insert(0, ROOT)

_unset = [v for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
          if v not in os.environ]
from benchmarks import harness as H  # noqa: E402
from benchmarks import report  # noqa: E402
from benchmarks import run as R  # noqa: E402
from benchmarks.sections import cold_start, matmul, torch_twin, train_step  # noqa: E402

for _v in _unset:  # the runner pins 2 threads for its own process; keep that out of later tests' subprocesses
    os.environ.pop(_v, None)


def _fake_sections():
    mm = H.make_row("matmul", "(768,128)x(128,384)", {"numba": [1e-3, 2e-3, 3e-3], "numpy": [2e-3] * 3,
                                                     "torch": [4e-3] * 3}, numba_gflops=150.0, numpy_gflops=75.0,
                    torch_gflops=40.0, max_abs_diff_vs_torch=6e-5)
    no_torch = H.make_row("matmul", "no torch here", {"numba": [1e-3], "numpy": [1e-3]})
    step = H.make_row("train_step", "nanoGPT CPU recipe step", {"numba": [0.03], "numpy": [0.3], "torch": [0.06]},
                      first_step_loss_diff=0.0)
    memory = {"section": "attention", "name": "peak extra memory T=4096", "kind": "memory", "T": 4096}
    return {"matmul": {"rows": [mm, no_torch], "notes": ["a note"], "seconds": 1.0, "loadavg_start": "0.10"},
            "train_step": {"rows": [step], "notes": []},
            "attention": {"rows": [memory], "notes": ["memory note"]},
            "generate": {"rows": [], "notes": [], "error": "RuntimeError: boom"}}


def test_make_row_medians_and_ratios():
    r = _fake_sections()["matmul"]["rows"][0]
    assert r["numba_ms"] == 2.0 and r["numba_best_ms"] == 1.0 and r["torch_ms"] == 4.0
    assert r["numba_vs_torch"] == 0.5 and r["numpy_vs_torch"] == 0.5
    assert (r["numba_reps"], r["numpy_reps"], r["torch_reps"]) == (3, 3, 3)


def test_alternate_takes_turns():
    log = []
    sides = {k: (lambda k=k: log.append(k)) for k in ("numba", "numpy", "torch")}
    times = H.alternate(sides, reps=4, warmup=1, block=2, settle=False, cooldown=0, every={"numpy": 2})
    assert log == ["numba", "numpy", "torch",  # warm-up
                   "numba", "numba", "numpy", "numpy", "torch", "torch",  # round 0
                   "numba", "numba", "torch", "torch"]  # round 1: numpy only every 2nd round
    assert {k: len(v) for k, v in times.items()} == {"numba": 4, "numpy": 2, "torch": 4}
    log.clear()
    H.alternate({"a": sides["numba"]}, reps=1, warmup=0, settle=True, cooldown=0)
    assert log == ["numba", "numba"]  # the untimed settle call, then the timed one


def test_report_files(tmp_path):
    meta = {"date": "2026-01-02", "quick": True, "cpu": "Test CPU", "cores": 2, "numpy": "x", "numba": "y"}
    paths = report.write_results(meta, _fake_sections(), str(tmp_path), "2026-01-02-quick")
    md = open(paths["md"]).read()
    assert md.startswith("# tinyllm benchmarks, 2026-01-02 (quick)")
    assert "Test CPU, 2 cores" in md and "## matmul" in md and "## training step" in md
    assert "| (768,128)x(128,384) | 2.00 | 2.00 | 4.00 | 0.50x | 0.50x | 150 | 75.0 | 40.0 | 6.0e-05 | 3, 3, 3 |" in md
    assert "| no torch here | 1.00 | 1.00 | - | - | - |" in md
    assert "- memory note" in md and "**failed:** `RuntimeError: boom`" in md
    assert "peak extra memory" not in md.split("## causal attention")[1].split("- memory note")[0]  # no table row
    data = json.load(open(paths["json"]))
    assert data["meta"]["date"] == "2026-01-02" and len(data["rows"]) == 4
    assert data["errors"] == {"generate": "RuntimeError: boom"}
    pytest.importorskip("matplotlib")
    assert os.path.getsize(paths["png"]) > 1000


@pytest.mark.torch
def test_torch_twin_starts_from_the_same_weights(torch):
    """The recipe's torch model loads tinyllm's state dict and gives the same first losses."""
    from tinyllm import backend
    from tinyllm.train import TrainConfig
    cfg = TrainConfig.from_flat(**cold_start.TINY)
    model, step, x, y = train_step.tinyllm_recipe(cfg)
    tstep = torch_twin.torch_recipe(model, cfg, x, y)[1]
    with backend.use_kernels("numpy"):  # the weight mapping is under test, not the kernels
        ours = [step() for _ in range(2)]
    theirs = [tstep() for _ in range(2)]
    assert abs(ours[0] - theirs[0]) < 1e-5 and abs(ours[1] - theirs[1]) < 1e-4


@pytest.fixture
def runner(monkeypatch):
    """R.main without the pauses between turns; the process-wide tuning it applies is undone after."""
    from tinyllm import backend
    before = backend.tuning()
    monkeypatch.setattr(H, "COOLDOWN_S", 0.0)
    yield R.main
    if not any(before.values()):
        backend.restore_defaults()


def test_sections_are_the_runners_options():
    from benchmarks import sections
    assert sections.SECTIONS == ("matmul", "ops", "attention", "train_step", "generate", "cold_start", "scale",
                                 "busy", "llamacpp")
    with pytest.raises(SystemExit):
        R.main(["--only", "no_such_section"])


@pytest.mark.torch
def test_matmul_section_end_to_end(tmp_path, torch, runner):
    assert runner(["--only", "matmul", "--reps", "2", "--out", str(tmp_path)]) == 0
    (js,) = [p for p in os.listdir(tmp_path) if p.endswith(".json")]
    assert js.endswith("-only-matmul.json")
    data = json.load(open(tmp_path / js))
    assert data["meta"]["tinyllm_tuning"]["malloc"] in (True, False)  # the runner tuned like a training run
    rows = data["rows"]
    assert [r["name"] for r in rows] == [m[0] for m in matmul.MATMUL_SHAPES]
    for r in rows:
        assert r["numba_vs_torch"] > 0 and r["numba_gflops"] > 0 and r["max_abs_diff_vs_torch"] < 1e-3


def _smoke(runner, tmp_path, sections):
    """One quick run of ``sections`` with one rep each; returns its JSON, after checking that every timed
    row has all of tinyllm-numba and torch."""
    assert runner(["--quick", "--only", *sections, "--reps", "1", "--out", str(tmp_path)]) == 0
    (js,) = [p for p in os.listdir(tmp_path) if p.endswith(".json")]
    assert js.endswith("-quick-only-" + "-".join(sections) + ".json")
    data = json.load(open(tmp_path / js))
    assert data["errors"] == {}
    timed = [r for r in data["rows"] if not r.get("kind")]
    assert {r["section"] for r in timed} == set(sections)
    for r in timed:
        assert r["numba_ms"] > 0 and r["torch_ms"] > 0 and r["numba_vs_torch"] > 0
    assert "ANCHORS" not in open(tmp_path / js.replace(".json", ".md")).read()
    return data


@pytest.mark.torch
def test_ops_and_train_step_sections_smoke(tmp_path, torch, runner):
    data = _smoke(runner, tmp_path, ["ops", "train_step"])
    steps = [r for r in data["rows"] if r["section"] == "train_step"]
    assert steps[0]["name"] == "nanoGPT CPU recipe step" and steps[0]["numpy_ms"] > 0
    assert steps[0]["first_step_loss_diff"] <= 1e-5
    assert [r["name"] for r in steps[1:]] == ["floor: the step's kernels alone, replayed",
                                              "floor: the step's matmuls alone, replayed"]
    assert len([r for r in data["rows"] if r["section"] == "ops"]) == 5


@pytest.mark.slow  # the memory measurement runs the NumPy reference at T=4096 (~0.5 GB)
@pytest.mark.torch
def test_attention_section_smoke(tmp_path, torch, runner):
    data = _smoke(runner, tmp_path, ["attention"])
    assert [r["name"] for r in data["rows"]] == ["causal (12,4,64,32)", "causal (4,8,256,64)",
                                                 "peak extra memory T=4096"]
    (mem,) = [r for r in data["rows"] if r.get("kind") == "memory"]
    assert mem["numba_tracemalloc_bytes"] < mem["T*T*4_bytes"]  # O(T) memory, not a T x T matrix


@pytest.mark.torch
def test_generate_section_smoke(tmp_path, torch, runner):
    pytest.importorskip("transformers")
    assert runner(["--quick", "--only", "generate", "--reps", "1", "--out", str(tmp_path)]) == 0
    (js,) = [p for p in os.listdir(tmp_path) if p.endswith(".json")]
    (row,) = json.load(open(tmp_path / js))["rows"]
    assert row["name"] == "recipe, 50 new tokens" and row["numba_tok_s"] > 0 and row["torch_tok_s"] > 0
    assert row["same_tokens_numba_vs_hf"] == 1.0


@pytest.mark.torch
def test_busy_section_smoke(tmp_path, torch, runner, monkeypatch):
    from benchmarks.sections import busy
    monkeypatch.setattr(busy, "QUICK_SAMPLE_TOKENS", 3)  # the rows' shape, not the window past the block
    spawned = []
    popen = busy.subprocess.Popen
    monkeypatch.setattr(busy.subprocess, "Popen", lambda *a, **k: spawned.append(popen(*a, **k)) or spawned[-1])
    assert runner(["--quick", "--only", "busy", "--reps", "1", "--out", str(tmp_path)]) == 0
    (js,) = [p for p in os.listdir(tmp_path) if p.endswith(".json")]
    data = json.load(open(tmp_path / js))
    assert data["errors"] == {}
    assert [(r["name"], r["load"]) for r in data["rows"]] == [
        ("recipe training step, idle", "idle"), ("sampling 3 tokens (recipe model, window 64), idle", "idle"),
        ("recipe training step, busy", "busy"), ("sampling 3 tokens (recipe model, window 64), busy", "busy")]
    for r in data["rows"]:
        assert r["one_thread_ms"] > 0 and r["numba_vs_one_thread"] > 0
    assert data["rows"][0]["one_thread_vs_torch"] > 0 and data["rows"][0]["numba_vs_torch"] > 0
    assert len(spawned) == 1 and spawned[0].poll() is not None  # the competitor ran, and was killed
    assert "Same tokens with and without threads: True" in " ".join(data["notes"]["busy"])


def test_one_thread_is_undone_after_the_turn():
    import numba
    from benchmarks.sections import busy
    before = numba.get_num_threads()
    with busy.one_thread():
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before


@pytest.mark.torch
def test_cold_start_runs_a_fresh_process_per_side(torch):
    """The cold-start section's script, once per side: each fresh process imports, builds and steps."""
    for side in ("numpy", "torch"):
        out = cold_start._cold_once(side)
        assert out["import_s"] > 0 and out["first_step_s"] > 0 and out["second_step_s"] > 0
        assert out["import_first_step_s"] == out["import_s"] + out["first_step_s"] < out["process_s"]


def test_profile_step_ops_names_the_ops_and_the_matmuls():
    """benchmarks/profile_step.py --ops (in its own process: it wraps every op with a timer)."""
    import subprocess
    script = os.path.join(ROOT, "benchmarks", "profile_step.py")
    res = subprocess.run([sys.executable, script, "--steps", "2", "--warmup", "1", "--ops"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    for name in ("step", "Linear.forward", "Linear.backward", "ScaledDotProductAttention.backward",
                 "LayerNorm.forward", "GELU.forward", "CrossEntropy.backward", "(17 calls)"):
        assert name in out, f"{name!r} missing from:\n{out}"


def _tiny_recipe_step():
    from tinyllm.train import TrainConfig
    cfg = TrainConfig.from_flat(**cold_start.TINY)
    model, step, x, y = train_step.tinyllm_recipe(cfg)
    return cfg, model, H.tinyllm_side("numba", step)


def test_kernel_replay_records_each_kernel_call_once_and_replays_them():
    """benchmarks/kernel_replay.py: one step's kernel calls, in order, replayed on the same arrays."""
    import collections
    import numpy as np
    from benchmarks import kernel_replay as KR
    from tinyllm.kernels import elementwise, matmul
    cfg, model, step = _tiny_recipe_step()
    step()
    originals = (matmul.matmul, elementwise.mul_inplace)
    calls = KR.record(step)
    assert (matmul.matmul, elementwise.mul_inplace) == originals  # the entry points are put back
    n = collections.Counter(f"{c[0]}.{c[1]}" for c in calls)
    linears = 4 * cfg.model.n_layer + 1  # c_attn, attn.c_proj, c_fc, mlp.c_proj per block, and lm_head
    assert n["matmul.matmul"] == 2 * linears and n["matmul.matmul_tn"] == linears  # forward, dx; dW
    assert n["layernorm.forward"] == n["layernorm.backward"] == 2 * cfg.model.n_layer + 1
    assert n["attention.attention_forward"] == n["attention.attention_backward"] == cfg.model.n_layer
    assert n["adam.adam_step"] == n["norms.sum_of_squares"] == len(list(model.parameters()))
    assert n["cross_entropy.forward"] == n["cross_entropy.backward"] == 1
    # GELU's in-place backward multiply is replayed from the buffer as it was recorded, every time
    mul = next(c for c in calls if c[1] == "mul_inplace")
    (target, before), g = mul[5], mul[3][1]
    assert target is mul[3][0]
    replay = KR.Replay(calls)
    for _ in range(3):
        assert replay.timed() > 0
        np.testing.assert_array_equal(target, before * g)
    mm = KR.Replay(calls, only=("matmul",))
    assert len(mm) == 3 * linears and set(mm.timed_by_kernel()) == {"matmul.matmul", "matmul.matmul_tn"}


def test_step_floors():
    """The training-step section's floor sides: the replay of all kernels and of the matmuls alone."""
    cfg, model, step = _tiny_recipe_step()
    step()
    floors = train_step.step_floors({"numba": step, "torch": lambda: None})
    assert list(floors) == ["floor: the step's kernels alone, replayed", "floor: the step's matmuls alone, replayed"]
    everything, matmuls = floors.values()
    assert len(everything) > len(matmuls) == 3 * (4 * cfg.model.n_layer + 1)
    times = H.alternate({"torch": lambda: None, **floors}, reps=2, warmup=1, settle=False, cooldown=0)
    assert all(len(t) == 2 and min(t) > 0 for t in times.values())  # the replays time themselves
    assert train_step.step_floors({"numba": step}) == {}  # no torch, no floor rows


def test_profile_step_floor_times_each_kernel():
    import subprocess
    script = os.path.join(ROOT, "benchmarks", "profile_step.py")
    res = subprocess.run([sys.executable, script, "--steps", "2", "--warmup", "1", "--floor"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("kernels alone", "165 kernel calls", "matmul.matmul_tn", "attention.attention_backward",
                 "adam.adam_step"):
        assert name in res.stdout, f"{name!r} missing from:\n{res.stdout}"


def test_scale_floor_shapes_are_the_steps_linear_products():
    from benchmarks.sections import scale
    shapes = scale.step_matmul_shapes(4, 128, 768, 84)
    assert len(shapes) == 15 and sum(c for _, c in shapes) == 3 * (4 * 4 + 1)
    assert (("dW", (84, 768), (768, 128)), 1) in shapes and (("fwd", (768, 512), (512, 128)), 4) in shapes
    flops = sum(2 * m * k * n * c for (_, (m, k), (_, n)), c in shapes)
    assert flops == 3 * 2 * 768 * 128 * (4 * (3 + 1 + 4 + 4) * 128 + 84)


@pytest.mark.torch
def test_scale_section_smoke(tmp_path, torch, runner):
    data = _smoke(runner, tmp_path, ["scale"])
    from benchmarks.sections import scale
    assert [r["name"] for r in data["rows"]] == [s[0] for s in scale.SIZES[:scale.QUICK_SIZES]]
    for r in data["rows"]:
        assert r["floor_ms"] > 0 and r["step_vs_floor"] > 0 and r["numba_tok_s"] > 0 and r["torch_tok_s"] > 0
        assert r["first_step_loss_diff"] <= 1e-5
def test_llamacpp_section_smoke():
    """The llama.cpp section on a tiny GPT (it skips itself, with a note, without llama_cpp or gguf)."""
    from benchmarks.sections import llamacpp
    shape = dict(vocab_size=300, block_size=64, n_layer=2, n_head=2, n_embd=64, activation="gelu_tanh")
    rows, notes = llamacpp.run(H.Context(reps=1), quick=True, shape=shape, new_tokens=12)
    try:
        import gguf  # noqa: F401
        import llama_cpp  # noqa: F401
    except ImportError:
        assert rows == [] and notes[0].startswith("skipped: needs")
        return
    (row,) = rows
    assert row["numba_tok_s"] > 0 and row["torch_tok_s"] > 0 and row["numba_vs_torch"] > 0
    # token equality is tests/export/test_gguf.py's; at this size GPT-2's init leaves near-ties in the logits
    assert 0.0 <= row["same_tokens"] <= 1.0 and row["opponent"].startswith("llama.cpp")
    assert (row["first_difference"] is None) == (row["same_tokens"] == 1.0)
    assert "| 12 new tokens |" in report.table("llamacpp", rows)
