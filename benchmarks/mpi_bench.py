"""Data parallelism over MPI on this machine: training throughput of 1 rank x 2 threads against 2 ranks x
1 thread at the same global batch, and the time of the in-place float32 Allreduce that carries a step's
gradients, against the buffer size.

    python benchmarks/mpi_bench.py            # both shapes, 3 alternating repeats (~8 minutes on 2 cores)
    python benchmarks/mpi_bench.py --quick    # fewer iterations and repeats: a smoke run
    python benchmarks/mpi_bench.py --shape 10.7M --no-allreduce   # one shape's throughput only

Every training run is ``python -m tinyllm train`` in a subprocess (under ``mpiexec -n 2`` for the two
ranks, which then take one thread each) on synthetic characters prepared in a temporary directory; its
time per iteration is the median of the per-iteration times in its metrics, the first iterations (numba's
compilation, the first evaluation) left out. The sides alternate, and each figure is the median over
the repeats. Prints markdown tables. Needs the mpi extra (mpi4py and an mpiexec); without it, says so and
exits 0.
"""
import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name, model flags, global batch (sequences per iteration)
SHAPES = [("recipe (0.8M, T=64)", [], 12),
          ("10.7M (6 x 384, T=256)", ["--n-layer", "6", "--n-head", "6", "--n-embd", "384", "--block-size", "256"], 4)]
SIZES = [10_000, 100_000, 800_000, 3_000_000, 10_700_000]
WARMUP = 2  # iterations left out: the first steps compile numba's kernels

# Runs under mpiexec: rank 0 prints {size: [seconds per Allreduce, ...]} as JSON.
ALLREDUCE = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    reps, out = int(sys.argv[1]), {}
    for n in map(int, sys.argv[2:]):
        buf = np.ones(n, dtype=np.float32)
        times = []
        for i in range(reps + 2):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            t = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)  # the slower rank's time
            if i >= 2:
                times.append(t)
            buf /= 2  # keep the values finite
        out[n] = times
    if comm.Get_rank() == 0:
        print(json.dumps(out))
