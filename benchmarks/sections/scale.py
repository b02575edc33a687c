"""The scale section: one whole training step (forward, loss, backward, clip_grad_norm_ 1.0, AdamW,
zero_grad) at three model sizes, tinyllm against the same model in torch, and the step's BLAS floor:
its own matmuls (forward x W^T, dX = dY W and dW = dY^T X of every Linear and the lm_head, attention
left out) timed with numpy's threaded BLAS, warm, in the same turns.

    python -m benchmarks --only scale            # all three sizes (GPT-2 small steps take seconds each)
    python -m benchmarks --quick --only scale    # the recipe and 10.7M only, few reps
"""
import numpy as np

from benchmarks import report
from benchmarks.harness import alternate, make_row, tinyllm_side
from benchmarks.sections.torch_twin import torch_recipe
from benchmarks.sections.train_step import tinyllm_recipe

# label, (n_layer, n_head, n_embd), block T, batch B, vocabulary, timed reps (full run)
SIZES = [
    ("recipe 0.8M (4L/4H/128, T=64, B=12)", (4, 4, 128), 64, 12, 84, 40),
    ("10.7M (6L/6H/384, T=256, B=4)", (6, 6, 384), 256, 4, 65, 16),
    ("GPT-2 small 124M (12L/12H/768, T=256, B=1)", (12, 12, 768), 256, 1, 50257, 4),
]
QUICK_SIZES = 2  # --quick leaves GPT-2 small out (its steps take seconds)
QUICK_REPS = (8, 4)


def step_matmul_shapes(n_layer, n_embd, tokens, vocab_size):
    """The (a, b) shapes of one step's Linear products, with how often each runs: per layer c_attn
    (C -> 3C), attn.c_proj (C -> C), c_fc (C -> 4C), mlp.c_proj (4C -> C), then the lm_head (C -> V);
    for each, the forward x W^T (M, C)x(C, O), dX = dY W (M, O)x(O, C) and dW = dY^T X (O, M)x(M, C)."""
    C, M = n_embd, tokens
    linears = [(C, 3 * C, n_layer), (C, C, n_layer), (C, 4 * C, n_layer), (4 * C, C, n_layer), (C, vocab_size, 1)]
    shapes = []
    for i, o, count in linears:
        shapes += [(("fwd", (M, i), (i, o)), count), (("dX", (M, o), (o, i)), count), (("dW", (o, M), (M, i)), count)]
    return shapes


def blas_floor(shapes, seed=0):
    """A side that runs the step's matmuls once with numpy's own (threaded) BLAS, on arrays made once:
    the forward with the weight as Linear passes it (its transpose), dW as a^T b."""
    rng = np.random.default_rng(seed)
    work = []
    for (kind, (m, k), (k2, n)), count in shapes:
        if kind == "fwd":
            a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((n, k2), np.float32).T
        elif kind == "dW":  # (O, M) x (M, C) as dY^T X: dY is (M, O)
            a, b = rng.standard_normal((k, m), np.float32).T, rng.standard_normal((k2, n), np.float32)
        else:
            a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k2, n), np.float32)
        work += [(a, b)] * count

    def floor():
        for a, b in work:
            a.dot(b)
    return floor


def _model_config(cfg, layers, heads, width, T):
    from dataclasses import replace
    return replace(cfg.model, n_layer=layers, n_head=heads, n_embd=width, block_size=T)


def run(ctx, quick):
    from tinyllm.train import TrainConfig
    sizes = SIZES[:QUICK_SIZES] if quick else SIZES
    rows = []
    for i, (label, (layers, heads, width), T, B, vocab, reps) in enumerate(sizes):
        cfg = TrainConfig(block_size=T, batch_size=B)
        cfg.model = _model_config(cfg, layers, heads, width, T)
        model, step, x, y = tinyllm_recipe(cfg, vocab_size=vocab)
        sides = {"numba": tinyllm_side("numba", step)}
        if ctx.torch is not None:
            sides["torch"] = torch_recipe(model, cfg, x, y, vocab_size=vocab)[1]
        sides["floor"] = blas_floor(step_matmul_shapes(layers, width, B * T, vocab))
        losses = {k: sides[k]() for k in sides if k != "floor"}  # the first step: same weights, same loss
        n = ctx.n(QUICK_REPS[i] if quick else reps)
        times = alternate(sides, n, warmup=1, ctx=ctx, block=max(1, n // ctx.rounds))
        floor_ms = float(np.median(times.pop("floor")) * 1e3)
        row = make_row("scale", label, times, floor_ms=round(floor_ms, 3), tokens=B * T,
                       params=sum(int(np.asarray(p).size) for p in model.state_dict().values()))
        row["step_vs_floor"] = round(row["numba_ms"] / floor_ms, 3)
        row["numba_tok_s"] = round(B * T / row["numba_ms"] * 1e3, 1)
        if "torch" in losses:
            row["torch_tok_s"] = round(B * T / row["torch_ms"] * 1e3, 1)
            row["first_step_loss_diff"] = abs(losses["numba"] - losses["torch"])
        rows.append(row)
    notes = ["The training step (forward, loss, backward, clip_grad_norm_ 1.0, AdamW, zero_grad) at three sizes, "
             "tinyllm against the same model in torch (sections/torch_twin.py, loading tinyllm's initial weights; "
             "no biases, tied lm_head). The BLAS floor is the step's own matmuls (forward, dX and dW of every Linear "
             "and the lm_head; attention left out) with numpy's threaded BLAS, warm, timed in the same turns; "
             "step / floor is how close the step is to it (target <= 1.2x)." + (" --quick leaves GPT-2 small out."
                                                                                 if quick else "")]
    return rows, notes


report.COLUMNS.setdefault("scale", [
    ("tinyllm-numba ms", "numba_ms", report._num), ("torch ms", "torch_ms", report._num),
    ("numba / torch", "numba_vs_torch", report._x), ("BLAS floor ms", "floor_ms", report._num),
    ("step / floor", "step_vs_floor", report._x), ("numba tok/s", "numba_tok_s", report._num),
    ("torch tok/s", "torch_tok_s", report._num), ("first-step loss diff", "first_step_loss_diff", report._e)])
report.SECTION_TITLES.setdefault("scale", "training step at three sizes, against torch and the BLAS floor")
