"""The train_step section: one whole training step of nanoGPT's CPU recipe on each side, and the
step's floor (its kernels, and its matmuls, replayed without the Python between them)."""
import numpy as np

from benchmarks.harness import alternate, make_row, tinyllm_side
from benchmarks.sections.torch_twin import torch_recipe

# The anchors (benchmarks/README.md): torch 2.13 eager's recipe step, and the targets for tinyllm
ANCHOR_TORCH_STEP_MS = 58.7
TARGET_BAR, TARGET_GOAL = 0.75, 0.6


def tinyllm_recipe(cfg=None, vocab_size=84, seed=0):
    """The recipe's model, optimizer and one batch, as ``python -m tinyllm train`` builds them (mirrors
    benchmarks/profile_step.make_step, but keeps the model so torch can copy its weights)."""
    import tinyllm as tl
    from tinyllm import nn
    from tinyllm.runs import build_model
    from tinyllm.train import TrainConfig, configure_optimizer
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


def step_floors(sides):
    """The step's floor (benchmarks/kernel_replay.py): its kernels replayed without the Python between
    them, and its matmuls alone; side name -> Replay, timed beside torch (none without torch)."""
    from benchmarks import kernel_replay
    if "torch" not in sides:
        return {}
    calls = kernel_replay.record(sides["numba"])
    return {"floor: the step's kernels alone, replayed": kernel_replay.Replay(calls, kernels="numba"),
            "floor: the step's matmuls alone, replayed": kernel_replay.Replay(calls, only=("matmul",),
                                                                              kernels="numba")}


def run(ctx, quick):
    warmup = 3
    reps = ctx.n(10 if quick else 40)
    every_numpy = 3 if quick else 4
    sides, losses = {}, {}
    for kernels in ("numba", "numpy"):  # two copies of the same model: same seed, same weights
        model, step, x, y = tinyllm_recipe()
        sides[kernels] = tinyllm_side(kernels, step)
    if ctx.torch is not None:
        from tinyllm.train import TrainConfig
        sides["torch"] = torch_recipe(model, TrainConfig(), x, y)[1]
    # the warm-up steps double as the sanity check: step 1's loss is the initial weights' forward,
    # step 2's comes after one clip + AdamW update, step 3's after two
    for name, step in sides.items():
        losses[name] = [step() for _ in range(warmup)]
    floors = step_floors(sides)  # timed in the same turns, so they share torch's times
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
        notes.append(f"Anchors (benchmarks/README.md): torch 2.13 eager took {ANCHOR_TORCH_STEP_MS} ms/step on the "
                     f"reference machine; targets tinyllm <= {TARGET_BAR}x torch (bar), <= {TARGET_GOAL}x (goal). Here: "
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
