"""The benchmark runner: tinyllm with its numba kernels, tinyllm with its NumPy reference kernels and
torch (eager, CPU), timed in one process, taking turns; writes one dated report (markdown, JSON, PNG).

    python -m benchmarks --quick                 # about a minute: benchmarks/results/<date>-quick.*
    python -m benchmarks                         # the full run (under ~10 minutes): <date>.{md,json,png}
    python -m benchmarks --only matmul ops       # some sections: <date>-only-matmul-ops.*
    python benchmarks/run.py --out /tmp/bench    # the same, as a script, into another folder

Sections: matmul, ops, attention, train_step, generate, cold_start (see benchmarks/README.md). Every
timing is a median over reps; every ratio is tinyllm's time / torch's time, so below 1 tinyllm is faster.
"""
import os

# 2 threads for everyone, and set before NumPy / numba / torch are imported so their pools obey.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # `python benchmarks/run.py` puts benchmarks/ on the path, not the repo root
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

SECTIONS = ("matmul", "ops", "attention", "train_step", "generate", "cold_start")
SIDES = ("numba", "numpy", "torch")  # row keys: numba_ms, numpy_ms, torch_ms, numba_vs_torch, ...
SIDE_LABELS = {"numba": "tinyllm-numba", "numpy": "tinyllm-numpy", "torch": "torch"}
THREADS = 2

# /work/shared/ANCHORS.md: torch 2.13 eager on the recipe's step, and the targets for tinyllm
ANCHOR_TORCH_STEP_MS = 58.7
TARGET_BAR, TARGET_GOAL = 0.75, 0.6


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------
class Context:
    """What every section needs: the torch module (or None), the rep-count override, and how many
    rounds the sides' turns are spread over."""

    def __init__(self, torch=None, reps=None, rounds=None):
        self.torch = torch
        self.reps = reps
        self.rounds = rounds or ROUNDS

    def n(self, default):
        return self.reps if self.reps is not None else default

    def torch_threads(self):
        # numba's OpenMP pool resets the process's OpenMP thread count when it starts, so say it again
        if self.torch is not None:
            self.torch.set_num_threads(THREADS)


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(THREADS)
    return torch


# Before each side's turn we sleep this long, so the previous side's idle worker threads stop spinning
# (OpenBLAS's spin for up to ~0.1 s after a call). Measured on this 2-core machine: taking turns call by
# call with no pause, a 0.4 ms matmul took ~50 ms on all three sides, each library's spinning threads
# holding the cores the next one's threads needed. With the pause and one untimed call per turn, each
# side timed 1.1-1.5x its time running alone, on a busy machine, and all sides alike.
COOLDOWN_S = 0.15
ROUNDS = 8  # turns per side over a section's reps: enough for machine noise to hit every side alike
QUICK_ROUNDS = 4  # --quick: half the turns, so half the pauses (they were ~40 of its ~90 s)


def rounds_for(quick):
    return QUICK_ROUNDS if quick else ROUNDS


def alternate(sides, reps, warmup=2, every=None, ctx=None, block=None, settle=None, cooldown=None):
    """Seconds per call of each side. ``warmup`` untimed calls each, then rounds: in each round every
    side takes a turn (sleep ``cooldown``, one untimed settle call that wakes its own thread pools, then
    ``block`` timed calls), so noise hits all sides alike and no side is timed beside another's spinning
    threads. ``block`` defaults to reps / the context's rounds (ROUNDS without one). ``settle``
    defaults to: only for sides whose warm-up call took under a second (a long call amortises the
    wake-up). ``every={'numpy': 4}`` gives that side a turn only in every 4th round (a slow side with
    fewer reps, still spread over the run)."""
    every = every or {}
    cooldown = COOLDOWN_S if cooldown is None else cooldown
    block = block or max(1, math.ceil(reps / (ctx.rounds if ctx is not None else ROUNDS)))
    settles = {}
    for name, step in sides.items():
        dt = 0.0
        for _ in range(warmup):
            t = time.perf_counter()
            step()
            dt = time.perf_counter() - t
        settles[name] = settle if settle is not None else dt < 1.0
    if ctx is not None:
        ctx.torch_threads()
    times = {name: [] for name in sides}
    for i in range(math.ceil(reps / block)):
        for name, step in sides.items():
            if i % every.get(name, 1):
                continue
            if cooldown:
                time.sleep(cooldown)
            if settles[name]:
                step()
            for _ in range(min(block, reps - i * block)):
                if hasattr(step, "timed"):  # a side that times its own work (kernel_replay.Replay)
                    times[name].append(step.timed())
                    continue
                t = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - t)
    return times


