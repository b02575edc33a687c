"""Run directories: the model a run starts from, its config, metrics and checkpoints, resuming it, reading
it back, and the runs derived from it (int8-quantized, LoRA-merged).

A run directory holds ``config.json``, ``metrics.jsonl``, ``tokenizer.json`` and two checkpoints:
``last/`` (written at every evaluation, what a resume continues from) and ``best/`` (best val loss).
Checkpoints are safetensors + JSON (``tinyllm.checkpoint``), written atomically.
"""
import json
import math
import os
import shutil
from dataclasses import replace

import numpy as np

from . import backend, checkpoint
from .models.registry import entry_for_config, get_model
from .train_config import TrainConfig

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
TOKENIZER_FILE = "tokenizer.json"
LAST, BEST = "last", "best"
PLOT_FILE = "loss.png"
# What a run directory holds: all that overwriting a run removes (plus the checkpoints' save leftovers).
RUN_ENTRIES = (CONFIG_FILE, METRICS_FILE, TOKENIZER_FILE, LAST, BEST, PLOT_FILE)


class RunDirError(ValueError):
    """A run directory cannot be used as asked: a new run over an existing one, a resume without a
    checkpoint, a derived run over its source."""


# ------------------------------------------------------------------------------------ models
def build_model(cfg, vocab_size):
    """A new ``cfg.model_type`` model from ``cfg.model`` with ``vocab_size``; its parameters take
    ``cfg.dtype`` and live on ``cfg.device`` (initialised on the host from tinyllm's generator, then
    moved: same seed, same weights on every device)."""
    device = backend._check_device(cfg.device)  # a clear error before any work if CUDA is missing
    return _build(cfg.model_type, replace(cfg.model, vocab_size=vocab_size), cfg.dtype).to(device)


def _build(model_type, model_config, dtype):
    with backend.default_dtype(np.dtype(dtype)):
        return get_model(model_type).build(model_config)


def load_pretrained(path, device="cpu"):
    """The model of a tinyllm run directory (its best checkpoint; LoRA adapters merged in) or of a
    Hugging Face GPT-2 directory (config.json + model.safetensors)."""
    conf = read_pretrained_config(path)
    if "train" in conf:  # a tinyllm run
        from .nn.lora import merge_lora
        return merge_lora(load_run(path, device=device)[0])
    from .models import GPT
    return GPT.from_pretrained(path).to(device)


_HF_INT_FIELDS = ("vocab_size", "n_positions", "n_ctx", "n_layer", "n_head", "n_embd", "hidden_size")


