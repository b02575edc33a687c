"""Where does a training step of nanoGPT's CPU recipe spend its time?

    python benchmarks/profile_step.py                 # phase medians (forward, backward, clip, AdamW)
    python benchmarks/profile_step.py --cprofile 30   # plus cProfile's top functions over 30 steps
    python benchmarks/profile_step.py --ops           # time per op (forward and backward) and matmul
    python benchmarks/profile_step.py --floor         # the step's kernels replayed without the Python
    TINYLLM_KERNELS=numpy python benchmarks/profile_step.py   # the NumPy reference kernels

The model, batch and optimizer are the ones ``python -m tinyllm train`` builds on its defaults
(4 layers, 4 heads, width 128, block 64, batch 12, AdamW with decay on matrices, clip 1.0), on random
tokens from an 84-symbol vocabulary.
"""
import argparse
import collections
import cProfile
import io
import pstats
import time

import numpy as np

import tinyllm as tl
from tinyllm import nn
from tinyllm.runs import build_model
from tinyllm.train import TrainConfig, configure_optimizer


def make_step(seed=0):
    cfg = TrainConfig()
    tl.manual_seed(seed)
    model = build_model(cfg, vocab_size=84)
    opt = configure_optimizer(model, cfg)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 84, (cfg.batch_size, cfg.block_size))
    y = rng.integers(0, 84, (cfg.batch_size, cfg.block_size))
    params = list(model.parameters())

    def step(times=None):
        t0 = time.perf_counter()
        _, loss = model(x, y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        t3 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if times is not None:
            times.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0))
        return float(loss.item())

    return step


def _op_timers():
    """Wrap every Function's forward and backward (and the matmul kernels) with a timer; returns the
    accumulated seconds and call counts by name. Costs ~1 us a call, a few percent of a step."""
    from tinyllm.autograd.engine import Function
    from tinyllm.kernels import matmul
    total, calls = collections.defaultdict(float), collections.defaultdict(int)

    def timed(fn, name):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            total[name] += time.perf_counter() - t
            calls[name] += 1
            return out
        return wrapper

    todo, seen = list(Function.__subclasses__()), set()
    while todo:
        cls = todo.pop()
        if cls in seen:
            continue
        seen.add(cls)
        todo.extend(cls.__subclasses__())
        if "forward" in cls.__dict__:
            cls.forward = timed(cls.forward, cls.__name__ + ".forward")
        if "backward" in cls.__dict__:
            cls.backward = timed(cls.backward, cls.__name__ + ".backward")
    for name in ("matmul", "matmul_tn"):
        setattr(matmul, name, timed(getattr(matmul, name), "(inside Linear) kernels.matmul." + name))
    return total, calls


def _floor(step, rounds):
    """Whole steps and replays of one step's kernel calls, alternating; medians per kernel."""
    try:
        from benchmarks import kernel_replay
    except ImportError:  # run as a script from benchmarks/
        import kernel_replay
    replay = kernel_replay.Replay(kernel_replay.record(step))
    steps, per = [], collections.defaultdict(list)
    for _ in range(rounds):
        t = time.perf_counter()
        step()
        steps.append(time.perf_counter() - t)
        for name, sec in replay.timed_by_kernel().items():
            per[name].append(sec)
    totals = [sum(r) for r in zip(*per.values())]
    print(f"floor: {len(replay)} kernel calls replayed back to back, median over {rounds} rounds (ms):")
    print(f"  whole step {np.median(steps) * 1e3:7.2f}   kernels alone {np.median(totals) * 1e3:7.2f}")
    for name, secs in sorted(per.items(), key=lambda kv: -np.median(kv[1])):
        print(f"  {name:32s} {np.median(secs) * 1e3:7.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--cprofile", type=int, default=0, metavar="N", help="profile N more steps")
    ap.add_argument("--ops", action="store_true", help="time each op's forward and backward")
    ap.add_argument("--floor", action="store_true",
                    help="replay one step's kernel calls back to back (benchmarks/kernel_replay.py), "
                         "alternating with whole steps, and time each kernel")
    args = ap.parse_args(argv)
    tl.backend.tune_for_training()  # a program: the allocator and thread-pool setup training runs get
    step = make_step()
    if args.ops:
        total, calls = _op_timers()
    for _ in range(args.warmup):
        step()
    if args.ops:
        total.clear()
        calls.clear()
    times = []
    for _ in range(args.steps):
        step(times)
    med = np.median(np.array(times), axis=0) * 1e3
    print(f"kernels={tl.backend.kernels()}  median over {args.steps} steps (ms):")
    for name, ms in zip(("forward", "backward", "clip", "adamw", "step"), med):
        print(f"  {name:9s} {ms:7.2f}")
    if args.ops:
        print(f"time per step by op, mean over the {args.steps} steps (ms):")
        for name, sec in sorted(total.items(), key=lambda kv: -kv[1]):
            print(f"  {name:42s} {sec / args.steps * 1e3:7.2f}   ({calls[name] // args.steps} calls)")
    if args.floor:
        _floor(step, args.steps)
    if args.cprofile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.cprofile):
            step()
        prof.disable()
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(45)
        print(s.getvalue())


if __name__ == "__main__":
    main()
