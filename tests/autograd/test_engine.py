"""The engine's contracts: deep graphs, gradient accumulation, freed graphs, error messages,
no_grad, dtype rules, and the small Tensor API (detach, item, numpy, comparisons)."""
import math

import numpy as np
import pytest

import tinyllm as tl
from helpers import requires_torch, torch


def _leaf(a, dtype=np.float64):
    return tl.Tensor(np.array(a, dtype=dtype), requires_grad=True)


# -- graph shapes ------------------------------------------------------------------------------


def test_chain_of_20000_ops_backward_has_no_recursion_error_and_the_right_gradient():
    x = _leaf(1.5)
    y = x
    for _ in range(10_000):  # 20,000 ops: y -> y * c -> (y * c) + d
        y = y * 0.9999 + 1e-4
    y.backward()
    assert x.grad == pytest.approx(0.9999 ** 10_000, rel=1e-10)
    assert y.item() == pytest.approx(0.9999 ** 10_000 * 0.5 + 1.0, rel=1e-10)


def test_dropping_a_deep_graph_without_backward_does_not_crash():
    x = _leaf(np.ones(3))
    y = x
    for _ in range(20_000):
        y = y.tanh()
    del y  # freeing 20,000 nested contexts must not blow the C stack


def test_deep_graph_with_retain_graph_backwards_twice():
    x = _leaf(2.0)
    y = x
    for _ in range(20_000):
        y = y + 1
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad == 2.0


@requires_torch
def test_diamond_graph_matches_torch():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((3, 4))

    def f(lib, x):
        a = x.exp() if lib is tl else torch.exp(x)
        b = x * 3 - 1
        c = a * b + a
        d = (c * a).sum() + (b / (1 + a * a)).mean()
        return d

    x = tl.Tensor(data.copy(), requires_grad=True)
    f(tl, x).backward()
    xt = torch.tensor(data, requires_grad=True)
    f(torch, xt).backward()
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@requires_torch
def test_leaf_reused_many_times_accumulates_like_torch():
    data = np.linspace(-1, 1, 5)
    x = tl.Tensor(data.copy(), requires_grad=True)
    xt = torch.tensor(data, requires_grad=True)
    total, total_t = x * 0, xt * 0
    for i in range(300):
        total = total + x * (i % 7) + (x * x) / (i + 1)
        total_t = total_t + xt * (i % 7) + (xt * xt) / (i + 1)
    total.sum().backward()
    total_t.sum().backward()
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-12)


@requires_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_slices_split_and_dense_gradients_of_one_tensor_add_up_like_torch(dtype):
    """Indexing's backward hands the engine a lazy SliceGrad; split pieces, overlapping slices, a
    newaxis, an unused piece and dense uses of the same tensor (in either order) must all add up."""
    data = np.random.default_rng(0).standard_normal((2, 5, 6)).astype(dtype)

    def f(lib, x):
        q, k, v = x.split(2, dim=2)
        first = x[:, 1:4] * 2  # overlaps the split pieces
        total = (q * k).sum() + (v * v).sum() + first.sum() + (x * x).mean() + x[None, 0, ::2].sum()
        unused = x[1]  # no gradient reaches it
        return total + (x.exp().sum() if lib is tl else torch.exp(x).sum())

    x = tl.Tensor(data.copy(), requires_grad=True)
    f(tl, x).backward()
    xt = torch.tensor(data, requires_grad=True)
    f(torch, xt).backward()
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert x.grad.dtype == dtype and x.grad.shape == data.shape
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=tol, atol=tol)


def test_slice_gradients_that_tile_a_tensor_fill_one_buffer_in_its_memory_order():
    from tinyllm.autograd.grad_buffers import SliceGrad
    rng = np.random.default_rng(1)
    packed = rng.standard_normal((2, 5, 3, 4))  # (B, T, 3, C) like a qkv projection
    view = packed.transpose(2, 0, 1, 3)  # (3, B, T, C), the q, k, v pieces along dim 0
    pieces = [rng.standard_normal((2, 5, 4)) for _ in range(3)]
    g = SliceGrad(view.shape, 2, pieces[2], view.strides)
    g.add(SliceGrad(view.shape, (0,), pieces[0], view.strides)).add(SliceGrad(view.shape, -2, pieces[1], view.strides))
    dense = g.dense()
    np.testing.assert_array_equal(dense, np.stack(pieces))
    assert dense.transpose(1, 2, 0, 3).flags.c_contiguous  # laid out like packed: its reshape is a view
    # as many pieces as rows, but one row twice: the rest must still be zero, the twice-hit row summed
    g = SliceGrad((3, 4), 0, np.ones(4)).add(SliceGrad((3, 4), 0, np.ones(4))).add(SliceGrad((3, 4), 1, np.ones(4)))
    np.testing.assert_array_equal(g.dense(), [[2.0] * 4, [1.0] * 4, [0.0] * 4])


