"""Training: nanoGPT's loop on tinyllm, with metrics, best/last checkpoints and exact resume.

``TrainConfig`` defaults are nanoGPT's CPU recipe (4 layers, 4 heads, width 128, block 64, batch 12,
AdamW 1e-3 with 100 warm-up iterations and cosine decay to 1e-4 at 2000, betas (0.9, 0.99), weight
decay 0.1 on matrices only, clip 1.0, eval every 250 iterations over 20 batches, seed 1337).

A run directory holds ``config.json``, ``metrics.jsonl``, ``tokenizer.json`` and two checkpoints:
``last/`` (written at every evaluation, what ``resume`` continues from) and ``best/`` (best val loss).
"""
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields

import numpy as np

from . import backend, checkpoint, data, nn, optim
from .autograd import no_grad


@dataclass
class TrainConfig:
    model: str = "gpt"
    # model shape (GPT; other models read what applies to them)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = False
    pos_encoding: str = "learned"
    activation: str = "gelu"
    tie_weights: bool = True
    # the baselines (--model lstm|vae|ffn) also read n_embd, dropout and tie_weights (lstm)
    hidden_size: int = 256  # LSTM width (lstm, vae); the tanh hidden layer (ffn)
    num_layers: int = 2  # LSTM layers (lstm, vae)
    context: int = 8  # previous tokens the feed-forward LM sees (ffn)
    latent_size: int = 32  # z (vae)
    kl_anneal_iters: int = 1000  # KL weight 0 -> 1 linearly over these training steps (vae)
    word_dropout: float = 0.25  # decoder input tokens replaced by UNK in training (vae)
    # optimisation
    batch_size: int = 12
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    decay_lr: bool = True
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # evaluation and logging
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    seed: int = 1337
    dtype: str = "float32"
    device: str = "cpu"  # or 'cuda' (needs the gpu extra: CuPy and a CUDA GPU)
    # fine-tuning: start from a tinyllm run or a Hugging Face GPT-2 directory (its architecture wins)
    init_from: str = ""
    lora_rank: int = 0  # > 0: freeze the model, train LoRA adapters on c_attn / c_proj / c_fc only
    lora_alpha: float = 16.0
    lora_targets: str = "c_attn,c_proj,c_fc"  # comma-separated names of the Linear layers to adapt
    progress: bool = True

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ------------------------------------------------------------------------------------ models
def build_model(cfg, vocab_size):
    """The model named by ``cfg.model``, sized by ``cfg``; new parameters take ``cfg.dtype`` and live on
    ``cfg.device`` (initialised on the host from tinyllm's generator, then moved: same seed, same
    weights on every device)."""
    device = backend._check_device(cfg.device)  # a clear error before any work if CUDA is missing
    return _build_model(cfg, vocab_size).to(device)


def _build_model(cfg, vocab_size):
    with backend.default_dtype(np.dtype(cfg.dtype)):
        if cfg.model == "gpt":
            from .models import GPT, GPTConfig
            return GPT(GPTConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                                 n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias,
                                 pos_encoding=cfg.pos_encoding, tie_weights=cfg.tie_weights,
                                 activation=cfg.activation))
        if cfg.model == "lstm":
            from .models import LSTMLM
            return LSTMLM(vocab_size, n_embd=cfg.n_embd, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                          dropout=cfg.dropout, tie_weights=cfg.tie_weights)
        if cfg.model == "vae":
            from .models import TextVAE
            return TextVAE(vocab_size, n_embd=cfg.n_embd, hidden_size=cfg.hidden_size, latent_size=cfg.latent_size,
                           num_layers=cfg.num_layers, word_dropout=cfg.word_dropout,
                           kl_anneal_iters=cfg.kl_anneal_iters, dropout=cfg.dropout)
        if cfg.model == "ffn":
            from .models import FeedForwardLM
            return FeedForwardLM(vocab_size, context=cfg.context, n_embd=cfg.n_embd, hidden=cfg.hidden_size,
                                 dropout=cfg.dropout)
    raise ValueError(f"unknown model {cfg.model!r} (available: gpt, lstm, vae, ffn)")


def load_pretrained(path, device="cpu"):
    """The model of a tinyllm run directory (its best checkpoint; LoRA adapters merged in) or of a
    Hugging Face GPT-2 directory (config.json + model.safetensors)."""
    with open(os.path.join(path, "config.json")) as f:
        conf = json.load(f)
    if "train" in conf:  # a tinyllm run
        from .nn.lora import merge_lora
        return merge_lora(load_run(path, device=device)[0])
    from .models import GPT
    return GPT.from_pretrained(path).to(device)


def _architecture_from(model, cfg):
    """A fine-tuned model keeps its own shape: copy it into the config the run records."""
    mc = getattr(model, "config", None)
    for name in ("n_layer", "n_head", "n_embd", "bias", "tie_weights", "activation", "pos_encoding", "dropout"):
        if mc is not None and hasattr(mc, name):
            setattr(cfg, name, getattr(mc, name))
    if mc is not None and cfg.block_size > mc.block_size:
        raise ValueError(f"block_size {cfg.block_size} is longer than the pretrained model's {mc.block_size}")


