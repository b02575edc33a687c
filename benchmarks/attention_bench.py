"""Causal attention, forward + backward: tinyllm's numba flash kernels vs its NumPy reference vs torch's
``scaled_dot_product_attention``; plus peak extra memory at T=4096 and the kernels' cold start.

Each side runs through its own autograd (tinyllm ``F.scaled_dot_product_attention`` + ``backward``,
torch SDPA + ``backward``), float32, 2 threads each. After a warm-up tinyllm-numba and torch alternate
rep by rep, so machine noise hits them alike; we report medians (and the best runs). The numba kernel
time alone (no Tensor, no autograd) is timed in the same rotation; the NumPy reference in a phase of
its own (its O(T^2) buffers would slow whoever runs after it).

    python benchmarks/attention_bench.py              # markdown table
    python benchmarks/attention_bench.py --quick      # fewer reps, no cold start
    python benchmarks/attention_bench.py --json out.json

``run(quick=False) -> list[dict]`` is the entry point for a benchmark runner.
"""
import os

# 2 threads for everyone, and set before NumPy / numba / torch are imported so their pools obey.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402

# (B, H, T, D), reps (full run); the NumPy reference is skipped beyond T=1024 (O(T^2) and slow)
SHAPES = [((12, 4, 64, 32), 200), ((4, 8, 256, 64), 40), ((4, 8, 1024, 64), 10), ((1, 8, 2048, 64), 6)]
NUMPY_MAX_T = 1024
MEMORY_T = 4096


def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(2)  # again: numba's OpenMP pool resets the process's OpenMP thread count
    return torch


def _inputs(B, H, T, D, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((B, H, T, D)).astype(np.float32) for _ in range(4)]  # q, k, v, dout


def _tinyllm_step(q, k, v, dout, kernels):
    import tinyllm as tl
    import tinyllm.nn.functional as F
    from tinyllm import backend
    tq, tk, tv = (tl.tensor(x, requires_grad=True) for x in (q, k, v))

    def step():
        with backend.use_kernels(kernels):
            tq.grad = tk.grad = tv.grad = None
            F.scaled_dot_product_attention(tq, tk, tv, is_causal=True).backward(dout)
    return step


def _kernel_step(q, k, v, dout):
    from tinyllm.kernels import attention as A
    scale = 1.0 / math.sqrt(q.shape[-1])

    def step():
        out, lse = A.attention_forward_numba(q, k, v, scale, True)
        A.attention_backward_numba(q, k, v, out, lse, dout, scale, True)
    return step


def _torch_step(torch, q, k, v, dout):
    tq, tk, tv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    tdo = torch.tensor(dout)

    def step():
        tq.grad = tk.grad = tv.grad = None
        torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True).backward(tdo)
    return step


def _check(torch, q, k, v, dout):
    """Max abs difference of tinyllm-numba's output and gradients from torch's (float32)."""
    import tinyllm as tl
    import tinyllm.nn.functional as F
    from tinyllm import backend
    tq, tk, tv = (tl.tensor(x, requires_grad=True) for x in (q, k, v))
    with backend.use_kernels("numba"):
        out = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
        out.backward(dout)
    pq, pk, pv = (torch.tensor(x, requires_grad=True) for x in (q, k, v))
    pout = torch.nn.functional.scaled_dot_product_attention(pq, pk, pv, is_causal=True)
    pout.backward(torch.tensor(dout))
    return max(float(np.abs(a - b.detach().numpy()).max()) for a, b in
               [(out.data, pout), (tq.grad, pq.grad), (tk.grad, pk.grad), (tv.grad, pv.grad)])


def _time(sides, reps):
    """Median-ready lists of seconds: each rep runs every side once, in turn."""
    for step in sides.values():  # warm-up: numba cache load, torch's first-call paths, page faults
        step()
        step()
    times = {name: [] for name in sides}
    for _ in range(reps):
        for name, step in sides.items():
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
    return times


