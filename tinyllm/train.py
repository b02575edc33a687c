"""Training: nanoGPT's loop on tinyllm, with metrics, best/last checkpoints and exact resume.

What to train is a ``TrainConfig`` (tinyllm/train_config.py); the model comes from the registry
(tinyllm/models/registry.py) and the run directory is written by tinyllm/runs.py.
"""
import math
import signal
import threading
import time

import numpy as np

from . import backend, data, distributed, nn, optim, runs, stats
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
def estimate_loss(model, splits, cfg, rng, world=None):
    """Mean loss over ``cfg.eval_iters`` random batches of each split, in eval mode.

    A model that reports extra statistics in ``model.last_stats`` (the VAE: ``recon`` and ``kl`` per
    token) also gets their val-split means, under their own names, beside the ``train``/``val`` losses.
    With several MPI processes (``world``), rank r scores batches r, r + N, ... from its own ``rng`` and
    the sums are added over the ranks, so every rank returns the same means.
    """
    world = world or distributed.SingleProcess()
    model.eval()
    out = {}
    for name, split in splits.items():
        losses, stats = [], []
        for _ in range(world.rank, cfg.eval_iters, world.size):
            losses.append(model_loss(model, *data.get_batch(split, cfg.batch_size, cfg.block_size, rng)).item())
            if getattr(model, "last_stats", None):
                stats.append(model.last_stats)
        if world.size == 1:
            out[name] = float(np.mean(losses))
            if name == "val" and stats:
                out.update({k: float(np.mean([s[k] for s in stats])) for k in ("recon", "kl") if k in stats[0]})
            continue
        # (loss sum, then each statistic's sum and count): a rank may hold no batch, or no statistics
        sums = [math.fsum(losses)]
        for k in ("recon", "kl") if name == "val" else ():
            sums += [math.fsum(s[k] for s in stats if k in s), sum(k in s for s in stats)]
        sums = world.sum_(np.array(sums, dtype=np.float64))
        out[name] = float(sums[0] / cfg.eval_iters)
        for i, k in enumerate(("recon", "kl") if name == "val" else ()):
            if sums[2 + 2 * i]:
                out[k] = float(sums[1 + 2 * i] / sums[2 + 2 * i])
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

    Each optimizer step averages the gradients of ``cfg.grad_accum_steps`` micro-batches (each loss
    divided by their number before backward, as nanoGPT). Started by ``mpiexec -n N``, the N processes
    train one model: micro-batch k of rank r reads data shard r*K + k, the gradients are averaged over
    the ranks before clipping, evaluation is split between them, and rank 0 alone writes ``out_dir``
    (``tinyllm/distributed.py``).
    """
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume continues the run, overwrite "
                         "replaces it")
    world = distributed.world()
    meta, cfg = world.root_decides(lambda: _checked_start(data_dir, out_dir, cfg or TrainConfig(), resume,
                                                          overwrite, world.size))
    with world.failing_together(collective=_raised_on_every_rank):
        return _train(data_dir, out_dir, cfg, meta, resume, overwrite, log, world)


def _checked_start(data_dir, out_dir, cfg, resume, overwrite, n_procs):
    """(meta, config) of the run to start, once every check has passed; reads only."""
    meta = data.read_meta(data_dir)
    splits = {"train": data.load_split(data_dir, "train"), "val": data.load_split(data_dir, "val")}
    if resume:
        cfg = runs.resumed_config(out_dir, cfg)
    _check_splits(splits, cfg.block_size, data_dir)
    cfg.validate(meta["vocab_size"])
    if n_procs > 1 and cfg.device != "cpu":
        raise ConfigError("device", f"must be cpu when training on {n_procs} MPI processes, got {cfg.device!r}")
    if resume:
        st = runs.last_state(out_dir)
        at, saved_procs = st["iter"], st.get("world_size", 1)
        if cfg.max_iters < at:
            raise ConfigError("max_iters", f"must be at least {at} to resume {out_dir}, which is at iteration "
                                           f"{at}; got {cfg.max_iters}")
        if saved_procs != n_procs:  # each process owns its data shards' streams: another count reads other data
            raise runs.RunDirError(f"{out_dir} was trained on {saved_procs} process(es); resume it on as many "
                                   f"(mpiexec -n {saved_procs}), not {n_procs}")
    else:
        runs.check_new_run(out_dir, overwrite)
    return meta, cfg


def _raised_on_every_rank(e):
    """The exceptions the loop raises on every rank at the same point, after a collective decision."""
    return isinstance(e, TrainingDiverged) or (isinstance(e, TrainingInterrupted) and e.iter is not None)


def _train(data_dir, out_dir, cfg, meta, resume, overwrite, log, world):
    splits = {"train": data.load_split(data_dir, "train"), "val": data.load_split(data_dir, "val")}
    log = (log or _write_above_bar) if world.is_root else (lambda message: None)
    backend.tune_for_training()  # training owns the process while it runs
    n_procs, accum = world.size, cfg.grad_accum_steps

    backend.manual_seed(cfg.seed)
    model, saved, cfg = runs.initial_model(cfg, meta["vocab_size"])  # the same weights on every rank
    if world.rank:
        backend.manual_seed(distributed.dropout_seed(cfg.seed, world.rank))
    opt = configure_optimizer(model, cfg)
    batch_rngs = [distributed.shard_rng(cfg.seed, world.rank * accum + k) for k in range(accum)]
    eval_rng = distributed.eval_rng(cfg.seed, world.rank)
    start_iter, best_val, last_eval = 0, float("inf"), None

    if resume:
        st = runs.resume(out_dir, saved, opt) if world.is_root else None
        if n_procs > 1:  # rank 0 read the checkpoint; the others need not see the run directory
            shared = world.bcast((saved.state_dict(), opt.state_dict(), st) if world.is_root else None)
            if not world.is_root:
                saved.load_state_dict(shared[0])
                opt.load_state_dict(shared[1])
                st = shared[2]
        start_iter, best_val = st["iter"], st["best_val_loss"]
        for k, gen in enumerate(batch_rngs):
            _set_rng_state(gen, st.get("shard_rngs", [st["batch_rng"]])[world.rank * accum + k])
        _set_rng_state(eval_rng, st.get("eval_rngs", [st["eval_rng"]])[world.rank])
        backend.set_rng_state(st.get("model_rngs", [st["model_rng"]])[world.rank])
        if world.is_root:
            runs.truncate_metrics(out_dir, start_iter)
        last_eval = st.get("eval")
        log(f"resuming from iteration {start_iter} (best val loss {best_val:.4f})")
    elif world.is_root:
        if overwrite and runs.run_entries(out_dir):
            log(f"overwriting {out_dir}: removing {runs.describe_run(out_dir)}")
            runs.remove_run(out_dir)
        runs.create(out_dir, data_dir)
    run_config = runs.write_config(out_dir, cfg, model, meta["vocab_size"], data_dir) if world.is_root else None
    sequences = cfg.batch_size * accum * n_procs
    log(f"effective batch: {cfg.batch_size} sequences x {accum} micro-batch{'es' if accum > 1 else ''} x "
        f"{n_procs} process{'es' if n_procs > 1 else ''} = {sequences} sequences, "
        f"{sequences * cfg.block_size:,} tokens per iteration")

    def save(which, it, evaluated):  # every rank calls it: the ranks' RNG states are gathered to rank 0
        mine = world.gather({"shard_rngs": [_rng_state(g) for g in batch_rngs], "eval_rng": _rng_state(eval_rng),
                             "model_rng": backend.get_rng_state()})
        if not world.is_root:
            return
        shards = [s for rank in mine for s in rank["shard_rngs"]]
        state = {"iter": it, "best_val_loss": best_val, "batch_rng": shards[0], "eval_rng": mine[0]["eval_rng"],
                 "model_rng": mine[0]["model_rng"], "eval": evaluated}
        if len(shards) > 1:
            state.update(world_size=n_procs, shard_rngs=shards, eval_rngs=[r["eval_rng"] for r in mine],
                         model_rngs=[r["model_rng"] for r in mine])
        runs.save(out_dir, which, saved, opt, run_config, state)

    params = [p for p in model.parameters() if p.requires_grad]
    bar = _progress(start_iter, cfg, world.is_root)
    window_t0, window_iters = time.perf_counter(), 0
    ms_per_iter = float("nan")
    it, stopping = start_iter, None  # stopping, under MPI: a signal some rank got, known to all after a step
    # --log-stats: hooks observe rank 0's steps that get a metrics row; the `with` removes them
    with _StopRequest(out_dir) as stop, bar, stats.collector(model, cfg.log_stats and world.is_root) as collected:
        while True:
            lr = learning_rate(it, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            evaluated_here = resume and it == start_iter  # the checkpoint was written right after this eval
            if (it % cfg.eval_interval == 0 or it == cfg.max_iters) and not evaluated_here:
                losses = estimate_loss(model, splits, cfg, eval_rng, world)
                last_eval = {"iter": it, "train_loss": losses["train"], "val_loss": losses["val"], "lr": lr,
                             "ms_per_iter": ms_per_iter}
                last_eval.update({k: v for k, v in losses.items() if k not in splits})  # VAE: recon, kl
                if world.is_root:
                    runs.append_metrics(out_dir, {**last_eval, **collected.pop()})
                log(f"iter {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                if losses["val"] < best_val:
                    best_val = losses["val"]
                    save(runs.BEST, it, last_eval)
                save(runs.LAST, it, last_eval)
                window_t0, window_iters = time.perf_counter(), 0
            if it >= cfg.max_iters:
                break
            signum = stop.signum if n_procs == 1 else stopping
            if signum is not None:  # a clean boundary: `it` steps done, any eval at `it` saved already
                save(runs.LAST, it, last_eval)
                raise TrainingInterrupted(it, out_dir, signum)

            opt.zero_grad(set_to_none=True)
            collected.start_step(_gets_row(it + 1, cfg))
            loss_sum = 0.0
            for rng in batch_rngs:
                x, y = data.get_batch(splits["train"], cfg.batch_size, cfg.block_size, rng)
                loss = model_loss(model, x, y)
                loss_value = loss.item()
                if n_procs == 1 and not math.isfinite(loss_value):
                    raise TrainingDiverged(f"loss became {loss_value} at iteration {it}; stopping. The last good "
                                           f"checkpoint is kept in {out_dir}/{runs.LAST}")
                (loss / accum if accum > 1 else loss).backward()  # the mean over micro-batches
                loss_sum += loss_value
            if n_procs > 1:  # one Allreduce carries the gradients, the losses and any stop request
                loss_sum, sigints, sigterms = world.average_gradients(
                    params, (loss_sum, float(stop.signum == signal.SIGINT), float(stop.signum == signal.SIGTERM)))
                if not math.isfinite(loss_sum):  # every rank sees the same sum, so all stop here together
                    raise TrainingDiverged(f"loss became {loss_sum} at iteration {it} on at least one of {n_procs} "
                                           f"processes; stopping. The last good checkpoint is kept in "
                                           f"{out_dir}/{runs.LAST}")
                if (sigints or sigterms) and stopping is None:  # the same verdict on every rank, whichever got it
                    stopping = signal.SIGINT if sigints else signal.SIGTERM
            loss_value = loss_sum / (accum * n_procs)
            collected.gradients_ready()  # before clipping
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            collected.step_done()
            it += 1
            window_iters += 1
            ms_per_iter = 1000 * (time.perf_counter() - window_t0) / window_iters
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", ms=f"{ms_per_iter:.1f}")
            if world.is_root and it % cfg.log_interval == 0 and it % cfg.eval_interval != 0:
                runs.append_metrics(out_dir, {"iter": it, "train_loss": loss_value, "val_loss": None, "lr": lr,
                                              "ms_per_iter": ms_per_iter, **collected.pop()})
    return last_eval


def _gets_row(it, cfg):
    """Whether metrics.jsonl gets a row at iteration ``it`` (a logged training loss or an evaluation)."""
    return it % cfg.log_interval == 0 or it % cfg.eval_interval == 0 or it == cfg.max_iters


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


def _progress(start, cfg, shown=True):
    from tqdm import tqdm
    return tqdm(total=cfg.max_iters, initial=start, disable=not (cfg.progress and shown), dynamic_ncols=True,
                leave=True)
