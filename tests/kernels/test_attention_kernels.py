"""The fused numba attention kernels (tinyllm/kernels/attention.py) against their NumPy twin
on random shapes, against torch's SDPA through
``F.scaled_dot_product_attention``, by finite differences, as plain Python (NUMBA_DISABLE_JIT=1),
and for their O(T) memory."""
import math
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyllm as tl
import tinyllm.nn.functional as F
from tinyllm import backend
from tinyllm.kernels import attention as A

from helpers import check_op, force_driver

try:
    import torch
    TSDPA = torch.nn.functional.scaled_dot_product_attention
except ImportError:  # torch is only the oracle
    torch = TSDPA = None

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
# sides around the tile sizes (64 outside the one-pool setup, 128 in it), T = 1, and a few in between
SIDES = st.one_of(st.integers(1, 150), st.sampled_from([1, 2, 63, 64, 65, 127, 128, 129, 255, 257]))
HEAD_DIMS = st.sampled_from([1, 7, 32, 64, 1, 7, 32, 64, 128])  # 128 now and then: it is the slow one


def _inputs(rng, B, H, L, S, D, Dv, dtype, logits=1.0):
    q = rng.standard_normal((B, H, L, D)) * logits
    k = rng.standard_normal((B, H, S, D))
    v = rng.standard_normal((B, H, S, Dv))
    dout = rng.standard_normal((B, H, L, Dv))
    return [x.astype(dtype) for x in (q, k, v, dout)]


def _both(q, k, v, dout, scale, causal):
    """((out, lse, dq, dk, dv) of the numba kernel, the same of the NumPy reference)."""
    res = []
    for fwd, bwd in ((A.attention_forward_numba, A.attention_backward_numba),
                     (A.attention_forward_numpy, A.attention_backward_numpy)):
        out, lse = fwd(q, k, v, scale, causal)
        res.append((out, lse) + tuple(bwd(q, k, v, out, lse, dout, scale, causal)))
    return res


def _assert_close(ours, ref, q, k, v, dout, scale, tol, what=""):
    """rtol = tol, and atol = tol times the size of the terms each result sums (relative-ish: a
    gradient that is a sum of cancelling terms is judged on the terms, not on its rounding noise)."""
    mq, mk, mv, mdo = (float(np.abs(x).max(initial=0)) for x in (q, k, v, dout))
    sizes = {"out": mv, "lse": 1.0, "dq": abs(scale) * mdo * mv * mk, "dk": abs(scale) * mdo * mv * mq,
             "dv": mdo}
    for name, a, b in zip(sizes, ours, ref):
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what}{name}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
        atol = tol * max(sizes[name], 1e-30)
        if name == "lse":
            atol = tol * max(1.0, float(np.abs(b[np.isfinite(b)]).max(initial=0)))
        np.testing.assert_allclose(a, b, rtol=tol, atol=atol, err_msg=f"{what}{name}")


# ---------------------------------------------------------------------------------------------
# numba twin == NumPy twin
# ---------------------------------------------------------------------------------------------
@settings(deadline=None)
@given(B=st.integers(1, 2), H=st.integers(1, 3), L=SIDES, S=SIDES, D=HEAD_DIMS, Dv=HEAD_DIMS,
       causal=st.booleans(), dtype=st.sampled_from([np.float64, np.float32]),
       scale=st.sampled_from([None, None, 0.05, 1.7, -0.5]), large=st.booleans(), seed=st.integers(0, 2**16))