class _Adapters:
    """What a LoRA run checkpoints: only the adapters (``lora_A`` / ``lora_B``)."""

    def __init__(self, model):
        self.model = model

    def state_dict(self):
        from .nn.lora import lora_state_dict
        return lora_state_dict(self.model)

    def load_state_dict(self, state, strict=True):
        expected = set(self.state_dict())
        if strict and set(state) != expected:
            raise checkpoint.CheckpointError(f"the checkpoint's adapters {sorted(set(state))[:4]}... do not match "
                                             f"the model's {sorted(expected)[:4]}...")
        return self.model.load_state_dict(state, strict=False)


def _lora_model(cfg, device):
    """``cfg.init_from``'s model with LoRA adapters, and the view of it that is checkpointed."""
    from .nn.lora import apply_lora
    model = load_pretrained(cfg.init_from, device)
    targets = tuple(t.strip() for t in cfg.lora_targets.split(",") if t.strip())
    apply_lora(model, cfg.lora_rank, cfg.lora_alpha, targets)
    return model, _Adapters(model)


def initial_model(cfg, vocab_size):
    """The model a run starts from: new (``build_model``), or ``cfg.init_from`` (with LoRA adapters when
    ``cfg.lora_rank`` > 0). Returns (model, what to checkpoint)."""
    if not cfg.init_from:
        if cfg.lora_rank:
            raise ValueError("lora_rank needs init_from: LoRA adapts a pretrained model")
        model = build_model(cfg, vocab_size)
        return model, model
    if cfg.lora_rank:
        model, saved = _lora_model(cfg, cfg.device)
    else:
        model = saved = load_pretrained(cfg.init_from, cfg.device)
    model_vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if model_vocab != vocab_size:
        raise ValueError(f"the data has a vocabulary of {vocab_size} but the model from {cfg.init_from} has "
                         f"{model_vocab}: prepare the data with --tokenizer-from {cfg.init_from}")
    _architecture_from(model, cfg)
    return model.train(), saved


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


