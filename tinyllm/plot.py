"""Loss curves as PNG (matplotlib, from the ``plot`` extra)."""
import os


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install 'tinyllm[plot]'") from None
    return plt


def plot_run(run_dir, out=None):
    """Train (per-iteration and evaluated) and val loss against iteration; returns the PNG path."""
    from .runs import CONFIG_FILE, METRICS_FILE, read_metrics
    if not os.path.isfile(os.path.join(run_dir, METRICS_FILE)):
        raise FileNotFoundError(f"{run_dir} has no {METRICS_FILE} to plot{_derived_from(os.path.join(run_dir, CONFIG_FILE))}")
    plt = _pyplot()
    rows = read_metrics(run_dir)
    evals = [r for r in rows if r.get("val_loss") is not None]
    steps = [r for r in rows if r.get("val_loss") is None and r.get("train_loss") is not None]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if steps:
        ax.plot([r["iter"] for r in steps], [r["train_loss"] for r in steps], color="0.75", lw=0.8,
                label="train loss (batch)")
    if evals:
        ax.plot([r["iter"] for r in evals], [r["train_loss"] for r in evals], "o-", label="train loss (eval)")
        ax.plot([r["iter"] for r in evals], [r["val_loss"] for r in evals], "s-", label="val loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(os.path.basename(os.path.normpath(run_dir)))
    ax.grid(alpha=0.3)
    ax.legend()
    out = out or os.path.join(run_dir, "loss.png")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _derived_from(config_path):
    """Where a quantized or merged run came from (it keeps no metrics of its own), as a hint."""
    import json
    try:
        with open(config_path) as f:
            conf = json.load(f)
    except (OSError, ValueError):
        return " (is it a training run directory?)"
    source = conf.get("quantized_from") or conf.get("merged_from")
    if conf.get("quantized"):
        return f": it is a quantized copy, which keeps none; plot the run it came from{f' ({source})' if source else ''}"
    if source:
        return f": it is a merged copy, which keeps none; plot the run it came from ({source})"
    return ""