def make_row(section, name, times, **extra):
    """One result row: median and best ms per side, and each tinyllm side's median ratio to torch."""
    row = {"section": section, "name": name}
    for side in SIDES:
        if times.get(side):
            row[f"{side}_ms"] = round(statistics.median(times[side]) * 1e3, 4)
            row[f"{side}_best_ms"] = round(min(times[side]) * 1e3, 4)
            row[f"{side}_reps"] = len(times[side])
    _add_ratios(row)
    row.update(extra)
    return row


def _add_ratios(row):
    for side in ("numba", "numpy"):
        if row.get(f"{side}_ms") and row.get("torch_ms"):
            row[f"{side}_vs_torch"] = round(row[f"{side}_ms"] / row["torch_ms"], 3)
    return row


def _tl_side(kernels, fn):
    """A tinyllm step run under the given kernel family."""
    from tinyllm import backend

    def step():
        with backend.use_kernels(kernels):
            return fn()
    return step


def _maxdiff(pairs):
    return float(max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max() for a, b in pairs))


# ---------------------------------------------------------------------------------------------
# matmul: forward + backward of a @ b through each side's autograd
# ---------------------------------------------------------------------------------------------
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

    sides = {"numba": _tl_side("numba", make(tl, g)), "numpy": _tl_side("numpy", make(tl, g))}
    if torch is not None:
        sides["torch"] = make(torch, torch.from_numpy(g))
    return sides


def section_matmul(ctx, quick):
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
            extra["max_abs_diff_vs_torch"] = _maxdiff([(ta.grad, pa.grad), (tb.grad, pb.grad)])
        rows.append(make_row("matmul", name, times, **extra))
    notes = ["float32, forward + backward (C = A @ B, then dA and dB): 3 x 2MKN flops. The leaves are made once "
             "and their grads reset each rep, as parameters' are between steps. X^T and dW take A as the "
             "transposed view of a stored array, the way these products appear in a Linear's backward."]
    return rows, notes


# ---------------------------------------------------------------------------------------------
# ops: the fused ops of the recipe, forward + backward, at the recipe's shapes
# ---------------------------------------------------------------------------------------------
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


def section_ops(ctx, quick):
    import tinyllm as tl
    import tinyllm.nn.functional as F
    rows, rng = [], np.random.default_rng(0)
    reps = ctx.n(40 if quick else 150)
    torch = ctx.torch
    for name, arrays, op in _ops(rng):
        scalar = name.startswith(("cross_entropy", "engine"))
        g = None if scalar else rng.standard_normal(arrays[0].shape).astype(np.float32)
        sides = {k: _tl_side(k, _op_step(tl, F, op, arrays, g)) for k in ("numba", "numpy")}
        if torch is not None:
            sides["torch"] = _op_step(torch, torch.nn.functional, op, arrays, None if scalar else torch.from_numpy(g))
        times = alternate(sides, reps, ctx=ctx)
        extra = {}
        if torch is not None:
            (o1, l1), (o2, l2), (o3, l3) = sides["numba"](), sides["numpy"](), sides["torch"]()
            for key, (o, ls) in (("max_abs_diff_vs_torch", (o1, l1)), ("numpy_max_abs_diff_vs_torch", (o2, l2))):
                extra[key] = _maxdiff([(o.data, o3.detach())] + [(a.grad, b.grad) for a, b in zip(ls, l3)])
        rows.append(make_row("ops", name, times, **extra))
    notes = ["float32, forward + backward through `tinyllm.nn.functional` and `torch.nn.functional` "
             "(input leaves made once, their grads reset each rep). The max abs diff covers the output and every "
             "input gradient.",
             "The engine-overhead row divides by 33 for the cost of one op (forward + its backward) when the "
             "arrays are too small to matter."]
    return rows, notes


