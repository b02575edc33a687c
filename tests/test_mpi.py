"""Data parallelism under ``mpiexec -n 2`` (the mpi extra: mpi4py and the mpich wheel): two ranks train
exactly like one process with the same total micro-batches, rank 0 alone writes the run, resume is
exact, and a rank that fails or is killed ends the whole job quickly. Tiny synthetic data, float64."""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tinyllm import checkpoint, data, runs

MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None or importlib.util.find_spec("mpi4py") is None,
                                reason="needs the mpi extra (mpi4py and an mpiexec)")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 240  # a hang is a failure, not a stuck CI job

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40
FLAGS = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "2",
         "--eval-interval", "3", "--eval-iters", "2", "--log-interval", "1", "--warmup-iters", "2",
         "--lr-decay-iters", "6", "--max-iters", "6", "--lr", "1e-2", "--min-lr", "1e-3", "--dtype", "float64",
         "--no-progress"]

# Runs tinyllm's CLI; with FAULT set, rank FAULT_RANK misbehaves at its FAULT_AT-th training micro-batch.
# PID_DIR: each rank writes its process id there; STEP_SLEEP: seconds each micro-batch waits (so a
# signal lands mid-run however fast the machine).
DRIVER = textwrap.dedent("""
    import os, signal, sys, time
    from tinyllm import cli, train
    fault = os.environ.get("FAULT")
    rank = int(os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or 0)
    seen, loss_of = [0], train.model_loss
    if os.environ.get("PID_DIR"):
        with open(os.path.join(os.environ["PID_DIR"], str(rank)), "w") as f:
            f.write(str(os.getpid()))

    def model_loss(model, x, y):
        loss = loss_of(model, x, y)
        if model.training and os.environ.get("STEP_SLEEP"):
            time.sleep(float(os.environ["STEP_SLEEP"]))
        if model.training and fault and rank == int(os.environ["FAULT_RANK"]):
            seen[0] += 1
            if seen[0] == int(os.environ["FAULT_AT"]):
                if fault == "raise":
                    raise RuntimeError("injected failure")
                if fault == "nan":
                    return loss * float("nan")
                os.kill(os.getpid(), signal.SIGKILL)
        return loss

    train.model_loss = model_loss
    sys.exit(cli.main(sys.argv[1:]))
""")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("mpi")
    data.prepare_text(TEXT, str(d / "data"), "char")
    (d / "driver.py").write_text(DRIVER)
    return d


def launch(work, n, out, *extra, fault=None, resume=False):
    """Train into ``work/out`` on ``n`` processes (n = 1: no mpiexec); returns (returncode, stderr, seconds)."""
    env = dict(os.environ, PYTHONPATH=ROOT, **(fault or {}))
    args = [sys.executable, str(work / "driver.py"), "train", "--out", str(work / out)]
    args += ["--resume", *extra] if resume else ["--data", str(work / "data"), *FLAGS, *extra]
    if n > 1:
        args = [MPIEXEC, "-n", str(n)] + args
    t0 = time.monotonic()
    p = subprocess.run(args, env=env, cwd=str(work), capture_output=True, text=True, timeout=TIMEOUT)
    return p.returncode, p.stderr, time.monotonic() - t0


def train_losses(run):
    return [(r["iter"], r["train_loss"]) for r in runs.read_metrics(run) if r["val_loss"] is None]


def weights(run):
    return checkpoint.load_checkpoint(os.path.join(run, runs.LAST)).state_dict


def assert_same_training(a, b, tol=1e-10):
    la, lb = train_losses(a), train_losses(b)
    assert [i for i, _ in la] == [i for i, _ in lb] and len(la) >= 4
    np.testing.assert_allclose([v for _, v in la], [v for _, v in lb], rtol=tol, atol=0)
    wa, wb = weights(a), weights(b)
    assert set(wa) == set(wb)
    for name in wa:
        np.testing.assert_allclose(wa[name], wb[name], rtol=tol, atol=tol, err_msg=name)


@pytest.fixture(scope="module")
def two_ranks(work):
    rc, err, _ = launch(work, 2, "two")
    assert rc == 0, err
    return str(work / "two")


@pytest.mark.parametrize("ranks_accum,one_accum", [(1, 2), (2, 4)])
def test_two_ranks_train_like_one_process_with_their_micro_batches(work, two_ranks, ranks_accum, one_accum):
    if ranks_accum == 1:
        two = two_ranks
    else:  # accumulation and data parallelism together (nanoGPT's DDP accumulation bugs)
        rc, err, _ = launch(work, 2, "two-accum", "--grad-accum-steps", str(ranks_accum))
        assert rc == 0, err
        two = str(work / "two-accum")
    rc, err, _ = launch(work, 1, f"one-accum{one_accum}", "--grad-accum-steps", str(one_accum))
    assert rc == 0, err
    assert_same_training(two, str(work / f"one-accum{one_accum}"))


