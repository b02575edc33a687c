"""The busy section: the recipe's training step and sampling 300 tokens, with one CPU-bound process
running beside the benchmark (a child python spinning), and the same work on the idle machine.

Three ways to run the same work, taking turns in one process: tinyllm as a training run gets it
(``tune_for_training()``, numba's default threads), tinyllm on one thread, and torch with its default
threads (the step only: the same model as ``train_step``'s torch twin). One thread is
``numba.set_num_threads(1)`` (numba's count is per calling thread) plus numpy's BLAS at one thread
(threadpoolctl), both undone after each turn; scipy's BLAS, which the one-pool setup already runs on
one thread, stays so. The ratios that matter: tinyllm / one thread (above 1, threads cost time) and
tinyllm / torch under the same load.
"""
import contextlib
import statistics
import subprocess
import sys

import numpy as np

from benchmarks import report
from benchmarks.harness import alternate, make_row
from benchmarks.sections.train_step import tinyllm_recipe

SPIN = "while True: pass"
SAMPLE_TOKENS, QUICK_SAMPLE_TOKENS = 300, 80  # past the block (64): every token runs a 64-token window

report.COLUMNS["busy"] = [
    ("tinyllm ms", "numba_ms", report._num), ("tinyllm, one thread ms", "one_thread_ms", report._num),
    ("torch ms", "torch_ms", report._num), ("tinyllm / one thread", "numba_vs_one_thread", report._x),
    ("tinyllm / torch", "numba_vs_torch", report._x), ("one thread / torch", "one_thread_vs_torch", report._x),
    ("reps (tinyllm, one thread, torch)",
     lambda r: ", ".join(str(r.get(f"{s}_reps", "-")) for s in ("numba", "one_thread", "torch")), None)]
report.SECTION_TITLES["busy"] = "busy machine: one CPU-bound process beside the benchmark"


@contextlib.contextmanager
def competitor(busy=True):
    """One CPU-bound child process for the block's duration (none when ``busy`` is False); always killed."""
    if not busy:
        yield None
        return
    proc = subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def one_thread():
    """tinyllm on the calling thread alone: numba's thread count for this thread, and numpy's BLAS."""
    import numba
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
        limits = threadpool_limits(1, user_api="blas")
    except ImportError:  # pragma: no cover - threadpoolctl comes with scipy's stack
        limits = None
    try:
        yield
    finally:
        if limits is not None:
            limits.restore_original_limits()
        numba.set_num_threads(before)


def _single(fn):
    def step():
        with one_thread():
            return fn()
    return step


def _sampler(model, n):
    prompt = np.zeros((1, 1), np.int64)
    return lambda: model.generate(prompt, max_new_tokens=n, do_sample=True, seed=1, crop_context=True)


def _row(name, times, load, **extra):
    row = make_row("busy", name, {"numba": times["tinyllm"], "torch": times.get("torch", [])}, load=load, **extra)
    ones = times["one_thread"]
    row.update(one_thread_ms=round(statistics.median(ones) * 1e3, 4), one_thread_best_ms=round(min(ones) * 1e3, 4),
               one_thread_reps=len(ones))
    row["numba_vs_one_thread"] = round(row["numba_ms"] / row["one_thread_ms"], 3)
    if row.get("torch_ms"):
        row["one_thread_vs_torch"] = round(row["one_thread_ms"] / row["torch_ms"], 3)
    return row


def run(ctx, quick):
    from tinyllm.kernels import pool
    from tinyllm.train import TrainConfig
    step_reps, sample_reps = ctx.n(8 if quick else 24), ctx.n(2 if quick else 4)
    n_tokens = QUICK_SAMPLE_TOKENS if quick else SAMPLE_TOKENS
    model, step, x, y = tinyllm_recipe()
    steps = {"tinyllm": step, "one_thread": _single(step)}
    if ctx.torch is not None:
        from benchmarks.sections.torch_twin import torch_recipe
        steps["torch"] = torch_recipe(model, TrainConfig(), x, y)[1]
    sampler, _, _, _ = tinyllm_recipe()  # a second copy: the step trains the first one's weights
    sampler.eval()
    samples = {"tinyllm": _sampler(sampler, n_tokens)}
    samples["one_thread"] = _single(samples["tinyllm"])
    same = bool(np.array_equal(samples["tinyllm"](), samples["one_thread"]()))
    rows = []
    for load in ("idle", "busy"):
        with competitor(load == "busy"):
            pool.GUARD.reset()  # what the machine was like before is not evidence
            t = alternate(steps, step_reps, warmup=2, ctx=ctx)
            rows.append(_row(f"recipe training step, {load}", t, load))
            t = alternate(samples, sample_reps, warmup=1, ctx=ctx, settle=False)
            rows.append(_row(f"sampling {n_tokens} tokens (recipe model, window 64), {load}", t, load,
                             new_tokens=n_tokens, numba_tok_s=round(n_tokens / statistics.median(t["tinyllm"]), 1),
                             one_thread_tok_s=round(n_tokens / statistics.median(t["one_thread"]), 1)))
            rows[-2]["guard"] = rows[-1]["guard"] = _guard_summary(pool)
    notes = ["One CPU-bound process (`python -c 'while True: pass'`) runs beside the benchmark in the busy rows, "
             "started before and killed after them; the idle rows are the same work just before, without it (the "
             "machine may have other load: see the load averages). Sides take turns as in every section. "
             "tinyllm is the default (numba's threads, `tune_for_training()`); one thread is "
             "`numba.set_num_threads(1)` plus numpy's BLAS at one thread (threadpoolctl) for the turn; torch is "
             "the train_step section's twin on its default threads.",
             f"Sampling: {n_tokens} new tokens from a one-token prompt, top-k off, temperature 1, seed 1, "
             "`crop_context=True` (the CLI's `sample`): past the block size every token runs a 64-token window. "
             f"Same tokens with and without threads: {same}.",
             "Targets (with one competing process): tinyllm / one thread <= 1.0x for the step and for sampling; "
             "the step <= 1.0x torch."]
    return rows, notes


def _guard_summary(pool):
    """How many of the guard's size classes run serially now, of all it has seen."""
    choices = pool.GUARD.choices()
    return f"{sum(v == 'serial' for v in choices.values())} of {len(choices)} serial"
