"""LoRA (Hu et al. 2021): fine-tune a frozen Linear through a low-rank update.

    y = x W^T + b + (alpha / r) * (x A^T) B^T,     A (r, in) ~ kaiming-uniform,  B (out, r) = 0

Only A and B train; W and b are frozen. B starts at zero, so the wrapped model starts exactly where
the pretrained one is. ``merge_lora`` folds the update back: W' = W + (alpha / r) B A, a plain Linear.
Parameter names are peft's (``lora_A``, ``lora_B``, the frozen layer under ``base``).
"""
import math

from ..autograd import no_grad
from . import init
from .layers import Linear, _empty
from .module import Module, replace_submodules


class LoRALinear(Module):
    def __init__(self, base, rank=8, alpha=16.0):
        super().__init__()
        if not isinstance(base, Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.base, self.rank, self.alpha = base, int(rank), float(alpha)
        self.scaling = self.alpha / self.rank
        for p in base.parameters():
            p.requires_grad_(False)
        dtype = base.weight.dtype
        self.lora_A = _empty(self.rank, base.in_features, dtype=dtype)
        self.lora_B = _empty(base.out_features, self.rank, dtype=dtype)
        init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # peft's default; B stays zero

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling

    def merged(self):
        """A plain Linear with the update folded in: W + (alpha / r) B A."""
        b = self.base
        out = Linear(b.in_features, b.out_features, bias=b.bias is not None, dtype=b.weight.dtype)
        with no_grad():
            delta = (self.lora_B.data @ self.lora_A.data) * self.scaling
            out.weight.data[...] = (b.weight.data + delta).astype(b.weight.dtype)
            if b.bias is not None:
                out.bias.data[...] = b.bias.data
        return out

    def extra_repr(self):
        return f"rank={self.rank}, alpha={self.alpha}"


def apply_lora(model, rank=8, alpha=16.0, targets=("c_attn", "c_proj", "c_fc")):
    """Freeze every parameter of ``model`` and wrap each Linear whose attribute name is in ``targets``
    in a LoRALinear, in place. Returns the number of trainable (adapter) parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = replace_submodules(
        model, lambda name, child: LoRALinear(child, rank, alpha) if isinstance(child, Linear) and name in targets else None)
    if not wrapped:
        raise ValueError(f"apply_lora: no nn.Linear named one of {targets} in {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merge_lora(model):
    """Replace every LoRALinear with its merged Linear, in place; returns the model."""
    replace_submodules(model, lambda name, child: child.merged() if isinstance(child, LoRALinear) else None)
    return model


def lora_state_dict(model):
    """Only the adapters: {name: Tensor} for every ``lora_A`` / ``lora_B`` (sharing their memory, as
    ``state_dict``)."""
    return {k: v for k, v in model.state_dict().items() if k.endswith((".lora_A", ".lora_B"))}


def trainable_parameters(model):
    return [p for p in model.parameters() if p.requires_grad]

