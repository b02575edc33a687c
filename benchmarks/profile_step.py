"""Where does a training step of nanoGPT's CPU recipe spend its time?

    python benchmarks/profile_step.py                 # phase medians (forward, backward, clip, AdamW)
    python benchmarks/profile_step.py --cprofile 30   # plus cProfile's top functions over 30 steps
    TINYLLM_KERNELS=numpy python benchmarks/profile_step.py   # the NumPy reference kernels

The model, batch and optimizer are the ones ``python -m tinyllm train`` builds on its defaults
(4 layers, 4 heads, width 128, block 64, batch 12, AdamW with decay on matrices, clip 1.0), on random
tokens from an 84-symbol vocabulary.
"""
import argparse
import cProfile
import io
import pstats
import time

import numpy as np

import tinyllm as tl
from tinyllm import nn
from tinyllm.train import TrainConfig, build_model, configure_optimizer


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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--cprofile", type=int, default=0, metavar="N", help="profile N more steps")
    args = ap.parse_args(argv)
    step = make_step()
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        step(times)
    med = np.median(np.array(times), axis=0) * 1e3
    print(f"kernels={tl.backend.kernels()}  median over {args.steps} steps (ms):")
    for name, ms in zip(("forward", "backward", "clip", "adamw", "step"), med):
        print(f"  {name:9s} {ms:7.2f}")
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
