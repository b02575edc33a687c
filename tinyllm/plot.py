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
    from .runs import read_metrics
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
