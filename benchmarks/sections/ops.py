"""The ops section: the recipe's fused ops (softmax, layer_norm, cross_entropy, gelu) and the engine's
per-op cost, forward + backward, at the recipe's shapes."""
import numpy as np

from benchmarks.harness import alternate, make_row, max_abs_diff, tinyllm_side


def _ops(rng):
    """(name, input arrays (the float ones get requires_grad), op(F, *inputs)) for each fused op."""
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return [
        ("softmax (12,4,64,64) dim=-1", [f32(12, 4, 64, 64)], lambda F, x: F.softmax(x, dim=-1)),
        ("layer_norm (12,64,128) weight+bias", [f32(12, 64, 128), 1 + 0.1 * f32(128), 0.1 * f32(128)],
         lambda F, x, w, b: F.layer_norm(x, (128,), w, b)),
        ("cross_entropy (768,84)", [f32(768, 84), rng.integers(0, 84, 768)], lambda F, x, t: F.cross_entropy(x, t)),
        ("gelu (768,512)", [f32(768, 512)], lambda F, x: F.gelu(x)),
        # the engine's own cost: 32 elementwise ops on a (4, 4) tensor (and a sum), forward + backward
        ("engine overhead: 32 tiny ops (4,4), fwd+bwd", [f32(4, 4)], _tiny_chain),
    ]


def _tiny_chain(F, x):
    y = x
    for _ in range(16):
        y = y * 0.5 + x
    return y.sum()


def _op_step(lib, F, op, arrays, g):
    """A fwd+bwd step of ``op`` on leaves made once (grads reset each rep); returns (output, leaves)."""
    ins = [lib.tensor(a, requires_grad=True) if a.dtype.kind == "f" else a for a in arrays]
    if lib.__name__ == "torch":
        ins = [x if isinstance(x, lib.Tensor) else lib.from_numpy(x) for x in ins]
    leaves = [x for x in ins if getattr(x, "requires_grad", False)]

    def step():
        for x in leaves:
            x.grad = None
        out = op(F, *ins)
        out.backward(g)
        return out, leaves
    return step


def run(ctx, quick):
    import tinyllm as tl
    import tinyllm.nn.functional as F
    rows, rng = [], np.random.default_rng(0)
    reps = ctx.n(40 if quick else 150)
    torch = ctx.torch
    for name, arrays, op in _ops(rng):
        scalar = name.startswith(("cross_entropy", "engine"))
        g = None if scalar else rng.standard_normal(arrays[0].shape).astype(np.float32)
        sides = {k: tinyllm_side(k, _op_step(tl, F, op, arrays, g)) for k in ("numba", "numpy")}
        if torch is not None:
            sides["torch"] = _op_step(torch, torch.nn.functional, op, arrays, None if scalar else torch.from_numpy(g))
        times = alternate(sides, reps, ctx=ctx)
        extra = {}
        if torch is not None:
            (o1, l1), (o2, l2), (o3, l3) = sides["numba"](), sides["numpy"](), sides["torch"]()
            for key, (o, ls) in (("max_abs_diff_vs_torch", (o1, l1)), ("numpy_max_abs_diff_vs_torch", (o2, l2))):
                extra[key] = max_abs_diff([(o.data, o3.detach())] + [(a.grad, b.grad) for a, b in zip(ls, l3)])
        rows.append(make_row("ops", name, times, **extra))
    notes = ["float32, forward + backward through `tinyllm.nn.functional` and `torch.nn.functional` "
             "(input leaves made once, their grads reset each rep). The max abs diff covers the output and every "
             "input gradient.",
             "The engine-overhead row divides by 33 for the cost of one op (forward + its backward) when the "
             "arrays are too small to matter."]
    return rows, notes
