"""Hyper-parameter search over ``TrainConfig`` fields and the model's: grid or random, trials run one
after another.

A search space is a JSON object from field names (``TrainConfig.from_flat``'s) to candidates:

    {"lr": [3e-4, 1e-3, 3e-3], "n_layer": [2, 4], "dropout": {"uniform": [0.0, 0.2]},
     "weight_decay": {"log_uniform": [1e-3, 1e-1]}, "n_embd": {"choice": [64, 128]}}

Grid search takes the product of the lists (it needs lists or ``choice``); random search draws each
field independently (lists are choices). Every trial trains ``budget_iters`` iterations with the
cosine schedule fitted to that budget and scores the final val loss. ``OUT/trials.jsonl`` holds one
line per finished trial (its number, parameters, losses and seconds); a search started again with
the same space, strategy and seed skips the trials already there, so an interrupted search resumes.
"""
import itertools
import json
import math
import os
import shutil
import time
import numpy as np

from .train import train
from .train_config import DEFAULT_WARMUP_ITERS, TrainConfig, check_value, flat_names

TRIALS_FILE = "trials.jsonl"
SPEC_FILE = "search.json"


def check_space(space):
    if not isinstance(space, dict) or not space:
        raise ValueError("search space: expected a non-empty JSON object of TrainConfig fields")
    known = flat_names()
    for name, spec in space.items():
        if name not in known:
            raise ValueError(f"search space: {name!r} is not a TrainConfig field")
        if isinstance(spec, list):
            if not spec:
                raise ValueError(f"search space: {name!r} has no candidates")
        elif not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in ("choice", "uniform", "log_uniform", "int")):
            raise ValueError(f"search space: {name!r} must be a list or one of "
                             f"{{'choice': [...]}}, {{'uniform': [a, b]}}, {{'log_uniform': [a, b]}}, {{'int': [a, b]}}")
        else:
            _check_range(name, *next(iter(spec.items())))
    return space


def _check_range(name, kind, arg):
    """A range's bounds, and each bound as a value of the field, so no draw can fail later."""
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise ValueError(f"search space: {name!r}: choice needs a non-empty list, got {arg!r}")
        return
    number = (int,) if kind == "int" else (int, float)
    if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(a, number) and not isinstance(a, bool)
                                                              for a in arg) and arg[0] <= arg[1]):
        what = "integers" if kind == "int" else "numbers"
        raise ValueError(f"search space: {name!r}: {kind} needs [low, high], two {what} with low <= high, got {arg!r}")
    if kind == "log_uniform" and arg[0] <= 0:
        raise ValueError(f"search space: {name!r}: log_uniform needs bounds > 0, got {arg!r}")
    for bound in arg:
        try:
            check_value(name, bound)
        except ValueError as e:
            raise ValueError(f"search space: {name!r}: {kind} bound {bound!r}: {e}") from None


def grid_trials(space):
    """Every combination, fields in sorted order (the last one varies fastest)."""
    names = sorted(space)
    lists = []
    for n in names:
        spec = space[n]
        if isinstance(spec, dict):
            if "choice" not in spec:
                raise ValueError(f"grid search needs a list of candidates for {n!r}, got {spec}")
            spec = spec["choice"]
        lists.append(spec)
    return [dict(zip(names, combo)) for combo in itertools.product(*lists)]