""")


def mpiexec():
    return shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


def synthetic_data(dirname):
    from tinyllm import data
    rng = np.random.default_rng(0)
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ ,.;:!?'\n"))
    text = "".join(alphabet[rng.integers(0, len(alphabet), 300_000)])
    data.prepare_text(text, dirname, "char")
    return dirname


def iteration_ms(run_dir):
    """Median milliseconds per iteration after WARMUP, from the metrics' running means (one line per
    iteration, the window starting after the evaluation at iteration 0)."""
    from tinyllm import runs
    rows = [r for r in runs.read_metrics(run_dir) if r["val_loss"] is None]
    total = {r["iter"]: r["iter"] * r["ms_per_iter"] for r in rows}
    per_iter = [total[i] - total[i - 1] for i in sorted(total) if i - 1 in total and i > WARMUP]
    return statistics.median(per_iter)


def train_ms(data_dir, work, name, ranks, batch, flags, iters):
    out = os.path.join(work, name)
    shutil.rmtree(out, ignore_errors=True)
    args = [sys.executable, "-m", "tinyllm", "train", "--data", data_dir, "--out", out, "--batch-size", str(batch),
            "--max-iters", str(iters), "--eval-interval", str(10 * iters), "--eval-iters", "1",
            "--log-interval", "1", "--no-progress", *flags]
    if ranks > 1:
        args = [mpiexec(), "-n", str(ranks)] + args
    p = subprocess.run(args, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stderr}")
    return iteration_ms(out)


def n_params(flags, vocab_size):
    from tinyllm import runs
    from tinyllm.train_config import TrainConfig
    names = dict(zip(flags[::2], flags[1::2]))
    cfg = TrainConfig.from_flat(**{k[2:].replace("-", "_"): int(v) for k, v in names.items()})
    model = runs.build_model(cfg, vocab_size)
    return sum(p.data.size for p in model.parameters() if p.requires_grad)


def throughput(data_dir, work, quick, only=None):
    iters = {0: 12 if quick else 30, 1: 4 if quick else 10}
    repeats = 1 if quick else 3
    rows, results = [], {}
    for s, (name, flags, batch) in enumerate(SHAPES):
        if only and not name.startswith(only):
            continue
        block = int(dict(zip(flags[::2], flags[1::2])).get("--block-size", 64))
        sides = {"1 rank x 2 threads": (1, batch), "2 ranks x 1 thread": (2, batch // 2)}
        times = {side: [] for side in sides}
        for r in range(repeats):
            for side, (ranks, b) in (sides.items() if r % 2 == 0 else reversed(sides.items())):
                times[side].append(train_ms(data_dir, work, f"s{s}-{ranks}", ranks, b, flags, iters[s]))
                print(f"  {name}, {side}: {times[side][-1]:.1f} ms/iter", file=sys.stderr, flush=True)
        base = statistics.median(times["1 rank x 2 threads"])
        for side, (ranks, b) in sides.items():
            ms = statistics.median(times[side])
            rows.append(f"| {name} | {side} | {b} x {ranks} = {batch} | {ms:.1f} ({min(times[side]):.1f}-"
                        f"{max(times[side]):.1f}) | {batch * block / ms * 1000:,.0f} | {base / ms:.2f}x |")
            results[(s, ranks)] = ms
    print(f"\n{repeats} alternating repeat(s), {iters[0]} / {iters[1]} iterations per run, median per-iteration "
          f"time after the first {WARMUP}\n")
    print("| shape | processes | batch per rank x ranks | ms/iter median (range) | tokens/s | speed-up |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return results


def allreduce(quick, sizes):
    reps = 5 if quick else 20
    script = os.path.join(tempfile.gettempdir(), f"tinyllm_allreduce_{os.getpid()}.py")
    with open(script, "w") as f:
        f.write(ALLREDUCE)
    try:
        p = subprocess.run([mpiexec(), "-n", "2", sys.executable, script, str(reps), *map(str, sizes)],
                           capture_output=True, text=True)
    finally:
        os.remove(script)
    if p.returncode:
        raise RuntimeError(f"the Allreduce run failed ({p.returncode}):\n{p.stderr}")
    times = {int(k): v for k, v in json.loads(p.stdout.strip().splitlines()[-1]).items()}
    print(f"\n`mpiexec -n 2`, in-place float32 SUM, median (range) of {reps} after 2 warm-up calls; bus bandwidth "
          f"2(p-1)/p x bytes / time\n")
    print("| floats | MB | ms median (range) | bus GB/s |")
    print("|---|---|---|---|")
    medians = {}
    for n in sizes:
        ms = [1000 * t for t in times[n]]
        med = medians[n] = statistics.median(ms)
        print(f"| {n:,} | {4 * n / 1e6:.2f} | {med:.3f} ({min(ms):.3f}-{max(ms):.3f}) | {4 * n / med / 1e6:.2f} |")
    return medians


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations and repeats (a smoke run)")
    ap.add_argument("--shape", choices=["recipe", "10.7M"], help="time this shape only")
    ap.add_argument("--no-allreduce", action="store_true", help="skip the Allreduce table")
    args = ap.parse_args(argv)
    from tinyllm import data
    if importlib.util.find_spec("mpi4py") is None or mpiexec() is None:
        print("mpi_bench: skipped: needs the mpi extra (pip install 'tinyllm[mpi]': mpi4py and an mpiexec)")
        return 0
    print(f"# Data parallelism over MPI ({os.cpu_count()} cores; load average "
          f"{', '.join(f'{x:.2f}' for x in os.getloadavg())})")
    with tempfile.TemporaryDirectory() as work:
        data_dir = synthetic_data(os.path.join(work, "data"))
        vocab_size = data.read_meta(data_dir)["vocab_size"]
        params = [n_params(flags, vocab_size) for _, flags, _ in SHAPES]
        steps = throughput(data_dir, work, args.quick, args.shape)
    if args.no_allreduce:
        return 0
    medians = allreduce(args.quick, sorted(set(SIZES + params)))
    print("\nThe Allreduce of a step's gradients (one buffer of every parameter) as a share of the 2-rank step\n")
    print("| shape | parameters | Allreduce ms | 2-rank step ms | share |")
    print("|---|---|---|---|---|")
    for s, ((name, _, _), n) in enumerate(zip(SHAPES, params)):
        if (s, 2) in steps:
            print(f"| {name} | {n:,} | {medians[n]:.2f} | {steps[(s, 2)]:.1f} | {medians[n] / steps[(s, 2)]:.1%} |")
    print(f"\nload average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