def train(data_dir, out_dir, cfg=None, resume=False, log=print):
    """Train ``cfg.model`` on the prepared ``data_dir``; write the run to ``out_dir``. Returns the last eval."""
    cfg = cfg or TrainConfig()
    meta = data.read_meta(data_dir)
    splits = {"train": data.load_split(data_dir, "train"), "val": data.load_split(data_dir, "val")}
    os.makedirs(out_dir, exist_ok=True)
    last_dir, best_dir = os.path.join(out_dir, "last"), os.path.join(out_dir, "best")
    metrics_path = os.path.join(out_dir, "metrics.jsonl")

    backend.manual_seed(cfg.seed)
    model, saved = initial_model(cfg, meta["vocab_size"])
    opt = configure_optimizer(model, cfg)
    batch_rng, eval_rng = np.random.default_rng(cfg.seed), np.random.default_rng(cfg.seed + 1)
    start_iter, best_val, last_eval = 0, float("inf"), None

    if resume:
        ck = checkpoint.load_checkpoint(last_dir, saved, opt)  # recovers from an interrupted save too
        saved_cfg = TrainConfig.from_dict(ck.config["train"])
        saved_cfg.max_iters, saved_cfg.progress, saved_cfg.device = cfg.max_iters, cfg.progress, cfg.device
        cfg = saved_cfg
        st = ck.train_state
        start_iter, best_val = st["iter"], st["best_val_loss"]
        _set_rng_state(batch_rng, st["batch_rng"])
        _set_rng_state(eval_rng, st["eval_rng"])
        backend.set_rng_state(st["model_rng"])
        _truncate_metrics(metrics_path, start_iter)
        last_eval = st.get("eval")
        log(f"resuming from iteration {start_iter} (best val loss {best_val:.4f})")
    else:
        if os.path.exists(metrics_path):
            os.remove(metrics_path)
        shutil.copyfile(os.path.join(data_dir, "tokenizer.json"), os.path.join(out_dir, "tokenizer.json"))
    run_config = {"train": asdict(cfg), "model": getattr(model, "config", None) and model.config.to_dict(),
                  "vocab_size": meta["vocab_size"], "data_dir": os.path.abspath(data_dir)}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(run_config, f, indent=2)

    def save(path, it, evaluated):
        state = {"iter": it, "best_val_loss": best_val, "batch_rng": _rng_state(batch_rng),
                 "eval_rng": _rng_state(eval_rng), "model_rng": backend.get_rng_state(), "eval": evaluated}
        checkpoint.save_checkpoint(path, saved, opt, config=run_config, train_state=state)

    bar = _progress(start_iter, cfg)
    last_eval = last_eval if resume else None
    window_t0, window_iters = time.perf_counter(), 0
    ms_per_iter = float("nan")
    it = start_iter
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
            _append_metrics(metrics_path, last_eval)
            log(f"iter {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            if losses["val"] < best_val:
                best_val = losses["val"]
                save(best_dir, it, last_eval)
            save(last_dir, it, last_eval)
            window_t0, window_iters = time.perf_counter(), 0
        if it >= cfg.max_iters:
            break

        x, y = data.get_batch(splits["train"], cfg.batch_size, cfg.block_size, batch_rng)
        loss = model_loss(model, x, y)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            bar.close()
            raise TrainingDiverged(f"loss became {loss_value} at iteration {it}; stopping. The last good "
                                   f"checkpoint is kept in {last_dir}")
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
            _append_metrics(metrics_path, {"iter": it, "train_loss": loss_value, "val_loss": None, "lr": lr,
                                           "ms_per_iter": ms_per_iter})
    bar.close()
    return last_eval


def _progress(start, cfg):
    from tqdm import tqdm
    return tqdm(total=cfg.max_iters, initial=start, disable=not cfg.progress, dynamic_ncols=True, leave=True)


def _append_metrics(path, record):
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    with open(path, "a") as f:
        f.write(json.dumps(clean) + "\n")


def _truncate_metrics(path, upto_iter):
    """Drop metric lines written after the checkpoint we resume from, so the log reads as one run."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        keep = [line for line in f if line.strip() and json.loads(line)["iter"] <= upto_iter]
    with open(path, "w") as f:
        f.writelines(keep)


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def load_run(run_dir, which="best", device="cpu"):
    """(model, tokenizer, run_config) from a run directory's ``best`` or ``last`` checkpoint, with the
    model on ``device`` (checkpoints hold host arrays, so a run trained on a GPU loads on a CPU)."""
    from .text import load_tokenizer
    ck_dir = os.path.join(run_dir, which)
    if not os.path.isdir(ck_dir):
        raise FileNotFoundError(f"{run_dir} has no {which!r} checkpoint (is it a training run directory?)")
    run_config = checkpoint.read_config(ck_dir)
    cfg = TrainConfig.from_dict(run_config["train"])
    cfg.device = device
    target = None
    if cfg.lora_rank:  # the checkpoint holds adapters only: rebuild the base it adapts, then add them
        model, target = _lora_model(cfg, device)
    elif cfg.model == "gpt" and run_config.get("model"):  # the recorded shape (a fine-tuned GPT-2 keeps its own)
        from .models import GPT, GPTConfig
        with backend.default_dtype(np.dtype(cfg.dtype)):
            model = GPT(GPTConfig.from_dict(run_config["model"])).to(backend._check_device(device))
    else:
        model = build_model(cfg, run_config["vocab_size"])
    if run_config.get("quantized") == "int8":  # written by quantize_run: int8 layers, then their state
        from .nn.quantized import quantize_
        quantize_(model)
    checkpoint.load_checkpoint(ck_dir, target or model)
    model.eval()
    return model, load_tokenizer(os.path.join(run_dir, "tokenizer.json")), run_config


def quantize_run(run_dir, out_dir, which="best"):
    """Write an int8 copy of a run: every Linear and Embedding weight quantized per output channel
    (tinyllm/nn/quantized.py). ``out_dir`` is a run directory that ``load_run``, ``eval`` and
    ``sample`` accept. Returns (float bytes, int8 bytes) of the two model files."""
    from .nn.quantized import quantize_
    model, _, run_config = load_run(run_dir, which)
    quantize_(model)
    _write_derived_run(run_dir, out_dir, which, model, dict(run_config, quantized="int8"))
    sizes = [os.path.getsize(os.path.join(d, which, checkpoint.MODEL_FILE)) for d in (run_dir, out_dir)]
    return tuple(sizes)


def merge_run(run_dir, out_dir, which="best"):
    """Write a LoRA run with its adapters folded into the weights, as a plain run (``load_run``,
    ``eval``, ``sample`` and ``--init-from`` accept it)."""
    from .nn.lora import merge_lora
    model, _, run_config = load_run(run_dir, which)
    if not run_config["train"].get("lora_rank"):
        raise ValueError(f"{run_dir} is not a LoRA run (its lora_rank is 0): nothing to merge")
    merge_lora(model)
    train_cfg = dict(run_config["train"], lora_rank=0, init_from="")
    run_config = dict(run_config, train=train_cfg, model=model.config.to_dict(), merged_from=os.path.abspath(run_dir))
    _write_derived_run(run_dir, out_dir, which, model, run_config)
    return out_dir


def _write_derived_run(run_dir, out_dir, which, model, run_config):
    """A run directory made from another (quantized, merged): its checkpoint, config and tokenizer."""
    os.makedirs(out_dir, exist_ok=True)
    checkpoint.save_checkpoint(os.path.join(out_dir, which), model, config=run_config)
    shutil.copyfile(os.path.join(run_dir, "tokenizer.json"), os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(run_config, f, indent=2)
