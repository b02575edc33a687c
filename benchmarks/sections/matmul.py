"""The matmul section: forward + backward of ``a @ b`` through each side's autograd, at the recipe's
shapes."""
import statistics

import numpy as np

from benchmarks.harness import alternate, make_row, max_abs_diff, tinyllm_side

# name, A's shape, B's shape, whether A is the transpose of a stored (K, M) array (as X^T in dW = X^T dY)
MATMUL_SHAPES = [
    ("(768,128)x(128,384)", (768, 128), (128, 384), False),
    ("(768,512)x(512,128)", (768, 512), (512, 128), False),
    ("X^T.dY (128,768)x(768,384)", (128, 768), (768, 384), True),
    ("lm_head dW (84,768)x(768,128)", (84, 768), (768, 128), True),
    ("batched (48,64,32)x(48,32,64)", (48, 64, 32), (48, 32, 64), False),
]


def _matmul_steps(a, b, g, transpose_a, torch):
    """Fwd+bwd steps on leaves made once (grads reset each rep, as parameters are between steps); each
    step returns its leaves."""
    import tinyllm as tl

    def leaves(lib):
        return [lib.tensor(a, requires_grad=True), lib.tensor(b, requires_grad=True)]

    def make(lib, grad):
        ta, tb = leaves(lib)

        def step():
            ta.grad = tb.grad = None
            ((ta.T if transpose_a else ta) @ tb).backward(grad)
            return ta, tb
        return step

    sides = {"numba": tinyllm_side("numba", make(tl, g)), "numpy": tinyllm_side("numpy", make(tl, g))}
    if torch is not None:
        sides["torch"] = make(torch, torch.from_numpy(g))
    return sides


def run(ctx, quick):
    rows, rng = [], np.random.default_rng(0)
    reps = ctx.n(40 if quick else 200)
    for name, sa, sb, transpose_a in MATMUL_SHAPES:
        stored = (sa[1], sa[0]) if transpose_a else sa
        a = rng.standard_normal(stored).astype(np.float32)
        b = rng.standard_normal(sb).astype(np.float32)
        m, k, n = sa[-2], sa[-1], sb[-1]
        batch = sa[0] if len(sa) == 3 else 1
        flops = 3 * 2 * batch * m * k * n  # forward, dA and dB: three products of the same size
        g = rng.standard_normal(sa[:-1] + (n,)).astype(np.float32)
        sides = _matmul_steps(a, b, g, transpose_a, ctx.torch)
        times = alternate(sides, reps, ctx=ctx)
        extra = {"flops_fwd_bwd": flops}
        for side, ts in times.items():
            extra[f"{side}_gflops"] = round(flops / statistics.median(ts) / 1e9, 1)
        if ctx.torch is not None:
            (ta, tb), (pa, pb) = sides["numba"](), sides["torch"]()
            extra["max_abs_diff_vs_torch"] = max_abs_diff([(ta.grad, pa.grad), (tb.grad, pb.grad)])
        rows.append(make_row("matmul", name, times, **extra))
    notes = ["float32, forward + backward (C = A @ B, then dA and dB): 3 x 2MKN flops. The leaves are made once "
             "and their grads reset each rep, as parameters' are between steps. X^T and dW take A as the "
             "transposed view of a stored array, the way these products appear in a Linear's backward."]
    return rows, notes
