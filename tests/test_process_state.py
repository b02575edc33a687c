"""Importing tinyllm, and using it as a library, changes nothing process-wide: no BLAS or numba thread
count, no allocator setting, no environment variable. ``backend.tune_for_training()`` is the one
explicit call that does, and ``backend.restore_defaults()`` undoes it. Each check runs in a fresh
process, so nothing an earlier test imported or tuned can hide a change."""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("threadpoolctl")

PROBE = r'''
import ctypes, json, os
# record every mallopt call made through ctypes (how a Python library reaches glibc's allocator)
mallopt_calls = []
_getitem = ctypes.CDLL.__getitem__
def _recording_getitem(self, name):
    func = _getitem(self, name)
    if name != "mallopt":
        return func
    def mallopt(param, value):
        mallopt_calls.append([int(param), int(value)])
        return func(param, value)
    return mallopt
ctypes.CDLL.__getitem__ = _recording_getitem

import numpy as np
import scipy.linalg.cython_blas  # loads the BLAS numba's np.dot calls, so its state is seen before import
import numba
from threadpoolctl import threadpool_info

def state():
    return {"threads": sorted((i["filepath"], i["num_threads"]) for i in threadpool_info()),
            "numba": numba.get_num_threads(), "mallopt": list(mallopt_calls),
            "environ": dict(os.environ)}

states = {"before": state()}
import tinyllm as tl
states["import"] = state()
from tinyllm.models.gpt import GPT, GPTConfig
model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=64))
ids = np.random.default_rng(0).integers(0, 50, (4, 33))
logits, loss = model(ids[:, :-1], ids[:, 1:])  # big enough for the parallel kernels
loss.backward()
model.generate(ids[:1, :5], max_new_tokens=3)
states["library use"] = state()
states["tuned"] = tl.backend.tune_for_training()
states["after tune"] = state()
states["restored"] = tl.backend.restore_defaults()
states["after restore"] = state()
print(json.dumps(states))
'''


def probe(**env):
    out = subprocess.run([sys.executable, "-c", PROBE], env=dict(os.environ, **env), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_and_library_use_change_nothing_process_wide():
    s = probe()
    before = dict(map(tuple, s["before"]["threads"]))
    assert any("scipy" in path for path in before)  # the BLAS tuning would touch is loaded and seen
    for stage in ("import", "library use"):
        now = dict(map(tuple, s[stage]["threads"]))
        assert {path: now[path] for path in before} == before, stage
        assert s[stage]["numba"] == s["before"]["numba"], stage
        assert s[stage]["mallopt"] == [], stage
        assert s[stage]["environ"] == s["before"]["environ"], stage


def test_tune_for_training_is_the_explicit_call_and_restore_defaults_undoes_it():
    s = probe()
    tuned = s["tuned"]
    assert tuned["malloc"] is True  # glibc: this project's machines and CI
    params = {p for p, _ in s["after tune"]["mallopt"]}
    assert {-1, -2, -3} <= params  # M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD
    before = dict(map(tuple, s["before"]["threads"]))
    after = dict(map(tuple, s["after tune"]["threads"]))
    changed = {path for path in before if after[path] != before[path]}
    if tuned["one_pool"]:
        assert changed and all(after[path] == 1 for path in changed)
        assert all("scipy" in path for path in changed)  # numpy's own BLAS keeps its threads
    else:
        assert not changed
    assert s["restored"] == tuned
    restored = dict(map(tuple, s["after restore"]["threads"]))
    assert {path: restored[path] for path in before} == before
    restore_calls = s["after restore"]["mallopt"][len(s["after tune"]["mallopt"]):]
    assert dict(restore_calls)[-3] == 128 * 1024  # glibc's default mmap threshold again
    assert s["after restore"]["environ"] == s["before"]["environ"]


def test_the_variables_that_refuse_tuning():
    s = probe(TINYLLM_MALLOC_TUNING="0", TINYLLM_ONE_POOL="0")
    assert s["tuned"] == {"malloc": False, "one_pool": False}
    before, after = dict(map(tuple, s["before"]["threads"])), dict(map(tuple, s["after tune"]["threads"]))
    assert s["after tune"]["mallopt"] == [] and {path: after[path] for path in before} == before
