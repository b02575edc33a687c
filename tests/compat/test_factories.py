"""torch's dtype names and tensor factories in tinyllm: the same shapes, dtypes and values as torch
(random ones: shapes, dtypes and ranges), the ``dtype=``, ``device=`` and ``requires_grad=`` keywords,
and one clear error for a device that is not there."""
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

import tinyllm as tl
from tinyllm import backend

from helpers import shapes

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch

DTYPE_NAMES = ["long", "int64", "int", "int32", "int16", "int8", "uint8", "float", "float32", "double",
               "float64", "half", "float16", "bool"]


def torch_numpy_dtype(dtype):
    return torch.empty(0, dtype=dtype).numpy().dtype


@pytest.mark.parametrize("name", DTYPE_NAMES)
def test_dtype_names_are_torchs(name):
    ours = getattr(tl, name)
    assert np.dtype(ours) == torch_numpy_dtype(getattr(torch, name))
    assert tl.zeros(2, dtype=ours).dtype == ours  # x.dtype == tl.long holds
    assert tl.bool_ is tl.bool and tl.float32 is tl.float


@pytest.mark.parametrize("name", ["float16", "float32", "float64"])
def test_finfo_matches_torch(name):
    ours, theirs = tl.finfo(getattr(tl, name)), torch.finfo(getattr(torch, name))
    for field in ("eps", "max", "min", "tiny", "bits"):
        assert float(getattr(ours, field)) == float(getattr(theirs, field)), field


def test_finfo_default_and_iinfo():
    tl.set_default_dtype(tl.float64)
    assert tl.finfo().eps == np.finfo(np.float64).eps
    for name in ("int8", "int16", "int32", "int64", "uint8"):
        ours, theirs = tl.iinfo(getattr(tl, name)), torch.iinfo(getattr(torch, name))
        assert (ours.min, ours.max, ours.bits) == (theirs.min, theirs.max, theirs.bits)
    with pytest.raises(TypeError, match="finfo: expected a floating dtype, got int64"):
        tl.finfo(tl.long)
    with pytest.raises(TypeError, match="iinfo: expected an integer dtype, got float32"):
        tl.iinfo(tl.float32)


def same(ours, theirs):
    """Same shape, dtype and values as the torch tensor."""
    theirs = theirs.numpy()
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, (ours.shape, ours.dtype, theirs.shape, theirs.dtype)
    np.testing.assert_array_equal(ours.numpy(), theirs)


# (name, args, kwargs): torch and tinyllm each called with their own dtype names
CALLS = [
    ("zeros", (2, 3), {}), ("zeros", ((2, 3),), {}), ("zeros", ([2, 3],), {}), ("zeros", ((),), {}),
    ("zeros", (4,), dict(dtype="long")), ("ones", (2, 3), dict(dtype="float64")), ("ones", ((0, 2),), {}),
    ("empty", (2, 3), {}), ("full", ((2, 3), 7), {}), ("full", ((2,), 1.5), {}), ("full", ((2,), True), {}),
    ("full", ((3,), 2.0), dict(dtype="int32")),
    ("arange", (5,), {}), ("arange", (0, 5), dict(dtype="long")), ("arange", (1, 2, 0.25), {}),
    ("arange", (5, -3, -2), {}), ("arange", (0.0, 1.0, 0.1), dict(dtype="float64")), ("arange", (3,), dict(dtype="float")),
    ("linspace", (0, 1, 5), {}), ("linspace", (-3.3, 7.1, 37), dict(dtype="float64")), ("linspace", (2, 2, 1), {}),
    ("linspace", (0, 1, 0), {}), ("linspace", (1e-3, 1e3, 101), dict(dtype="float64")), ("linspace", (5, -5, 8), {}),
    ("eye", (3,), {}), ("eye", (2, 4), dict(dtype="long")),
]


def _dtype_kwargs(kwargs, lib):
    return {k: getattr(lib, v) if k == "dtype" else v for k, v in kwargs.items()}


