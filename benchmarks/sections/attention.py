"""The attention section: benchmarks/attention_bench.py's shapes and memory measurement, timed in the
runner's turns."""
from benchmarks.harness import alternate


def _attention_row(r):
    r = dict(section="attention", name=f"causal {r['shape']}", **r)
    r["numba_reps"] = r["torch_reps"] = r["reps"]
    if "numpy_ms" in r:  # attention_bench's NumPy phase
        r["numpy_reps"] = max(3, r["reps"] // 4)
    return r


def run(ctx, quick):
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
             "Target (benchmarks/README.md, anchors): at most 1.0x torch's fused attention with O(T) extra memory."]
    return rows, notes
