"""Device plumbing: ``Tensor.to``, ``Module.to``, ``tl.device``, optimizer state and checkpoints across
devices, clear errors. Each device test runs on every available device: 'cpu' always, 'cuda' only
where CuPy imports and sees a GPU (elsewhere it is skipped with the reason)."""
import numpy as np
import pytest

import tinyllm as tl
from tinyllm import backend, checkpoint, nn
from tinyllm.models import GPT, GPTConfig
from tinyllm.runs import build_model
from tinyllm.train import TrainConfig

CUDA = backend.cuda_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason="needs CuPy and a CUDA GPU"))]
no_cuda = pytest.mark.skipif(CUDA, reason="checks the errors of a machine without CUDA")


def _host(a):
    return backend.to_device(a, "cpu")


def _small_gpt():
    tl.manual_seed(0)
    return GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=16))


def _train_steps(model, steps=3):
    opt = tl.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    ids = np.random.default_rng(0).integers(0, 30, (2, 16))
    losses = []
    for _ in range(steps):
        _, loss = model(ids, ids)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses, opt


@pytest.mark.parametrize("device", DEVICES)
def test_training_on_a_device_matches_cpu(device):
    """The same model, moved with ``.to(device)``, trains to the CPU's losses and weights."""
    ref_losses, _ = _train_steps(_small_gpt())
    model = _small_gpt().to(device)
    assert all(p.device == device for p in model.parameters())
    losses, opt = _train_steps(model)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert all(backend.device_of(v) == device for s in opt.state.values() for v in s.values() if hasattr(v, "shape"))


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_to_and_back_carries_gradients(device):
    x = tl.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = x.to(device)
    assert y.device == device and (y is x) == (device == "cpu")
    (y * y).sum().backward()
    assert backend.device_of(x.grad) == "cpu"
    np.testing.assert_allclose(x.grad, 2 * np.arange(6.0).reshape(2, 3))
    z = x.to(device=device, dtype=np.float64)
    assert z.dtype == np.float64 and z.device == device


@pytest.mark.parametrize("device", DEVICES)
def test_device_context_places_new_tensors(device):
    with tl.device(device):
        assert tl.get_device() == device
        for t in (tl.zeros(2, 3), tl.ones(2), tl.randn(3), tl.tensor([1, 2]), tl.arange(4), tl.Tensor([1.0])):
            assert t.device == device
    assert tl.get_device() == "cpu"
    tl.manual_seed(5)
    a = tl.randn(4)
    tl.manual_seed(5)
    with tl.device(device):
        b = tl.randn(4)
    np.testing.assert_array_equal(_host(b.data), a.data)  # drawn on the host: same seed, same values


@pytest.mark.parametrize("device", DEVICES)
def test_checkpoints_hold_host_arrays_and_load_anywhere(device, tmp_path):
    model = _small_gpt().to(device)
    _, opt = _train_steps(model, steps=1)
    checkpoint.save_checkpoint(str(tmp_path / "ck"), model, opt, config={"x": 1})
    cpu_model = _small_gpt()
    cpu_opt = tl.optim.AdamW(cpu_model.parameters(), lr=1e-2, weight_decay=0.1)
    checkpoint.load_checkpoint(str(tmp_path / "ck"), cpu_model, cpu_opt)
    for (n, a), (_, b) in zip(model.state_dict().items(), cpu_model.state_dict().items()):
        np.testing.assert_array_equal(_host(a.data), b.numpy(), err_msg=n)  # state_dict holds Tensors
    assert all(backend.device_of(v) == "cpu" for s in cpu_opt.state.values() for v in s.values() if hasattr(v, "shape"))


@pytest.mark.parametrize("device", DEVICES)
def test_optimizer_state_follows_its_parameters(device):
    model = _small_gpt()
    _, opt = _train_steps(model, steps=1)  # state made on the CPU
    model.to(device)
    ids = np.zeros((1, 4), dtype=np.int64)
    _, loss = model(ids, ids)
    loss.backward()
    opt.step()  # moves the state to the parameters' device before updating
    assert all(backend.device_of(v) == device for s in opt.state.values() for v in s.values() if hasattr(v, "shape"))


@pytest.mark.skipif(not CUDA, reason="needs CuPy and a CUDA GPU")
def test_mixing_devices_names_both():
    a = tl.ones(3)
    b = tl.ones(3).to("cuda")
    with pytest.raises(RuntimeError, match="cpu and cuda"):
        a + b


def test_cpu_moves_are_no_ops():
    model = nn.Linear(3, 2)
    w = model.weight
    assert model.to("cpu") is model and model.weight is w and model.cpu() is model
    t = tl.ones(2)
    assert t.to("cpu") is t and t.cpu() is t and t.to("cuda:0" if CUDA else "cpu").device in ("cpu", "cuda")


def test_bad_device_names():
    for bad in ("tpu", "gpu", "cuda:1"):
        with pytest.raises(ValueError, match="device"):
            tl.ones(2).to(bad)
        with pytest.raises(ValueError, match="device"):
            tl.device(bad)


@no_cuda
def test_cuda_without_a_gpu_fails_clearly(tmp_path):
    msg = "device 'cuda' is not available"
    with pytest.raises(RuntimeError, match=msg):
        tl.ones(2).to("cuda")
    with pytest.raises(RuntimeError, match=msg):
        nn.Linear(2, 2).to("cuda")
    with pytest.raises(RuntimeError, match=msg):
        tl.device("cuda")
    with pytest.raises(RuntimeError, match=msg):
        build_model(TrainConfig(device="cuda"), vocab_size=10)
    from tinyllm.cli import main
    data_dir = tmp_path / "data"
    from tinyllm import data
    data.prepare_text("hello world, " * 200, str(data_dir))
    assert main(["train", "--data", str(data_dir), "--out", str(tmp_path / "run"), "--device", "cuda",
                 "--max-iters", "1", "--no-progress"]) == 1