@pytest.mark.parametrize("default", ["float32", "float64"])
@pytest.mark.parametrize("name, args, kwargs", CALLS, ids=[f"{n}{a}{k or ''}" for n, a, k in CALLS])
def test_factories_match_torch(name, args, kwargs, default):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, default))
    tl.set_default_dtype(getattr(tl, default))
    try:
        theirs = getattr(torch, name)(*args, **_dtype_kwargs(kwargs, torch))
    finally:
        torch.set_default_dtype(previous)
    ours = getattr(tl, name)(*args, **_dtype_kwargs(kwargs, tl))
    if name == "empty":
        assert ours.shape == tuple(theirs.shape) and ours.dtype == theirs.numpy().dtype
    elif name == "linspace" and ours.numel() > 1:
        # torch's vectorised loop rounds inner values by the CPU's vector width; the ends are exact
        assert ours.shape == tuple(theirs.shape) and ours.dtype == theirs.numpy().dtype
        ulps = 4 * np.finfo(ours.dtype).eps * np.abs(theirs.numpy()).max()
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=0, atol=ulps)
        same(ours[[0, -1]], theirs[[0, -1]])
    else:
        same(ours, theirs)


@pytest.mark.parametrize("name", ["zeros_like", "ones_like", "empty_like", "full_like", "randn_like", "rand_like"])
@pytest.mark.parametrize("dtype", [None, "float64", "long"])
def test_like_factories_follow_the_input(name, dtype):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    extra = (3,) if name == "full_like" else ()
    if name in ("randn_like", "rand_like") and dtype == "long":
        dtype = "float16"  # torch draws only floating random numbers
    ours = getattr(tl, name)(tl.tensor(x), *extra, **({} if dtype is None else dict(dtype=getattr(tl, dtype))))
    theirs = getattr(torch, name)(torch.tensor(x), *extra, **({} if dtype is None else dict(dtype=getattr(torch, dtype))))
    if name in ("randn_like", "rand_like", "empty_like"):
        assert ours.shape == tuple(theirs.shape) and ours.dtype == theirs.numpy().dtype
        if name == "rand_like":
            assert ((ours.numpy() >= 0) & (ours.numpy() < 1)).all()
    else:
        same(ours, theirs)


def test_random_factories():
    tl.manual_seed(0)
    for fn in (tl.rand, tl.randn):
        assert fn(2, 3).shape == (2, 3) and fn((2, 3)).dtype == tl.float32
        assert fn(4, dtype=tl.float64).dtype == tl.float64
    r = tl.rand(1000).numpy()
    assert ((r >= 0) & (r < 1)).all()
    for ours, theirs in [(tl.randint(10, (3, 4)), torch.randint(10, (3, 4))),
                         (tl.randint(-2, 3, (50,)), torch.randint(-2, 3, (50,))),
                         (tl.randint(0, 5, size=(2,), dtype=tl.int32), torch.randint(0, 5, size=(2,), dtype=torch.int32)),
                         (tl.randint(3, size=(2,)), torch.randint(3, size=(2,)))]:
        assert ours.shape == tuple(theirs.shape) and ours.dtype == theirs.numpy().dtype
    assert set(tl.randint(-2, 3, (200,)).tolist()) == {-2, -1, 0, 1, 2}
    tl.manual_seed(3)
    a = tl.randn(5)
    tl.manual_seed(3)
    np.testing.assert_array_equal(tl.randn(5, device="cpu").numpy(), a.numpy())  # device= changes nothing


@given(shape=shapes(max_dims=3), dtype=st.sampled_from(["float32", "float64", "int64", "bool"]))
def test_shapes_and_dtypes_over_shapes(shape, dtype):
    for name in ("zeros", "ones", "empty"):
        ours = getattr(tl, name)(shape, dtype=getattr(tl, dtype))
        theirs = getattr(torch, name)(shape, dtype=getattr(torch, dtype))
        assert ours.shape == tuple(theirs.shape) and ours.dtype == theirs.numpy().dtype
        if name != "empty":
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    same(tl.full(shape, 2, dtype=getattr(tl, dtype)), torch.full(shape, 2, dtype=getattr(torch, dtype)))


