"""The pool's guard (tinyllm/kernels/pool.py): each entry point's size class runs its parallel driver
or its serial one, whichever recent calls say is faster. Driven here by a fake clock and told times,
never timed for real; and the drivers it switches between give the same bits."""
import numpy as np
import pytest

from tinyllm import backend
from tinyllm.kernels import dispatch, gelu, layernorm, pool
from tinyllm.kernels.pool import Guard

KEY = ("layernorm.forward", "layernorm", 17)
MS = 1e-3


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def make(**kw):
    clock = Clock()
    return Guard(clock=clock, **kw), clock


def call(g, seconds, key=KEY):
    """One call of the kernel: the guard's choice, then its time (seconds[parallel?])."""
    parallel = g.choose(key)
    g.observe(key, parallel, seconds[parallel])
    return parallel


def warm(g, clock, par, ser):
    """Past the warm-ups: both drivers timed once for real (the first probe comes after reprobe_s)."""
    times = {True: par, False: ser}
    ran = [call(g, times), call(g, times)]
    clock.t += g.reprobe_s
    ran += [call(g, times), call(g, times)]
    assert ran == [True, True, False, False]  # parallel first, then the serial driver's warm-up and probe
    return times


def test_a_new_size_class_runs_parallel_and_first_calls_are_not_counted():
    g, clock = make()
    assert g.choose(KEY) is True
    g.observe(KEY, True, 10.0)  # compilation or the pool's start: ignored
    assert g.stats[KEY].est[True] is None
    assert call(g, {True: 1 * MS, False: 2 * MS}) is True
    assert g.stats[KEY].est[True] == pytest.approx(1 * MS)
    for _ in range(5):  # no serial call before the first probe is due
        assert call(g, {True: 1 * MS, False: 2 * MS}) is True


def test_parallel_stays_while_it_wins_and_the_serial_probe_backs_off():
    g, clock = make()
    times = warm(g, clock, 1 * MS, 2 * MS)
    assert g.choices() == {KEY: "parallel"}
    assert g.stats[KEY].interval == 2 * g.reprobe_s  # the probe lost: the next one waits twice as long
    for _ in range(20):
        assert call(g, times) is True
    clock.t += 2 * g.reprobe_s
    assert call(g, times) is False  # the next probe
    assert g.stats[KEY].interval == 4 * g.reprobe_s
    for _ in range(10):
        clock.t += g.max_reprobe_s
        call(g, times)
    assert g.stats[KEY].interval == g.max_reprobe_s


def test_stalls_switch_to_serial_within_a_few_calls():
    g, clock = make()
    warm(g, clock, 1 * MS, 2 * MS)
    stalled = {True: 15 * MS, False: 2 * MS}  # the other core is taken: each region waits for it
    ran = [call(g, stalled) for _ in range(6)]
    assert ran[0] is True and ran[-3:] == [False] * 3
    assert ran.count(True) <= 3
    assert g.choices() == {KEY: "serial"}


def test_one_stall_is_capped_and_is_checked_again_soon():
    g, clock = make()
    times = warm(g, clock, 1 * MS, 2 * MS)
    call(g, {True: 1.0, False: 2 * MS})  # one call of a second: counted as at most clip x serial
    assert g.stats[KEY].est[True] <= 1 * MS + g.alpha * (g.clip * 2 * MS)
    # within PARALLEL_MARGIN of serial now: serial runs, and parallel is probed again reprobe_s later
    assert g.choices() == {KEY: "serial"}
    assert g.stats[KEY].next_probe == clock.t + g.reprobe_s
    assert call(g, times) is False
    clock.t += g.reprobe_s
    assert call(g, times) is True  # the probe, at parallel's usual time: back to parallel
    assert g.choices() == {KEY: "parallel"}


def test_a_near_tie_runs_serially():
    """Parallel must win by PARALLEL_MARGIN: on a tie the serial driver leaves a core to other work."""
    g, clock = make()
    warm(g, clock, 1.0 * MS, 1.05 * MS)
    assert g.choices() == {KEY: "serial"}
    g2, clock2 = make()
    warm(g2, clock2, 1.0 * MS, 1.0 * MS * pool.PARALLEL_MARGIN)
    assert g2.choices() == {KEY: "parallel"}


def test_a_lucky_probe_alone_does_not_switch_back():
    """On a busy machine a probe moves its driver's estimate only halfway to its time, so one fast
    parallel probe (the other process happened to sleep) after stalled ones does not switch back."""
    g, clock = make()
    warm(g, clock, 1 * MS, 2 * MS)
    stalled, lucky = {True: 15 * MS, False: 2 * MS}, {True: 1 * MS, False: 2 * MS}
    for _ in range(4):
        call(g, stalled)
    assert g.choices() == {KEY: "serial"}
    for _ in range(2):  # two probes that stall (each counted as at most clip x serial)
        clock.t += g.stats[KEY].interval
        assert call(g, stalled) is True
    est = g.stats[KEY].est[True]
    clock.t += g.stats[KEY].interval
    assert call(g, lucky) is True
    assert g.stats[KEY].est[True] == pytest.approx((est + 1 * MS) / 2)
    assert g.choices() == {KEY: "serial"}
    clock.t += g.stats[KEY].interval
    assert call(g, lucky) is True  # a second good probe: the machine is quiet again
    assert g.choices() == {KEY: "parallel"}