def test_numba_matches_numpy_twin(B, H, L, S, D, Dv, causal, dtype, scale, large, seed):
    rng = np.random.default_rng(seed)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    if large and dtype == np.float32:
        dtype = np.float64  # float32 scores of 1e4 round by ~1e-3: see test_large_logits_float32
    # large: q scaled so that the scores are ~ +-1e4 (softmax all but one-hot, exp underflows)
    logits = 1e4 / (abs(scale) * math.sqrt(D)) if large else 1.0
    q, k, v, dout = _inputs(rng, B, H, L, S, D, Dv, dtype, logits)
    ours, ref = _both(q, k, v, dout, scale, causal)
    for x in ours:
        assert np.isfinite(x).all()
    _assert_close(ours, ref, q, k, v, dout, scale, TOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("L,S", [(1, 1), (63, 63), (64, 64), (65, 65), (129, 129), (1, 130), (130, 1),
                                 (70, 200), (200, 70), (257, 257)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("tiles", [(64, 64), (128, 128), (32, 64), (32, 32), (64, 128)])
def test_edges(monkeypatch, dtype, L, S, causal, tiles):
    """Every tile size the kernels run with (see attention._tiles), and a mixed one."""
    monkeypatch.setattr(A, "_tiles", lambda *shape, **how: tiles)
    rng = np.random.default_rng(L * 1000 + S)
    q, k, v, dout = _inputs(rng, 1, 3, L, S, 16, 24, dtype)  # B*H = 3: odd, so work items split
    ours, ref = _both(q, k, v, dout, 0.25, causal)
    _assert_close(ours, ref, q, k, v, dout, 0.25, TOL[np.dtype(dtype)])


@pytest.mark.parametrize("core,active,L,expected", [
    ("haswell", True, 1024, (128, 128)), ("zen", True, 256, (128, 128)),
    ("haswell", True, 255, (64, 64)),  # too short for the big tiles
    ("skylakex", True, 1024, (64, 64)), ("sapphirerapids", True, 4096, (64, 64)),
    (None, True, 1024, (128, 128)),  # a BLAS that names no kernel family: the AVX2 choice
    ("haswell", False, 1024, (64, 64)),  # outside the one-pool setup
])
def test_tile_choice(monkeypatch, core, active, L, expected):
    """128-wide tiles only for long sequences in the one-pool setup on a BLAS without AVX-512 kernels;
    32-row tiles for causal attention over at most 128 positions."""
    monkeypatch.setattr(A.pool, "active", lambda: active)
    monkeypatch.setattr(A.pool, "blas_core", lambda: core if active else None)
    assert A._tiles(L, L) == A._tiles(L, L, causal=True, backward=True) == expected
    for L, S in ((64, 64), (1, 128), (128, 100)):
        assert A._tiles(L, S, causal=True) == (32, 64)
        assert A._tiles(L, S, causal=True, backward=True) == (32, 32)
        assert A._tiles(L, S) == (64, 64)


def test_blas_core_is_reported(one_pool):
    """In the one-pool setup, pool.blas_core is the kernel family threadpoolctl reports for scipy's
    OpenBLAS, lowercased; outside it (here: in plain mode), None."""
    from tinyllm.kernels import pool
    if not one_pool:
        pytest.skip("the one-pool setup does not apply on this machine (one numba thread, or a shared BLAS)")
    core = pool.blas_core()
    with backend.use_plain():
        assert pool.blas_core() is None
    import scipy
    from threadpoolctl import threadpool_info
    scipy_root = os.path.dirname(os.path.abspath(scipy.__file__))
    reported = {str(i.get("architecture") or "").lower() or None for i in threadpool_info()
                if i["user_api"] == "blas" and os.path.abspath(i["filepath"]).startswith(scipy_root)}
    assert core in reported


@pytest.mark.parametrize("threads", [1, 3, 8])
@pytest.mark.parametrize("driver", ["parallel", "serial"])
def test_split_work_items(monkeypatch, threads, driver):
    """Splitting a (b, h) over several work items (query tiles in the forward, key tiles and dQ
    copies in the backward) gives the same result; patched thread counts force every split, and a
    patched size threshold forces the parallel driver (prange) or the serial one (plain range)."""
    monkeypatch.setattr(A, "_threads", lambda: threads)
    force_driver(monkeypatch, A, driver)
    rng = np.random.default_rng(threads)
    q, k, v, dout = _inputs(rng, 1, 2, 300, 260, 8, 8, np.float64)
    for causal in (False, True):
        ours, ref = _both(q, k, v, dout, 0.3, causal)
        _assert_close(ours, ref, q, k, v, dout, 0.3, 1e-10, f"threads={threads} causal={causal}: ")


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("L,S", [(70, 200), (200, 70), (64, 64)])
def test_backward_writes_every_gradient_element(monkeypatch, threads, L, S):
    """The backward writes its first product into each gradient tile (beta = 0) and zeroes the tiles
    no product reaches (causal keys past the last query): with dq, dk, dv handed over full of NaN,
    every element must still come out right."""
    monkeypatch.setattr(A, "_threads", lambda: threads)
    rng = np.random.default_rng(L + S + threads)
    q, k, v, dout = _inputs(rng, 1, 3, L, S, 16, 8, np.float64)
    real_empty = np.empty

    def poisoned_empty(shape, dtype=float, *args, **kwargs):
        return np.full(shape, np.nan, dtype)

    for causal in (False, True):
        out, lse = A.attention_forward_numba(q, k, v, 0.25, causal)
        A.attention_backward_numba(q, k, v, out, lse, dout, 0.25, causal)  # compiled before np is patched
        monkeypatch.setattr(A.np, "empty", poisoned_empty)
        try:
            grads = A.attention_backward_numba(q, k, v, out, lse, dout, 0.25, causal)
        finally:
            monkeypatch.setattr(A.np, "empty", real_empty)
        ref = A.attention_backward_numpy(q, k, v, out, lse, dout, 0.25, causal)
        for g, r in zip(grads, ref):
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_large_logits_float32(causal):
    """Scores of +-1e4 in float32: finite results, and both twins within the rounding of the scores
    (a float32 score of 1e4 is only good to ~1e-3, which moves the probabilities by as much)."""
    rng = np.random.default_rng(1)
    D = 32
    scale = 1.0 / math.sqrt(D)
    q, k, v, dout = _inputs(rng, 2, 2, 100, 100, D, D, np.float32, 1e4)  # scores ~ N(0, 1e4^2)
    ours, ref = _both(q, k, v, dout, scale, causal)
    for x in ours:
        assert np.isfinite(x).all()
    s_max = float(np.abs(np.einsum("bhld,bhsd->bhls", q.astype(np.float64), k.astype(np.float64))).max()) * scale
    assert s_max > 1e4
    s_err = 64 * np.finfo(np.float32).eps * s_max  # how far the rounded scores themselves may differ
    np.testing.assert_allclose(ours[0], ref[0], atol=s_err * np.abs(v).max())
    np.testing.assert_allclose(ours[1], ref[1], rtol=1e-6, atol=s_err)


def test_all_keys_masked_gives_zero_and_minus_inf():
    """S = 0 is not reachable from F.scaled_dot_product_attention, but the kernel is total."""
    q = np.ones((1, 2, 3, 4))
    out, lse = A.attention_forward_numba(q, np.ones((1, 2, 0, 4)), np.ones((1, 2, 0, 5)), 1.0)
    assert out.shape == (1, 2, 3, 5) and (out == 0).all() and (lse == -np.inf).all()


# ---------------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------------
class _Spy:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *a, **kw):
        self.calls += 1
        return self.fn(*a, **kw)


@pytest.fixture
def spies(monkeypatch):
    s = {name: _Spy(getattr(A, name)) for name in
         ("attention_forward_numba", "attention_backward_numba", "attention_forward_numpy", "attention_backward_numpy")}
    for name, spy in s.items():
        monkeypatch.setattr(A, name, spy)
    return s


def _run_sdpa(dtype=np.float32, mask=None, causal=False):
    rng = np.random.default_rng(0)
    q, k, v = (tl.tensor(rng.standard_normal((2, 2, 9, 4)).astype(dtype), requires_grad=True) for _ in range(3))
    F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal).sum().backward()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dispatch_numba_without_mask(spies, dtype):
    with backend.use_kernels("numba"):
        _run_sdpa(dtype, causal=True)
    assert spies["attention_forward_numba"].calls == 1 and spies["attention_backward_numba"].calls == 1
    assert spies["attention_forward_numpy"].calls == 0 and spies["attention_backward_numpy"].calls == 0


@pytest.mark.parametrize("case", ["bool mask", "float mask", "numpy kernels", "float16"])
def test_dispatch_reference_otherwise(spies, case):
    kernels = "numpy" if case == "numpy kernels" else "numba"
    mask = {"bool mask": np.tril(np.ones((9, 9), bool)), "float mask": np.zeros((9, 9))}.get(case)
    with backend.use_kernels(kernels):
        _run_sdpa(np.float16 if case == "float16" else np.float32, mask=mask)
    assert spies["attention_forward_numba"].calls == 0 and spies["attention_backward_numba"].calls == 0
    assert spies["attention_forward_numpy"].calls == 1 and spies["attention_backward_numpy"].calls == 1


# ---------------------------------------------------------------------------------------------
# against torch and finite differences, through F.scaled_dot_product_attention
# ---------------------------------------------------------------------------------------------
SDPA_CASES = [  # (q, k, v) shapes and options: tiles cut by the causal diagonal, L != S both ways
    ([(2, 3, 70, 16), (2, 3, 70, 16), (2, 3, 70, 16)], {"is_causal": True}),
    ([(2, 3, 70, 16), (2, 3, 70, 16), (2, 3, 70, 16)], {}),
    ([(1, 2, 65, 8), (1, 2, 130, 8), (1, 2, 130, 5)], {"is_causal": True}),
    ([(1, 2, 130, 8), (1, 2, 65, 8), (1, 2, 65, 5)], {"is_causal": True, "scale": 0.7}),
    ([(3, 129, 32), (3, 100, 32), (3, 100, 7)], {"scale": -0.2}),
    ([(1, 1, 1, 4), (1, 1, 1, 4), (1, 1, 1, 4)], {"is_causal": True}),
]


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shapes,options", SDPA_CASES)
def test_sdpa_numba_vs_torch(dtype, shapes, options):
    """Forward and gradients vs torch's SDPA (float64: 1e-7 / 1e-6), plus a float64 gradcheck."""
    with backend.use_kernels("numba"):
        check_op(shapes, F.scaled_dot_product_attention, TSDPA, dtype=dtype, **options)


# ---------------------------------------------------------------------------------------------
# plain Python and memory
# ---------------------------------------------------------------------------------------------
def test_runs_as_plain_python_under_disable_jit():
    code = textwrap.dedent("""
        import numpy as np
        from numba import config
        assert config.DISABLE_JIT
        from tinyllm.kernels import attention as A
        rng = np.random.default_rng(0)
        for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
            q, k, v, do = (rng.standard_normal(s).astype(dtype) for s in [(1, 1, 70, 3), (1, 1, 66, 3), (1, 1, 66, 2), (1, 1, 70, 2)])
            for causal in (False, True):
                o, l = A.attention_forward_numba(q, k, v, 0.5, causal)
                g = A.attention_backward_numba(q, k, v, o, l, do, 0.5, causal)
                o2, l2 = A.attention_forward_numpy(q, k, v, 0.5, causal)
                g2 = A.attention_backward_numpy(q, k, v, o2, l2, do, 0.5, causal)
                for a, b in zip((o, l) + tuple(g), (o2, l2) + tuple(g2)):
                    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        print("ok")
    """)
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]


