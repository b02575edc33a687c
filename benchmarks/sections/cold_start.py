"""The cold_start section: a fresh process per run, ``import tinyllm`` (and the training setup the CLI
makes) and the first training step of a tiny GPT, against torch doing the same."""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.harness import SIDE_LABELS, make_row

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# the tiny model of the cold-start section, and the recipe's optimizer settings for a torch-only process
TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, batch_size=2)
RECIPE_OPTIM = dict(lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0)


def tiny_step(side):
    """A training step of the tiny GPT on one side (torch's copy starts from its own init: this process
    should load torch alone)."""
    if side == "torch":
        import types

        from benchmarks.sections.torch_twin import torch_recipe
        cfg = types.SimpleNamespace(**TINY, **RECIPE_OPTIM)
        rng = np.random.default_rng(0)
        x, y = (rng.integers(0, 84, (cfg.batch_size, cfg.block_size)) for _ in range(2))
        return torch_recipe(None, cfg, x, y)[1]
    from benchmarks.sections.train_step import tinyllm_recipe
    from tinyllm.train import TrainConfig
    return tinyllm_recipe(TrainConfig.from_flat(**TINY))[1]


# the import time includes tune_for_training(), as a user of the CLI pays it before the first step
_COLD = r"""
import json, sys, time
t0 = time.perf_counter()
if sys.argv[1] == "torch":
    import numpy, torch
    torch.set_num_threads(2)
else:
    import tinyllm
    tinyllm.backend.tune_for_training()
t1 = time.perf_counter()
sys.path.insert(0, sys.argv[2])
from benchmarks.sections.cold_start import tiny_step
step = tiny_step(sys.argv[1])
t2 = time.perf_counter()
step()
t3 = time.perf_counter()
step()
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "first_step_s": t3 - t2, "second_step_s": t4 - t3}))
"""


def _cold_once(side, env=None):
    t = time.perf_counter()
    env = dict(env or os.environ)
    if side != "torch":
        env["TINYLLM_KERNELS"] = side
    res = subprocess.run([sys.executable, "-c", _COLD, side, ROOT], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode:
        raise RuntimeError(f"cold start ({side}) failed:\n{res.stderr[-2000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    # what a user waits for before the first step is done: import + the first step (model build excluded)
    out["import_first_step_s"] = out["import_s"] + out["first_step_s"]
    return out


def run(ctx, quick):
    sides = ["numba", "numpy"] + (["torch"] if ctx.torch is not None else [])
    runs = ctx.n(2 if quick else 5)
    primer = _cold_once("numba")  # fills numba's cache if a kernel changed since it was written
    got = {s: [] for s in sides}
    for _ in range(runs):  # fresh processes, taking turns
        for s in sides:
            got[s].append(_cold_once(s))
    times = {s: [r["import_first_step_s"] for r in got[s]] for s in sides}
    extra = {"tiny_model": "2 layers, 2 heads, width 32, block 16, batch 2, vocab 84",
             "primer_run_s": round(primer["import_first_step_s"], 3)}
    for s in sides:
        for key in ("import_s", "first_step_s", "second_step_s", "process_s"):
            extra[f"{s}_{key}"] = round(statistics.median(r[key] for r in got[s]), 4)
    if not quick:  # a user's very first run: numba compiles every kernel into an empty cache
        with tempfile.TemporaryDirectory() as d:
            empty = _cold_once("numba", dict(os.environ, NUMBA_CACHE_DIR=d))
        extra["numba_empty_cache_import_first_step_s"] = round(empty["import_first_step_s"], 2)
    row = make_row("cold_start", "import + first training step (tiny GPT)", times, **extra)
    notes = ["A fresh `python -c` per run: `import tinyllm` and `tinyllm.backend.tune_for_training()` (for torch: "
             "`import numpy, torch`), then build a tiny GPT "
             "(2 layers, 2 heads, width 32, block 16, batch 2, vocabulary 84) with the recipe's AdamW, then time its "
             "first training step. The time is import + first step (model build excluded); numba's cache is warm (a "
             f"primer run fills it first: {primer['import_first_step_s']:.2f} s). The torch side builds and steps "
             "the torch twin of the same model without importing tinyllm.",
             "Per side (medians, s): " + "; ".join(
                 f"{SIDE_LABELS[s]}: import {extra[f'{s}_import_s']:.2f}, first step {extra[f'{s}_first_step_s']:.3f}, "
                 f"second step {extra[f'{s}_second_step_s']:.4f}, whole process {extra[f'{s}_process_s']:.2f}"
                 for s in sides) + "."]
    if "numba_empty_cache_import_first_step_s" in extra:
        notes.append("Into an empty numba cache (NUMBA_CACHE_DIR=a fresh folder, every kernel compiled): import + "
                     f"first step {extra['numba_empty_cache_import_first_step_s']} s.")
    return [row], notes
