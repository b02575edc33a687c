"""nn.LSTM and nn.LSTMCell against torch: outputs, final states and every gradient (input, h_0, c_0,
all weights and biases) in float64 and float32, on hypothesis sizes, both batch layouts, with and
without bias and initial state; finite-difference gradchecks of the fused layer op; torch state_dicts
loading as they are."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinyllm as tl
from tinyllm.nn.lstm import LSTMLayer, lstm_layer

try:
    import torch
except ImportError:  # torch is only the oracle; the gradchecks below still run without it
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

TOL = {np.float64: dict(atol=1e-7, rtol=1e-7, grad_atol=1e-6, grad_rtol=1e-6),
       np.float32: dict(atol=1e-5, rtol=1e-5, grad_atol=1e-4, grad_rtol=1e-4)}


def _torch_dtype(dtype):
    return torch.float64 if dtype == np.float64 else torch.float32


def compare_lstm(T, B, I, H, L, batch_first, bias, with_state, dtype=np.float64, unbatched=False, seed=0):
    """Run the same LSTM in torch and tinyllm; compare outputs, states and all gradients."""
    tol = TOL[dtype]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ref = torch.nn.LSTM(I, H, L, bias=bias, batch_first=batch_first, dtype=_torch_dtype(dtype))
    ours = tl.nn.LSTM(I, H, L, bias=bias, batch_first=batch_first, dtype=dtype)
    ours.load_state_dict(ref.state_dict())
    x_shape = (T, I) if unbatched else ((B, T, I) if batch_first else (T, B, I))
    s_shape = (L, H) if unbatched else (L, B, H)
    x = rng.standard_normal(x_shape).astype(dtype)
    h0, c0 = (rng.standard_normal(s_shape).astype(dtype) for _ in range(2))

    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    th, tc = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (h0, c0))
    X = tl.Tensor(x.copy(), requires_grad=True)
    Hs, Cs = (tl.Tensor(a.copy(), requires_grad=True) for a in (h0, c0))
    t_out, (t_h, t_c) = ref(tx, (th, tc)) if with_state else ref(tx)
    o_out, (o_h, o_c) = ours(X, (Hs, Cs)) if with_state else ours(X)

    for name, a, b in (("output", o_out, t_out), ("h_n", o_h, t_h), ("c_n", o_c, t_c)):
        assert a.shape == tuple(b.shape), f"{name}: shape {a.shape}, torch {tuple(b.shape)}"
        assert a.dtype == dtype
        np.testing.assert_allclose(a.data, b.detach().numpy(), atol=tol["atol"], rtol=tol["rtol"], err_msg=name)

    ups = [rng.standard_normal(b.shape).astype(dtype) for b in (t_out, t_h, t_c)]
    torch.autograd.backward([t_out, t_h, t_c], [torch.from_numpy(u) for u in ups])
    loss = sum((o * tl.Tensor(u)).sum() for o, u in zip((o_out, o_h, o_c), ups))
    loss.backward()
    grads = [("input", X.grad, tx.grad)]
    if with_state:
        grads += [("h_0", Hs.grad, th.grad), ("c_0", Cs.grad, tc.grad)]
    named = dict(ref.named_parameters())
    grads += [(n, p.grad, named[n].grad) for n, p in ours.named_parameters()]
    assert len(grads) == (3 if with_state else 1) + L * (4 if bias else 2)
    for name, g, tg in grads:
        assert g is not None and g.dtype == dtype, name
        np.testing.assert_allclose(g, tg.numpy(), atol=tol["grad_atol"], rtol=tol["grad_rtol"], err_msg=name)


@settings(max_examples=25)
@given(T=st.integers(1, 7), B=st.integers(1, 4), I=st.integers(1, 6), H=st.integers(1, 6), L=st.integers(1, 2),
       batch_first=st.booleans(), bias=st.booleans(), with_state=st.booleans(), seed=st.integers(0, 2**16))
@needs_torch
def test_lstm_matches_torch_float64(T, B, I, H, L, batch_first, bias, with_state, seed):
    compare_lstm(T, B, I, H, L, batch_first, bias, with_state, np.float64, seed=seed)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
@needs_torch
def test_lstm_two_layers_every_variant_float64(batch_first, bias, with_state):
    compare_lstm(9, 3, 5, 7, 2, batch_first, bias, with_state, np.float64)


@pytest.mark.parametrize("batch_first", [False, True])
@needs_torch
def test_lstm_float32(batch_first):
    compare_lstm(12, 4, 8, 16, 2, batch_first, True, True, np.float32)


@pytest.mark.parametrize("with_state", [False, True])
@needs_torch
def test_lstm_unbatched_input(with_state):
    compare_lstm(6, 1, 3, 4, 2, False, True, with_state, np.float64, unbatched=True)


@needs_torch
def test_lstm_long_sequence_saturated_gates():
    """Large inputs saturate every gate (sigmoid and tanh near +-1): no overflow, still exact."""
    torch.manual_seed(0)
    ref = torch.nn.LSTM(3, 5, 2, dtype=torch.float64)
    ours = tl.nn.LSTM(3, 5, 2, dtype=np.float64)
    ours.load_state_dict(ref.state_dict())
    x = np.random.default_rng(0).standard_normal((200, 2, 3)) * 50
    with np.errstate(all="raise"):
        out, (h, c) = ours(tl.Tensor(x))
    t_out, (t_h, t_c) = ref(torch.from_numpy(x))
    np.testing.assert_allclose(out.data, t_out.detach().numpy(), atol=1e-7, rtol=1e-7)
    np.testing.assert_allclose(c.data, t_c.detach().numpy(), atol=1e-7, rtol=1e-7)


def test_fused_layer_gradcheck_every_input():
    """Finite differences along a random direction through x, h0, c0, W_ih, W_hh and both biases."""
    rng = np.random.default_rng(1)
    T, B, I, H = 6, 3, 4, 5
    arrays = [rng.standard_normal((T, B, I)), rng.standard_normal((B, H)), rng.standard_normal((B, H)),
              rng.standard_normal((4 * H, I)) * 0.5, rng.standard_normal((4 * H, H)) * 0.5,
              rng.standard_normal(4 * H) * 0.5, rng.standard_normal(4 * H) * 0.5]
    inputs = [tl.Tensor(a, requires_grad=True) for a in arrays]
    # the three pieces (output, h_T, c_T) all count: gradcheck weights each output element
    assert tl.gradcheck(lambda *a: lstm_layer(*a), inputs)
    # and the module, two layers with dropout off, through its slicing and stacking
    m = tl.nn.LSTM(I, H, 2, dtype=np.float64)
    x = tl.Tensor(arrays[0], requires_grad=True)
    h0 = tl.Tensor(rng.standard_normal((2, B, H)), requires_grad=True)
    c0 = tl.Tensor(rng.standard_normal((2, B, H)), requires_grad=True)

    def f(x, h0, c0):
        out, (h, c) = m(x, (h0, c0))
        return out, h, c
    assert tl.gradcheck(f, [x, h0, c0])


def test_fused_layer_skips_unwanted_gradients():
    rng = np.random.default_rng(2)
    x = tl.Tensor(rng.standard_normal((3, 2, 4)))  # no grad for the input: dx is not computed
    w_ih = tl.Tensor(rng.standard_normal((8, 4)), requires_grad=True)
    w_hh = tl.Tensor(rng.standard_normal((8, 2)), requires_grad=True)
    z = np.zeros((2, 2))
    out, _, _ = lstm_layer(x, z, z, w_ih, w_hh)
    out.sum().backward()
    assert x.grad is None and w_ih.grad.shape == (8, 4) and w_hh.grad.shape == (8, 2)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@needs_torch
def test_lstm_cell_matches_torch(bias, dtype):
    tol = TOL[dtype]
    torch.manual_seed(3)
    ref = torch.nn.LSTMCell(5, 4, bias=bias, dtype=_torch_dtype(dtype))
    ours = tl.nn.LSTMCell(5, 4, bias=bias, dtype=dtype)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    rng = np.random.default_rng(3)
    x, h, c = rng.standard_normal((3, 5)).astype(dtype), *(rng.standard_normal((3, 4)).astype(dtype) for _ in range(2))
    # two steps, so the second step's state gradient flows into the first
    tx, th, tc = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, h, c))
    X, Hs, Cs = (tl.Tensor(a.copy(), requires_grad=True) for a in (x, h, c))
    t1 = ref(tx, (th, tc))
    t2 = ref(tx * 2, t1)
    o1 = ours(X, (Hs, Cs))
    o2 = ours(X * 2, o1)
    for a, b in zip(o2, t2):
        np.testing.assert_allclose(a.data, b.detach().numpy(), atol=tol["atol"], rtol=tol["rtol"])
    (t2[0].sum() + (t2[1] * t2[1]).sum()).backward()
    (o2[0].sum() + (o2[1] * o2[1]).sum()).backward()
    for g, tg in [(X.grad, tx.grad), (Hs.grad, th.grad), (Cs.grad, tc.grad)] + \
            [(p.grad, dict(ref.named_parameters())[n].grad) for n, p in ours.named_parameters()]:
        np.testing.assert_allclose(g, tg.numpy(), atol=tol["grad_atol"], rtol=tol["grad_rtol"])
    # unbatched input and no state, as torch
    h1, c1 = ours(x[0])
    th1, tc1 = ref(torch.from_numpy(x[0]))
    assert h1.shape == (4,)
    np.testing.assert_allclose(c1.data, tc1.detach().numpy(), atol=tol["atol"], rtol=tol["rtol"])


@needs_torch
def test_lstm_loads_torch_state_dict_names_shapes_and_init():
    ref = torch.nn.LSTM(10, 32, num_layers=3, bias=True)
    ours = tl.nn.LSTM(10, 32, num_layers=3)
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in ref.state_dict().items()]
    bound = 1 / np.sqrt(32)  # torch's init: U(-1/sqrt(H), 1/sqrt(H)) for every weight and bias
    for v in ours.state_dict().values():
        assert np.abs(v).max() <= bound and np.abs(v).max() > 0.9 * bound
    ours.load_state_dict(ref.state_dict())  # strict: same keys
    x = np.random.default_rng(0).standard_normal((4, 2, 10)).astype(np.float32)
    np.testing.assert_allclose(ours(tl.Tensor(x))[0].data, ref(torch.from_numpy(x))[0].detach().numpy(),
                               atol=1e-5, rtol=1e-5)
    assert list(tl.nn.LSTM(3, 4, bias=False).state_dict()) == ["weight_ih_l0", "weight_hh_l0"]


def test_lstm_dropout_between_layers_only_in_training():
    tl.manual_seed(0)
    m = tl.nn.LSTM(4, 8, 2, dropout=0.5, dtype=np.float64)
    x = tl.Tensor(np.random.default_rng(0).standard_normal((5, 2, 4)))
    a, b = m(x)[0].data, m(x)[0].data
    assert not np.allclose(a, b)  # two different masks between layer 0 and layer 1
    m.eval()
    np.testing.assert_array_equal(m(x)[0].data, m(x)[0].data)
    m1 = tl.nn.LSTM(4, 8, 1, dropout=0.5)  # one layer: nothing between layers, so no dropout at all
    y = tl.Tensor(np.ones((3, 1, 4), dtype=np.float32))
    np.testing.assert_array_equal(m1(y)[0].data, m1(y)[0].data)


def test_lstm_errors_say_what_was_expected():
    m = tl.nn.LSTM(4, 3, 2)
    with pytest.raises(ValueError, match="input_size=4"):
        m(np.zeros((2, 1, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=r"h_0 must have shape \(2, 1, 3\)"):
        m(np.zeros((2, 1, 4), dtype=np.float32), (np.zeros((1, 1, 3)), np.zeros((1, 1, 3))))
    with pytest.raises(TypeError, match="dtype float64"):
        LSTMLayer.apply(np.zeros((2, 1, 4)), np.zeros((1, 3), np.float32), np.zeros((1, 3), np.float32),
                        m.weight_ih_l0, m.weight_hh_l0)
