"""The torch twin of tinyllm's recipe GPT: nanoGPT's model and AdamW step in torch, loading tinyllm's
state dict so that both sides start from the same weights."""
import numpy as np


def torch_gpt(cfg, vocab_size):
    """nanoGPT's model in torch at the recipe's settings: no biases, exact GELU, SDPA causal attention,
    lm_head tied to wte. Parameter names are GPT-2's, as in tinyllm, so state dicts map one to one."""
    cfg = getattr(cfg, "model", cfg)  # a TrainConfig holds the shape in its model config
    import torch
    from torch import nn
    from torch.nn import functional as F

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
            self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = (t.view(B, T, cfg.n_head, C // cfg.n_head).transpose(1, 2)
                       for t in self.c_attn(x).split(C, dim=2))  # (B, nh, T, hs)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
            self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)

        def forward(self, x):
            return self.c_proj(F.gelu(self.c_fc(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=False)
            self.attn = CausalSelfAttention()
            self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=False)
            self.mlp = MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab_size, cfg.n_embd)
            self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
            self.h = nn.ModuleList(Block() for _ in range(cfg.n_layer))
            self.ln_f = nn.LayerNorm(cfg.n_embd, bias=False)
            self.lm_head = nn.Linear(cfg.n_embd, vocab_size, bias=False)
            self.lm_head.weight = self.wte.weight

        def forward(self, idx, targets):
            B, T = idx.shape
            x = self.wte(idx) + self.wpe(torch.arange(T))
            for block in self.h:
                x = block(x)
            logits = self.lm_head(self.ln_f(x))  # (B, T, vocab)
            return logits, F.cross_entropy(logits.view(B * T, -1), targets.view(-1), ignore_index=-1)

    return GPT()


def torch_recipe(model, cfg, x, y, vocab_size=84):
    """The torch twin of ``train_step.tinyllm_recipe``'s step, starting from the tinyllm model's weights
    (or from torch's own init when ``model`` is None)."""
    import torch
    tmodel = torch_gpt(cfg, vocab_size)
    if model is not None:
        ours, theirs = model.state_dict(), tmodel.state_dict()
        if set(ours) != set(theirs):
            raise KeyError(f"state dicts differ: only tinyllm {sorted(set(ours) - set(theirs))}, "
                           f"only torch {sorted(set(theirs) - set(ours))}")
        tmodel.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in ours.items()})
    params = list(tmodel.parameters())  # the tied wte / lm_head weight once
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        _, loss = tmodel(tx, ty)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.item())
    return tmodel, step
