"""Learning-rate schedules: torch's ``LRScheduler`` protocol (``StepLR``, ``LambdaLR``) and nanoGPT's
linear-warmup-then-cosine schedule (``cosine_with_warmup`` and ``CosineWarmupLR``).

Usage, as in torch: build the scheduler after the optimizer, then call ``optimizer.step()`` followed by
``scheduler.step()`` once per iteration (or epoch).
"""
import math
import types

from .optimizer import Optimizer


def cosine_with_warmup(it, max_lr, min_lr, warmup_iters, lr_decay_iters):
    """nanoGPT's ``get_lr``: linear warmup for ``warmup_iters`` steps, cosine decay down to ``min_lr`` at
    ``lr_decay_iters``, then ``min_lr``.

    The one departure: when ``lr_decay_iters <= warmup_iters`` there is no cosine phase and the rate
    drops to ``min_lr`` straight after warmup (nanoGPT would divide by zero at ``it == warmup_iters``).
    """
    if it < warmup_iters:
        return max_lr * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters or lr_decay_iters <= warmup_iters:
        return min_lr
    ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # goes 1 -> 0
    return min_lr + coeff * (max_lr - min_lr)


class LRScheduler:
    """Base class. Subclasses define ``get_lr()``: the learning rate of each parameter group at
    ``self.last_epoch``. Creating a scheduler already takes the first step (``last_epoch`` becomes 0
    and the groups get the epoch-0 rate), exactly as in torch.
    """

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when resuming "
                                   f"a scheduler with last_epoch={last_epoch}; load the optimizer's state first")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self):
        raise NotImplementedError

    def get_last_lr(self):
        """The learning rates the last ``step()`` set, one per parameter group."""
        return self._last_lr

    def step(self, epoch=None):
        """Advance one epoch (or jump to ``epoch``, using the closed form where there is one)."""
        if epoch is None:
            self.last_epoch += 1
            values = self.get_lr()
        else:
            self.last_epoch = epoch
            values = self._get_closed_form_lr() if hasattr(self, "_get_closed_form_lr") else self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self):
        """Everything but the optimizer (plain numbers and lists, so it can go into JSON)."""
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        # Chainable, as torch: multiply the current rate, so the sequence matches torch's to the bit.
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return [group["lr"] for group in self.optimizer.param_groups]
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size) for base_lr in self.base_lrs]


class LambdaLR(LRScheduler):
    """``lr = base_lr * lr_lambda(epoch)``; one function for all groups or a list with one per group."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        self.optimizer = optimizer
        if isinstance(lr_lambda, (list, tuple)):
            if len(lr_lambda) != len(optimizer.param_groups):
                raise ValueError(f"Expected {len(optimizer.param_groups)} lr_lambdas (one per parameter group), "
                                 f"but got {len(lr_lambda)}")
            self.lr_lambdas = list(lr_lambda)
        else:
            self.lr_lambdas = [lr_lambda] * len(optimizer.param_groups)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [base_lr * fn(self.last_epoch) for fn, base_lr in zip(self.lr_lambdas, self.base_lrs)]

    def state_dict(self):
        # Functions cannot be saved; callable objects keep their attributes (as torch does).
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}
        state["lr_lambdas"] = [None if isinstance(fn, types.FunctionType) else dict(fn.__dict__)
                               for fn in self.lr_lambdas]
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        lr_lambdas = state_dict.pop("lr_lambdas", [None] * len(self.lr_lambdas))
        self.__dict__.update(state_dict)
        for fn, saved in zip(self.lr_lambdas, lr_lambdas):
            if saved is not None:
                fn.__dict__.update(saved)


class CosineWarmupLR(LRScheduler):
    """nanoGPT's schedule per parameter group: ``cosine_with_warmup(epoch, base_lr, min_lr, ...)``.

    ``min_lr`` is one number for all groups or a list with one per group.
    """

    def __init__(self, optimizer, warmup_iters, lr_decay_iters, min_lr, last_epoch=-1):
        if warmup_iters < 0 or lr_decay_iters < 0:
            raise ValueError(f"warmup_iters and lr_decay_iters must be >= 0, got {warmup_iters} and "
                             f"{lr_decay_iters}")
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"Expected {n} min_lr values (one per parameter group), but got {len(min_lr)}")
            self.min_lrs = list(min_lr)
        else:
            self.min_lrs = [min_lr] * n
        self.warmup_iters = warmup_iters
        self.lr_decay_iters = lr_decay_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        return [cosine_with_warmup(self.last_epoch, base_lr, min_lr, self.warmup_iters, self.lr_decay_iters)
                for base_lr, min_lr in zip(self.base_lrs, self.min_lrs)]