def test_a_quiet_machine_switches_back_at_the_next_probe():
    g, clock = make()
    warm(g, clock, 1 * MS, 2 * MS)
    for _ in range(6):
        call(g, {True: 15 * MS, False: 2 * MS})
    assert g.choices() == {KEY: "serial"}
    clock.t += g.stats[KEY].interval
    assert call(g, {True: 1 * MS, False: 2 * MS}) is True  # the parallel probe wins
    assert g.choices() == {KEY: "parallel"} and g.stats[KEY].interval == g.reprobe_s


def test_size_classes_and_entry_points_are_separate():
    g, clock = make()
    other = ("layernorm.backward", "layernorm", 17)
    warm(g, clock, 1 * MS, 2 * MS)
    for _ in range(6):
        call(g, {True: 15 * MS, False: 2 * MS})
    assert g.choose(other) is True and g.choose(("layernorm.forward", "layernorm", 18)) is True
    assert g.choose(KEY) is False


def test_a_probe_whose_time_never_comes_is_not_repeated_every_call():
    g, clock = make()
    warm(g, clock, 1 * MS, 2 * MS)
    clock.t += g.stats[KEY].interval
    assert g.choose(KEY) is False  # a probe, never reported (a direct call of the numba function)
    assert g.choose(KEY) is True


@pytest.fixture
def guarded(monkeypatch):
    """The one-pool setup with two threads as the dispatcher sees it, and a fresh guard on a fake clock."""
    monkeypatch.setattr(backend, "_one_pool", {"saved": [], "blas_core": None})
    monkeypatch.setattr(pool, "threads", lambda: 2)
    g, clock = make()
    monkeypatch.setattr(pool, "GUARD", g)
    return g, clock


def test_dispatch_reports_each_guarded_call_to_its_key(guarded, monkeypatch):
    g, clock = guarded
    ran = []
    monkeypatch.setattr(layernorm, "_forward_parallel", lambda *a: ran.append("parallel"))
    monkeypatch.setattr(layernorm, "_forward_serial", lambda *a: ran.append("serial"))
    x = np.zeros((256, 512), np.float32)  # 2^17 elements: over the one-pool bar
    w = np.ones(512, np.float32)
    with backend.use_kernels("numba"):
        for _ in range(2):
            layernorm.forward(x, w, w, 1e-5)
    key = ("layernorm.forward", "layernorm", x.size.bit_length())
    assert ran == ["parallel", "parallel"] and g.stats[key].seen[True] and g.stats[key].est[True] is not None
    g.stats[key].est[True] = 1.0  # pretend the parallel driver stalls: the serial one gets its turns
    clock.t += g.reprobe_s
    with backend.use_kernels("numba"):
        for _ in range(3):
            layernorm.forward(x, w, w, 1e-5)
    assert ran[2:] == ["serial", "serial", "serial"]
    assert g.choices()[key] == "serial"


def test_small_work_and_unguarded_rows_never_ask_the_guard(guarded):
    g, _ = guarded
    assert pool.parallel("layernorm", 128) is False  # a decode step's row
    assert pool.parallel("attention", 2 ** 21) is False  # a 64-token window of the recipe model
    assert pool.parallel("gelu", 64 * 512) is False
    assert pool.parallel("matmul", 2 ** 20) is False  # below the matmul row's bar
    assert g.stats == {}


def test_the_guard_off_leaves_the_table_alone(guarded):
    g, _ = guarded
    g.enabled = False
    assert pool.parallel("layernorm", 2 ** 20) is True and g.stats == {}


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_switching_drivers_keeps_the_bits(guarded, approximate):
    """What makes the guard safe for a training run: both drivers of a guarded kernel give the same
    bits on the recipe's shapes (the other kernels' tests force each driver in turn)."""
    g, clock = guarded
    rng = np.random.default_rng(0)
    x = rng.standard_normal((768, 512)).astype(np.float32)
    xl, w, b = rng.standard_normal((768, 128)).astype(np.float32), rng.standard_normal(128).astype(np.float32), \
        rng.standard_normal(128).astype(np.float32)
    outs = {}
    with backend.use_kernels("numba"):
        for parallel in (True, False):
            g.choose = lambda key, parallel=parallel: parallel
            outs[parallel] = (gelu.forward(x, approximate), layernorm.forward(xl, w, b, 1e-5))
    for a, b_ in zip(outs[True], outs[False]):
        for u, v in zip(a if isinstance(a, tuple) else (a,), b_ if isinstance(b_, tuple) else (b_,)):
            np.testing.assert_array_equal(u, v)


def test_every_guarded_row_is_a_row_of_the_table():
    assert pool.GUARDED <= set(pool.PARALLEL_MIN)
    assert "matmul" in pool.GUARDED  # its serial driver is its own block loop (same bits), not numpy's BLAS
    assert all(isinstance(k, dispatch.Kernel) for k in dispatch.KERNELS.values())