def _peak_bytes(T, D=64, causal=True):
    """Peak bytes allocated (tracemalloc sees NumPy's and numba's allocations) by numba forward +
    backward at B=1, H=1, beyond the inputs."""
    rng = np.random.default_rng(0)
    q, k, v, dout = _inputs(rng, 1, 1, T, T, D, D, np.float32)
    out, lse = A.attention_forward_numba(q, k, v, 0.125, causal)  # compile (and pick the same driver) first
    A.attention_backward_numba(q, k, v, out, lse, dout, 0.125, causal)
    del out, lse
    tracemalloc.start()
    try:
        out, lse = A.attention_forward_numba(q, k, v, 0.125, causal)
        grads = A.attention_backward_numba(q, k, v, out, lse, dout, 0.125, causal)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del out, lse, grads
    return peak


def test_memory_is_linear_in_T(record_property):
    """At T=4096, D=64 a T x T float32 buffer alone would be 64 MiB; the kernels' peak extra memory
    (outputs and gradients included) is a few T*D arrays, and doubling T doubles it."""
    T = 4096
    peak = _peak_bytes(T)
    half = _peak_bytes(T // 2)
    record_property("peak_bytes_T4096", peak)
    print(f"numba attention fwd+bwd peak extra memory at B=H=1, T={T}, D=64 (float32): {peak / 2**20:.2f} MiB "
          f"(T*T*4 = {T * T * 4 / 2**20:.0f} MiB); at T={T // 2}: {half / 2**20:.2f} MiB")
    assert peak < T * T * 4 / 4
    assert peak < 16 * T * 64 * 4  # a handful of (T, D) arrays
    assert peak / half < 2.5  # linear, not quadratic, in T


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("a_t", [False, True])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 5, 3), (64, 32, 64), (3, 130, 17)])
@pytest.mark.parametrize("name", ["_gemm_acc", "_gemm_into"])
def test_gemm_helpers_match_their_numpy_meaning(dtype, a_t, m, n, k, name):
    """The kernels' BLAS helpers, c += op(a) @ b (beta = 1) and c = op(a) @ b (beta = 0), also for
    row-strided views of a, b and c (as the kernels pass slices of their tiles, of dK, dV, dQ, and
    the heads of a packed qkv)."""
    from numba import njit
    fn = getattr(A, name)
    run = njit(lambda a_t, a, b, c: fn(a_t, a, b, c))
    rng = np.random.default_rng(m * n * k)
    a_full = rng.standard_normal(((k, m + 3) if a_t else (m, k + 3))).astype(dtype)
    a = a_full[:, 1:m + 1] if a_t else a_full[:, 2:k + 2]  # rows of stride (m or k) + 3
    b = rng.standard_normal((k, n + 4)).astype(dtype)[:, 2:n + 2]  # rows of stride n + 4
    c0 = rng.standard_normal((m, 2 * n)).astype(dtype)
    c_numba, c_numpy = c0.copy(), c0.copy()
    run(a_t, a, b, c_numba[:, :n])
    fn(a_t, a, b, c_numpy[:, :n])
    expected = (a.T if a_t else a) @ b + (c0[:, :n] if name == "_gemm_acc" else 0)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c_numpy[:, :n], expected, rtol=tol, atol=tol * k)
    np.testing.assert_allclose(c_numba, c_numpy, rtol=tol, atol=tol * k)
    np.testing.assert_array_equal(c_numba[:, n:], c0[:, n:])  # the rest of c's rows untouched


