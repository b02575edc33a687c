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


# what each statistic's panel is called, and which are drawn on a log scale (see tinyllm/stats.py)
_STAT_TITLES = {"grad_norm": "gradient norm (before clipping)", "update_ratio": r"update / weight  $\|\Delta w\| \,/\, \|w\|$",
                "act_mean": "activation mean (layer output)", "act_std": "activation std (layer output)",
                "gelu_saturation": "saturated GELU inputs (x < -3)"}
_LOG_SCALE = ("grad_norm", "update_ratio")
UPDATE_RATIO_GUIDE = 1e-3  # Karpathy's rule of thumb for update / weight


def stats_series(rows):
    """{statistic: {layer: (iterations, values)}} from metrics rows holding ``<layer>/<statistic>``
    fields (``train --log-stats``); statistics in the order of ``_STAT_TITLES``, layers as first logged,
    rows where a value is missing (None) left out."""
    found = {}
    for r in rows:
        for key, value in r.items():
            if "/" not in key or value is None:
                continue
            layer, stat = key.rsplit("/", 1)
            its, values = found.setdefault(stat, {}).setdefault(layer, ([], []))
            its.append(r["iter"])
            values.append(value)
    order = list(_STAT_TITLES) + sorted(set(found) - set(_STAT_TITLES))
    return {stat: found[stat] for stat in order if stat in found}


def _layer_styles(layers):
    """Blocks (``h.0``, ``h.1`` ... any ``name.index``) shade from dark to light in one colour map, in
    order; the other layers (embeddings, final norm) get grey and black dashed lines."""
    plt = _pyplot()
    blocks = [layer for layer in layers if layer.rsplit(".", 1)[-1].isdigit()]
    others = [layer for layer in layers if layer not in blocks]
    cmap = plt.get_cmap("viridis")
    styles = {layer: dict(color=cmap(0.9 * i / max(len(blocks) - 1, 1)), lw=1.4) for i, layer in enumerate(blocks)}
    greys = ["0.0", "0.45", "0.7", "0.25", "0.55"]
    dashes = ["--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 2))]
    styles.update({layer: dict(color=greys[i % len(greys)], ls=dashes[i % len(dashes)], lw=1.2)
                   for i, layer in enumerate(others)})
    return styles


def stats_figure(series, title=None):
    """The matplotlib figure of ``stats_series``: one panel per statistic, one line per layer."""
    plt = _pyplot()
    n = len(series)
    cols = 2 if n > 1 else 1
    rows = (n + 1 + cols - 1) // cols  # one more cell for the legend
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.3 * rows), dpi=110, squeeze=False)
    axes = list(axes.flat)
    layers = list(dict.fromkeys(layer for by_layer in series.values() for layer in by_layer))
    styles = _layer_styles(layers)
    for ax, (stat, by_layer) in zip(axes, series.items()):
        for layer, (its, values) in by_layer.items():
            ax.plot(its, values, label=layer, **styles[layer])
        if stat in _LOG_SCALE:
            ax.set_yscale("log")
        if stat == "update_ratio":
            ax.axhline(UPDATE_RATIO_GUIDE, color="crimson", lw=1, ls=(0, (4, 3)), alpha=0.8, label="_guide")
            ax.annotate("1e-3", (1.0, UPDATE_RATIO_GUIDE), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                        textcoords="offset points", ha="right", color="crimson", fontsize=8)
        if stat == "gelu_saturation":  # a fraction: from 0, with room to see a line lying at 0
            top = max(ax.get_ylim()[1], 0.01)
            ax.set_ylim(-0.03 * top, top)
        ax.set_title(_STAT_TITLES.get(stat, stat), fontsize=10)
        ax.set_xlabel("iteration", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3, which="both" if stat in _LOG_SCALE else "major", lw=0.5)
    legend_ax = axes[n]
    legend_ax.axis("off")
    handles = [plt.Line2D([], [], **styles[layer]) for layer in layers]
    legend_ax.legend(handles, layers, title="layer", loc="center", ncol=2 if len(layers) > 6 else 1, frameon=False)
    for ax in axes[n + 1:]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_stats(run_dir, out=None):
    """The training statistics of a run trained with ``--log-stats`` (tinyllm/stats.py): one panel per
    statistic, one line per layer, gradient norm and update ratio on log scales with the 1e-3 guide on
    the latter. Returns the PNG path (default RUN/stats.png)."""
    from .runs import CONFIG_FILE, METRICS_FILE, read_metrics
    if not os.path.isfile(os.path.join(run_dir, METRICS_FILE)):
        raise FileNotFoundError(f"{run_dir} has no {METRICS_FILE} to plot{_derived_from(os.path.join(run_dir, CONFIG_FILE))}")
    series = stats_series(read_metrics(run_dir))
    if not series:
        raise ValueError(f"{run_dir} has no training statistics in {METRICS_FILE}: train with --log-stats")
    plt = _pyplot()
    fig = stats_figure(series, f"{os.path.basename(os.path.normpath(run_dir))}: training statistics")
    out = out or os.path.join(run_dir, "stats.png")
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


