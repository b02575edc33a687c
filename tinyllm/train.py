"""Training: nanoGPT's loop on tinyllm, with metrics, best/last checkpoints and exact resume.

What to train is a ``TrainConfig`` (tinyllm/train_config.py); the model comes from the registry
(tinyllm/models/registry.py) and the run directory is written by tinyllm/runs.py.
"""
import math
import signal
import threading
import time

import numpy as np

from . import backend, data, nn, optim, runs
from .autograd import no_grad
from .runs import build_model, load_run, read_metrics  # noqa: F401  (public names older code imports from here)
from .train_config import ConfigError, TrainConfig


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training; ``last/`` was saved at ``iter`` (None: a second signal
    stopped it at once, and ``last/`` is the last evaluation's). A KeyboardInterrupt, so code that
    catches errors to carry on (a search's trials) still stops."""

    def __init__(self, it, out_dir, signum):
        where = f"saved {out_dir}/{runs.LAST} at iteration {it}" if it is not None else \
            f"stopped at once; {out_dir}/{runs.LAST} holds the last evaluation's checkpoint"
        super().__init__(f"interrupted ({signal.Signals(signum).name}): {where}")
        self.iter, self.out_dir, self.signum = it, out_dir, signum


class _StopRequest:
    """Inside the block, SIGINT and SIGTERM only set ``signum``, so the loop stops at a clean iteration
    boundary; a second signal stops at once. Handlers are installed only in the main thread (Python's
    rule) and the previous ones are put back after."""

    def __init__(self, out_dir):
        self.out_dir, self.signum, self._previous = out_dir, None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise TrainingInterrupted(None, self.out_dir, signum)
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        return False


def configure_optimizer(model, cfg):
    """AdamW with weight decay on matrices (ndim >= 2) only, as nanoGPT; only trainable parameters
    (with LoRA: only the adapters, so the optimizer state holds nothing else)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def learning_rate(it, cfg):
    if not cfg.decay_lr:
        return cfg.lr
    return optim.lr_scheduler.cosine_with_warmup(it, cfg.lr, cfg.min_lr, cfg.warmup_iters, cfg.lr_decay_iters)


def model_loss(model, x, y):
    """The model's training loss on a batch (GPT-style ``logits, loss = model(x, y)``; every model here
    has that interface: the VAE's loss is its negative ELBO per token, with its KL annealing inside)."""
    _, loss = model(x, y)
    return loss


@no_grad()
def estimate_loss(model, splits, cfg, rng):
    """Mean loss over ``cfg.eval_iters`` random batches of each split, in eval mode.

    A model that reports extra statistics in ``model.last_stats`` (the VAE: ``recon`` and ``kl`` per
    token) also gets their val-split means, under their own names, beside the ``train``/``val`` losses.
    """
    model.eval()
    out = {}
    for name, split in splits.items():
        losses, stats = [], []
        for _ in range(cfg.eval_iters):
            losses.append(model_loss(model, *data.get_batch(split, cfg.batch_size, cfg.block_size, rng)).item())
            if getattr(model, "last_stats", None):
                stats.append(model.last_stats)
        out[name] = float(np.mean(losses))
        if name == "val" and stats:
            out.update({k: float(np.mean([s[k] for s in stats])) for k in ("recon", "kl") if k in stats[0]})
    model.train()
    return out


# ------------------------------------------------------------------------------------ the loop
def _rng_state(gen):
    return gen.bit_generator.state


def _set_rng_state(gen, state):
    gen.bit_generator.state = state


def train(data_dir, out_dir, cfg=None, resume=False, overwrite=False, log=None):
    """Train ``cfg.model_type`` on the prepared ``data_dir``; write the run to ``out_dir``. Returns the
    last eval. With ``resume``, continue ``out_dir`` from its last checkpoint, with its own config
    (``cfg`` gives only ``max_iters``, ``progress`` and ``device``).

    Everything is checked before the disk is touched. A new run refuses an ``out_dir`` that holds one,
    unless ``overwrite`` (which removes that run's files only, and says so). SIGINT or SIGTERM saves
    ``last/`` at the current iteration and raises ``TrainingInterrupted``; resuming from it is
    bit-identical to an uninterrupted run. ``log`` gets the progress lines (default: printed above the
    progress bar).
    """
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume continues the run, overwrite "
                         "replaces it")
    cfg = cfg or TrainConfig()
    meta = data.read_meta(data_dir)
    splits = {"train": data.load_split(data_dir, "train"), "val": data.load_split(data_dir, "val")}
    if resume:
        cfg = runs.resumed_config(out_dir, cfg)
    _check_splits(splits, cfg.block_size, data_dir)
    cfg.validate(meta["vocab_size"])
    if resume:
        at = runs.last_state(out_dir)["iter"]
        if cfg.max_iters < at:
            raise ConfigError("max_iters", f"must be at least {at} to resume {out_dir}, which is at iteration "
                                           f"{at}; got {cfg.max_iters}")
    else:
        runs.check_new_run(out_dir, overwrite)
    log = log or _write_above_bar
    backend.tune_for_training()  # training owns the process while it runs

    backend.manual_seed(cfg.seed)
    model, saved, cfg = runs.initial_model(cfg, meta["vocab_size"])
    opt = configure_optimizer(model, cfg)
    batch_rng, eval_rng = np.random.default_rng(cfg.seed), np.random.default_rng(cfg.seed + 1)
    start_iter, best_val, last_eval = 0, float("inf"), None

    if resume:
        st = runs.resume(out_dir, saved, opt)
        start_iter, best_val = st["iter"], st["best_val_loss"]
        _set_rng_state(batch_rng, st["batch_rng"])
        _set_rng_state(eval_rng, st["eval_rng"])
        backend.set_rng_state(st["model_rng"])
        runs.truncate_metrics(out_dir, start_iter)
        last_eval = st.get("eval")
        log(f"resuming from iteration {start_iter} (best val loss {best_val:.4f})")
    else:
        if overwrite and runs.run_entries(out_dir):
            log(f"overwriting {out_dir}: removing {runs.describe_run(out_dir)}")
            runs.remove_run(out_dir)
        runs.create(out_dir, data_dir)
    run_config = runs.write_config(out_dir, cfg, model, meta["vocab_size"], data_dir)

    def save(which, it, evaluated):
        state = {"iter": it, "best_val_loss": best_val, "batch_rng": _rng_state(batch_rng),
                 "eval_rng": _rng_state(eval_rng), "model_rng": backend.get_rng_state(), "eval": evaluated}
        runs.save(out_dir, which, saved, opt, run_config, state)

    bar = _progress(start_iter, cfg)
    window_t0, window_iters = time.perf_counter(), 0
    ms_per_iter = float("nan")
    it = start_iter
    with _StopRequest(out_dir) as stop, bar:
        while True:
            lr = learning_rate(it, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            evaluated_here = resume and it == start_iter  # the checkpoint was written right after this eval
            if (it % cfg.eval_interval == 0 or it == cfg.max_iters) and not evaluated_here:
                losses = estimate_loss(model, splits, cfg, eval_rng)
                last_eval = {"iter": it, "train_loss": losses["train"], "val_loss": losses["val"], "lr": lr,
                             "ms_per_iter": ms_per_iter}
                last_eval.update({k: v for k, v in losses.items() if k not in splits})  # VAE: recon, kl
                runs.append_metrics(out_dir, last_eval)
                log(f"iter {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                if losses["val"] < best_val:
                    best_val = losses["val"]
                    save(runs.BEST, it, last_eval)
                save(runs.LAST, it, last_eval)
                window_t0, window_iters = time.perf_counter(), 0
            if it >= cfg.max_iters:
                break
            if stop.signum is not None:  # a clean boundary: `it` steps done, any eval at `it` saved already
                save(runs.LAST, it, last_eval)
                raise TrainingInterrupted(it, out_dir, stop.signum)

            x, y = data.get_batch(splits["train"], cfg.batch_size, cfg.block_size, batch_rng)
            loss = model_loss(model, x, y)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainingDiverged(f"loss became {loss_value} at iteration {it}; stopping. The last good "
                                       f"checkpoint is kept in {out_dir}/{runs.LAST}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            it += 1
            window_iters += 1
            ms_per_iter = 1000 * (time.perf_counter() - window_t0) / window_iters
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", ms=f"{ms_per_iter:.1f}")
            if it % cfg.log_interval == 0 and it % cfg.eval_interval != 0:
                runs.append_metrics(out_dir, {"iter": it, "train_loss": loss_value, "val_loss": None, "lr": lr,
                                              "ms_per_iter": ms_per_iter})
    return last_eval


def _is_count(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _check_splits(splits, block_size, data_dir):
    """Each split must hold more than block_size tokens (one window plus its next-token target)."""
    if not _is_count(block_size) or block_size < 1:
        return  # validate() names it
    for name, split in splits.items():
        if len(split) <= block_size:
            raise ConfigError("block_size", f"must be below the {len(split):,} tokens of {data_dir}'s {name} "
                                            f"split, got {block_size:,}")


def _write_above_bar(message):
    from tqdm import tqdm
    tqdm.write(message)  # above a running progress bar, not onto its line


def _progress(start, cfg):
    from tqdm import tqdm
    return tqdm(total=cfg.max_iters, initial=start, disable=not cfg.progress, dynamic_ncols=True, leave=True)