def test_rank_zero_alone_writes_the_run(two_ranks):
    assert sorted(os.listdir(two_ranks)) == ["best", "config.json", "last", "metrics.jsonl", "tokenizer.json"]
    iters = [r["iter"] for r in runs.read_metrics(two_ranks)]
    assert iters == sorted(set(iters)) == [0, 1, 2, 3, 4, 5, 6]  # each line once: one writer
    state = runs.last_state(two_ranks)
    assert state["world_size"] == 2 and len(state["shard_rngs"]) == 2 and len(state["eval_rngs"]) == 2


def test_a_run_is_refused_on_every_rank_with_one_line(work, two_ranks):
    before = sorted(os.listdir(two_ranks))
    rc, err, _ = launch(work, 2, "two")
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "already holds a run at iteration 6" in lines[0], err
    assert sorted(os.listdir(two_ranks)) == before


def test_resume_on_another_number_of_processes_is_refused(work, two_ranks):
    rc, err, _ = launch(work, 1, "two", "--max-iters", "8", resume=True)
    assert rc == 2 and "was trained on 2 process(es); resume it on as many (mpiexec -n 2), not 1" in err, err


def test_a_killed_rank_ends_the_job_and_resume_is_exact(work, two_ranks):
    # rank 1 is killed in its 5th step, after the checkpoint at iteration 3
    rc, err, seconds = launch(work, 2, "killed", fault={"FAULT": "kill", "FAULT_RANK": "1", "FAULT_AT": "5"})
    assert rc != 0, err
    assert runs.last_state(str(work / "killed"))["iter"] == 3
    rc, err, _ = launch(work, 2, "killed", resume=True)
    assert rc == 0, err
    assert_same_training(str(work / "killed"), two_ranks, tol=0)


def test_an_exception_on_one_rank_ends_the_job_with_its_message(work):
    rc, err, seconds = launch(work, 2, "raised", fault={"FAULT": "raise", "FAULT_RANK": "1", "FAULT_AT": "2"})
    assert rc != 0
    assert "rank 1 of 2 failed: RuntimeError: injected failure; ending all 2 processes" in err, err


def test_a_nan_loss_on_one_rank_stops_every_rank_cleanly(work):
    rc, err, _ = launch(work, 2, "nan", fault={"FAULT": "nan", "FAULT_RANK": "1", "FAULT_AT": "2"})
    assert rc == 1, err
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert lines == [f"tinyllm train: error: loss became nan at iteration 1 on at least one of 2 processes; "
                     f"stopping. The last good checkpoint is kept in {work / 'nan'}/last"], err


# --------------------------------------------------------------------------- SIGINT / SIGTERM
LONG = ["--max-iters", "40", "--lr-decay-iters", "40", "--eval-interval", "20"]


@pytest.fixture(scope="module")
def two_ranks_long(work):
    rc, err, _ = launch(work, 2, "two-long", *LONG)
    assert rc == 0, err
    return str(work / "two-long")


def wait_for_iter(proc, run, at, seconds=120):
    metrics = os.path.join(run, runs.METRICS_FILE)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and any(json.loads(line)["iter"] >= at for line in open(metrics) if line.strip()):
            return
        time.sleep(0.02)
    raise AssertionError(f"{run} did not reach iteration {at}: {proc.poll()}")


@pytest.mark.parametrize("sig,target", [(signal.SIGINT, "mpiexec"), (signal.SIGTERM, "mpiexec"),
                                        (signal.SIGINT, "rank 1"), (signal.SIGTERM, "rank 0")])
def test_a_signal_stops_every_rank_at_one_iteration_and_resume_is_exact(work, two_ranks_long, sig, target):
    """mpiexec (Hydra) forwards SIGINT and SIGTERM to every rank; a signal that reaches one rank only
    travels to the others in the step's Allreduce. Either way the job exits 128 + signal like one process."""
    name = f"sig-{sig.name}-{target.replace(' ', '')}"
    out, pids = work / name, work / f"{name}-pids"
    pids.mkdir()
    env = dict(os.environ, PYTHONPATH=ROOT, STEP_SLEEP="0.1", PID_DIR=str(pids))
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, str(work / "driver.py"), "train", "--out", str(out),
                             "--data", str(work / "data"), *FLAGS, *LONG],
                            env=env, cwd=str(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_iter(proc, str(out), 5)
        pid = proc.pid if target == "mpiexec" else int((pids / target[-1]).read_text())
        os.kill(pid, sig)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    lines = [line for line in err.splitlines() if line.startswith("tinyllm")]
    assert len(lines) == 1 and "Traceback" not in err, err  # rank 0 alone reports it
    stopped = runs.last_state(str(out))["iter"]
    assert 5 <= stopped < 40 and lines[0].startswith(f"tinyllm train: interrupted at iter {stopped}: saved"), err
    assert sorted(os.listdir(out)) == ["best", "config.json", "last", "metrics.jsonl", "tokenizer.json"]
    iters = [r["iter"] for r in runs.read_metrics(str(out))]
    assert iters == sorted(set(iters)) and iters[-1] == stopped  # one writer, up to the saved iteration

    rc, err, _ = launch(work, 2, name, resume=True)
    assert rc == 0, err
    assert_same_training(str(out), two_ranks_long, tol=0)
