"""One helper for testing any differentiable op against torch (tinygrad's ``helper_test_op``).

``check_op`` builds the same inputs for tinyllm and torch, compares the forward outputs and every
input gradient for one random upstream gradient, runs tinyllm's finite-difference ``gradcheck``
(float64), and prints the forward+backward time of both. Primitive ops and fused ops alike::

    check_op([(4, 5)], lambda x: x.tanh())
    check_op([(2, 3, 8), (8,), (8,)],
             lambda x, w, b: F.layer_norm(x, (8,), w, b),
             lambda x, w, b: torch.nn.functional.layer_norm(x, (8,), w, b))
    check_op([(6, 10), np.array([1, 0, 9, 9, 3, 2])], F.cross_entropy,
             torch.nn.functional.cross_entropy, reduction="sum")   # int targets: no grad
"""
import time

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest

import tinyllm as tl

try:
    import torch
except ImportError:  # torch is only a test oracle
    torch = None

requires_torch = pytest.mark.skipif(torch is None, reason="torch not installed")


# -- hypothesis strategies for shapes (small sides keep every example cheap) -------------------


def shapes(min_dims=0, max_dims=4, min_side=1, max_side=4):
    """One array shape, size-1 dims included."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4):
    """A tuple of ``num_shapes`` shapes that broadcast together (size-1 and missing leading dims)."""
    return hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims,
                                             max_side=max_side).map(lambda b: b.input_shapes)


def matmul_shapes(max_batch_dims=2, max_side=4):
    """Pairs of shapes ``@`` accepts: 1-D operands and broadcast batch dims included."""
    return hnp.mutually_broadcastable_shapes(signature="(m?,k),(k,n?)->(m?,n?)", max_dims=max_batch_dims,
                                             max_side=max_side).map(lambda b: b.input_shapes)


@st.composite
def broadcastable_to(draw, shape):
    """A shape that broadcasts *to* ``shape`` (some dims set to 1, some leading dims dropped)."""
    drop = draw(st.integers(0, len(shape)))
    kept = shape[drop:]
    ones = draw(st.lists(st.booleans(), min_size=len(kept), max_size=len(kept)))
    return tuple(1 if one else n for n, one in zip(kept, ones))

# dtype -> (forward atol, forward rtol, grad atol, grad rtol), in np.testing.assert_allclose's sense
TOLERANCES = {
    np.dtype(np.float64): (1e-7, 1e-7, 1e-6, 1e-6),
    np.dtype(np.float32): (1e-5, 1e-5, 1e-4, 1e-4),
    np.dtype(np.float16): (1e-2, 1e-2, 5e-2, 5e-2),
}


def check_op(shapes_or_arrays, tl_fn, torch_fn=None, dtype=np.float64, atol=None, rtol=None,
             grad_atol=None, grad_rtol=None, low=-2, high=2, requires_grad=None, seed=0,
             gradcheck=True, **op_kwargs):
    """Check ``tl_fn`` against ``torch_fn`` (forward and all input gradients) and by gradcheck.

    shapes_or_arrays: one entry per positional argument of the op. A tuple is a shape: a uniform
        random array in [low, high) of ``dtype``. A NumPy array (or NumPy scalar) is used as is (floating arrays are
        cast to ``dtype``; integer and bool arrays, such as indices and masks, stay as they are and
        never require grad). Anything else (a number, a slice, None) is passed unchanged to both.
    tl_fn, torch_fn: called with one Tensor (tinyllm or torch) per array entry, plus ``op_kwargs``.
        ``torch_fn`` defaults to ``tl_fn`` (fine for operators and methods both libraries share).
        Either may return one tensor or a tuple of tensors; the tuples are compared position by
        position (return ``.values`` from torch ops that also give indices).
    low, high: the range of random inputs, one number or one per entry.
    requires_grad: None (every floating input), a bool, or one bool per entry.
    gradcheck: True, False, or a dict of keyword arguments for ``tl.gradcheck`` (eps, atol, ...).
        It runs only for float64 and when some input requires grad.
    Returns tinyllm's output (a Tensor or a tuple), for further checks by the caller.
    """
    dtype = np.dtype(dtype)
    tols = TOLERANCES.get(dtype, TOLERANCES[np.dtype(np.float32)])
    atol, rtol = _default(atol, tols[0]), _default(rtol, tols[1])
    grad_atol, grad_rtol = _default(grad_atol, tols[2]), _default(grad_rtol, tols[3])
    rng = np.random.default_rng(seed)

    entries = list(shapes_or_arrays)
    arrays = _make_inputs(entries, dtype, low, high, rng)
    wants = _requires_grad_flags(arrays, requires_grad)
    runs_gradcheck = bool(gradcheck) and dtype == np.float64 and any(wants)
    if torch is None and not runs_gradcheck:
        pytest.skip("torch not installed, and no float64 gradcheck to run instead")

    # -- tinyllm: forward, then backward of one random upstream gradient per output ------------
    tl_inputs = _tl_inputs(arrays, wants)
    start = time.perf_counter()
    tl_out = tl_fn(*tl_inputs, **op_kwargs)
    tl_outs = tl_out if isinstance(tl_out, (tuple, list)) else (tl_out,)
    upstream = [np.asarray(rng.standard_normal(np.shape(o))).astype(_dtype_of(o)) if _differentiable(o) else None
                for o in tl_outs]
    _tl_backward(tl_outs, upstream)
    tl_seconds = time.perf_counter() - start

    kwargs_text = f" with {op_kwargs}" if op_kwargs else ""
    where = f"{_name(tl_fn)} on {[_describe(a) for a in arrays]}{kwargs_text} ({dtype})"
    for i, (x, a, w) in enumerate(zip(tl_inputs, arrays, wants)):
        if w and any(u is not None for u in upstream):
            assert x.grad is None or isinstance(x.grad, np.ndarray), \
                f"{where}: input {i} .grad is a {type(x.grad).__name__}, expected a NumPy array"
            if x.grad is not None:
                assert x.grad.shape == a.shape and x.grad.dtype == a.dtype, \
                    f"{where}: input {i} .grad has shape {x.grad.shape} and dtype {x.grad.dtype}, " \
                    f"expected {a.shape} and {a.dtype}"

    # -- torch: the same inputs and the same upstream gradients --------------------------------
    torch_seconds = None
    if torch is not None:
        torch_fn = tl_fn if torch_fn is None else torch_fn
        torch_inputs = _torch_inputs(arrays, wants)
        start = time.perf_counter()
        torch_out = torch_fn(*torch_inputs, **op_kwargs)
        torch_seconds = time.perf_counter() - start
        torch_outs = torch_out if isinstance(torch_out, (tuple, list)) else (torch_out,)
        # forward first: a wrong shape should be reported as such, not as torch's backward error
        assert len(tl_outs) == len(torch_outs), \
            f"{where}: tinyllm returned {len(tl_outs)} outputs, torch {len(torch_outs)}"
        for k, (o, t) in enumerate(zip(tl_outs, torch_outs)):
            _compare_output(o, t, atol, rtol, f"{where}: output {k}")

        pairs = [(o, torch.from_numpy(np.array(u))) for o, u in zip(torch_outs, upstream)
                 if u is not None and isinstance(o, torch.Tensor) and o.requires_grad]
        start = time.perf_counter()
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [u for _, u in pairs])
        torch_seconds += time.perf_counter() - start
        for i, (x, t, w) in enumerate(zip(tl_inputs, torch_inputs, wants)):
            if w:
                _compare_grad(x.grad, t.grad, grad_atol, grad_rtol, f"{where}: gradient of input {i}")

    # -- finite differences along a random direction (float64 only) -----------------------------
    if runs_gradcheck:
        options = dict(seed=seed, **(gradcheck if isinstance(gradcheck, dict) else {}))
        positions = [i for i, a in enumerate(arrays) if isinstance(a, np.ndarray)]
        fresh = _tl_inputs(arrays, wants)

        def fn(*tensors):
            args = list(fresh)
            for i, t in zip(positions, tensors):
                args[i] = t
            return tl_fn(*args, **op_kwargs)

        tl.gradcheck(fn, [fresh[i] for i in positions], **options)

    torch_text = "n/a" if torch_seconds is None else f"{torch_seconds * 1e3:8.3f} ms"
    print(f"check_op {where}: tinyllm {tl_seconds * 1e3:8.3f} ms, torch {torch_text} (fwd+bwd)")
    return tl_out


# ---------------------------------------------------------------------------------------------
# the pieces
# ---------------------------------------------------------------------------------------------


def _default(value, fallback):
    return fallback if value is None else value


def _per_entry(value, n, name):
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"check_op: {name} has {len(value)} entries for {n} inputs")
        return list(value)
    return [value] * n


def _make_inputs(entries, dtype, low, high, rng):
    lows, highs = _per_entry(low, len(entries), "low"), _per_entry(high, len(entries), "high")
    arrays = []
    for entry, lo, hi in zip(entries, lows, highs):
        if isinstance(entry, tuple) and all(isinstance(n, (int, np.integer)) for n in entry):
            arrays.append(rng.uniform(lo, hi, size=entry).astype(dtype))
        elif isinstance(entry, (np.ndarray, np.generic)):  # a NumPy scalar is a 0-d array here
            entry = np.asarray(entry)
            arrays.append(entry.astype(dtype) if entry.dtype.kind == "f" else entry.copy())
        else:
            arrays.append(entry)
    return arrays


def _requires_grad_flags(arrays, requires_grad):
    floating = [isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in arrays]
    if requires_grad is None:
        return floating
    flags = _per_entry(requires_grad, len(arrays), "requires_grad")
    for a, f, w in zip(arrays, floating, flags):
        if w and not f:
            raise ValueError(f"check_op: only floating arrays can require grad, got {_describe(a)}")
    return [bool(w) for w in flags]


def _tl_inputs(arrays, wants):
    return [tl.Tensor(a.copy(), requires_grad=w) if isinstance(a, np.ndarray) else a
            for a, w in zip(arrays, wants)]


def _torch_inputs(arrays, wants):
    return [torch.from_numpy(a.copy()).requires_grad_(w) if isinstance(a, np.ndarray) else a
            for a, w in zip(arrays, wants)]


def _differentiable(out):
    return isinstance(out, tl.Tensor) and out.requires_grad


def _dtype_of(out):
    return out.dtype if hasattr(out, "dtype") else np.float64


def _tl_backward(outs, upstream):
    """Backward of every output with its own upstream gradient; leaves accumulate the sum."""
    live = [(o, u) for o, u in zip(outs, upstream) if u is not None]
    for k, (o, u) in enumerate(live):
        o.backward(u, retain_graph=k < len(live) - 1)


def _compare_output(out, ref, atol, rtol, where):
    ref_array = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    if isinstance(out, tl.Tensor):
        if isinstance(ref, torch.Tensor):
            assert out.requires_grad == ref.requires_grad, \
                f"{where}: requires_grad is {out.requires_grad}, torch says {ref.requires_grad}"
        out = out.numpy()
    out = np.asarray(out)
    assert out.shape == ref_array.shape, f"{where}: shape {out.shape}, torch gives {ref_array.shape}"
    assert out.dtype == ref_array.dtype, f"{where}: dtype {out.dtype}, torch gives {ref_array.dtype}"
    if out.dtype.kind in "fc":
        np.testing.assert_allclose(out, ref_array, atol=atol, rtol=rtol, err_msg=where)
    else:
        np.testing.assert_array_equal(out, ref_array, err_msg=where)


def _compare_grad(grad, ref, atol, rtol, where):
    if ref is None:  # torch never reached this input: tinyllm may leave None or zeros
        assert grad is None or not np.any(grad), f"{where}: torch has no gradient, tinyllm has {grad}"
        return
    assert grad is not None, f"{where}: tinyllm has no gradient, torch has one"
    ref = ref.numpy()
    assert grad.shape == ref.shape, f"{where}: shape {grad.shape}, torch gives {ref.shape}"
    np.testing.assert_allclose(grad, ref, atol=atol, rtol=rtol, err_msg=where)


def _name(fn):
    """A readable name for the printout: the function's name, or a lambda's own source text."""
    name = getattr(fn, "__qualname__", None) or repr(fn)
    if not name.endswith("<lambda>"):
        return name
    try:
        import inspect
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        return name
    src = src[src.index("lambda"):] if "lambda" in src else src
    depth, body = 0, src.index(":") if ":" in src else 0
    for k, ch in enumerate(src):  # stop at the bracket or comma that closes the lambda
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth < 0 or (ch in ",\n" and depth == 0 and k > body):
            return src[:k].strip()[:80]
    return src.strip()[:80]


def _describe(a):
    if isinstance(a, np.ndarray):
        return f"{a.dtype.name}{a.shape}" if a.dtype.kind != "f" else str(a.shape)
    return repr(a)


def force_driver(monkeypatch, kernel_module, driver):
    """Make a kernel module pick its parallel (prange) or serial driver whatever the size, in and
    outside the one-pool setup, by patching its row of the threshold table (kernels/pool.py)."""
    from tinyllm.kernels import pool
    n = 0 if driver == "parallel" else 2**62
    monkeypatch.setitem(pool.PARALLEL_MIN, kernel_module.__name__.rsplit(".", 1)[-1], (n, n))


# the golden trajectory's model (tests/test_golden_trajectory.py), over either library
GOLDEN_B, GOLDEN_T, GOLDEN_C, GOLDEN_N_HEAD, GOLDEN_N_CLASS = 3, 5, 8, 2, 4


def make_block_class(nn_, F_):
    """The same model class over either library (``nn_``/``F_`` = tinyllm's or torch's)."""

    class Block(nn_.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn_.LayerNorm(GOLDEN_C)
            # no key bias: it adds the same q.b_k to every score of a row, so softmax ignores it and
            # its gradient is rounding noise (~1e-17), which Adagrad would blow up to ~1e-7 steps
            self.q = nn_.Linear(GOLDEN_C, GOLDEN_C)
            self.k = nn_.Linear(GOLDEN_C, GOLDEN_C, bias=False)
            self.v = nn_.Linear(GOLDEN_C, GOLDEN_C)
            self.c_proj = nn_.Linear(GOLDEN_C, GOLDEN_C)
            self.ln_2 = nn_.LayerNorm(GOLDEN_C)
            self.mlp = nn_.Sequential(nn_.Linear(GOLDEN_C, 4 * GOLDEN_C), nn_.GELU(), nn_.Linear(4 * GOLDEN_C, GOLDEN_C))
            self.head = nn_.Linear(GOLDEN_C, GOLDEN_N_CLASS)

        def forward(self, x):
            Bx, Tx, Cx = x.shape
            h = self.ln_1(x)
            hs = Cx // GOLDEN_N_HEAD
            q = self.q(h).reshape(Bx, Tx, GOLDEN_N_HEAD, hs).transpose(1, 2)  # (B, H, T, hs)
            k = self.k(h).reshape(Bx, Tx, GOLDEN_N_HEAD, hs).transpose(1, 2)
            v = self.v(h).reshape(Bx, Tx, GOLDEN_N_HEAD, hs).transpose(1, 2)
            y = F_.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, hs)
            y = y.transpose(1, 2).reshape(Bx, Tx, Cx)  # (B, T, C)
            x = x + self.c_proj(y)
            x = x + self.mlp(self.ln_2(x))
            return self.head(x.mean(1))  # (B, N_CLASS)

    return Block
