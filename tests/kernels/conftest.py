"""Fixtures for the kernel tests: the one-pool setup, switched on for a test and off after it."""
import pytest

from tinyllm import backend


@pytest.fixture
def one_pool():
    """``tinyllm.backend.tune_for_training()`` for the test (the one-pool setup, in which the matmul
    and elementwise kernels take their numba versions), undone after it unless it held before.
    Yields whether the one-pool setup applies on this machine."""
    before = backend.tuning()
    applied = backend.tune_for_training()
    try:
        yield applied["one_pool"]
    finally:
        if not any(before.values()):
            backend.restore_defaults()


@pytest.fixture(autouse=True)
def no_guard(monkeypatch):
    """The kernel tests pick drivers through the size table (``helpers.force_driver``); the guard,
    which would switch a forced parallel driver to the serial one once it proves slower on tiny test
    arrays, stays out of them (tests/kernels/test_guard.py tests it with a clock of its own)."""
    from tinyllm.kernels import pool
    monkeypatch.setattr(pool.GUARD, "enabled", False)