# ---------------------------------------------------------------------------------------------
# attention: benchmarks/attention_bench.py
# ---------------------------------------------------------------------------------------------
def _attention_row(r):
    r = dict(section="attention", name=f"causal {r['shape']}", **r)
    r["numba_reps"] = r["torch_reps"] = r["reps"]
    if "numpy_ms" in r:  # attention_bench's NumPy phase
        r["numpy_reps"] = max(3, r["reps"] // 4)
    return r


def section_attention(ctx, quick):
    from benchmarks import attention_bench as AB
    rows = []
    # quick: the two small shapes; full: every shape of attention_bench (T = 64, 256, 1024, 2048)
    shapes = [s for s in AB.SHAPES if s[0][2] <= 256] if quick else AB.SHAPES
    timer = AB._time
    AB._time = lambda sides, reps: alternate(sides, reps, ctx=ctx)  # this runner's turns (see alternate)
    try:
        for shape, reps in shapes:
            rows.append(_attention_row(AB.bench_shape(shape, ctx.n(max(3, reps // 5) if quick else reps), ctx.torch)))
    finally:
        AB._time = timer
    mem = AB.memory(torch=ctx.torch)
    ctx.torch_threads()
    rows.append({"section": "attention", "name": f"peak extra memory T={mem['T']}", "kind": "memory", **mem})
    mb = AB._mb
    notes = ["Causal `scaled_dot_product_attention`, float32, forward + backward, (B, H, T, D). tinyllm-numba, "
             "the bare numba kernel (no Tensor, no autograd) and torch SDPA take turns; the NumPy "
             "reference runs in a phase of its own after them (its O(T^2) buffers slowed whoever ran next by "
             f"up to 1.4x) and only up to T={AB.NUMPY_MAX_T}.",
             f"Peak extra memory of one forward + backward at B=H=1, T={mem['T']}, D={mem['D']} (a T x T float32 "
             f"matrix is {mb(mem['T*T*4_bytes'])}): tinyllm numba {mb(mem['numba_tracemalloc_bytes'])} "
             f"(tracemalloc), {mb(mem['numba_rss_bytes'])} (peak RSS growth); NumPy reference "
             f"{mb(mem['numpy_rss_bytes'])}" +
             (f"; torch SDPA flash {mb(mem.get('torch_flash_rss_bytes'))}, math {mb(mem.get('torch_math_rss_bytes'))}"
              if "torch_flash_rss_bytes" in mem else "") + ".",
             "Target (ANCHORS.md): at most 1.0x torch's fused attention with O(T) extra memory."]
    return rows, notes


# ---------------------------------------------------------------------------------------------
# train_step: nanoGPT's CPU recipe, one whole step
# ---------------------------------------------------------------------------------------------
def tinyllm_recipe(cfg=None, vocab_size=84, seed=0):
    """The recipe's model, optimizer and one batch, as ``python -m tinyllm train`` builds them (mirrors
    benchmarks/profile_step.make_step, but keeps the model so torch can copy its weights)."""
    import tinyllm as tl
    from tinyllm import nn
    from tinyllm.train import TrainConfig, build_model, configure_optimizer
    cfg = cfg or TrainConfig()
    tl.manual_seed(seed)
    model = build_model(cfg, vocab_size=vocab_size)
    opt = configure_optimizer(model, cfg)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab_size, (cfg.batch_size, cfg.block_size))
    y = rng.integers(0, vocab_size, (cfg.batch_size, cfg.block_size))
    params = list(model.parameters())

    def step():
        _, loss = model(x, y)
        loss.backward()
        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.item())
    return model, step, x, y


def torch_gpt(cfg, vocab_size):
    """nanoGPT's model in torch at the recipe's settings: no biases, exact GELU, SDPA causal attention,
    lm_head tied to wte. Parameter names are GPT-2's, as in tinyllm, so state dicts map one to one."""
    import torch
    cfg = getattr(cfg, "model", cfg)  # a TrainConfig holds the shape in its model config
    from torch import nn
    from torch.nn import functional as F

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
            self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = (t.view(B, T, cfg.n_head, C // cfg.n_head).transpose(1, 2)
                       for t in self.c_attn(x).split(C, dim=2))  # (B, nh, T, hs)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
            self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

        def forward(self, x):
            return self.c_proj(F.gelu(self.c_fc(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=False)
            self.attn = CausalSelfAttention()
            self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=False)
            self.mlp = MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab_size, cfg.n_embd)
            self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
            self.h = nn.ModuleList(Block() for _ in range(cfg.n_layer))
            self.ln_f = nn.LayerNorm(cfg.n_embd, bias=False)
            self.lm_head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
            self.lm_head.weight = self.wte.weight

        def forward(self, idx, targets):
            B, T = idx.shape
            x = self.wte(idx) + self.wpe(torch.arange(T))
            for block in self.h:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
            return logits, F.cross_entropy(logits.view(B * T, -1), targets.view(-1), ignore_index=-1)

    return GPT()


def torch_recipe(model, cfg, x, y, vocab_size=84):
    """The torch twin of ``tinyllm_recipe``'s step, starting from the tinyllm model's weights (or from
    torch's own init when ``model`` is None)."""
    import torch
    tmodel = torch_gpt(cfg, vocab_size)
    if model is not None:
        ours, theirs = model.state_dict(), tmodel.state_dict()
        if set(ours) != set(theirs):
            raise KeyError(f"state dicts differ: only tinyllm {sorted(set(ours) - set(theirs))}, "
                           f"only torch {sorted(set(theirs) - set(ours))}")
        tmodel.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in ours.items()})
    params = list(tmodel.parameters())  # the tied wte / lm_head weight once
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        _, loss = tmodel(tx, ty)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.item())
    return tmodel, step


def section_train_step(ctx, quick):
    warmup = 3
    reps = ctx.n(10 if quick else 40)
    every_numpy = 3 if quick else 4
    sides, losses = {}, {}
    for kernels in ("numba", "numpy"):  # two copies of the same model: same seed, same weights
        model, step, x, y = tinyllm_recipe()
        sides[kernels] = _tl_side(kernels, step)
    if ctx.torch is not None:
        from tinyllm.train import TrainConfig
        sides["torch"] = torch_recipe(model, TrainConfig(), x, y)[1]
    # the warm-up steps double as the sanity check: step 1's loss is the initial weights' forward,
    # step 2's comes after one clip + AdamW update, step 3's after two
    for name, step in sides.items():
        losses[name] = [step() for _ in range(warmup)]
    floors = _step_floors(sides)  # timed in the same turns, so they share torch's times
    times = alternate({**sides, **floors}, reps, warmup=0, every={"numpy": every_numpy}, ctx=ctx)
    row = make_row("train_step", "nanoGPT CPU recipe step", {k: times[k] for k in sides},
                   losses_first_steps={k: [round(v, 7) for v in ls] for k, ls in losses.items()},
                   anchor_torch_ms=ANCHOR_TORCH_STEP_MS, target_bar=TARGET_BAR, target_goal=TARGET_GOAL)
    if "numba_ms" in row:
        row["numba_vs_anchor_torch"] = round(row["numba_ms"] / ANCHOR_TORCH_STEP_MS, 3)
    rows = [row] + [make_row("train_step", name, {"numba": times[name], "torch": times["torch"]},
                             kernel_calls=len(replay)) for name, replay in floors.items()]
    notes = ["One whole training step of nanoGPT's CPU recipe (4 layers, 4 heads, width 128, block 64, batch 12, "
             "vocab 84, no biases, tied lm_head): forward, loss, backward, clip_grad_norm_ 1.0, AdamW (lr 1e-3, "
             "betas (0.9, 0.99), weight decay 0.1 on matrices), zero_grad. torch runs nanoGPT's model (SDPA causal, "
             "exact GELU) from the tinyllm model's initial weights; the NumPy-kernel side takes a turn only "
             f"every {every_numpy} rounds."]
    if "torch" in losses:
        d1 = abs(losses["numba"][0] - losses["torch"][0])
        d = max(abs(a - b) for a, b in zip(losses["numba"], losses["torch"]))
        dn = max(abs(a - b) for a, b in zip(losses["numpy"], losses["torch"]))
        row["first_step_loss_diff"], row["loss_diff_3_steps"], row["numpy_loss_diff_3_steps"] = d1, d, dn
        ok = "OK" if d1 <= 1e-5 else "MISMATCH (expected <= 1e-5)"
        notes.append(f"Sanity check, same weights and batch: first-step loss tinyllm-numba {losses['numba'][0]:.7f}, "
                     f"torch {losses['torch'][0]:.7f}, |diff| {d1:.1e}: {ok}. Over the first {warmup} steps "
                     f"the largest |diff| is {d:.1e} (numba) and {dn:.1e} (numpy kernels).")
        r = row["numba_vs_torch"]
        verdict = "meets the goal" if r <= TARGET_GOAL else "meets the bar" if r <= TARGET_BAR else "above the bar"
        notes.append(f"ANCHORS.md: torch 2.13 eager took {ANCHOR_TORCH_STEP_MS} ms/step on the reference machine; "
                     f"targets tinyllm <= {TARGET_BAR}x torch (bar), <= {TARGET_GOAL}x (goal). Here: "
                     f"tinyllm-numba {row['numba_ms']:.1f} ms vs torch {row['torch_ms']:.1f} ms = {r:.2f}x, {verdict}; "
                     f"torch here / anchor = {row['torch_ms'] / ANCHOR_TORCH_STEP_MS:.2f}x.")
        best = row["numba_best_ms"] / row["torch_best_ms"]
        if not 0.8 <= best / r <= 1.25:  # a verdict on noise is no verdict
            notes.append(f"Caution: the medians ({r:.2f}x) and the best runs ({best:.2f}x) disagree by more than 25%: "
                         "the machine was busy. Rerun on an idle machine before quoting this.")
    if len(rows) > 1:
        notes.append("The floor rows replay one recorded step's kernel calls back to back on the same arrays "
                     "(benchmarks/kernel_replay.py) and time only the calls, in the same turns as the step and "
                     "torch (their torch column is the step's): what the "
                     "step would take if the engine, the modules, the optimizer's loop and the NumPy glue between "
                     "kernels cost nothing (the kernels' own dispatch and allocations stay in), and what its "
                     "matmuls alone take.")
    return rows, notes


def _step_floors(sides):
    """The step's floor (benchmarks/kernel_replay.py): its kernels replayed without the Python between
    them, and its matmuls alone; side name -> Replay, timed beside torch (none without torch)."""
    from benchmarks import kernel_replay
    if "torch" not in sides:
        return {}
    calls = kernel_replay.record(sides["numba"])
    return {"floor: the step's kernels alone, replayed": kernel_replay.Replay(calls, kernels="numba"),
            "floor: the step's matmuls alone, replayed": kernel_replay.Replay(calls, only=("matmul",),
                                                                              kernels="numba")}


# ---------------------------------------------------------------------------------------------
# generate: benchmarks/generate_bench.py's models, three sides
# ---------------------------------------------------------------------------------------------
def section_generate(ctx, quick):
    if ctx.torch is None:
        return [], ["skipped: needs torch and transformers"]
    try:
        import transformers  # noqa: F401
    except ImportError:
        return [], ["skipped: needs transformers"]
    from benchmarks import generate_bench as GB
    plan = [("recipe", 50, 3)] if quick else [("recipe", 500, 5), ("gpt2-small", 100, 3)]
    rows = []
    for name, n, reps in plan:
        shape = GB.SHAPES[name]
        prompt = np.random.default_rng(0).integers(0, shape["vocab_size"], (1, GB.PROMPT_LEN))
        with tempfile.TemporaryDirectory() as d:
            hf, ours, load_s = GB.build(shape, d)
        sides = {k: _tl_side(k, lambda: GB.run_ours(ours, prompt, n)) for k in ("numba", "numpy")}
        sides["torch"] = lambda: GB.run_hf(hf, prompt, n)
        outs, warm_s = {}, {}
        for k, step in sides.items():  # warm-up, and the tokens to compare
            t = time.perf_counter()
            outs[k] = np.asarray(step())
            warm_s[k] = time.perf_counter() - t
        # a call of a second or more amortises waking the pools: no untimed settle call before each turn
        times = alternate(sides, ctx.n(reps), warmup=0, settle=max(warm_s.values()) < 1.0, ctx=ctx)
        row = make_row("generate", f"{name}, {n} new tokens", times, new_tokens=n, prompt_len=GB.PROMPT_LEN,
                       save_load_s=round(load_s, 2))
        for side in SIDES:
            if f"{side}_ms" in row:
                row[f"{side}_tok_s"] = round(n / row[f"{side}_ms"] * 1e3, 1)
        row["same_tokens_numba_vs_hf"] = float((outs["numba"] == outs["torch"]).mean())
        row["same_tokens_numpy_vs_hf"] = float((outs["numpy"] == outs["torch"]).mean())
        rows.append(row)
        del hf, ours
    notes = [f"Greedy decoding with the KV cache, batch 1, a {GB.PROMPT_LEN}-token prompt, the same random weights "
             "(HF `GPT2LMHeadModel` -> save_pretrained -> `GPT.from_pretrained`); torch here is HF `generate`. "
             "ms is one whole `generate` call (prefill included); the ratio is of times, so 0.5 means twice "
             "HF's tokens/s.",
             "Targets (ANCHORS.md): at least 2x HF's tokens/s on the recipe shape (ratio <= 0.5), at least 1x on "
             "GPT-2-small (ratio <= 1.0); HF measured 357 tok/s (recipe, 500 tokens) and 23 tok/s (GPT-2-small)."]
    return rows, notes


# ---------------------------------------------------------------------------------------------
# cold_start: a fresh process, `import tinyllm` and the first training step of a tiny model
# ---------------------------------------------------------------------------------------------
# the tiny model of the cold-start section, and the recipe's optimizer settings for a torch-only process
TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, batch_size=2)
RECIPE_OPTIM = dict(lr=1e-3, beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0)


def tiny_step(side):
    """A training step of the tiny GPT on one side (torch's copy starts from its own init: this process
    should load torch alone)."""
    if side == "torch":
        import types
        cfg = types.SimpleNamespace(**TINY, **RECIPE_OPTIM)
        rng = np.random.default_rng(0)
        x, y = (rng.integers(0, 84, (cfg.batch_size, cfg.block_size)) for _ in range(2))
        return torch_recipe(None, cfg, x, y)[1]
    from tinyllm.train import TrainConfig
    return tinyllm_recipe(TrainConfig.from_flat(**TINY))[1]


_COLD = r"""
import json, sys, time
t0 = time.perf_counter()
if sys.argv[1] == "torch":
    import numpy, torch
    torch.set_num_threads(2)
else:
    import tinyllm
t1 = time.perf_counter()
sys.path.insert(0, sys.argv[2])
from benchmarks import run as R
step = R.tiny_step(sys.argv[1])
t2 = time.perf_counter()
step()
t3 = time.perf_counter()
step()
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "first_step_s": t3 - t2, "second_step_s": t4 - t3}))
"""


def _cold_once(side, env=None):
    t = time.perf_counter()
    env = dict(env or os.environ)
    if side != "torch":
        env["TINYLLM_KERNELS"] = side
    res = subprocess.run([sys.executable, "-c", _COLD, side, ROOT], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode:
        raise RuntimeError(f"cold start ({side}) failed:\n{res.stderr[-2000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["process_s"] = wall
    # what a user waits for before the first step is done: import + the first step (model build excluded)
    out["import_first_step_s"] = out["import_s"] + out["first_step_s"]
    return out


def section_cold_start(ctx, quick):
    sides = ["numba", "numpy"] + (["torch"] if ctx.torch is not None else [])
    runs = ctx.n(2 if quick else 5)
    primer = _cold_once("numba")  # fills numba's cache if a kernel changed since it was written
    got = {s: [] for s in sides}
    for _ in range(runs):  # fresh processes, taking turns
        for s in sides:
            got[s].append(_cold_once(s))
    times = {s: [r["import_first_step_s"] for r in got[s]] for s in sides}
    extra = {"tiny_model": "2 layers, 2 heads, width 32, block 16, batch 2, vocab 84",
             "primer_run_s": round(primer["import_first_step_s"], 3)}
    for s in sides:
        for key in ("import_s", "first_step_s", "second_step_s", "process_s"):
            extra[f"{s}_{key}"] = round(statistics.median(r[key] for r in got[s]), 4)
    if not quick:  # a user's very first run: numba compiles every kernel into an empty cache
        with tempfile.TemporaryDirectory() as d:
            empty = _cold_once("numba", dict(os.environ, NUMBA_CACHE_DIR=d))
        extra["numba_empty_cache_import_first_step_s"] = round(empty["import_first_step_s"], 2)
    row = make_row("cold_start", "import + first training step (tiny GPT)", times, **extra)
    notes = ["A fresh `python -c` per run: `import tinyllm` (for torch: `import numpy, torch`), then build a tiny GPT "
             "(2 layers, 2 heads, width 32, block 16, batch 2, vocabulary 84) with the recipe's AdamW, then time its "
             "first training step. The time is import + first step (model build excluded); numba's cache is warm (a "
             f"primer run fills it first: {primer['import_first_step_s']:.2f} s). The torch side builds and steps "
             "the torch twin of the same model without importing tinyllm.",
             "Per side (medians, s): " + "; ".join(
                 f"{SIDE_LABELS[s]}: import {extra[f'{s}_import_s']:.2f}, first step {extra[f'{s}_first_step_s']:.3f}, "
                 f"second step {extra[f'{s}_second_step_s']:.4f}, whole process {extra[f'{s}_process_s']:.2f}"
                 for s in sides) + "."]
    if "numba_empty_cache_import_first_step_s" in extra:
        notes.append("Into an empty numba cache (NUMBA_CACHE_DIR=a fresh folder, every kernel compiled): import + "
                     f"first step {extra['numba_empty_cache_import_first_step_s']} s.")
    return [row], notes


SECTION_FUNCS = {"matmul": section_matmul, "ops": section_ops, "attention": section_attention,
                 "train_step": section_train_step, "generate": section_generate, "cold_start": section_cold_start}


# ---------------------------------------------------------------------------------------------
# the report: markdown tables, JSON, a PNG of the ratios
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# the machine
# ---------------------------------------------------------------------------------------------
def _cpu_model():
    """The CPU's model name from /proc/cpuinfo, and whether it has AVX-512 (OpenBLAS's fastest kernels)."""
    name, flags = None, ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name is None:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    return name + (" with AVX-512" if "avx512f" in flags else "")


def _numpy_blas():
    """numpy's BLAS: the build's name and version, plus the core OpenBLAS picked at run time (if it says)."""
    desc = "BLAS ?"
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        desc = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:
        pass
    try:  # OpenBLAS reports the kernels it chose for this CPU (e.g. SkylakeX) and its thread count
        import ctypes
        np.dot(np.ones((2, 2)), np.ones((2, 2)))
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line})
        for lib in libs:
            dll = ctypes.CDLL(lib)
            for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"), ("openblas", ""),
                                   ("scipy_openblas", "")):
                core = getattr(dll, f"{prefix}_get_corename{suffix}", None)
                threads = getattr(dll, f"{prefix}_get_num_threads{suffix}", None)
                if core is not None:
                    core.restype = ctypes.c_char_p
                    desc += f", {core().decode()} kernels"
                    if threads is not None:
                        threads.restype = ctypes.c_int
                        desc += f", {threads()} threads"
                    return desc
    except Exception:
        pass
    return desc