# ---------------------------------------------------------------------------------------------
# q, k, v read where they lie: the heads of a packed qkv projection
# ---------------------------------------------------------------------------------------------
def _packed(rng, B, L, H, D, dtype):
    """q, k, v as a GPT's attention takes them: (B, H, L, D) views of one (B, L, 3, H, D) projection."""
    qkv = rng.standard_normal((B, L, 3, H, D)).astype(dtype).transpose(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("L", [2, 63, 65, 130])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dout_layout", ["as the projection sends it", "contiguous"])
@pytest.mark.parametrize("threads", [None, 4])
def test_views_of_a_packed_qkv_are_read_in_place(monkeypatch, dtype, L, causal, dout_layout, threads):
    """No copies of q, k, v, an output whose transpose(1, 2) is contiguous (so the (B, L, C) the output
    projection reads is a view, as with torch's CPU flash attention), dq, dk, dv written into one
    buffer laid out as the projection (so the engine can hand it on as the projection's gradient), and
    the reference's results;
    also with work items split (4 threads: B*H = 6 splits in 2 for L > 64) and either layout of the
    upstream gradient."""
    if threads:
        monkeypatch.setattr(A, "_threads", lambda: threads)
    rng = np.random.default_rng(L)
    B, H, D = 2, 3, 16
    q, k, v = _packed(rng, B, L, H, D, dtype)
    assert all(a is b for a, b in zip(A.kernel_inputs(q, k, v), (q, k, v)))
    dout = rng.standard_normal((B, L, H, D)).astype(dtype).transpose(0, 2, 1, 3)
    if dout_layout == "contiguous":
        dout = np.ascontiguousarray(dout)
    ours, ref = _both(q, k, v, dout, 0.25, causal)
    _assert_close(ours, ref, q, k, v, dout, 0.25, TOL[np.dtype(dtype)])
    # the output is laid out as (B, L, H, D); dq, dk, dv lie in one new (B, L, 3, H, D) buffer where
    # q, k, v lie in the projection
    assert ours[0].transpose(0, 2, 1, 3).flags.c_contiguous
    grads = ours[2:]
    buf = grads[0].base
    assert buf is not q.base and buf.shape == q.base.shape and buf.flags.c_contiguous
    packed = buf.reshape(B, L, 3, H, D).transpose(2, 0, 3, 1, 4)
    for i, g in enumerate(grads):
        assert g.base is buf and g.strides == q.strides and np.shares_memory(g, packed[i])
        np.testing.assert_array_equal(g, packed[i])


def test_heads_of_a_larger_array_get_gradients_of_their_own_size():
    """q, k, v read in place from an array that holds more than them (a fourth slot): their gradients
    are not packed into a buffer of that array's size, and are still right."""
    rng = np.random.default_rng(3)
    wide = rng.standard_normal((2, 40, 4, 3, 8)).transpose(2, 0, 3, 1, 4)  # (4, B, H, L, D), 3 used
    q, k, v = wide[0], wide[1], wide[2]
    assert all(a is b for a, b in zip(A.kernel_inputs(q, k, v), (q, k, v)))
    dout = rng.standard_normal((2, 3, 40, 8))
    ours, ref = _both(q, k, v, dout, 0.3, True)
    _assert_close(ours, ref, q, k, v, dout, 0.3, 1e-10)
    for g in ours[2:]:
        assert (g.base if g.base is not None else g).size == g.size


def test_views_the_kernels_cannot_read_in_place_are_copied_and_still_right():
    """A head dim that is not unit-stride, reversed rows, or only some of q, k, v as views: all
    copied to contiguous arrays first (kernel_inputs), with the reference's results."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2, 40, 3, 4, 8, 2))  # (B, L, 3, H, D, 2): D of stride 2
    q, k, v = base[..., 0].transpose(2, 0, 3, 1, 4)
    qr, kr, vr = _packed(rng, 2, 40, 4, 8, np.float64)
    qc = np.ascontiguousarray(qr)
    dout = rng.standard_normal((2, 4, 40, 8))
    for case in [(q, k, v), (qr[:, :, ::-1], kr[:, :, ::-1], vr[:, :, ::-1]), (qc, kr, vr)]:
        kin = A.kernel_inputs(*case)
        assert all(x.flags.c_contiguous for x in kin)
        ours, ref = _both(*case, dout, 0.3, True)
        _assert_close(ours, ref, *case, dout, 0.3, 1e-10)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gpt_style_heads_through_autograd_match_torch(dtype):
    """The path a GPT takes (qkv projection -> reshape -> permute -> heads -> SDPA -> transpose ->
    reshape), on Tensors with the in-place kernels, against torch: output and input gradient."""
    B, T, H, D = 2, 70, 4, 8
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, 3 * H * D)).astype(dtype)
    g = rng.standard_normal((B, T, H * D)).astype(dtype)

    def heads(qkv, sdpa):
        qkv = qkv.reshape(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
        return sdpa(qkv[0], qkv[1], qkv[2], is_causal=True).transpose(1, 2).reshape(B, T, H * D)

    with backend.use_kernels("numba"):
        tx = tl.tensor(x, requires_grad=True)
        y = heads(tx, F.scaled_dot_product_attention)
        y.backward(g)
    rx = torch.tensor(x, requires_grad=True)
    ry = heads(rx, TSDPA)
    ry.backward(torch.tensor(g))
    tol = 1e-10 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(y.numpy(), ry.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(tx.grad, rx.grad.numpy(), rtol=tol, atol=tol)
