"""Watching a training run from inside: ``log_stats`` records, per layer, the gradient norm, the size of
each update relative to the weights, the activations' mean and std and the share of dead GELU inputs.

    python examples/training_stats.py [--iters 300] [--out DIR]

Trains a small character GPT on a built-in text with ``TrainConfig(log_stats=True)`` (the CLI's
``train --log-stats``), reads the statistics back from metrics.jsonl (fields ``h.0/grad_norm``,
``h.0/update_ratio``, ...), prints the last logged values and draws them (``plot --stats``).
The numbers come from module hooks added for the run and removed after it; the losses are the same as
without them.
"""
import argparse
import os
import tempfile

from tinyllm import data, train
from tinyllm.plot import plot_stats
from tinyllm.runs import read_metrics
from tinyllm.stats import STATISTICS
from tinyllm.train_config import TrainConfig


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=300, help="training iterations")
    ap.add_argument("--out", default="examples/out", help="directory for training_stats.png")
    args = ap.parse_args()
    from tinyllm.demo import TEXT
    with tempfile.TemporaryDirectory() as tmp:
        d, run = os.path.join(tmp, "data"), os.path.join(tmp, "run")
        data.prepare_text(TEXT * 4, d, "char")
        cfg = TrainConfig.from_flat(n_layer=3, n_head=4, n_embd=64, block_size=32, batch_size=16,
                                    max_iters=args.iters, eval_interval=args.iters, eval_iters=2,
                                    log_interval=max(1, args.iters // 30), lr=3e-3, progress=False, log_stats=True)
        train.train(d, run, cfg, log=lambda *a: None)
        rows = [r for r in read_metrics(run) if any("/" in k for k in r)]
        last = rows[-1]
        layers = list(dict.fromkeys(k.split("/")[0] for k in last if "/" in k))  # in the model's order
        print(f"{len(rows)} rows with statistics; the last, at iteration {last['iter']} (loss {last['train_loss']:.3f}):")
        print("layer  " + "  ".join(f"{s:>15s}" for s in STATISTICS))
        for layer in layers:
            cells = [last.get(f"{layer}/{s}") for s in STATISTICS]
            print(f"{layer:6s} " + "  ".join(f"{c:15.3g}" if c is not None else f"{'-':>15s}" for c in cells))
        os.makedirs(args.out, exist_ok=True)
        print(f"wrote {plot_stats(run, os.path.join(args.out, 'training_stats.png'))}")


if __name__ == "__main__":
    main()
