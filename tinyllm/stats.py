"""Training statistics (``train --log-stats``): per layer, how the gradients, the updates and the
activations behave, written into metrics.jsonl beside the loss as ``<layer>/<statistic>``.

A *layer* is a top-level child of the model, with containers opened one level: a GPT's ``wte``,
``wpe``, ``h.0`` ... ``h.N-1`` and ``ln_f`` (the tied ``lm_head`` owns no parameter of its own, so its
weight counts under ``wte``). The same rule serves every model: an LSTM LM's layers are ``wte``,
``lstm`` and ``lm_head``. Only layers holding trainable parameters are reported (with LoRA: the
adapters). The statistics, on the steps whose iteration gets a metrics row:

- ``grad_norm``: the L2 norm of the layer's parameter gradients, as the optimizer would see them
  before clipping (averaged over micro-batches and MPI processes). Clipping scales every layer by one
  factor, so the raw norms are what show which layer drives the total.
- ``update_ratio``: ||w_after - w_before|| / ||w_before|| over the layer's parameters, around the
  optimizer step: the size of the update the optimizer actually made (AdamW's normalisation and weight
  decay included) relative to the weights. Karpathy's "update/data" diagnostic, which he reads as
  log10(std(lr * grad) / std(w)) per tensor; for zero-mean tensors the ratio of norms is the same
  number. A rule of thumb: around 1e-3 is healthy; far below, the layer learns slowly; far above
  (1e-2 and up), the updates are large against the weights and training may be unstable.
- ``act_mean``, ``act_std``: mean and (population) standard deviation of the layer's output over
  every element of the step's batch (a GPT block's output is the residual stream after that block).
  For an output that is a tuple (an LSTM's), its first element.
- ``gelu_saturation``: the fraction of GELU inputs below -3, over the ``nn.GELU`` modules inside the
  layer. GELU(x) = x Phi(x) is flat only on the negative side: below -3 the output is above -0.005 and
  the gradient below 0.012 in magnitude, so such a unit passes almost nothing forward or back (dead),
  while large positive inputs are in the linear regime and pass gradient fully.

Everything is observed through forward hooks and the parameters' ``.grad`` and ``.data``; the hooks
return nothing and compute nothing unless a logging step is under way, and nothing the training
computes is changed, so a run with statistics is bit-identical to one without.
"""
import math

from . import backend, nn
from .kernels.norms import sum_of_squares

STATISTICS = ("grad_norm", "update_ratio", "act_mean", "act_std", "gelu_saturation")
SATURATED_BELOW = -3.0  # GELU inputs below this count as saturated (see the module doc)
_CONTAINERS = (nn.ModuleList, nn.Sequential, nn.ModuleDict)


def layer_of(model, name):
    """The layer a parameter or submodule name belongs to: 'h.0.mlp.c_fc.weight' -> 'h.0',
    'wte.weight' -> 'wte'."""
    parts = name.split(".")
    child = model._modules.get(parts[0])
    if isinstance(child, _CONTAINERS) and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def layers(model):
    """{layer: [its trainable parameters]}, in the model's parameter order."""
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            out.setdefault(layer_of(model, name), []).append(p)
    return out


class _Moments:
    """Count, mean and sum of squared deviations, merged over calls (Chan et al.'s pairwise update), in
    float64, so several micro-batches give the statistics of their union."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, x):
        xp = backend.get_array_module(x)
        x = x.astype(xp.float64).reshape(-1)
        n, mean = x.size, float(x.mean())
        m2 = float(((x - mean) ** 2).sum())
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total


class TrainingStats:
    """Collects the statistics of ``model``'s training steps. Use it as a context manager (hooks are
    attached on entry and removed on exit, errors included), and around each optimizer step call
    ``start_step(logged)`` before the forward passes, ``gradients_ready()`` once the gradients are final
    (averaged, not yet clipped), ``step_done()`` after ``optimizer.step()``, and ``pop()`` for the fields
    to add to the step's metrics row."""

    def __init__(self, model):
        self.model = model
        self.params = layers(model)
        modules = dict(model.named_modules())
        self.outputs = {path: modules[path] for path in self.params if path in modules}
        self.gelus = [(layer_of(model, name), m) for name, m in modules.items() if isinstance(m, nn.GELU) and name]
        self._handles, self._on, self._pending = [], False, {}

    # -- hooks ---------------------------------------------------------------------------------
    def __enter__(self):
        try:
            for path, module in self.outputs.items():
                self._handles.append(module.register_forward_hook(self._output_hook(path)))
            for path, module in self.gelus:
                self._handles.append(module.register_forward_pre_hook(self._gelu_hook(path)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc):
        self.remove()
        return False

    def remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _output_hook(self, path):
        def hook(module, args, output):
            if self._on:
                if isinstance(output, (tuple, list)):
                    output = output[0]
                if hasattr(output, "data"):
                    self._acts.setdefault(path, _Moments()).add(output.data)
        return hook

    def _gelu_hook(self, path):
        def hook(module, args):
            if self._on:
                x = args[0].data
                counts = self._saturated.setdefault(path, [0, 0])
                counts[0] += int((x < SATURATED_BELOW).sum())
                counts[1] += x.size
        return hook

    # -- one optimizer step --------------------------------------------------------------------
    def start_step(self, logged):
        """Arm the hooks for this step if its iteration gets a metrics row; otherwise they stay idle."""
        self._on = bool(logged)
        self._acts, self._saturated, self._before = {}, {}, None

    def gradients_ready(self):
        """Read the gradient norms and keep a copy of the weights (on logged steps only)."""
        if not self._on:
            return
        row = {}
        for path, params in self.params.items():
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                row[f"{path}/grad_norm"] = math.sqrt(sum(sum_of_squares(g) for g in grads))
        self._before = {path: [p.data.copy() for p in params] for path, params in self.params.items()}
        self._pending = row

    def step_done(self):
        """The update ratios and the activation statistics of the step; the hooks go idle again."""
        if not self._on:
            return
        self._on = False
        row = self._pending
        for path, params in self.params.items():
            if self._before is not None:
                before = self._before[path]
                moved = sum(sum_of_squares(p.data - w) for p, w in zip(params, before))
                size = sum(sum_of_squares(w) for w in before)
                row[f"{path}/update_ratio"] = math.sqrt(moved / size) if size > 0 else float("nan")
            if path in self._acts:
                m = self._acts[path]
                row[f"{path}/act_mean"] = m.mean
                row[f"{path}/act_std"] = math.sqrt(m.m2 / m.n)
            if path in self._saturated:
                saturated, total = self._saturated[path]
                row[f"{path}/gelu_saturation"] = saturated / total
        order = {path: i for i, path in enumerate(self.params)}
        self._pending = dict(sorted(row.items(), key=lambda kv: _order_key(order, kv[0])))
        self._acts, self._saturated, self._before = {}, {}, None

    def pop(self):
        """The fields of the last logged step (empty once taken, or if no step was logged)."""
        row, self._pending = self._pending, {}
        return row


def _order_key(order, key):
    """Rows list the layers in model order, each layer's statistics in STATISTICS order."""
    path, stat = key.rsplit("/", 1)
    return order.get(path, len(order)), STATISTICS.index(stat)


class _NoStats:
    """What ``collector`` gives when statistics are off: every call does nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def start_step(self, logged):
        pass

    def gradients_ready(self):
        pass

    def step_done(self):
        pass

    def pop(self):
        return {}


def collector(model, enabled):
    """A ``TrainingStats`` of ``model`` when ``enabled``, otherwise one that does nothing (so the loop
    needs no branches)."""
    return TrainingStats(model) if enabled else _NoStats()