def machine_info(torch=None):
    import numba
    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "numpy_blas": _numpy_blas(), "numba": numba.__version__,
            "thread_env": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                           "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}}
    try:
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        info["numba_threading_layer"] = "not started"
    if torch is not None:
        cfg = torch.__config__.show()
        blas = [p.split("=", 1)[1].rstrip(",") for p in cfg.split() if p.startswith("BLAS_INFO=")]
        onednn = "on" if torch.backends.mkldnn.is_available() else "off"
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    torch_blas=f"BLAS {blas[0] if blas else '?'}, oneDNN {onednn}")
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def _loadavg():
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


# ---------------------------------------------------------------------------------------------
def run_sections(names, quick=False, reps=None, torch=None, log=print):
    """Run the named sections; returns {name: {'rows', 'notes', 'seconds', 'loadavg_start'[, 'error']}}. A section that
    raises is recorded with its error and the others still run."""
    ctx = Context(torch, reps, rounds_for(quick))
    out = {}
    for name in names:
        log(f"\n== {name} ==", flush=True)
        t, load = time.perf_counter(), _loadavg()
        try:
            rows, notes = SECTION_FUNCS[name](ctx, quick)
            out[name] = {"rows": rows, "notes": notes}
        except Exception as e:  # report it, keep going: one broken section should not lose the others
            traceback.print_exc()
            out[name] = {"rows": [], "notes": [], "error": f"{type(e).__name__}: {e}".splitlines()[0]}
        out[name].update(seconds=round(time.perf_counter() - t, 1), loadavg_start=load)
        sec = out[name]
        if sec["rows"] and any(not r.get("kind") for r in sec["rows"]):
            log(table(name, sec["rows"]))
        for n in sec["notes"]:
            log(f"- {n}")
        log(f"({sec['seconds']} s)", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer reps, shapes and rounds (about a minute)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                    help=f"run only these sections ({', '.join(SECTIONS)})")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output folder (default benchmarks/results)")
    ap.add_argument("--reps", type=int, help="override every section's rep count (smoke tests)")
    args = ap.parse_args(argv)
    names = [s for s in SECTIONS if s in args.only] if args.only else list(SECTIONS)
    date = datetime.date.today().isoformat()
    stem = date + ("-quick" if args.quick else "")
    if args.only and len(names) < len(SECTIONS):  # keep a partial run from overwriting the day's full report
        stem += "-only-" + "-".join(names)
    torch = _torch()
    meta = {"date": date, "quick": args.quick, "sections": names, "loadavg_start": _loadavg(),
            "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])}
    t = time.perf_counter()
    sections = run_sections(names, quick=args.quick, reps=args.reps, torch=torch)
    meta.update(wall_s=round(time.perf_counter() - t, 1), loadavg_end=_loadavg(), **machine_info(torch))
    paths = write_results(meta, sections, args.out, stem)
    print(f"\nwrote {', '.join(paths.values())} in {meta['wall_s']} s")
    failed = [k for k, s in sections.items() if s.get("error")]
    if failed:
        print(f"failed sections: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
