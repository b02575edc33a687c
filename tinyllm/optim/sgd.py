"""Stochastic gradient descent with optional momentum, dampening, Nesterov and weight decay (torch's rule)."""
from .. import backend
from .optimizer import Optimizer


class SGD(Optimizer):
    """``p -= lr * d_p`` where, as in ``torch.optim.SGD``::

        d_p = grad (+ weight_decay * p)              # negated first when maximize
        buf = d_p on the first step, else momentum * buf + (1 - dampening) * d_p
        d_p = d_p + momentum * buf if nesterov else buf
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 maximize=False):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr} (expected lr >= 0)")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum} (expected momentum >= 0)")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay} (expected weight_decay >= 0)")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(f"Nesterov momentum requires a momentum and zero dampening "
                             f"(got momentum={momentum}, dampening={dampening})")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def step(self, closure=None):
        loss = self._closure_loss(closure)
        for group in self.param_groups:
            lr, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                xp = backend.get_array_module(p.data)
                d_p = -p.grad if group["maximize"] else p.grad
                if wd != 0:
                    d_p = d_p + wd * p.data
                if momentum != 0:
                    state = self._param_state(p)
                    buf = state.get("momentum_buffer")
                    if buf is None:  # an array even when the gradient is a NumPy scalar, so *= is in place
                        buf = state["momentum_buffer"] = xp.array(d_p, dtype=p.data.dtype, copy=True)
                    else:
                        buf *= momentum
                        buf += (1 - group["dampening"]) * d_p
                    d_p = d_p + momentum * buf if group["nesterov"] else buf
                p.data -= lr * d_p
        return loss
