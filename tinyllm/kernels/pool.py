"""One thread pool for the hot path, numba's, and the table of sizes at which each kernel's parallel
driver pays for starting it.

Two thread pools on few cores fight: OpenBLAS's threads keep spinning for a while after each numpy
matmul, on the cores numba's parallel kernels want next. So in the one-pool setup the matmuls of a
training step run inside numba's pool too (``matmul.py``), through the BLAS that numba's ``np.dot``
calls: scipy's OpenBLAS, a separate library from numpy's, which ``backend.tune_for_training()`` sets
to one thread.
numpy's own BLAS keeps its threads for everything else a user does with numpy.

``active()`` is True once ``tinyllm.backend.tune_for_training()`` has set that up.

A parallel region ends when its slowest thread does, so when another process holds a core, every
region waits for the descheduled thread to run again: milliseconds, against microseconds of work for a
decode step's kernels. Two defences, both here: the sizes in ``PARALLEL_MIN`` keep a decode step's
work (one token, or a block-sized window of a small model) out of the pool altogether, and ``GUARD``
times each entry point's calls both ways at each size (``dispatch`` reports the times) and runs the
serial driver while it is the faster. The guard only switches rows whose two drivers give the same
bits (``GUARDED``), so a busy machine changes the speed of a run, never its numbers.
"""
import math
import time

from .. import backend

# kernel -> (the least work for its parallel driver in the one-pool setup, the same outside it).
# In it the bar is the pool's start, a few microseconds; outside it, BLAS threads that may still be
# spinning, so the bar is far higher (infinite where numpy's own threaded BLAS or operator is as good).
# Work is elements, except for the rows measured in flops.
PARALLEL_MIN = {
    "adam": (2 ** 14, 2 ** 20),
    "layernorm": (2 ** 14, 2 ** 20),
    "softmax": (2 ** 15, 2 ** 21),
    "cross_entropy": (2 ** 15, 2 ** 21),  # N * C
    "gelu": (2 ** 17, 2 ** 21),  # a decode window of the recipe model (64 x 512) stays serial
    "elementwise": (2 ** 15, math.inf),
    "attention": (2 ** 22, 2 ** 27),  # flops, ~4 B H L S D a pass; a decode window (2^21) stays serial
    "matmul": (2 ** 21, math.inf),  # flops, 2 M K N; below it one BLAS call on the calling thread wins
}
# The rows whose parallel and serial drivers give the same bits (the same blocks, each computed the
# same way), which the guard may therefore switch. matmul's serial driver runs the same blocks one
# after another on the calling thread (``matmul.py``), not numpy's BLAS, which rounds differently.
GUARDED = frozenset({"adam", "layernorm", "softmax", "cross_entropy", "gelu", "elementwise", "attention",
                     "matmul"})


def parallel(kernel, work, guard=True):
    """Run ``kernel``'s parallel driver on ``work``? With more than one thread, when the work reaches
    the kernel's minimum in ``PARALLEL_MIN`` (the one-pool column when the setup holds), and, for a
    guarded row, when ``GUARD`` says so (``guard=False``: the table's answer alone)."""
    in_pool, shared = PARALLEL_MIN[kernel]
    if work < in_pool and work < shared:  # too small either way: the common case, answered cheaply
        return False
    if not (work >= (in_pool if active() else shared) and threads() > 1):
        return False
    if not guard or kernel not in GUARDED or not GUARD.enabled:
        return True
    global _asked
    key = (_calling, kernel, int(work).bit_length())
    _asked = (key, GUARD.choose(key))
    return _asked[1]


_calling = None  # the entry point dispatch is running (set by dispatch.Kernel.__call__)
_asked = None  # (key, parallel?) of the guard's last answer, for dispatch to report the call's time