@requires_torch
def test_split_heads_of_a_packed_projection_backward_like_torch():
    data = np.random.default_rng(2).standard_normal((2, 5, 3 * 2 * 4))

    def f(lib, x):
        B, T = x.shape[:2]
        qkv = x.reshape(B, T, 3, 2, 4).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        w = lib.tensor if lib is torch else tl.tensor
        return ((q * 2 + k.exp()) * v).sum() + (qkv[1] * w(np.arange(4.0))).sum()

    x = tl.Tensor(data.copy(), requires_grad=True)
    f(tl, x).backward()
    xt = torch.tensor(data, requires_grad=True)
    f(torch, xt).backward()
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_slice_gradients_of_a_leaf_accumulate_across_backward_calls_and_retained_graphs():
    x = tl.Tensor(np.arange(6.0), requires_grad=True)
    y = (x[:3] * 2).sum() + x[2:].sum()
    y.backward(retain_graph=True)
    np.testing.assert_array_equal(x.grad, [2, 2, 3, 1, 1, 1])
    y.backward()  # the saved graph must not have been modified by the first pass
    np.testing.assert_array_equal(x.grad, [4, 4, 6, 2, 2, 2])
    z = tl.Tensor(np.ones(4, np.float32), requires_grad=True)
    z[1:3].sum().backward()  # a slice as the only gradient of a leaf: a dense float32 grad
    assert isinstance(z.grad, np.ndarray) and z.grad.dtype == np.float32
    np.testing.assert_array_equal(z.grad, [0, 1, 1, 0])


def test_same_tensor_twice_in_one_op():
    x = _leaf([1.0, -2.0, 3.0])
    (x * x + x + x).sum().backward()
    np.testing.assert_array_equal(x.grad, 2 * x.data + 2)


def test_unused_branch_and_non_grad_inputs_get_no_gradient():
    x, w = _leaf([1.0, 2.0]), tl.Tensor(np.array([3.0, 4.0]))
    unused = x.exp()  # noqa: F841  (a branch that never reaches the loss)
    (x * w).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])
    assert w.grad is None


def test_retain_grad_keeps_the_gradient_of_an_intermediate():
    x = _leaf([1.0, 2.0, 3.0])
    y = (x * 2).retain_grad()
    z = x * 5
    (y * y + z).sum().backward()
    np.testing.assert_array_equal(y.grad, 2 * y.data)
    np.testing.assert_array_equal(x.grad, 4 * y.data + 5)
    assert z.grad is None  # not retained


def _gelu_derivative(x):
    """d/dx of x Phi(x) = Phi(x) + x phi(x), in float64 from math.erf."""
    cdf = 0.5 * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))
    return cdf + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi)


def test_an_intermediate_no_backward_needs_is_freed_when_dropped_and_gradients_still_flow():
    import gc
    import weakref
    x = _leaf(np.arange(6.0).reshape(2, 3))
    h = x + x  # Add's backward needs neither input, so nothing in the graph holds h's array
    loss = (tl.nn.functional.gelu(h) + 1.0).sum()
    h_data, h_tensor = weakref.ref(h.data), weakref.ref(h)
    del h
    gc.collect()
    assert h_tensor() is None and h_data() is None
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * _gelu_derivative(2 * x.data), rtol=1e-12)


def test_summing_into_a_fresh_gradient_leaves_the_shared_upstream_gradient_alone():
    # Add hands the same upstream array to both inputs; GELU's fresh gradient for x is summed in place
    x = _leaf([[-1.0, 0.5, 2.0]])
    upstream = np.array([[1.0, 2.0, 3.0]])
    kept = upstream.copy()
    z = tl.nn.functional.gelu(x) + x
    z.backward(upstream)
    np.testing.assert_array_equal(upstream, kept)
    np.testing.assert_allclose(x.grad, kept * (_gelu_derivative(x.data) + 1), rtol=1e-12)


