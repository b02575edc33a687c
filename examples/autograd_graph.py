"""A neuron's autograd graph, drawn and checked: micrograd's example (tanh(x1 w1 + x2 w2 + b)) in tinyllm.

    python examples/autograd_graph.py [--out DIR]

Runs backward, compares every gradient with central finite differences in float64
(``tl.gradcheck``), then draws the graph backward walked (``tinyllm.viz.draw_graph``, the viz extra):
grey ops, blue named leaves with their data and grad, orange arrays an op saved for backward.
Writes DIR/autograd_graph.png when graphviz's ``dot`` program is installed, and the DOT text
(DIR/autograd_graph.dot) always.
"""
import argparse
import os
import re
import shutil

import numpy as np

import tinyllm as tl
from tinyllm.viz import draw_graph


def neuron(x1, x2, w1, w2, b):
    return (x1 * w1 + x2 * w2 + b).tanh()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="examples/out", help="directory for the drawing")
    args = ap.parse_args()
    values = dict(x1=2.0, x2=0.0, w1=-3.0, w2=1.0, b=6.8813735870195432)  # micrograd's numbers
    leaves = {k: tl.tensor(v, dtype=tl.float64, requires_grad=True) for k, v in values.items()}
    out = neuron(**leaves)
    out.backward(retain_graph=True)  # kept, so the drawing can show what each op saved
    print(f"out = {out.item():.4f}; grads: " + ", ".join(f"d{k} = {t.grad.item():+.4f}" for k, t in leaves.items()))

    # by hand: d tanh(n)/dn = 1 - tanh(n)^2, dn/dw1 = x1
    assert np.isclose(leaves["w1"].grad, (1 - out.item() ** 2) * values["x1"])
    # and by central finite differences in float64 on fresh copies: gradcheck raises if any differs
    assert tl.gradcheck(neuron, tuple(t.detach().requires_grad_() for t in leaves.values()))
    print("gradcheck: the engine's gradients equal finite differences")

    dot = draw_graph(out, params=leaves, show_saved=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "autograd_graph.dot"), "w") as f:
        f.write(dot.source)
    ops = sorted(re.findall(r'\[label="?(\w+)"? fillcolor=lightgrey', dot.source))  # the grey op nodes
    print(f"drawn ops: {', '.join(ops)}")
    if shutil.which("dot"):
        print(f"wrote {dot.render(os.path.join(args.out, 'autograd_graph'), format='png', cleanup=True)}")
    else:
        print(f"wrote {os.path.join(args.out, 'autograd_graph.dot')} (install graphviz's dot to get a PNG)")


if __name__ == "__main__":
    main()
