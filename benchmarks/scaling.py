"""A scaling-law study on the Shakespeare corpus: train a family of GPTs with a fixed token budget each
and fit the final val loss against the non-embedding parameter count N,

    L(N) = (N_c / N)^alpha + L_inf        (Kaplan et al. 2020, with an irreducible term)

by least squares in log N (scipy's curve_fit), reporting alpha with a 95% confidence interval from the
fit's covariance. The plain power law L = (N_c / N)^alpha (a straight line in log-log) is fitted too.

    python benchmarks/scaling.py                 # 6 sizes (~60x in N), 600 iterations each
    python benchmarks/scaling.py --quick         # 5 sizes, 150 iterations each: a couple of minutes

Every size trains with the recipe's optimiser (AdamW, cosine schedule fitted to the budget, batch 12 x
64 tokens, so the token budget is iterations x 768) and is scored on 40 batches of the val split.
Writes benchmarks/results/scaling[_quick].{md,json,png}.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# (n_layer, n_head, n_embd): non-embedding parameters from ~6k to ~0.8M
SIZES = [(1, 2, 24), (1, 2, 32), (2, 2, 48), (2, 4, 64), (3, 4, 96), (4, 4, 128)]
QUICK_SIZES = [(1, 2, 24), (1, 2, 32), (2, 2, 48), (2, 4, 64), (3, 4, 96)]
N_C_MAX = 1e12  # the fit's upper bound on N_c


def law(n, n_c, alpha, l_inf):
    return (n_c / n) ** alpha + l_inf


def fit(ns, losses):
    """(fits dict) of the law with L_inf and of the plain power law, with 95% intervals for alpha."""
    from scipy.optimize import curve_fit
    ns, losses = np.asarray(ns, float), np.asarray(losses, float)
    out = {}
    # plain power law: log L = alpha log N_c - alpha log N (a line)
    slope, intercept = np.polyfit(np.log(ns), np.log(losses), 1)
    resid = np.log(losses) - (slope * np.log(ns) + intercept)
    dof = max(len(ns) - 2, 1)
    se = math.sqrt(resid @ resid / dof / np.sum((np.log(ns) - np.log(ns).mean()) ** 2))
    t = _t95(dof)
    out["power_law"] = {"alpha": -slope, "alpha_ci95": [-slope - t * se, -slope + t * se],
                        "n_c": math.exp(intercept / -slope) if slope else float("nan")}
    try:
        p0 = (min(ns) * 10, 0.3, max(0.0, min(losses) - 0.3))
        popt, pcov = curve_fit(law, ns, losses, p0=p0, bounds=([1e-3, 1e-3, 0.0], [N_C_MAX, 5.0, min(losses)]),
                               maxfev=20000)
        perr = np.sqrt(np.diag(pcov))
        dof3 = max(len(ns) - 3, 1)
        out["with_floor"] = {"n_c": popt[0], "alpha": popt[1], "l_inf": popt[2],
                             "alpha_ci95": [popt[1] - _t95(dof3) * perr[1], popt[1] + _t95(dof3) * perr[1]]}
    except (RuntimeError, ValueError) as e:  # too few or too flat points for three parameters
        out["with_floor"] = {"error": str(e)}
    return out


def _t95(dof):
    """Student's t two-sided 95% quantile."""
    from scipy.stats import t
    return float(t.ppf(0.975, dof))


