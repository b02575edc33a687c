"""LoRA (tinyllm/nn/lora.py): the wrapped model starts exactly at the pretrained one, gradients reach
only the adapters, a merged model gives the adapter model's logits, and the parameter counts."""
import numpy as np
import pytest

import tinyllm as tl
from tinyllm import nn
from tinyllm.models import GPT, GPTConfig
from tinyllm.nn.lora import LoRALinear, apply_lora, lora_state_dict, merge_lora, trainable_parameters


def _gpt(dtype=np.float64):
    with tl.backend.default_dtype(dtype):
        tl.manual_seed(0)
        return GPT(GPTConfig(vocab_size=30, block_size=12, n_layer=2, n_head=2, n_embd=16))


def _logits(model, ids):
    with tl.no_grad():
        return model(ids)[0].data


def test_lora_starts_at_the_pretrained_model_and_counts_parameters():
    model = _gpt()
    ids = np.random.default_rng(0).integers(0, 30, (2, 12))
    before = _logits(model, ids)
    n = apply_lora(model, rank=4, alpha=8)
    # per block: c_attn (16 -> 48), attn.c_proj (16 -> 16), c_fc (16 -> 64), mlp.c_proj (64 -> 16)
    assert n == 2 * 4 * ((16 + 48) + (16 + 16) + (16 + 64) + (64 + 16))
    assert isinstance(model.h[0].attn.c_attn, LoRALinear) and not isinstance(model.lm_head, LoRALinear)
    np.testing.assert_array_equal(_logits(model, ids), before)
    assert set(lora_state_dict(model)) == {f"h.{i}.{m}.lora_{x}" for i in range(2)
                                          for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
                                          for x in "AB"}


def test_only_adapters_train_and_merge_gives_the_same_logits():
    model = _gpt()
    apply_lora(model, rank=2, alpha=4)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    frozen_before = [p.data.copy() for p in frozen]
    opt = tl.optim.AdamW(trainable_parameters(model), lr=1e-2)
    ids = np.random.default_rng(1).integers(0, 30, (2, 12))
    for _ in range(5):
        _, loss = model(ids, ids)
        loss.backward()
        assert all(p.grad is None for p in frozen)
        assert all(p.grad is not None for p in trainable_parameters(model))
        opt.step()
        opt.zero_grad()
    for p, before in zip(frozen, frozen_before):
        np.testing.assert_array_equal(p.data, before)
    assert any(np.abs(p.data).max() > 0 for n, p in model.named_parameters() if n.endswith("lora_B"))
    adapted = _logits(model, ids)
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert "h.0.attn.c_attn.weight" in model.state_dict()  # GPT-2 names again
    np.testing.assert_allclose(_logits(model, ids), adapted, rtol=1e-10, atol=1e-10)


def test_errors():
    with pytest.raises(ValueError, match="no nn.Linear"):
        apply_lora(nn.Sequential(nn.Linear(2, 2)), targets=("q_proj",))
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(2, 2), rank=0)
    with pytest.raises(TypeError, match="wraps an nn.Linear"):
        LoRALinear(nn.Embedding(3, 2))