def read_pretrained_config(path):
    """The config.json of an ``init_from`` directory, checked: a tinyllm run's, or a Hugging Face GPT-2
    one whose sizes are positive integers (a clear error here instead of a TypeError deep in the model)."""
    where = os.path.join(path, CONFIG_FILE)
    try:
        with open(where) as f:
            conf = json.load(f)
    except (OSError, ValueError) as e:
        raise RunDirError(f"{where}: cannot read it as JSON ({e})") from None
    if not isinstance(conf, dict):
        raise RunDirError(f"{where}: expected a JSON object, got {type(conf).__name__}")
    if "train" not in conf:
        for key in _HF_INT_FIELDS:
            value = conf.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise RunDirError(f"{where}: {key} must be a positive integer, got {value!r}")
        eps = conf.get("layer_norm_epsilon")
        if eps is not None and (not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0):
            raise RunDirError(f"{where}: layer_norm_epsilon must be a positive number, got {eps!r}")
    return conf


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
    ``cfg.lora_rank`` > 0). Returns (model, what to checkpoint, the config the run records: ``cfg`` with
    the model's actual config, since a fine-tuned model keeps its own shape)."""
    if not cfg.init_from:
        if cfg.lora_rank:
            raise ValueError("lora_rank needs init_from: LoRA adapts a pretrained model")
        model = build_model(cfg, vocab_size)
        return model, model, replace(cfg, model=replace(cfg.model, vocab_size=vocab_size))
    if cfg.lora_rank:
        model, saved = _lora_model(cfg, cfg.device)
    else:
        model = saved = load_pretrained(cfg.init_from, cfg.device)
    model_vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if model_vocab != vocab_size:
        raise ValueError(f"the data has a vocabulary of {vocab_size} but the model from {cfg.init_from} has "
                         f"{model_vocab}: prepare the data with --tokenizer-from {cfg.init_from}")
    return model.train(), saved, _with_architecture_of(model, cfg)


def _with_architecture_of(model, cfg):
    mc = getattr(model, "config", None)
    entry = entry_for_config(mc)
    if entry is None:
        return cfg
    if "block_size" in entry.field_names() and cfg.block_size > mc.block_size:
        raise ValueError(f"block_size {cfg.block_size} is longer than the pretrained model's {mc.block_size}")
    return replace(cfg, model_type=entry.name, model=mc)


# ------------------------------------------------------------------------------------ the run directory
def run_entries(out_dir):
    """The names in ``out_dir`` that belong to a run (checkpoints' save leftovers included), sorted."""
    if not os.path.isdir(out_dir):
        return []
    return sorted(n for n in os.listdir(out_dir)
                  if n in RUN_ENTRIES or any(n.startswith(f".{ck}.{kind}-") for ck in (LAST, BEST)
                                             for kind in ("tmp", "old")))


def describe_run(out_dir):
    """A few words on what ``out_dir`` holds: its entries and, when it has one, the last checkpoint's
    iteration."""
    names = [n + ("/" if os.path.isdir(os.path.join(out_dir, n)) else "") for n in run_entries(out_dir)]
    try:
        it = f" at iteration {last_state(out_dir)['iter']}"
    except (OSError, ValueError, KeyError, TypeError):
        it = ""
    return f"a run{it} ({', '.join(names)})"


def check_new_run(out_dir, overwrite=False):
    """Refuse to start a run in ``out_dir`` when it already holds one, unless ``overwrite``; a directory
    holding other things is refused too, so nothing that is not a run is mixed with one. Touches nothing."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise RunDirError(f"{out_dir} is a file, not a run directory")
    if run_entries(out_dir):
        if not overwrite:
            raise RunDirError(f"{out_dir} already holds {describe_run(out_dir)}; continue it with --resume "
                              f"or replace it with --overwrite")
    elif os.path.isdir(out_dir) and os.listdir(out_dir):
        raise RunDirError(f"{out_dir} is not empty and is not a run directory (it holds "
                          f"{', '.join(sorted(os.listdir(out_dir))[:4])}); choose another output directory")


def remove_run(out_dir):
    """Delete what a run holds in ``out_dir`` (``run_entries``) and nothing else; returns the names."""
    names = run_entries(out_dir)
    for name in names:
        path = os.path.join(out_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    return names


def create(out_dir, data_dir):
    """A fresh run in ``out_dir``: the data's tokenizer copied in, metrics from an earlier run removed."""
    os.makedirs(out_dir, exist_ok=True)
    metrics = os.path.join(out_dir, METRICS_FILE)
    if os.path.exists(metrics):
        os.remove(metrics)
    shutil.copyfile(os.path.join(data_dir, TOKENIZER_FILE), os.path.join(out_dir, TOKENIZER_FILE))


def write_config(out_dir, cfg, model, vocab_size, data_dir):
    """Write and return the run config: the training config, the model's config, the vocabulary size
    and where the data is."""
    run_config = {"train": cfg.to_dict(), "model": getattr(model, "config", None) and model.config.to_dict(),
                  "vocab_size": vocab_size, "data_dir": os.path.abspath(data_dir)}
    _write_json(os.path.join(out_dir, CONFIG_FILE), run_config)
    return run_config


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def append_metrics(out_dir, record):
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    with open(os.path.join(out_dir, METRICS_FILE), "a") as f:
        f.write(json.dumps(clean) + "\n")


def truncate_metrics(out_dir, upto_iter):
    """Drop metric lines written after the checkpoint we resume from, so the log reads as one run."""
    path = os.path.join(out_dir, METRICS_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        keep = [line for line in f if line.strip() and json.loads(line)["iter"] <= upto_iter]
    with open(path, "w") as f:
        f.writelines(keep)


def read_metrics(run_dir):
    with open(os.path.join(run_dir, METRICS_FILE)) as f:
        return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------------------------------------ checkpoints and resume
def save(out_dir, which, saved, optimizer, run_config, train_state):
    """Checkpoint ``saved`` (the model, or a LoRA run's adapters) and the optimizer as ``out_dir/which``."""
    checkpoint.save_checkpoint(os.path.join(out_dir, which), saved, optimizer, config=run_config,
                               train_state=train_state)


def saved_run_config(out_dir):
    """The run config (training config, model config, data directory) of ``out_dir``'s ``last``
    checkpoint."""
    if not os.path.isdir(out_dir):
        raise RunDirError(f"nothing to resume: {out_dir} does not exist")
    try:
        return checkpoint.read_config(os.path.join(out_dir, LAST))
    except FileNotFoundError:
        raise RunDirError(f"nothing to resume: {out_dir} has no {LAST!r} checkpoint") from None


def saved_config(out_dir):
    """The TrainConfig of the run in ``out_dir``, from its ``last`` checkpoint."""
    return TrainConfig.from_dict(saved_run_config(out_dir)["train"])


def last_state(out_dir):
    """The training state (iteration, best val loss, RNG states) of ``out_dir``'s ``last`` checkpoint,
    without loading its arrays."""
    ckdir = checkpoint._resolve(os.path.join(out_dir, LAST))
    with open(os.path.join(ckdir, checkpoint.TRAIN_STATE_FILE)) as f:
        return json.load(f)


def resumed_config(out_dir, cfg):
    """The config of the run to resume, from its ``last`` checkpoint; only ``max_iters``, ``progress``,
    ``device`` and ``log_stats`` (which only observes) are taken from ``cfg``."""
    return replace(saved_config(out_dir), max_iters=cfg.max_iters, progress=cfg.progress, device=cfg.device,
                   log_stats=cfg.log_stats)


def resume(out_dir, saved, optimizer):
    """Load the ``last`` checkpoint into ``saved`` and ``optimizer``; returns its training state. An
    interrupted save is recovered from (``tinyllm.checkpoint``)."""
    return checkpoint.load_checkpoint(os.path.join(out_dir, LAST), saved, optimizer).train_state


# ------------------------------------------------------------------------------------ reading runs back
def load_run(run_dir, which=BEST, device="cpu"):
    """(model, tokenizer, run_config) from a run directory's ``best`` or ``last`` checkpoint, with the
    model on ``device`` (checkpoints hold host arrays, so a run trained on a GPU loads on a CPU). Runs
    whose config.json has the older flat layout load too."""
    from .text import load_tokenizer
    ck_dir = os.path.join(run_dir, which)
    if not os.path.isdir(ck_dir):
        raise FileNotFoundError(f"{run_dir} has no {which!r} checkpoint (is it a training run directory?)")
    run_config = checkpoint.read_config(ck_dir)
    cfg = replace(TrainConfig.from_dict(run_config["train"]), device=device)
    target = None
    if cfg.lora_rank:  # the checkpoint holds adapters only: rebuild the base it adapts, then add them
        model, target = _lora_model(cfg, device)
    else:
        entry = get_model(cfg.model_type)
        recorded = run_config.get("model")  # the built model's config (a fine-tuned one keeps its own shape)
        model_config = entry.config_class.from_dict(recorded) if recorded else \
            replace(cfg.model, vocab_size=run_config["vocab_size"])
        model = _build(cfg.model_type, model_config, cfg.dtype).to(backend._check_device(device))
    if run_config.get("quantized") == "int8":  # written by quantize_run: int8 layers, then their state
        from .nn.quantized import quantize_
        quantize_(model)
    checkpoint.load_checkpoint(ck_dir, target or model)
    model.eval()
    return model, load_tokenizer(os.path.join(run_dir, TOKENIZER_FILE)), run_config


# ------------------------------------------------------------------------------------ derived runs
def quantize_run(run_dir, out_dir, which=BEST):
    """Write an int8 copy of a run: every Linear and Embedding weight quantized per output channel
    (tinyllm/nn/quantized.py). ``out_dir`` is a run directory that ``load_run``, ``eval`` and
    ``sample`` accept. Returns (float bytes, int8 bytes) of the two model files."""
    from .nn.quantized import quantize_
    check_derived_run(run_dir, out_dir)
    model, _, run_config = load_run(run_dir, which)
    if run_config.get("quantized"):
        raise RunDirError(f"{run_dir} is already quantized ({run_config['quantized']})")
    quantize_(model)
    _write_derived_run(run_dir, out_dir, which, model,
                       dict(run_config, quantized="int8", quantized_from=os.path.abspath(run_dir)))
    sizes = [os.path.getsize(os.path.join(d, which, checkpoint.MODEL_FILE)) for d in (run_dir, out_dir)]
    return tuple(sizes)


def merge_run(run_dir, out_dir, which=BEST):
    """Write a LoRA run with its adapters folded into the weights, as a plain run (``load_run``,
    ``eval``, ``sample`` and ``--init-from`` accept it)."""
    from .nn.lora import merge_lora
    check_derived_run(run_dir, out_dir)
    model, _, run_config = load_run(run_dir, which)
    cfg = TrainConfig.from_dict(run_config["train"])
    if not cfg.lora_rank:
        raise ValueError(f"{run_dir} is not a LoRA run (its lora_rank is 0): nothing to merge")
    merge_lora(model)
    cfg = replace(cfg, lora_rank=0, init_from="", model=model.config)
    run_config = dict(run_config, train=cfg.to_dict(), model=model.config.to_dict(),
                      merged_from=os.path.abspath(run_dir))
    _write_derived_run(run_dir, out_dir, which, model, run_config)
    return out_dir


def check_derived_run(run_dir, out_dir):
    """A derived run is written only into a new (or empty) directory that is not its source nor inside it."""
    src, dst = os.path.realpath(run_dir), os.path.realpath(out_dir)
    if not os.path.isdir(os.path.join(run_dir, BEST)) and not os.path.isdir(os.path.join(run_dir, LAST)):
        raise RunDirError(f"{run_dir} is not a run directory (no {BEST}/ or {LAST}/ checkpoint)")
    if dst == src or dst.startswith(src + os.sep):
        raise RunDirError(f"the output {out_dir} is the run {run_dir} or inside it: write the derived run "
                          f"to a new directory")
    if os.path.exists(out_dir) and not (os.path.isdir(out_dir) and not os.listdir(out_dir)):
        raise RunDirError(f"{out_dir} already exists: choose a new directory for the derived run")


def _write_derived_run(run_dir, out_dir, which, model, run_config):
    """A run directory made from another (quantized, merged): its checkpoint, config and tokenizer."""
    os.makedirs(out_dir, exist_ok=True)
    checkpoint.save_checkpoint(os.path.join(out_dir, which), model, config=run_config)
    shutil.copyfile(os.path.join(run_dir, TOKENIZER_FILE), os.path.join(out_dir, TOKENIZER_FILE))
    _write_json(os.path.join(out_dir, CONFIG_FILE), run_config)
