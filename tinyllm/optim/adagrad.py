"""Adagrad: per-coordinate learning rates from the running sum of squared gradients (torch's rule)."""
from .. import backend
from .optimizer import Optimizer


class Adagrad(Optimizer):
    """As ``torch.optim.Adagrad``::

        clr = lr / (1 + (t - 1) * lr_decay);  sum += g * g;  p -= clr * g / (sqrt(sum) + eps)

    State is created when a parameter joins the optimizer (as torch does), so ``state_dict()`` lists
    every parameter even before the first step.
    """

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 maximize=False):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr} (expected lr >= 0)")
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay} (expected lr_decay >= 0)")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay} (expected weight_decay >= 0)")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(f"Invalid initial_accumulator_value value: {initial_accumulator_value} "
                             "(expected initial_accumulator_value >= 0)")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps} (expected eps >= 0)")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, maximize=maximize)
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            xp = backend.get_array_module(p.data)
            self.state[p] = {"step": 0.0,
                             "sum": xp.full_like(p.data, group["initial_accumulator_value"])}

    def step(self, closure=None):
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                xp = backend.get_array_module(p.data)
                state = self._param_state(p)
                state["step"] += 1
                grad = -p.grad if group["maximize"] else p.grad
                if wd != 0:
                    grad = grad + wd * p.data
                clr = lr / (1 + (state["step"] - 1) * group["lr_decay"])
                state["sum"] += grad * grad
                std = xp.sqrt(state["sum"])
                std += eps
                p.data -= clr * grad / std
        return loss
