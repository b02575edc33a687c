"""llama_model.py, a Llama-style model in plain torch idiom (nn.RMSNorm, rotary embeddings from
torch.outer/cos/sin, a SiLU-gated MLP, grouped-query attention through scaled_dot_product_attention's
enable_gqa), run under torch and under tinyllm with only its imports changed. In float64 the two agree
to 1e-10: the model built, the weights moved across, logits and loss, every gradient, three AdamW
steps, and greedy decoding; with tied and untied output weights."""
import numpy as np
import pytest

import tinyllm as tl

torch = pytest.importorskip("torch")

import model_files  # noqa: E402  (tests/compat is on sys.path under pytest)
from parity import (assert_close, assert_same_grads, assert_same_state, assert_same_training_steps,  # noqa: E402
                    assert_same_structure, float64, transfer)

pytestmark = pytest.mark.torch

SMALL = dict(vocab_size=40, block_size=12, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, multiple_of=8)


@pytest.fixture(params=[False, True], ids=["untied", "tied"])
def tie_weights(request):
    return request.param


@pytest.fixture
def models(tie_weights):
    """The same Llama under torch (seeded) and under tinyllm, torch's weights loaded into tinyllm's."""
    with float64(torch):
        files = {framework: model_files.load("llama_model.py", framework) for framework in ("torch", "tinyllm")}
        config = dict(SMALL, tie_weights=tie_weights)
        torch.manual_seed(0)
        theirs = files["torch"].Llama(files["torch"].LlamaConfig(**config))
        ours = files["tinyllm"].Llama(files["tinyllm"].LlamaConfig(**config))
        transfer(theirs, ours)
        yield ours, theirs


def batch(seed=0, B=2, T=10, V=40):
    rng = np.random.default_rng(seed)
    return rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))


def both(ours, theirs, *arrays):
    return ours(*[tl.tensor(a) for a in arrays]), theirs(*[torch.tensor(a) for a in arrays])


def test_build_and_transfer(models, tie_weights):
    ours, theirs = models
    assert_same_structure(ours, theirs)
    assert "rope_cos" not in ours.state_dict()  # a non-persistent buffer
    assert_same_state(ours, theirs)
    assert_close(ours.rope_cos, theirs.rope_cos, "rope_cos (computed by each library)")
    assert_close(ours.rope_sin, theirs.rope_sin, "rope_sin (computed by each library)")
    assert (ours.output.weight is ours.tok_embeddings.weight) == tie_weights


def test_forward_and_backward(models):
    ours, theirs = models
    idx, targets = batch()
    (our_logits, our_loss), (their_logits, their_loss) = both(ours, theirs, idx)
    assert our_loss is None
    assert_close(our_logits, their_logits, "logits")
    (our_logits, our_loss), (their_logits, their_loss) = both(ours, theirs, idx, targets)
    assert_close(our_loss, their_loss, "loss")
    our_loss.backward()
    their_loss.backward()
    assert_same_grads(ours, theirs)


def test_three_adamw_steps(models):
    ours, theirs = models
    our_opt = tl.optim.AdamW(ours.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    their_opt = torch.optim.AdamW(theirs.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    assert_same_training_steps(ours, theirs, our_opt, their_opt, batch, both)


def test_generate(models):
    ours, theirs = models
    prompt = batch(T=9)[0]  # 9 + 5 tokens passes block_size 12: generate crops its context
    our_ids = ours.generate(tl.tensor(prompt), 5, greedy=True)
    their_ids = theirs.generate(torch.tensor(prompt), 5, greedy=True)
    assert our_ids.dtype == tl.int64
    np.testing.assert_array_equal(our_ids.numpy(), their_ids.numpy())
    our_ids = ours.generate(tl.tensor(prompt), 5, temperature=0.7, top_k=1)  # top_k=1 samples greedily
    np.testing.assert_array_equal(our_ids.numpy(), their_ids.numpy())
    tl.manual_seed(0)
    ids = ours.generate(tl.tensor(prompt), 5, temperature=0.7, top_k=4).numpy()
    assert ids.shape == (2, 14)
    np.testing.assert_array_equal(ids[:, :9], prompt)
    assert ((ids >= 0) & (ids < 40)).all()


def test_type_as_casts_like_torch():
    """Llama code casts with ``a.type_as(b)``: the same dtype, the same values, gradients flowing
    back in the source dtype."""
    x = np.array([1.5, -2.25], dtype=np.float32)
    ours = tl.tensor(x, requires_grad=True)
    y = ours.type_as(tl.zeros(1, dtype=tl.float64))
    assert y.dtype == tl.float64
    (y * 2).sum().backward()
    assert ours.grad.dtype == np.float32
    np.testing.assert_array_equal(ours.grad, [2.0, 2.0])
    same = tl.ones(2)
    assert same.type_as(tl.zeros(3)) is same  # nothing to change: the tensor itself, as torch
    np.testing.assert_array_equal(tl.tensor([1.7, -1.7]).type_as(tl.tensor([1])).numpy(),
                                  torch.tensor([1.7, -1.7]).type_as(torch.tensor([1])).numpy())