def test_retain_grad_on_a_tensor_used_twice_and_in_a_diamond():
    x = _leaf([0.5, -1.0])
    a = (x * 3).retain_grad()
    b, c = a.exp(), a * a  # two consumers of a: the graph reaches a's context from both
    (b + c).sum().backward()
    np.testing.assert_allclose(a.grad, np.exp(a.data) + 2 * a.data)
    np.testing.assert_allclose(x.grad, 3 * (np.exp(a.data) + 2 * a.data))


# -- accumulation and .grad ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_accumulates_across_backward_calls_and_is_a_plain_array_of_the_leaf_dtype(dtype):
    x = _leaf([1.0, 2.0, 3.0], dtype)
    (x * x).sum().backward()
    first = x.grad.copy()
    (x * x).sum().backward()
    assert type(x.grad) is np.ndarray and x.grad.dtype == dtype and x.grad.shape == (3,)
    np.testing.assert_allclose(x.grad, 2 * first)
    x.grad = None
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [3, 3, 3])


def test_float32_leaf_gets_a_float32_grad_even_through_float64_ops():
    x = _leaf([1.0, 2.0], np.float32)
    w = tl.Tensor(np.array([0.5, 0.25]))  # float64 constant promotes the product, as in torch
    y = x * w
    assert y.dtype == np.float64
    y.sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [0.5, 0.25])


def test_leaf_grad_does_not_alias_the_upstream_gradient():
    x = _leaf([1.0, 2.0])
    g = np.array([1.0, 1.0])
    (x + 0).backward(g)
    x.grad += 1  # must not write into the caller's array
    np.testing.assert_array_equal(g, [1.0, 1.0])


class _Twice(tl.autograd.Function):
    """y = 2x, whose backward hands out a new array each call and records it."""
    returned = []

    def forward(ctx, x):
        return 2 * x

    def backward(ctx, g):
        out = 2 * g
        _Twice.returned.append(out)
        return out


class _TwiceFresh(_Twice):
    fresh_grads = True


def test_a_fresh_gradient_becomes_the_leaf_grad_without_a_copy_and_others_are_copied():
    for fn, kept in ((_TwiceFresh, True), (_Twice, False)):
        _Twice.returned.clear()
        x = _leaf([1.0, 2.0])
        fn.apply(x).backward(np.array([1.0, 3.0]))
        assert (x.grad is _Twice.returned[0]) == kept
        np.testing.assert_array_equal(x.grad, [2.0, 6.0])


def test_fresh_gradients_of_one_leaf_add_up_and_later_backwards_accumulate():
    x = _leaf([1.0, 2.0])
    y = _TwiceFresh.apply(x) + _TwiceFresh.apply(x) * 3 + x  # dy/dx = 2 + 6 + 1
    y.backward(np.ones(2))
    np.testing.assert_array_equal(x.grad, [9.0, 9.0])
    _TwiceFresh.apply(x).backward(np.ones(2))
    np.testing.assert_array_equal(x.grad, [11.0, 11.0])


def test_a_retained_intermediate_copies_a_fresh_gradient_that_flows_on():
    x = _leaf([1.0, 2.0])
    h = x + 0  # Add hands its gradient on as it is
    h.retain_grad()
    _TwiceFresh.apply(h).backward(np.ones(2))
    np.testing.assert_array_equal(h.grad, [2.0, 2.0])
    x.grad += 1
    h.grad *= 10
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])
    assert not np.shares_memory(h.grad, _Twice.returned[-1])


class _Triple(tl.autograd.Function):
    """(a, b, c) -> 2a + 3b + 4c, whose backward writes its three gradients into one (3, ...) buffer
    and hands out views of it, as attention's does for the heads of a packed projection."""
    fresh_grads = True
    buffers = []

    def forward(ctx, a, b, c):
        return 2 * a + 3 * b + 4 * c

    def backward(ctx, g):
        buf = np.empty((3,) + g.shape, g.dtype)
        _Triple.buffers.append(buf)
        buf[0], buf[1], buf[2] = 2 * g, 3 * g, 4 * g
        return buf[0], buf[1], buf[2]


