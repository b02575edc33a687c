"""The runner's timing harness: sides taking turns (``alternate``), medians and ratios to torch
(``make_row``), and the machine the numbers came from (``machine_info``)."""
import os

# 2 threads for everyone, set before NumPy / numba / torch are imported so their pools obey.
THREADS = 2
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, str(THREADS))

import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

SIDES = ("numba", "numpy", "torch")  # row keys: numba_ms, numpy_ms, torch_ms, numba_vs_torch, ...
SIDE_LABELS = {"numba": "tinyllm-numba", "numpy": "tinyllm-numpy", "torch": "torch"}

# Before each side's turn we sleep this long, so the previous side's idle worker threads stop spinning
# and do not hold the cores the next side's threads need (benchmarks/README.md, design notes).
COOLDOWN_S = 0.15
ROUNDS = 8  # turns per side over a section's reps: enough for machine noise to hit every side alike
QUICK_ROUNDS = 4  # --quick: half the turns, so half the pauses (they were ~40 of its ~90 s)


def rounds_for(quick):
    return QUICK_ROUNDS if quick else ROUNDS


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


def import_torch():
    """torch on THREADS threads, or None where it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(THREADS)
    return torch


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
    add_ratios(row)
    row.update(extra)
    return row


def add_ratios(row):
    for side in ("numba", "numpy"):
        if row.get(f"{side}_ms") and row.get("torch_ms"):
            row[f"{side}_vs_torch"] = round(row[f"{side}_ms"] / row["torch_ms"], 3)
    return row


def tinyllm_side(kernels, fn):
    """A tinyllm step run under the given kernel family."""
    from tinyllm import backend

    def step():
        with backend.use_kernels(kernels):
            return fn()
    return step


def max_abs_diff(pairs):
    return float(max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max() for a, b in pairs))


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


def loadavg():
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"
