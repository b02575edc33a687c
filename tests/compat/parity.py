"""What the model-file tests share: float64 in both libraries, moving weights from torch to tinyllm,
and comparing tensors, parameters and gradients of a torch model and its tinyllm twin at 1e-10."""
import contextlib
import io

import numpy as np

import tinyllm as tl

TOL = 1e-10  # absolute and relative: float64 runs of one model differ only in summation order


@contextlib.contextmanager
def float64(torch):
    """Both libraries make float64 parameters and tensors inside; the old defaults come back after."""
    torch_dtype, tl_dtype = torch.get_default_dtype(), tl.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    tl.set_default_dtype(tl.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(torch_dtype)
        tl.set_default_dtype(tl_dtype)


def printed(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = fn(*args, **kwargs)
    return result, out.getvalue()


def host(x):
    """A NumPy array of a torch tensor, a tinyllm tensor or an array."""
    if hasattr(x, "detach") and hasattr(x, "cpu") and not isinstance(x, tl.Tensor):  # a torch tensor
        return x.detach().cpu().numpy()
    return np.asarray(x.numpy() if isinstance(x, tl.Tensor) else x)


def assert_close(actual, expected, what):
    """tinyllm's ``actual`` against torch's ``expected``: same shape, same dtype kind, equal to TOL."""
    a, e = host(actual), host(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape}, torch has {e.shape}"
    assert a.dtype == e.dtype, f"{what}: dtype {a.dtype}, torch has {e.dtype}"
    np.testing.assert_allclose(a, e, rtol=TOL, atol=TOL, err_msg=what)


def transfer(torch_model, tl_model):
    """Load the torch model's weights and buffers into the tinyllm model (as NumPy arrays)."""
    tl_model.load_state_dict({k: host(v) for k, v in torch_model.state_dict().items()})


def assert_same_structure(tl_model, torch_model):
    """Same parameter names in the same order with the same shapes; same state_dict keys and shapes."""
    ours = [(n, tuple(p.shape)) for n, p in tl_model.named_parameters()]
    theirs = [(n, tuple(p.shape)) for n, p in torch_model.named_parameters()]
    assert ours == theirs
    ours = [(k, tuple(v.shape)) for k, v in tl_model.state_dict().items()]
    theirs = [(k, tuple(v.shape)) for k, v in torch_model.state_dict().items()]
    assert ours == theirs


def assert_same_state(tl_model, torch_model, what="state_dict"):
    theirs = torch_model.state_dict()
    for k, v in tl_model.state_dict().items():
        assert_close(v, theirs[k], f"{what}: {k}")


def assert_same_parameters(tl_model, torch_model, what="parameter"):
    theirs = dict(torch_model.named_parameters())
    for n, p in tl_model.named_parameters():
        assert_close(p, theirs[n], f"{what} {n}")


def assert_same_grads(tl_model, torch_model):
    theirs = dict(torch_model.named_parameters())
    for n, p in tl_model.named_parameters():
        assert (p.grad is None) == (theirs[n].grad is None), f"grad of {n}: only one library has it"
        if p.grad is not None:
            assert_close(p.grad, theirs[n].grad, f"grad of {n}")


def assert_same_training_steps(ours, theirs, our_opt, their_opt, batches, forward, steps=3):
    """``steps`` optimizer steps on both models, the same batches (``batches(seed)`` -> idx, targets,
    ``forward(ours, theirs, idx, targets)`` -> the two (logits, loss) pairs): the loss before each
    step and every parameter after it agree."""
    for step in range(steps):
        idx, targets = batches(seed=step)
        (_, our_loss), (_, their_loss) = forward(ours, theirs, idx, targets)
        assert_close(our_loss, their_loss, f"loss before step {step}")
        our_loss.backward()
        their_loss.backward()
        our_opt.step()
        their_opt.step()
        our_opt.zero_grad(set_to_none=True)
        their_opt.zero_grad(set_to_none=True)
        assert_same_parameters(ours, theirs, f"after step {step}:")