def random_trials(space, n, seed=0):
    """``n`` independent draws (seeded: the same seed gives the same trials)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        trial = {}
        for name in sorted(space):
            spec = space[name]
            kind, arg = ("choice", spec) if isinstance(spec, list) else next(iter(spec.items()))
            if kind == "choice":
                value = arg[int(rng.integers(len(arg)))]
            elif kind == "uniform":
                value = float(rng.uniform(arg[0], arg[1]))
            elif kind == "log_uniform":
                value = float(math.exp(rng.uniform(math.log(arg[0]), math.log(arg[1]))))
            else:  # int: inclusive bounds
                value = int(rng.integers(arg[0], arg[1] + 1))
            trial[name] = value
        out.append(trial)
    return out


def read_trials(out_dir):
    path = os.path.join(out_dir, TRIALS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_search(data_dir, out_dir, space, strategy="random", trials=10, budget_iters=200, seed=0, log=print):
    """Run (or resume) a search; returns the finished trials, best first."""
    check_space(space)
    if strategy not in ("grid", "random"):
        raise ValueError(f"strategy must be 'grid' or 'random', got {strategy!r}")
    plan = grid_trials(space) if strategy == "grid" else random_trials(space, trials, seed)
    if strategy == "grid" and trials:
        plan = plan[:trials]
    for i, params in enumerate(plan):  # every trial's config is valid before the first one runs
        try:
            _trial_config(params, budget_iters).validate()
        except ValueError as e:
            raise ValueError(f"search space: trial {i} {params}: {e}") from None
    spec = {"space": space, "strategy": strategy, "trials": len(plan), "budget_iters": budget_iters, "seed": seed}
    os.makedirs(out_dir, exist_ok=True)
    spec_path = os.path.join(out_dir, SPEC_FILE)
    if os.path.exists(spec_path):
        with open(spec_path) as f:
            old = json.load(f)
        if {k: old.get(k) for k in ("space", "strategy", "budget_iters", "seed")} != \
                {k: spec[k] for k in ("space", "strategy", "budget_iters", "seed")}:
            raise ValueError(f"{out_dir} holds a different search ({old}); use another --out")
    with open(spec_path, "w") as f:
        json.dump(spec, f, indent=2)
    done = {t["trial"] for t in read_trials(out_dir)}
    for i, params in enumerate(plan):
        if i in done:
            continue
        run_dir = os.path.join(out_dir, f"trial_{i:03d}")
        shutil.rmtree(run_dir, ignore_errors=True)  # a trial cut off mid-way starts again
        t0 = time.perf_counter()
        try:
            result = train(data_dir, run_dir, _trial_config(params, budget_iters), log=lambda *a, **k: None)
            row = {"trial": i, "params": params, "val_loss": result["val_loss"], "train_loss": result["train_loss"]}
        except (RuntimeError, ValueError) as e:  # a diverged or invalid trial is recorded, not fatal
            row = {"trial": i, "params": params, "val_loss": None, "train_loss": None, "error": str(e)}
        row["seconds"] = round(time.perf_counter() - t0, 2)
        with open(os.path.join(out_dir, TRIALS_FILE), "a") as f:
            f.write(json.dumps(row) + "\n")
        outcome = f"val loss {row['val_loss']:.4f}" if row["val_loss"] is not None else row["error"]
        log(f"trial {i + 1}/{len(plan)} {params}: {outcome}")
    return leaderboard(out_dir)


def _trial_config(params, budget_iters):
    """The trial's parameters, with the cosine schedule fitted to the budget and one eval at its end."""
    cfg = TrainConfig.from_flat(**{**params, "max_iters": budget_iters, "lr_decay_iters": budget_iters,
                                   "warmup_iters": min(DEFAULT_WARMUP_ITERS, budget_iters // 10),
                                   "eval_interval": budget_iters, "progress": False})
    if "lr" in params and "min_lr" not in params:
        cfg.min_lr = cfg.lr / 10  # nanoGPT's ratio
    return cfg


def leaderboard(out_dir):
    """Finished trials sorted by val loss (failed ones last)."""
    rows = read_trials(out_dir)
    return sorted(rows, key=lambda r: (r["val_loss"] is None, r["val_loss"] if r["val_loss"] is not None else 0))


def format_leaderboard(rows):
    lines = ["| rank | trial | val loss | train loss | seconds | parameters |", "|---:|---:|---:|---:|---:|---|"]
    for rank, r in enumerate(rows, 1):
        vl = f"{r['val_loss']:.4f}" if r["val_loss"] is not None else "failed"
        tl = f"{r['train_loss']:.4f}" if r["train_loss"] is not None else "-"
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        lines.append(f"| {rank} | {r['trial']} | {vl} | {tl} | {r['seconds']} | {params} |")
    return "\n".join(lines)


def plot_leaderboard(rows, path):
    """A horizontal bar per finished trial, best at the top."""
    from .plot import _pyplot
    plt = _pyplot()
    ok = [r for r in rows if r["val_loss"] is not None]
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(ok), 2) + 1.2), dpi=110)
    labels = [f"#{r['trial']} " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in r["params"].items()) for r in ok]
    ax.barh(range(len(ok))[::-1], [r["val_loss"] for r in ok], color="tab:blue")
    ax.set_yticks(range(len(ok))[::-1])
    ax.set_yticklabels(labels, fontsize=8)
    if ok:
        lo, hi = min(r["val_loss"] for r in ok), max(r["val_loss"] for r in ok)
        ax.set_xlim(lo - 0.1 * (hi - lo + 1e-3) - 0.02, hi + 0.05 * (hi - lo + 1e-3) + 0.01)
    ax.set_xlabel("val loss after the budget (nats/token)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
