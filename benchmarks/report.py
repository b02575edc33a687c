"""The runner's report: a markdown table per section, the rows as JSON, and a PNG of tinyllm-numba's
ratios to torch."""
import json
import os

import numpy as np

from benchmarks.harness import COOLDOWN_S, SIDES, THREADS, rounds_for


def _num(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    a = abs(v)
    return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 else f"{v:.3f}"


def _x(v):
    return "-" if v is None else f"{v:.2f}x"


def _e(v):
    return "-" if v is None else f"{v:.1e}"


def _s(key):
    return lambda r: "-" if r.get(key) is None else f"{r[key] / 1e3:.2f}"


_BASE = [("tinyllm-numba ms", "numba_ms", _num), ("tinyllm-numpy ms", "numpy_ms", _num), ("torch ms", "torch_ms", _num),
         ("numba / torch", "numba_vs_torch", _x), ("numpy / torch", "numpy_vs_torch", _x)]
_REPS = ("reps (numba, numpy, torch)",
         lambda r: ", ".join(str(r.get(f"{s}_reps", "-")) for s in SIDES), None)
COLUMNS = {
    "matmul": _BASE + [("numba GFLOP/s", "numba_gflops", _num), ("numpy GFLOP/s", "numpy_gflops", _num),
                       ("torch GFLOP/s", "torch_gflops", _num), ("max abs diff", "max_abs_diff_vs_torch", _e), _REPS],
    "ops": _BASE + [("max abs diff (numba, numpy)",
                     lambda r: f"{_e(r.get('max_abs_diff_vs_torch'))}, {_e(r.get('numpy_max_abs_diff_vs_torch'))}",
                     None), _REPS],
    "attention": _BASE + [("numba kernel alone ms", "kernel_ms", _num), ("kernel / torch", "kernel_vs_torch", _x),
                          ("best runs numba / torch", "numba_vs_torch_best", _x),
                          ("max abs diff", "max_abs_diff_vs_torch", _e), _REPS],
    "train_step": _BASE + [("best runs numba / torch",
                            lambda r: _x(r["numba_best_ms"] / r["torch_best_ms"]) if r.get("torch_best_ms") else "-",
                            None), ("first-step loss diff", "first_step_loss_diff", _e), _REPS],
    "generate": _BASE + [("numba tok/s", "numba_tok_s", _num), ("numpy tok/s", "numpy_tok_s", _num),
                         ("HF tok/s", "torch_tok_s", _num),
                         ("same tokens as HF (numba, numpy)",
                          lambda r: f"{r['same_tokens_numba_vs_hf']:.0%}, {r['same_tokens_numpy_vs_hf']:.0%}", None),
                         _REPS],
    "cold_start": [("tinyllm-numba s", _s("numba_ms"), None), ("tinyllm-numpy s", _s("numpy_ms"), None),
                   ("torch s", _s("torch_ms"), None), ("numba / torch", "numba_vs_torch", _x),
                   ("numpy / torch", "numpy_vs_torch", _x), _REPS],
}
SECTION_TITLES = {"matmul": "matmul (forward + backward)", "ops": "fused ops (forward + backward)",
                  "attention": "causal attention (forward + backward)",
                  "train_step": "training step (nanoGPT CPU recipe)",
                  "generate": "generation (greedy, KV cache) vs Hugging Face", "cold_start": "cold start"}
# llamacpp: llama.cpp sits in the opponent's (torch) slot of its row
COLUMNS["llamacpp"] = [("tinyllm-numba ms", "numba_ms", _num), ("llama.cpp ms", "torch_ms", _num),
                       ("tinyllm / llama.cpp", "numba_vs_torch", _x), ("tinyllm tok/s", "numba_tok_s", _num),
                       ("llama.cpp tok/s", "torch_tok_s", _num),
                       ("best runs tok/s (tinyllm, llama.cpp)",
                        lambda r: f"{_num(r.get('numba_best_tok_s'))}, {_num(r.get('torch_best_tok_s'))}", None),
                       ("same tokens", lambda r: f"{r['same_tokens']:.0%}", None),
                       ("reps", lambda r: f"{r.get('numba_reps', '-')}, {r.get('torch_reps', '-')}", None)]
SECTION_TITLES["llamacpp"] = "generation (greedy, KV cache) vs llama.cpp"


def table(section, rows):
    """A markdown table of one section's timing rows (rows with a 'kind', such as memory, go to the notes)."""
    cols = COLUMNS.get(section, _BASE)
    lines = ["| benchmark | " + " | ".join(c[0] for c in cols) + " |", "|---" + "|---:" * len(cols) + "|"]
    for r in rows:
        if r.get("kind"):
            continue
        cells = [c[1](r) if callable(c[1]) else c[2](r.get(c[1])) for c in cols]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(meta, sections):
    """The whole report; ``sections`` maps a section name to {'rows', 'notes'} (and 'seconds', 'error')."""
    title = f"# tinyllm benchmarks, {meta['date']}" + (" (quick)" if meta.get("quick") else "")
    out = [title, "",
           f"- **machine:** {meta.get('cpu', '?')}, {meta.get('cores', '?')} cores; {THREADS} threads per side; "
           f"load average {meta.get('loadavg_start', '?')} at the start, {meta.get('loadavg_end', '?')} at the end",
           f"- **numpy** {meta.get('numpy', '?')} ({meta.get('numpy_blas', '?')}), **numba** {meta.get('numba', '?')} "
           f"(threading layer {meta.get('numba_threading_layer', '?')}), **torch** {meta.get('torch', 'n/a')} "
           f"({meta.get('torch_blas', '?')}, {meta.get('torch_threads', '?')} threads), "
           f"**transformers** {meta.get('transformers', 'n/a')}, **python** {meta.get('python', '?')}",
           f"- **command:** `{meta.get('command', '')}`; wall time {meta.get('wall_s', '?')} s",
           "",
           "All sides run in one process. After a warm-up they take turns (tinyllm-numba, tinyllm-numpy, torch, "
           f"then again, {rounds_for(meta.get('quick'))} rounds); each turn is a {COOLDOWN_S} s pause (the previous side's worker threads "
           "stop spinning), one untimed call, then a block of timed calls. Times are medians over all timed calls. "
           "A ratio is tinyllm's time / torch's time: **below 1.0 tinyllm is faster**.",
           ]
    for name, sec in sections.items():
        out += ["", f"## {SECTION_TITLES.get(name, name)}", ""]
        if sec.get("error"):
            out += [f"**failed:** `{sec['error']}`", ""]
        if any(not r.get("kind") for r in sec.get("rows", [])):
            out += [table(name, sec["rows"]), ""]
        out += [f"- {n}" for n in sec.get("notes", [])]
        if sec.get("seconds") is not None:
            out.append(f"- section wall time {sec['seconds']:.1f} s; load average at its start "
                       f"{sec.get('loadavg_start', '?')}")
    return "\n".join(out) + "\n"


def plot(sections, path, title=""):
    """Horizontal bars of tinyllm-numba / torch per benchmark, log scale, a line at 1.0; False without
    matplotlib or without any ratio to draw."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)
    except ImportError:
        return False
    items = [(f"{name}: {r['name']}", r["numba_vs_torch"], name) for name, sec in sections.items()
             for r in sec.get("rows", []) if r.get("numba_vs_torch")]
    if not items:
        return False
    names = list(dict.fromkeys(s for _, _, s in items))
    colours = {s: plt.get_cmap("tab10")(i % 10) for i, s in enumerate(names)}
    fig, ax = plt.subplots(figsize=(9, 0.38 * len(items) + 1.6))
    ys = np.arange(len(items))[::-1]
    ax.barh(ys, [v for _, v, _ in items], color=[colours[s] for _, _, s in items])
    for y, (_, v, _) in zip(ys, items):
        ax.text(v, y, f" {v:.2f}x", va="center", fontsize=8)
    ax.axvline(1.0, color="black", lw=1)
    ax.set_xscale("log")
    lo, hi = min(min(v for _, v, _ in items), 1.0) / 1.6, max(max(v for _, v, _ in items), 1.0) * 2.2
    ax.set_xlim(lo, hi)
    ticks = [t * 10.0 ** e for e in range(-3, 4) for t in (1, 2, 5) if lo <= t * 10.0 ** e <= hi]
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FixedFormatter([f"{t:g}x" for t in ticks]))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks(ys)
    ax.set_yticklabels([label for label, _, _ in items], fontsize=8)
    ax.set_xlabel("tinyllm-numba time / torch time (log scale; < 1: tinyllm is faster)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_results(meta, sections, out_dir, stem):
    """Write <stem>.md, <stem>.json and (with matplotlib) <stem>.png into out_dir; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, stem)
    paths = {"md": base + ".md", "json": base + ".json"}
    with open(paths["md"], "w") as f:
        f.write(markdown(meta, sections))
    rows = [r for sec in sections.values() for r in sec.get("rows", [])]
    with open(paths["json"], "w") as f:
        json.dump({"meta": meta, "rows": rows,
                   "notes": {k: sec.get("notes", []) for k, sec in sections.items()},
                   "errors": {k: sec["error"] for k, sec in sections.items() if sec.get("error")}},
                  f, indent=1, default=str)
    title = f"tinyllm-numba vs torch, {meta.get('date', '')}" + (" (quick)" if meta.get("quick") else "")
    if plot(sections, base + ".png", title):
        paths["png"] = base + ".png"
    return paths