def test_fresh_pieces_that_already_lie_in_one_buffer_become_the_gradient_without_a_gather():
    """Split pieces whose fresh gradients are disjoint views of one buffer, laid out where the pieces
    lie: that buffer is the whole tensor's gradient (here the leaf's .grad itself). Any other
    layout, or a piece gradient someone else holds, is gathered into a new buffer as before."""
    _Triple.buffers.clear()
    x = _leaf(np.arange(6.0).reshape(3, 2))
    _Triple.apply(x[0], x[1], x[2]).backward(np.array([1.0, -1.0]))
    assert np.shares_memory(x.grad, _Triple.buffers[-1])
    np.testing.assert_array_equal(x.grad, [[2.0, -2.0], [3.0, -3.0], [4.0, -4.0]])
    # the pieces in another order than the buffer's: gathered, still right
    y = _leaf(np.zeros((3, 2)))
    _Triple.apply(y[1], y[0], y[2]).backward(np.array([1.0, 1.0]))
    assert not np.shares_memory(y.grad, _Triple.buffers[-1])
    np.testing.assert_array_equal(y.grad, [[3.0, 3.0], [2.0, 2.0], [4.0, 4.0]])
    # the upstream gradient a user passes in is never kept, even when it is one buffer's pieces
    z = _leaf(np.zeros((1, 4)))
    user = np.ones((1, 4))
    z[0].backward(user[0])
    assert not np.shares_memory(z.grad, user)
    z.grad += 1
    np.testing.assert_array_equal(user, np.ones((1, 4)))
    # a piece that also got a second gradient is summed into its slot, still in place
    w = _leaf(np.zeros((3, 2)))
    w0 = w[0]
    (_Triple.apply(w0, w[1], w[2]) + w0 * 10).backward(np.ones(2))
    np.testing.assert_array_equal(w.grad, [[12.0, 12.0], [3.0, 3.0], [4.0, 4.0]])


def test_grad_of_a_0d_leaf_is_a_0d_array():
    w, x = _leaf(2.0), _leaf([1.0, 2.0])
    (w * x).sum().backward()
    assert type(w.grad) is np.ndarray and w.grad.shape == () and w.grad == 3.0
    (w * x).sum().backward()
    assert type(w.grad) is np.ndarray and w.grad == 6.0


def test_backward_through_a_leaf_itself():
    x = _leaf(3.0)
    x.backward()
    assert x.grad == 1.0


# -- freed graphs and error messages ---------------------------------------------------------


def test_second_backward_through_a_freed_graph_raises_a_clear_error():
    x = _leaf([1.0, 2.0])
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()


def test_retain_graph_allows_a_second_backward_and_gradients_add_up():
    x = _leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad, 4 * x.data)


def test_backward_on_non_scalar_without_grad_names_the_shape():
    y = _leaf(np.ones((2, 3))) * 2
    with pytest.raises(RuntimeError, match=r"\(2, 3\)"):
        y.backward()


def test_backward_with_grad_of_wrong_shape_raises():
    y = _leaf(np.ones((2, 3))) * 2
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(2, 3\)"):
        y.backward(np.ones((3, 2)))


def test_backward_on_a_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tl.Tensor([1.0, 2.0]).sum().backward()


def test_matmul_shape_mismatch_names_both_shapes():
    a, b = tl.zeros(12, 64, 128), tl.zeros(96, 384)
    with pytest.raises(ValueError) as info:
        a @ b
    assert "(12, 64, 128)" in str(info.value) and "(96, 384)" in str(info.value)


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="int64"):
        tl.tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError):
        tl.Tensor(np.array([1, 2]), requires_grad=True)
    with pytest.raises(TypeError):
        tl.tensor([1, 2]).requires_grad_()


# -- no_grad -----------------------------------------------------------------------------------


def test_no_grad_context_manager_records_no_graph_and_restores_the_mode():
    x = _leaf([1.0, 2.0])
    with tl.no_grad():
        assert not tl.is_grad_enabled()
        y = (x * 2).exp()
    assert tl.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf and y._ctx is None
    np.testing.assert_allclose(y.data, np.exp(2 * x.data))


def test_no_grad_restores_the_mode_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with tl.no_grad():
            1 / 0
    assert tl.is_grad_enabled()


