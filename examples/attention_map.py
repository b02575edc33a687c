"""Where a trained GPT looks: every head's attention probabilities on one line of text, and a map of one.

    python examples/attention_map.py --run runs/shakespeare [--text "..."] [--out DIR]
    python examples/attention_map.py --quick      # no run at hand: trains a small one on a built-in text

``model(ids, output_attentions=True)`` returns, beside the logits, one (B, heads, T, T) array of
probabilities per layer (Hugging Face's ``output_attentions``). For each head this prints how much of
its attention goes to the token just before the query and to the query itself, two patterns trained
character models learn, then draws the most previous-token-minded head with ``tinyllm.plot`` (the
``tinyllm attention`` command draws any of them).
"""
import argparse
import os
import tempfile

import numpy as np

from tinyllm import data, train
from tinyllm.plot import plot_attention, token_label
from tinyllm.runs import load_run
from tinyllm.train_config import TrainConfig


def quick_run(workdir):
    """A 2-layer character GPT trained for a minute on the demo paragraph."""
    from tinyllm.demo import TEXT
    d, run = os.path.join(workdir, "data"), os.path.join(workdir, "demo")
    data.prepare_text(TEXT * 4, d, "char")
    cfg = TrainConfig.from_flat(n_layer=2, n_head=4, n_embd=64, block_size=64, batch_size=16, max_iters=300,
                                eval_interval=300, eval_iters=2, lr=3e-3, dropout=0.0, progress=False)
    train.train(d, run, cfg, log=lambda *a: None)
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/shakespeare", help="a trained GPT run")
    ap.add_argument("--text", default=None, help="the text to look at (default: the start of the run's val split)")
    ap.add_argument("--quick", action="store_true", help="train a small run on a built-in text first")
    ap.add_argument("--out", default="examples/out", help="directory for attention.png")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = quick_run(tmp) if args.quick else args.run
        model, tok, run_config = load_run(run)
        T = model.config.block_size
        ids = tok.encode(args.text)[-T:] if args.text else \
            data.load_split(run_config["data_dir"], "val")[:T].astype(np.int64).tolist()
        _, _, attentions = model(np.array([ids]), output_attentions=True)
        maps = np.stack([a.numpy()[0] for a in attentions])  # (layers, heads, T, T)

    assert np.allclose(maps.sum(-1), 1.0, atol=1e-5) and not np.triu(maps, 1).any()  # rows sum to 1, causal
    previous = np.diagonal(maps, offset=-1, axis1=2, axis2=3).mean(-1)  # (layers, heads)
    itself = np.diagonal(maps, axis1=2, axis2=3)[..., 1:].mean(-1)
    print(f"{len(ids)} tokens: {tok.decode(ids)!r}")
    print("layer head  to previous token  to itself")
    for layer, head in np.ndindex(previous.shape):
        print(f"{layer:5d} {head:4d}  {previous[layer, head]:17.2f}  {itself[layer, head]:9.2f}")
    layer, head = np.unravel_index(previous.argmax(), previous.shape)
    os.makedirs(args.out, exist_ok=True)
    path = plot_attention(list(maps), [token_label(tok.decode([i])) for i in ids], os.path.join(args.out, "attention.png"),
                          layer=int(layer), head=int(head), title="the most previous-token-minded head")
    print(f"layer {layer}, head {head} puts {previous[layer, head]:.0%} of its attention on the previous token; "
          f"wrote {path}")


if __name__ == "__main__":
    main()