def bench_shape(shape, reps, torch=None):
    B, H, T, D = shape
    q, k, v, dout = _inputs(B, H, T, D)
    sides = {"numba": _tinyllm_step(q, k, v, dout, "numba"), "kernel": _kernel_step(q, k, v, dout)}
    if torch is not None:
        sides["torch"] = _torch_step(torch, q, k, v, dout)
    times = _time(sides, reps)
    # The NumPy reference runs in its own phase: its O(T^2) buffers (GBs at T=1024) evict caches and
    # page-fault fresh memory, which would slow whichever side ran after it.
    if T <= NUMPY_MAX_T:
        times.update(_time({"numpy": _tinyllm_step(q, k, v, dout, "numpy")}, max(3, reps // 4)))
    row = {"shape": f"({B},{H},{T},{D})", "B": B, "H": H, "T": T, "D": D, "reps": reps}
    for name, ts in times.items():
        row[f"{name}_ms"] = round(statistics.median(ts) * 1e3, 3)
        row[f"{name}_best_ms"] = round(min(ts) * 1e3, 3)
    if torch is not None:
        for name in ("numba", "kernel", "numpy"):
            if name in times:
                row[f"{name}_vs_torch"] = round(row[f"{name}_ms"] / row["torch_ms"], 3)
        row["numba_vs_torch_best"] = round(row["numba_best_ms"] / row["torch_best_ms"], 3)
        row["max_abs_diff_vs_torch"] = _check(torch, q, k, v, dout)
    return row


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------
def _rss_peak_extra(fn):
    """Peak resident-set growth while fn runs (Linux: /proc/self/clear_refs resets the high-water mark),
    or None where that is not available. Approximate: freed pages the allocator kept are reused."""
    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so reuse does not hide growth
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status("VmRSS:")
        fn()
        return status("VmHWM:") - before
    except OSError:
        return None


def memory(T=MEMORY_T, D=64, torch=None):
    """Peak extra bytes of one causal forward+backward at B=H=1 (inputs excluded, outputs included)."""
    from tinyllm.kernels import attention as A
    q, k, v, dout = _inputs(1, 1, T, D)
    scale = 1.0 / math.sqrt(D)
    step = _kernel_step(q, k, v, dout)
    step()  # compiled / loaded from cache
    tracemalloc.start()
    step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    res = {"T": T, "D": D, "T*T*4_bytes": T * T * 4, "numba_tracemalloc_bytes": peak,
           "numba_rss_bytes": _rss_peak_extra(step)}
    ref = lambda: A.attention_backward_numpy(q, k, v, *A.attention_forward_numpy(q, k, v, scale, True), dout,  # noqa
                                             scale, True)
    res["numpy_rss_bytes"] = _rss_peak_extra(ref)
    if torch is not None:
        from torch.nn.attention import SDPBackend, sdpa_kernel
        for name, kind in (("torch_flash", SDPBackend.FLASH_ATTENTION), ("torch_math", SDPBackend.MATH)):
            tstep = _torch_step(torch, q, k, v, dout)

            def run():
                with sdpa_kernel(kind):
                    tstep()
            try:
                run()
                res[f"{name}_rss_bytes"] = _rss_peak_extra(run)
            except RuntimeError:  # that backend refuses these inputs
                res[f"{name}_rss_bytes"] = None
    return res


# ---------------------------------------------------------------------------------------------
# cold start
# ---------------------------------------------------------------------------------------------
_COLD = """
import time, numpy as np
t = time.perf_counter()
from tinyllm.kernels import attention as A
t_import = time.perf_counter() - t
q = np.ones((1, 1, 8, 4), np.float32)
t = time.perf_counter()
o, l = A.attention_forward_numba(q, q, q, 0.5, True)
A.attention_backward_numba(q, q, q, o, l, q, 0.5, True)
print(t_import, time.perf_counter() - t)
"""


def cold_start():
    """First-call seconds (float32 forward + backward) in a fresh process: compiling into an empty
    numba cache, then loading from that cache."""
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, NUMBA_CACHE_DIR=d)
        out = []
        for _ in range(2):
            res = subprocess.run([sys.executable, "-c", _COLD], env=env, capture_output=True, text=True, check=True)
            out.append(float(res.stdout.split()[1]))
    return {"compile_s": round(out[0], 2), "cached_s": round(out[1], 3)}


# ---------------------------------------------------------------------------------------------
def run(quick=False, cold=None):
    """Benchmark every shape; returns one dict per shape, then one for memory (and one for cold start)."""
    torch = _torch()
    rows = []
    for shape, reps in SHAPES:
        rows.append(bench_shape(shape, max(3, reps // 5) if quick else reps, torch))
    rows.append({"memory": memory(torch=torch)})
    if cold if cold is not None else not quick:
        rows.append({"cold_start": cold_start()})
    return rows


def _mb(x):
    return "n/a" if x is None else f"{x / 2**20:.1f} MiB"


def markdown(rows):
    lines = ["| (B,H,T,D) | numba ms | numba kernel ms | NumPy ref ms | torch SDPA ms | numba / torch "
             "| kernel / torch | NumPy / torch | best runs: numba / torch | max abs diff vs torch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "shape" not in r:
            continue
        g = lambda key, suffix="": "-" if key not in r else f"{r[key]}{suffix}"  # noqa
        lines.append(f"| {r['shape']} | {g('numba_ms')} | {g('kernel_ms')} | {g('numpy_ms')} | {g('torch_ms')} "
                     f"| {g('numba_vs_torch', 'x')} | {g('kernel_vs_torch', 'x')} | {g('numpy_vs_torch', 'x')} "
                     f"| {g('numba_vs_torch_best', 'x')} | {r.get('max_abs_diff_vs_torch', 0):.1e} |")
    for r in rows:
        if "memory" in r:
            m = r["memory"]
            lines.append("")
            lines.append(f"Peak extra memory, causal fwd+bwd, B=H=1, T={m['T']}, D={m['D']}, float32 "
                         f"(a T x T float32 matrix is {_mb(m['T*T*4_bytes'])}):")
            lines.append(f"- tinyllm numba: {_mb(m['numba_tracemalloc_bytes'])} (tracemalloc), "
                         f"{_mb(m['numba_rss_bytes'])} (peak RSS growth)")
            lines.append(f"- tinyllm NumPy reference: {_mb(m['numpy_rss_bytes'])} (peak RSS growth)")
            if "torch_flash_rss_bytes" in m:
                lines.append(f"- torch SDPA flash: {_mb(m['torch_flash_rss_bytes'])}, torch SDPA math: "
                             f"{_mb(m['torch_math_rss_bytes'])} (peak RSS growth)")
        if "cold_start" in r:
            c = r["cold_start"]
            lines.append("")
            lines.append(f"Cold start (first float32 forward+backward in a fresh process): {c['compile_s']} s "
                         f"compiling into an empty numba cache, {c['cached_s']} s from the cache.")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer reps, no cold-start measurement")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    from tinyllm import backend
    backend.tune_for_training()  # a program: the allocator and thread-pool setup training runs get
    rows = run(quick=args.quick)
    torch = _torch()
    import numba
    print(f"\ncausal attention fwd+bwd, float32, 2 threads; numpy {np.__version__}, numba {numba.__version__}, "
          f"torch {torch.__version__ if torch else 'n/a'}, {platform.processor() or platform.machine()}")
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