def test_no_grad_as_a_decorator():
    @tl.no_grad()
    def step(t):
        assert not tl.is_grad_enabled()
        return t * 2 + 1

    x = _leaf([1.0, 2.0])
    y = step(x)
    assert tl.is_grad_enabled()
    assert not y.requires_grad and y._ctx is None
    assert step.__name__ == "step"
    assert (x * 2).requires_grad  # grad mode is back for the next op


def test_enable_grad_inside_no_grad():
    x = _leaf([1.0])
    with tl.no_grad():
        with tl.enable_grad():
            y = x * 2
        z = x * 2
    assert y.requires_grad and not z.requires_grad


# -- dtype rules ---------------------------------------------------------------------------------


def test_arrays_keep_their_dtype():
    assert tl.Tensor(np.zeros(2, np.float64)).dtype == np.float64
    assert tl.Tensor(np.zeros(2, np.float32)).dtype == np.float32
    assert tl.Tensor(np.zeros(2, np.int64)).dtype == np.int64
    assert tl.Tensor(np.zeros(2, np.int32)).dtype == np.int32
    assert tl.tensor(np.zeros(2, np.float64)).dtype == np.float64
    assert tl.tensor(np.zeros(2, np.int32)).dtype == np.int32


def test_python_data_takes_the_default_dtype():
    assert tl.get_default_dtype() == np.float32
    assert tl.Tensor([1, 2]).dtype == np.float32  # torch.Tensor([1, 2]) is float32 too
    assert tl.Tensor([1.0, 2.0]).dtype == np.float32
    assert tl.Tensor(3.0).dtype == np.float32
    assert tl.tensor([1.0, 2]).dtype == np.float32
    assert tl.tensor(2.5).dtype == np.float32
    assert tl.ones(2).dtype == tl.randn(2).dtype == tl.zeros(2).dtype == np.float32


def test_tensor_infers_int64_like_torch_tensor():
    assert tl.tensor([1, 2]).dtype == np.int64
    assert tl.tensor(3).dtype == np.int64
    assert tl.tensor([True, False]).dtype == np.bool_
    assert tl.arange(5).dtype == np.int64


@requires_torch
def test_constructor_dtypes_match_torch():
    for data in ([1, 2], [1.0, 2.0], 3, 2.5, [True, False]):
        assert np.dtype(tl.tensor(data).dtype) == torch.tensor(data).numpy().dtype, data
    for data in ([1, 2], [1.0, 2.0]):
        assert np.dtype(tl.Tensor(data).dtype) == torch.Tensor(data).numpy().dtype, data