# Whitespace drawn as a glyph, so a space or a line break is a visible tick label (DejaVu Sans, the
# matplotlib default, has all of them).
_VISIBLE = str.maketrans({" ": "\u2423", "\n": "\u23ce", "\t": "\u21e5", "\r": "\u21b5"})


def token_label(text, width=8):
    """A token's text as a tick label: whitespace visible (space ␣, newline ⏎, tab ⇥), at most ``width``
    characters."""
    text = text.translate(_VISIBLE)
    return text if len(text) <= width else text[:width - 1] + "\u2026"


def plot_attention(attentions, tokens, out, layer=None, head=None, title=None):
    """Draw attention maps of one sequence as a PNG and return its path (``attention_figure`` says what
    is drawn)."""
    plt = _pyplot()
    fig = attention_figure(attentions, tokens, layer=layer, head=head, title=title)
    fig.savefig(out)
    plt.close(fig)
    return out


def attention_figure(attentions, tokens, layer=None, head=None, title=None):
    """A matplotlib figure of attention maps of one sequence.

    ``attentions``: one (n_head, T, T) array per layer (what ``GPT(ids, output_attentions=True)`` returns,
    batch row taken); ``tokens``: T tick labels (``token_label``). Without ``layer`` and ``head`` it
    draws every layer (rows) by every head (columns); with ``layer`` that layer's heads; with ``head``
    that head in every layer (those two wrap into a near-square grid); with both one large map.
    Queries run down, keys across; the masked future (upper triangle) is left blank.
    """
    import math

    import numpy as np
    plt = _pyplot()
    maps = [np.asarray(a) for a in attentions]
    n_layer, n_head, T = len(maps), maps[0].shape[0], maps[0].shape[-1]
    if len(tokens) != T or any(m.shape != (n_head, T, T) for m in maps):
        raise ValueError(f"plot_attention: expected {n_layer} maps of shape ({n_head}, {T}, {T}) and {T} "
                         f"tokens, got {[m.shape for m in maps]} and {len(tokens)} tokens")
    if layer is None and head is None:  # the overview: a row per layer, a column per head
        panels = [(l, h) for l in range(n_layer) for h in range(n_head)]
        rows, cols = n_layer, n_head
    else:  # one layer's heads, one head through the layers, or one map: wrapped into a near-square grid
        panels = [(l, h) for l in (range(n_layer) if layer is None else [layer])
                  for h in (range(n_head) if head is None else [head])]
        cols = math.ceil(math.sqrt(len(panels)))
        rows = math.ceil(len(panels) / cols)
    # every token gets a tick: a panel grows with T so that each label has per_token inches of room,
    # and the other text grows with the panel so that it stays legible when the PNG is scaled down
    per_token = 0.14 if len(panels) == 1 else 0.1
    side = max(3.0, per_token * T)
    tick = max(4.0, min(10.0, 72 * per_token * 0.85))
    text = 8 + 0.8 * side
    fig, axes = plt.subplots(rows, cols, figsize=(cols * side + 1.0, rows * side + 0.8), dpi=110, squeeze=False,
                             layout="constrained")
    if rows > 1:  # room between a panel's key labels and the title of the one below
        fig.get_layout_engine().set(h_pad=0.15, hspace=0.04)
    future = np.triu(np.ones((T, T), bool), 1)
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")  # the masked future: blank, not "zero"
    wide = any(len(t) > 1 for t in tokens)
    for ax in axes.ravel()[len(panels):]:
        ax.set_axis_off()
    for i, (l, h) in enumerate(panels):
        r, c = divmod(i, cols)
        ax = axes[r][c]
        image = ax.imshow(np.ma.masked_array(maps[l][h], future), cmap=cmap, vmin=0.0, vmax=1.0,
                          interpolation="nearest")
        ax.set_title(f"layer {l}, head {h}", fontsize=text)
        ax.set_xticks(range(T))
        ax.set_yticks(range(T))
        ax.set_xticklabels(tokens, fontsize=tick, rotation=90 if wide else 0)
        ax.set_yticklabels(tokens, fontsize=tick)
        ax.tick_params(length=0, pad=1)
        if r == rows - 1 or i + cols >= len(panels):
            ax.set_xlabel("key (attended to)", fontsize=text - 1)
        if c == 0:
            ax.set_ylabel("query (attending)", fontsize=text - 1)
    fig.suptitle(title or "attention probabilities", fontsize=text + 3)
    bar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.5 if rows > 1 else 0.8, aspect=30, pad=0.01)
    bar.ax.tick_params(labelsize=text - 2)
    return fig
