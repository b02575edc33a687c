"""Shared pytest setup: hypothesis profiles, the ``torch`` marker and fixture, and a guard that
puts tinyllm's global state (default dtype, grad mode) back after every test."""
import os

import pytest
from hypothesis import HealthCheck, settings

import tinyllm as tl

try:
    import torch as _torch
except ImportError:  # torch is only a test oracle; without it the parity checks are skipped
    _torch = None

# "ci" keeps the whole suite fast; "dev" digs deeper (HYPOTHESIS_PROFILE=dev pytest ...).
settings.register_profile("ci", deadline=None, max_examples=30, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=300, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    # setup.cfg declares `slow`; registering here too keeps --strict-markers happy without it.
    config.addinivalue_line("markers", "slow: long-running tests (deselect with -m 'not slow')")
    config.addinivalue_line("markers", "torch: needs torch as an oracle; skipped when it is not installed")


def pytest_collection_modifyitems(config, items):
    if _torch is not None:
        return
    skip = pytest.mark.skip(reason="torch not installed")
    for item in items:
        if item.get_closest_marker("torch") is not None:
            item.add_marker(skip)


@pytest.fixture
def torch():
    """The torch module, or a skip when it is not installed."""
    if _torch is None:
        pytest.skip("torch not installed")
    return _torch


@pytest.fixture(autouse=True)
def _restore_tinyllm_globals():
    """A test that changes the default dtype or grad mode must not leak it into the next one."""
    dtype, grad_enabled = tl.get_default_dtype(), tl.is_grad_enabled()
    yield
    tl.set_default_dtype(dtype)
    tl.autograd.grad_mode.enabled = grad_enabled