def test_set_default_dtype_changes_the_default_and_is_restored():
    previous = tl.get_default_dtype()
    try:
        tl.set_default_dtype(np.float64)
        assert tl.Tensor([1, 2]).dtype == np.float64
        assert tl.tensor([1.5]).dtype == np.float64
        assert tl.randn(2).dtype == np.float64
        assert tl.tensor([1, 2]).dtype == np.int64  # ints stay ints
        assert tl.Tensor(np.zeros(2, np.float32)).dtype == np.float32  # arrays keep theirs
    finally:
        tl.set_default_dtype(previous)
    assert tl.Tensor([1, 2]).dtype == np.float32
    with pytest.raises(TypeError, match="int64"):
        tl.set_default_dtype(np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_python_scalars_take_the_tensor_dtype(dtype):
    x = tl.Tensor(np.ones(3, dtype), requires_grad=True)
    for y in (x * 2, 2 * x, x + 1.5, 1.5 - x, x / 3, 3 / x, x ** 2, 2 ** x, x ** 0.5, -x):
        assert y.dtype == dtype
    y = (x * 2).sum()
    y.backward()
    assert x.grad.dtype == dtype


def test_integer_tensor_times_int_stays_int():
    assert (tl.tensor([1, 2]) * 2).dtype == np.int64
    assert not (tl.tensor([1, 2]) * 2).requires_grad


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_casts(dtype):
    x = tl.Tensor(np.ones(2, dtype), requires_grad=True)
    y, z = x.float(), x.double()
    assert y.dtype == np.float32 and z.dtype == np.float64
    (y.sum() + z.sum() * 2).backward()
    assert x.grad.dtype == dtype
    np.testing.assert_array_equal(x.grad, [3, 3])
    assert x.to(dtype) is x  # a no-op cast returns the same tensor, as torch


def test_every_backward_receives_its_gradient_in_its_output_dtype_across_casts():
    seen = []

    class Probe(tl.Function):
        def forward(ctx, a):
            return a * 1

        def backward(ctx, g):
            seen.append(g.dtype)
            return g

    x = _leaf([1.0, 2.0], np.float64)
    Probe.apply(x).float().sum().backward()
    y = _leaf([1.0, 2.0], np.float32)
    (Probe.apply(y).double() * 2).sum().backward()
    assert seen == [np.float64, np.float32]


# -- the small Tensor API --------------------------------------------------------------------


def test_detach_shares_data_and_has_no_grad():
    x = _leaf([1.0, 2.0])
    y = (x * 2).detach()
    assert not y.requires_grad and y.is_leaf and y.grad is None
    d = x.detach()
    assert d.data is x.data  # a view of the same storage, as torch
    z = d * 3
    assert not z.requires_grad


def test_item_numpy_and_shape_properties():
    x = tl.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert x.shape == (2, 3) and x.ndim == 2 and x.dtype == np.float64
    assert x.size() == (2, 3) and x.size(-1) == 3 and x.dim() == 2 and x.numel() == 6 and len(x) == 2
    assert isinstance(x.numpy(), np.ndarray) and x.numpy() is x.data
    s = x.sum()
    for full_reduction in (s, x.mean(), x.var(), x.max(), x[0, 1]):  # never a NumPy scalar
        assert type(full_reduction.data) is np.ndarray and type(full_reduction.numpy()) is np.ndarray
    assert isinstance(s.item(), float) and s.item() == 15.0
    assert isinstance(tl.tensor([4]).item(), int)
    assert float(s) == 15.0
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        x.item()
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        bool(x)
    assert x.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_comparisons_return_bool_tensors_without_grad():
    x = _leaf([1.0, 2.0, 3.0])
    other = tl.Tensor(np.array([2.0, 2.0, 2.0]), requires_grad=True)
    for r, expected in (((x > 2), [0, 0, 1]), ((x >= 2), [0, 1, 1]), ((x < 2), [1, 0, 0]),
                        ((x <= other), [1, 1, 0]), ((x == other), [0, 1, 0]), ((x != 2), [1, 0, 1])):
        assert isinstance(r, tl.Tensor) and r.dtype == np.bool_
        assert not r.requires_grad and r._ctx is None
        np.testing.assert_array_equal(r.data, np.array(expected, bool))
    assert (x.argmax().item(), x.argmin().item()) == (2, 0)
    assert not x.argmax().requires_grad


def test_ndarray_on_the_left_defers_to_tensor():
    x = _leaf([1.0, 2.0])
    y = np.array([3.0, 4.0]) * x
    assert isinstance(y, tl.Tensor) and y.requires_grad
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])


def test_int_float_promotion_follows_torch():
    assert (tl.tensor([1, 2]) / 2).dtype == np.float32  # true division of ints -> default float
    assert (tl.tensor([1, 2]) * 2.5).dtype == np.float32
    assert (tl.tensor([1, 2]) + tl.tensor([1.0, 2.0])).dtype == np.float32
    assert (tl.tensor([1, 2]) * 3).dtype == np.int64
    x = tl.Tensor(np.ones(3), requires_grad=True)  # float64
    assert (x * tl.tensor([1, 2, 3])).dtype == np.float64


def test_set_grad_enabled_as_a_call_and_bare_no_grad_decorator():
    tl.set_grad_enabled(False)
    assert not tl.is_grad_enabled()
    tl.set_grad_enabled(True)
    assert tl.is_grad_enabled()

    @tl.no_grad
    def double(t):
        return t * 2
    assert not double(tl.ones(2, requires_grad=True)).requires_grad
    with tl.no_grad():
        with tl.enable_grad():
            assert tl.is_grad_enabled()
        assert not tl.is_grad_enabled()
    assert tl.is_grad_enabled()


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_non_broadcastable_shapes_name_the_op_and_both_shapes(op):
    a, b = tl.ones(2, 3), tl.ones(4, 5)
    with pytest.raises(ValueError, match=rf"{op}: shapes \(2, 3\) and \(4, 5\) do not broadcast"):
        getattr(a, op)(b)