def run(quick=False, data_dir="data/shakespeare", iters=None, log=print):
    from tinyllm import data
    from tinyllm.runs import build_model
    from tinyllm.train import TrainConfig, train
    sizes = QUICK_SIZES if quick else SIZES
    iters = iters or (150 if quick else 600)
    meta = data.read_meta(data_dir)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n_layer, n_head, n_embd in sizes:
            cfg = TrainConfig.from_flat(n_layer=n_layer, n_head=n_head, n_embd=n_embd, max_iters=iters,
                                        lr_decay_iters=iters, warmup_iters=max(1, iters // 20), eval_interval=iters,
                                        eval_iters=40, progress=False)
            model = build_model(cfg, meta["vocab_size"])
            n = model.num_params(non_embedding=True)
            t0 = time.perf_counter()
            res = train(data_dir, os.path.join(tmp, f"L{n_layer}_C{n_embd}"), cfg, log=lambda *a, **k: None)
            rows.append({"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "non_embedding_params": n,
                         "tokens": iters * cfg.batch_size * cfg.block_size, "val_loss": res["val_loss"],
                         "train_loss": res["train_loss"], "seconds": round(time.perf_counter() - t0, 1)})
            log(f"{n_layer} layers x {n_embd}: N = {n:,}, val loss {res['val_loss']:.4f} "
                f"({rows[-1]['seconds']} s)")
    fits = fit([r["non_embedding_params"] for r in rows], [r["val_loss"] for r in rows])
    return rows, fits, iters


def markdown(rows, fits, iters, quick):
    lines = [f"# Scaling study on Shakespeare, {datetime.date.today().isoformat()}{' (quick)' if quick else ''}", "",
             f"Each GPT trains {iters} iterations ({rows[0]['tokens']:,} tokens) with the recipe's optimiser; "
             "val loss over 40 batches.", "",
             "| layers | heads | width | non-embedding N | val loss | train loss | seconds |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n_layer']} | {r['n_head']} | {r['n_embd']} | {r['non_embedding_params']:,} | "
                     f"{r['val_loss']:.4f} | {r['train_loss']:.4f} | {r['seconds']} |")
    pl, wf = fits["power_law"], fits["with_floor"]
    lines += ["", f"- plain power law L = (N_c/N)^alpha: alpha = {pl['alpha']:.4f} "
                  f"(95% CI {pl['alpha_ci95'][0]:.4f} to {pl['alpha_ci95'][1]:.4f})"]
    if "error" in wf:
        lines.append(f"- with a floor: the fit failed ({wf['error']})")
    else:
        lines.append(f"- with a floor L = (N_c/N)^alpha + L_inf: alpha = {wf['alpha']:.3f} (95% CI "
                     f"{wf['alpha_ci95'][0]:.3f} to {wf['alpha_ci95'][1]:.3f}), L_inf = {wf['l_inf']:.3f}, "
                     f"N_c = {wf['n_c']:.3g}")
        if wf["n_c"] >= 0.99 * N_C_MAX:
            lines.append("  (N_c ran into its bound: over this range the losses bend too little for L_inf to be "
                         "identified, so read the plain power law's alpha)")
    span = rows[-1]["non_embedding_params"] / rows[0]["non_embedding_params"]
    lines.append(f"- sizes span {span:.0f}x in non-embedding parameters")
    return "\n".join(lines)


def plot(rows, fits, path):
    from tinyllm.plot import _pyplot
    plt = _pyplot()
    ns = np.array([r["non_embedding_params"] for r in rows], float)
    ls = np.array([r["val_loss"] for r in rows])
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=110)
    ax.loglog(ns, ls, "o", label="val loss")
    grid = np.geomspace(ns.min() / 1.5, ns.max() * 1.5, 100)
    pl = fits["power_law"]
    ax.loglog(grid, (pl["n_c"] / grid) ** pl["alpha"], "--", label=f"power law, alpha={pl['alpha']:.3f}")
    wf = fits["with_floor"]
    if "error" not in wf:
        ax.loglog(grid, law(grid, wf["n_c"], wf["alpha"], wf["l_inf"]), "-",
                  label=f"with floor, alpha={wf['alpha']:.2f}, L_inf={wf['l_inf']:.2f}")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("val loss (nats/char)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data", default="data/shakespeare")
    ap.add_argument("--iters", type=int, default=None, help="iterations per size (default 600; --quick 150)")
    ap.add_argument("--out", default=None, help="output stem (default benchmarks/results/scaling[_quick])")
    args = ap.parse_args(argv)
    from tinyllm import backend
    backend.tune_for_training()  # a program: the allocator and thread-pool setup training runs get
    rows, fits, iters = run(args.quick, args.data, args.iters)
    stem = args.out or os.path.join(HERE, "results", "scaling" + ("_quick" if args.quick else ""))
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    md = markdown(rows, fits, iters, args.quick)
    with open(stem + ".md", "w") as f:
        f.write(md + "\n")
    with open(stem + ".json", "w") as f:
        json.dump({"rows": rows, "fits": fits, "iters": iters}, f, indent=2, default=float)
    plot(rows, fits, stem + ".png")
    print(md)
    print(f"wrote {stem}.md, .json, .png")


if __name__ == "__main__":
    main()
