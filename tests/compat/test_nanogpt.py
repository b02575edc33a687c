"""karpathy/nanoGPT's model.py, byte for byte (nanogpt/model.py), run twice: under torch, and under
tinyllm with only its three torch imports answered by tinyllm. In float64 the two runs agree to 1e-10:
the model built, the weights moved across, the logits and loss, every gradient, three AdamW steps from
its own ``configure_optimizers``, ``crop_block_size``, ``generate``, ``estimate_mfu`` and
``from_pretrained``. Each runs with torch's fused attention and with the fallback nanoGPT takes when
``F.scaled_dot_product_attention`` is missing (``tril`` mask, ``masked_fill``, softmax)."""
import numpy as np
import pytest

import tinyllm as tl

torch = pytest.importorskip("torch")

import model_files  # noqa: E402  (tests/compat is on sys.path under pytest)
from parity import (assert_close, assert_same_grads, assert_same_state, assert_same_training_steps,  # noqa: E402
                    assert_same_structure, float64, printed, transfer)

pytestmark = pytest.mark.torch

SMALL = dict(block_size=16, vocab_size=50, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
NO_SDPA = {"nn.functional": {"scaled_dot_product_attention"}}


@pytest.fixture(params=[True, False], ids=["flash", "slow_attention"])
def flash(request):
    return request.param


@pytest.fixture(params=[True, False], ids=["bias", "no_bias"])
def bias(request):
    return request.param


@pytest.fixture
def files(flash):
    """The model file loaded under torch and under tinyllm, in float64, the fused attention hidden
    from both when ``flash`` is False."""
    modules = {}
    with float64(torch):
        for framework in ("torch", "tinyllm"):
            module = model_files.load("nanogpt/model.py", framework)
            if not flash:  # the file reads torch.nn.functional through its global ``torch``
                module.torch = model_files.Without(module.torch, NO_SDPA)
            modules[framework] = module
        yield modules


def build(files, **config):
    """The same GPT under torch (seeded) and under tinyllm, with torch's weights loaded into tinyllm's,
    and what each printed while being built."""
    config = {**SMALL, **config}
    torch.manual_seed(0)
    theirs, their_print = printed(files["torch"].GPT, files["torch"].GPTConfig(**config))
    ours, our_print = printed(files["tinyllm"].GPT, files["tinyllm"].GPTConfig(**config))
    transfer(theirs, ours)
    return ours, theirs, our_print, their_print


def batch(seed=0, B=3, T=12, V=50):
    rng = np.random.default_rng(seed)
    idx, targets = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    targets[0, :3] = -1  # ignore_index=-1 in the file's cross_entropy
    return idx, targets


def both(ours, theirs, *arrays, **kwargs):
    """Call the tinyllm model and the torch model on the same integer arrays."""
    return (ours(*[tl.tensor(a) for a in arrays], **kwargs),
            theirs(*[torch.tensor(a) for a in arrays], **kwargs))


def test_build(files, bias, flash):
    ours, theirs, our_print, their_print = build(files, bias=bias)
    assert_same_structure(ours, theirs)
    assert our_print == their_print  # the parameter count (and the slow-attention warning)
    assert ("WARNING: using slow attention" in our_print) == (not flash)
    for non_embedding in (True, False):
        assert ours.get_num_params(non_embedding) == theirs.get_num_params(non_embedding)
    assert ours.transformer.wte.weight is ours.lm_head.weight  # tied, as in torch


def test_state_dict_transfer(files, bias):
    ours, theirs, _, _ = build(files, bias=bias)
    assert_same_state(ours, theirs)
    assert ours.transformer.wte.weight is ours.lm_head.weight  # loading kept the tie
    assert_close(ours.lm_head.weight, theirs.lm_head.weight, "lm_head.weight")


def test_forward_and_backward(files, bias):
    ours, theirs, _, _ = build(files, bias=bias)
    idx, targets = batch()
    (our_logits, our_loss), (their_logits, their_loss) = both(ours, theirs, idx)
    assert our_loss is None and their_loss is None
    assert_close(our_logits, their_logits, "logits of the last position")
    assert tuple(our_logits.shape) == (3, 1, 50)
    (our_logits, our_loss), (their_logits, their_loss) = both(ours, theirs, idx, targets)
    assert_close(our_logits, their_logits, "logits")
    assert_close(our_loss, their_loss, "loss")
    our_loss.backward()
    their_loss.backward()
    assert_same_grads(ours, theirs)


def test_three_adamw_steps(files, bias):
    ours, theirs, _, _ = build(files, bias=bias)
    args = dict(weight_decay=0.1, learning_rate=1e-2, betas=(0.9, 0.95), device_type="cpu")
    our_opt, our_print = printed(ours.configure_optimizers, **args)
    their_opt, their_print = printed(theirs.configure_optimizers, **args)
    assert our_print == their_print  # decayed / non-decayed counts, fused: False
    assert [g["weight_decay"] for g in our_opt.param_groups] == [g["weight_decay"] for g in their_opt.param_groups]
    assert_same_training_steps(ours, theirs, our_opt, their_opt, batch, both)


def test_crop_block_size(files, flash):
    ours, theirs, _, _ = build(files)
    ours.crop_block_size(8)
    theirs.crop_block_size(8)
    assert_same_structure(ours, theirs)
    assert_same_state(ours, theirs, "after crop_block_size")
    if not flash:
        assert tuple(ours.transformer.h[0].attn.bias.shape) == (1, 1, 8, 8)
    idx, targets = batch(T=8)
    (our_logits, our_loss), (their_logits, their_loss) = both(ours, theirs, idx, targets)
    assert_close(our_loss, their_loss, "loss after crop_block_size")
    with pytest.raises(AssertionError, match="block size is only 8"):
        ours(tl.tensor(batch(T=9)[0]))


def test_generate(files):
    """top_k=1 is greedy: the same tokens as torch. Sampling draws from different generators, so those
    runs are checked for shape, the kept prompt, and every new token being among the top k."""
    ours, theirs, _, _ = build(files, dropout=0.1)  # eval() must switch the dropout off
    ours.eval()
    theirs.eval()
    prompt = batch(T=13)[0][:2]  # 13 + 6 tokens passes block_size 16: generate crops its context
    our_ids = ours.generate(tl.tensor(prompt), 6, temperature=0.8, top_k=1)
    their_ids = theirs.generate(torch.tensor(prompt), 6, temperature=0.8, top_k=1)
    assert our_ids.dtype == tl.int64
    np.testing.assert_array_equal(our_ids.numpy(), their_ids.numpy())
    assert tl.is_grad_enabled()  # generate's @torch.no_grad() restored the mode

    tl.manual_seed(0)
    for top_k in (3, None):
        ids = ours.generate(tl.tensor(prompt), 4, temperature=0.8, top_k=top_k)
        assert tuple(ids.shape) == (2, 17) and ids.dtype == tl.int64
        np.testing.assert_array_equal(ids.numpy()[:, :13], prompt)
        assert ((ids.numpy() >= 0) & (ids.numpy() < 50)).all()
        if top_k is not None:
            for t in range(13, 17):
                context = ids.numpy()[:, max(0, t - 16):t]
                logits, _ = ours(tl.tensor(context))
                top = np.argsort(-logits.numpy()[:, -1], axis=-1, kind="stable")[:, :top_k]
                assert all(ids.numpy()[b, t] in top[b] for b in range(2)), f"token {t} is not in the top {top_k}"


def test_estimate_mfu(files):
    ours, theirs, _, _ = build(files)
    assert ours.estimate_mfu(fwdbwd_per_iter=4, dt=0.1) == theirs.estimate_mfu(fwdbwd_per_iter=4, dt=0.1)


def test_from_pretrained(files, monkeypatch):
    """``from_pretrained`` copies a Hugging Face GPT-2 into the model through ``sd[k].copy_(sd_hf[k].t())``
    under no_grad. Offline: GPT2LMHeadModel.from_pretrained gives one small random GPT-2 (the same one
    to both runs), and the file's GPTConfig is shrunk to its sizes (the file asks for 124M)."""
    transformers = pytest.importorskip("transformers")
    size = dict(n_layer=2, n_head=2, n_embd=16)
    torch.manual_seed(1)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50, n_positions=16, bos_token_id=0,
                                                              eos_token_id=0, activation_function="gelu",
                                                              **size)).double().eval()
    monkeypatch.setattr(transformers.GPT2LMHeadModel, "from_pretrained", lambda name, **kw: hf)
    loaded = {}
    for framework, module in files.items():
        real_config = module.GPTConfig
        small = dict(size, vocab_size=50, block_size=16)
        monkeypatch.setattr(module, "GPTConfig", lambda **args: real_config(**{**args, **small}))
        loaded[framework], _ = printed(module.GPT.from_pretrained, "gpt2", dict(dropout=0.0))
    ours, theirs = loaded["tinyllm"], loaded["torch"]
    assert_same_state(ours, theirs, "from_pretrained")
    weight = hf.state_dict()["transformer.h.1.mlp.c_fc.weight"]
    assert_close(ours.transformer.h[1].mlp.c_fc.weight, weight.t(), "a transposed Conv1D weight")
    idx, targets = batch()
    (our_logits, our_loss), (their_logits, their_loss) = both(ours, theirs, idx, targets)
    assert_close(our_loss, their_loss, "loss of the loaded model")
    hf_logits = hf(torch.tensor(idx)).logits
    assert_close(our_logits, hf_logits, "logits against Hugging Face's own GPT-2")