def test_tensor_and_as_tensor():
    for data in ([1, 2], [1.0, 2], [True, False], [[1, 2], [3, 4]], 3, 2.5):
        same(tl.tensor(data), torch.tensor(data))
    same(tl.tensor([1, 2], dtype=tl.float64), torch.tensor([1, 2], dtype=torch.float64))
    a = np.arange(3.0)
    t = tl.tensor(a)
    a[0] = 7.0
    assert t[0].item() == 0.0  # tensor() copies
    u = tl.tensor(t)
    t.data[1] = 9.0
    assert u[1].item() == 1.0
    b = np.arange(3.0)
    shared = tl.as_tensor(b)
    b[0] = 7.0
    assert shared[0].item() == 7.0  # as_tensor shares the array's memory, as torch.as_tensor does
    x = tl.ones(2, requires_grad=True)
    assert tl.as_tensor(x) is x
    y = tl.as_tensor(x, dtype=tl.float64)
    assert y.dtype == tl.float64 and y.requires_grad  # converted as x.to(dtype): still in the graph
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 1.0])


@pytest.mark.parametrize("device", ["cpu", "cpu:0", tl.device("cpu"), "CPU"])
def test_device_keyword(device):
    for t in (tl.zeros(2, device=device), tl.ones(2, device=device), tl.full((2,), 1, device=device),
              tl.arange(0, 4, dtype=tl.long, device=device), tl.tensor([1.0], device=device),
              tl.as_tensor([1.0], device=device), tl.randn(2, device=device), tl.rand(2, device=device),
              tl.randint(3, (2,), device=device), tl.linspace(0, 1, 3, device=device), tl.eye(2, device=device),
              tl.empty(2, device=device), tl.zeros_like(tl.ones(2), device=device)):
        assert t.device == "cpu"
    assert tl.ones(2).to(tl.device("cpu")).device == "cpu"
    assert tl.device("cpu").type == "cpu" and str(tl.device("cpu:0")) == "cpu" and tl.device("cpu") == "cpu"


@pytest.mark.skipif(backend.cuda_available(), reason="checks the error of a machine without a GPU")
def test_missing_devices_are_refused_clearly():
    with pytest.raises(RuntimeError, match="device 'cuda' is not available"):
        tl.zeros(2, device="cuda")
    with pytest.raises(RuntimeError, match="device 'cuda' is not available"):
        tl.arange(3, device=tl.device("cpu").type.replace("cpu", "cuda"))
    with pytest.raises(ValueError, match=r"unknown device 'mps' \(expected one of \('cpu', 'cuda'\)\)"):
        tl.randn(2, device="mps")
    with pytest.raises(ValueError, match="only one CUDA device"):
        tl.ones(1, device="cuda:1")


def test_requires_grad_keyword_and_bad_sizes():
    for t in (tl.zeros(2, requires_grad=True), tl.ones(2, requires_grad=True), tl.randn(2, requires_grad=True),
              tl.full((2,), 1.0, requires_grad=True), tl.linspace(0, 1, 3, requires_grad=True),
              tl.eye(2, requires_grad=True), tl.zeros_like(tl.ones(2), requires_grad=True),
              tl.arange(0.0, 2.0, requires_grad=True), tl.tensor([1.0], requires_grad=True)):
        assert t.requires_grad and t.is_leaf
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients"):
        tl.arange(3, requires_grad=True)
    with pytest.raises(TypeError, match=r"a size must be non-negative ints, got \(2, 1.5\)"):
        tl.zeros(2, 1.5)
    with pytest.raises(TypeError, match="a size must be non-negative ints"):
        tl.ones(-1)
    with pytest.raises(ValueError, match="arange: step must be nonzero"):
        tl.arange(0, 3, 0)
    with pytest.raises(TypeError, match="randint: missing the size argument"):
        tl.randint(0, 3)