class Guard:
    """Runs each (entry point, kernel row, size class) parallel or serially, whichever its recent calls
    say is faster. Sizes are classed by powers of two of the work.

    A new size class starts parallel (the table's choice). Parallel stays preferred only while its
    estimate beats serial's by ``PARALLEL_MARGIN``: a near tie goes to serial, which leaves a core to
    whatever else runs. Once a parallel call has been timed (the
    first call of each driver is a warm-up and is not counted), the serial driver gets a turn every
    ``reprobe_s`` seconds, and from then on the slower of the two does: it is the probe. The preferred
    driver's times feed an exponential average (``alpha``), each sample capped at ``clip`` times the
    other's estimate so that one stall does not outweigh many calls. A probe moves its driver's
    estimate halfway to its time: one lucky parallel probe on a busy machine (the other process
    happened to sleep) does not switch back alone, a second good one on a quiet machine does. A probe
    that loses doubles the wait before the next (up to ``max_reprobe_s``); a switch resets it, so a
    switch on one hiccup is undone ``reprobe_s`` later.

    Deterministic given its clock and the times it is told: ``choose(key)`` and ``observe(key,
    parallel, seconds)``.
    """

    def __init__(self, clock=time.perf_counter, alpha=0.25, clip=2.0, reprobe_s=0.5, max_reprobe_s=8.0):
        self.clock, self.alpha, self.clip = clock, alpha, clip
        self.reprobe_s, self.max_reprobe_s = reprobe_s, max_reprobe_s
        self.enabled = True
        self.stats = {}

    def reset(self):
        self.stats.clear()

    def choose(self, key):
        s = self.stats.get(key)
        if s is None:
            s = self.stats[key] = _Stats(self.clock() + self.reprobe_s, self.reprobe_s)
        if s.est[True] is None:  # parallel first, until one call of it has been timed
            return True
        preferred = s.preferred()
        if s.est[not preferred] is None and s.seen[not preferred]:  # its warm-up ran: time it now
            s.probing = not preferred
            return not preferred
        if self.clock() >= s.next_probe:
            s.probing = not preferred
            s.next_probe = self.clock() + s.interval  # also if its time is never reported
            return not preferred
        return preferred

    def observe(self, key, parallel, seconds):
        s = self.stats.get(key)
        if s is None:
            return
        if not s.seen[parallel]:  # the first call of a driver: compilation, cache loads, thread start
            s.seen[parallel] = True
            if s.probing is parallel:
                s.probing = None
            return
        other = s.est[not parallel]
        if other is not None:
            seconds = min(seconds, self.clip * other)
        if s.probing is parallel:  # a probe: it moves its driver's estimate halfway to its time
            s.probing = None
            before, est = s.preferred(), s.est[parallel]
            s.est[parallel] = seconds if est is None else (est + seconds) / 2
            if s.est[not parallel] is not None:
                won = s.preferred() != before
                s.interval = self.reprobe_s if won else min(2 * s.interval, self.max_reprobe_s)
                s.next_probe = self.clock() + s.interval
            return
        before, est = s.preferred(), s.est[parallel]
        s.est[parallel] = seconds if est is None else est + self.alpha * (seconds - est)
        if s.preferred() != before:  # a switch on the average: check it again soon, it may be a hiccup
            s.interval, s.next_probe = self.reprobe_s, self.clock() + self.reprobe_s

    def choices(self):
        """{key: 'parallel' or 'serial'}: what each size class runs now (for reports)."""
        return {k: "parallel" if s.preferred() else "serial" for k, s in self.stats.items()}


PARALLEL_MARGIN = 1.15  # parallel runs only while it beats serial by this factor: near a tie, noise in the
# two estimates flipped the choice every few calls on a busy machine, and each parallel call then stalled
# (the recipe step with one competing process: 114 ms against 103 ms always serial, design notes)


class _Stats:
    __slots__ = ("est", "seen", "probing", "next_probe", "interval")

    def __init__(self, next_probe, interval):
        self.est = {True: None, False: None}  # seconds a call, parallel and serial
        self.seen = {True: False, False: False}
        self.probing = None  # the driver whose turn is a probe, if one is out
        self.next_probe, self.interval = next_probe, interval

    def preferred(self):
        par, ser = self.est[True], self.est[False]
        return par is not None and (ser is None or par * PARALLEL_MARGIN <= ser)


GUARD = Guard()


def guard_chose_serial():
    """Did the guard just answer "serial" for the call dispatch is running? (A kernel whose serial
    driver is its own, not the NumPy twin, asks this to pick it.)"""
    return _asked is not None and not _asked[1]


def report(seconds):
    """dispatch's report: the call it just ran, if the guard chose its driver, took ``seconds``."""
    global _asked
    if _asked is not None:
        key, parallel = _asked
        _asked = None
        GUARD.observe(key, parallel, seconds)


def threads():
    """numba's thread count now (``numba.set_num_threads`` may change it). Asked before every kernel
    call, so it uses numba's ctypes getter, several times cheaper than ``numba.get_num_threads``."""
    global _get_threads
    if _get_threads is None:
        try:
            import numba
            numba.get_num_threads()  # starts numba's thread pool, which the getter needs
            from numba.np.ufunc.parallel import _get_num_threads
            _get_threads = _get_num_threads if _get_num_threads() > 0 else numba.get_num_threads
        except Exception:  # pragma: no cover - numba is a core dependency; a private name may move
            import numba
            _get_threads = numba.get_num_threads
    return _get_threads()


_get_threads = None


def active():
    """Whether the one-pool setup holds (``backend.tune_for_training()`` sets it up; never in plain mode)."""
    return backend._one_pool is not None and not backend.plain()


def blas_core():
    """The kernel family of the BLAS that numba's np.dot calls, lowercased, as OpenBLAS reports it
    ('skylakex', 'haswell', 'zen', ...); None outside the one-pool setup or when it says nothing."""
    return backend._one_pool["blas_core"] if active() else None
