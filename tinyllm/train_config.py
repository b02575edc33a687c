"""``TrainConfig``: what a run trains (a registered model and that model's own config) and how, read back
from either layout a run's config.json may hold, and ``validate()``: every value checked before a run
touches the disk."""
import math
import numbers
import os
from dataclasses import asdict, dataclass, fields

from . import models  # noqa: F401  (registers the built-in models)
from .models.registry import get_model, model_names

_TYPE_KEYS = ("model_type", "model")
DEFAULT_WARMUP_ITERS = 100
# Settings with a fixed set of values: the CLI lists them in --help, validate() refuses the others.
# float16 is refused: the loss overflows it within one step and there is no loss scaling.
CHOICES = {"dtype": ("float32", "float64"), "device": ("cpu", "cuda"),
           "pos_encoding": ("learned", "sinusoidal"), "activation": ("gelu", "gelu_tanh")}


class ConfigError(ValueError):
    """A setting out of its range. ``field`` is the setting's name, ``problem`` the rest of the message, so
    the CLI can name its flag instead: ``--batch-size must be a positive integer, got 0``."""

    def __init__(self, field, problem):
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem

    def __reduce__(self):  # picklable, so one MPI rank's verdict can be sent to the others
        return type(self), (self.field, self.problem)


@dataclass
class TrainConfig:
    """Defaults are nanoGPT's CPU recipe: 4 layers, 4 heads, width 128, block 64, batch 12, AdamW 1e-3
    with 100 warm-up iterations and cosine decay to 1e-4 at 2000, betas (0.9, 0.99), weight decay 0.1 on
    matrices only, clip 1.0, eval every 250 iterations over 20 batches, seed 1337.

    The schedule fits ``max_iters`` unless told otherwise: ``lr_decay_iters`` left as None is
    ``max_iters`` and ``warmup_iters`` left as None is min(100, max_iters // 10), as ``search`` does, so a
    short run leaves warm-up and decays (the recipe's 2000 iterations give its 100 and 2000).

    ``model`` is the config of the registered model ``model_type``; left as None it is that model's
    recipe config, with this ``block_size`` where the model has one. The data sets its ``vocab_size``.
    """
    model_type: str = "gpt"
    model: object = None
    # batches
    block_size: int = 64
    batch_size: int = 12
    grad_accum_steps: int = 1  # micro-batches per optimizer step (effective batch: batch_size x this x processes)
    # optimisation
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = None  # None: min(100, max_iters // 10)
    lr_decay_iters: int = None  # None: max_iters
    decay_lr: bool = True
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    # evaluation and logging
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    log_stats: bool = False  # per-layer gradient, update and activation statistics in metrics.jsonl (stats.py)
    seed: int = 1337
    dtype: str = "float32"
    device: str = "cpu"  # or 'cuda' (needs the gpu extra: CuPy and a CUDA GPU)
    # fine-tuning: start from a tinyllm run or a Hugging Face GPT-2 directory (its architecture wins)
    init_from: str = ""
    lora_rank: int = 0  # > 0: freeze the model, train LoRA adapters on the lora_targets only
    lora_alpha: float = 16.0
    lora_targets: str = "c_attn,c_proj,c_fc"  # comma-separated names of the Linear layers to adapt
    progress: bool = True

    def __post_init__(self):
        if _is_int(self.max_iters):  # validate() reports a max_iters that is not an integer
            if self.warmup_iters is None:
                self.warmup_iters = min(DEFAULT_WARMUP_ITERS, max(self.max_iters, 0) // 10)
            if self.lr_decay_iters is None:
                self.lr_decay_iters = self.max_iters
        entry = get_model(self.model_type)
        if self.model is None:
            self.model = entry.default_config(**self._block_size_for(entry))
        elif isinstance(self.model, dict):
            self.model = entry.config_class.from_dict(self.model)
        elif not isinstance(self.model, entry.config_class):
            raise TypeError(f"TrainConfig: model_type {self.model_type!r} takes a {entry.config_class.__name__} "
                            f"as model, got {type(self.model).__name__}")

    def validate(self, vocab_size=None):
        """Raise ``ConfigError`` naming the first setting out of range; returns self. With the data's
        ``vocab_size``, also refuse a model and batch that could not fit in this machine's memory."""
        for f in fields(self):
            if f.name != "model":
                check_value(f.name, getattr(self, f.name))
        get_model(self.model_type)
        for f in fields(self.model):
            if f.name != "vocab_size":
                check_value(f.name, getattr(self.model, f.name), f.type)
        if self.lora_rank and not self.init_from:
            raise ConfigError("lora_rank", f"needs init_from: LoRA adapts a pretrained model (got lora_rank "
                                           f"{self.lora_rank} and no init_from)")
        if self.init_from and not os.path.isfile(os.path.join(self.init_from, "config.json")):
            raise ConfigError("init_from", f"must be a tinyllm run or a Hugging Face GPT-2 directory with a "
                                           f"config.json, got {self.init_from!r}")
        if vocab_size is not None and not self.init_from:
            _check_memory(self, vocab_size)
        return self

    def _block_size_for(self, entry):
        return {"block_size": self.block_size} if "block_size" in entry.field_names() else {}

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        """A config from its ``to_dict``, or from the flat layout older runs wrote (``model`` naming the
        model, its fields beside the training ones). Unknown keys are ignored, so newer runs load."""
        if isinstance(d.get("model"), dict):
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in d.items() if k in known})
        return cls._from_flat(d, strict=False)

    @classmethod
    def from_flat(cls, **values):
        """A config from one flat namespace, as CLI flags and search spaces give it: training fields and
        the model's fields side by side, ``model`` (or ``model_type``) naming the model. A name that only
        other models have is ignored; a name no model has is an error."""
        return cls._from_flat(values, strict=True)

    @classmethod
    def _from_flat(cls, values, strict):
        values = dict(values)
        named = [values.pop(k) for k in _TYPE_KEYS if k in values]
        model_type = named[0] if named else cls.model_type
        if strict:
            unknown = sorted(set(values) - flat_names())
            if unknown:
                raise ValueError(f"{unknown[0]!r} is not a TrainConfig field nor a field of any model's config "
                                 f"(models: {', '.join(model_names())})")
            for name, value in values.items():  # before any config is built from them
                check_value(name, value)
        entry = get_model(model_type)
        train_fields = {f.name for f in fields(cls)} - set(_TYPE_KEYS)
        cfg = cls(model_type=model_type, **{k: v for k, v in values.items() if k in train_fields})
        model_values = {k: v for k, v in entry.rename(values).items()
                        if k in entry.field_names() and k != "vocab_size"}
        cfg.model = entry.default_config(**{**cfg._block_size_for(entry), **model_values})
        return cfg


def flat_names():
    """Every name ``TrainConfig.from_flat`` accepts."""
    names = {f.name for f in fields(TrainConfig)} | set(_TYPE_KEYS)
    for name in model_names():
        entry = get_model(name)
        names |= (entry.field_names() - {"vocab_size"}) | set(entry.aliases)
    return names


# ------------------------------------------------------------------------------------ validation
_POSITIVE_INT = {"block_size", "batch_size", "grad_accum_steps", "max_iters", "eval_interval", "eval_iters", "log_interval", "n_layer",
                 "n_head", "n_embd", "hidden_size", "num_layers", "context", "hidden", "latent_size"}
_NON_NEGATIVE_INT = {"warmup_iters", "lr_decay_iters", "seed", "lora_rank", "kl_anneal_iters"}
_POSITIVE = {"lr", "lora_alpha", "layer_norm_eps"}
_NON_NEGATIVE = {"min_lr", "weight_decay", "grad_clip"}
_FRACTION = {"beta1", "beta2", "dropout", "word_dropout"}  # in [0, 1)
_BOOL = {"decay_lr", "progress", "log_stats", "bias", "tie_weights"}
_STR = {"init_from", "lora_targets"}
_SEED_LIMIT = 2 ** 63  # the seed and seed + 1 must be valid NumPy seeds


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_value(name, value, annotation=None):
    """Raise ``ConfigError`` unless ``value`` is allowed for the setting ``name`` (a TrainConfig or model
    config field; a field no rule knows is checked against its ``annotation``: int, float, bool, str)."""
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise ConfigError(name, f"must be one of {', '.join(CHOICES[name])}, got {value!r}")
    elif name in _POSITIVE_INT:
        if not (_is_int(value) and value >= 1):
            raise ConfigError(name, f"must be a positive integer, got {value!r}")
    elif name in _NON_NEGATIVE_INT:
        if not (_is_int(value) and value >= 0):
            raise ConfigError(name, f"must be a non-negative integer, got {value!r}")
        if name == "seed" and value >= _SEED_LIMIT:
            raise ConfigError(name, f"must be below 2**63, got {value!r}")
    elif name in _POSITIVE or name in _NON_NEGATIVE or name in _FRACTION:
        if not (_is_real(value) and math.isfinite(value)):
            raise ConfigError(name, f"must be a finite number, got {value!r}")
        if name in _POSITIVE and not value > 0:
            raise ConfigError(name, f"must be > 0, got {value!r}")
        if name in _NON_NEGATIVE and not value >= 0:
            raise ConfigError(name, f"must be >= 0, got {value!r}")
        if name in _FRACTION and not 0 <= value < 1:
            raise ConfigError(name, f"must be in [0, 1), got {value!r}")
    elif name in _BOOL or annotation in (bool, "bool"):
        if not isinstance(value, bool):
            raise ConfigError(name, f"must be true or false, got {value!r}")
    elif name in _STR or annotation in (str, "str"):
        if not isinstance(value, str):
            raise ConfigError(name, f"must be a string, got {value!r}")
    elif name in _TYPE_KEYS:
        if not isinstance(value, str) or value not in model_names():
            raise ConfigError(name, f"must be one of {', '.join(model_names())}, got {value!r}")
    elif annotation in (int, "int") and not _is_int(value):
        raise ConfigError(name, f"must be an integer, got {value!r}")
    elif annotation in (float, "float") and not (_is_real(value) and math.isfinite(value)):
        raise ConfigError(name, f"must be a finite number, got {value!r}")


def _memory_bytes():
    """This machine's physical memory, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _check_memory(cfg, vocab_size):
    """Refuse a run whose parameters and one step's largest activations alone exceed physical memory (a
    lower bound on what it needs, so nothing that fits is refused); otherwise it would fail mid-run."""
    total = _memory_bytes()
    if total is None:
        return
    m, itemsize = cfg.model, 8 if cfg.dtype == "float64" else 4
    width = max(getattr(m, "n_embd", 1), getattr(m, "hidden_size", 1), getattr(m, "hidden", 1))
    layers = max(getattr(m, "n_layer", 1), getattr(m, "num_layers", 1))
    tokens = cfg.batch_size * cfg.block_size
    params = vocab_size * width + layers * width * width  # embedding + one square matrix per layer
    activations = tokens * vocab_size + tokens * width * layers  # the logits + one (B, T, C) per layer
    if "n_head" in {f.name for f in fields(m)}:
        activations += cfg.batch_size * m.n_head * cfg.block_size ** 2 * layers  # attention weights
    weights, step = itemsize * 4 * params, itemsize * 2 * activations  # params, grads, AdamW's moments
    need = weights + step
    if need > total:
        gib = lambda n: f"{n / 2**30:,.0f} GiB"  # noqa: E731
        sizes = f"the model's weights and optimizer state {gib(weights)}, one step's activations {gib(step)}"
        if weights >= step:  # name the setting that makes the model too big
            name = next(n for n in ("n_embd", "hidden_size", "hidden", "n_layer", "num_layers") if hasattr(m, n))
            field, value = name, getattr(m, name)
        else:
            field, value = "batch_size", cfg.batch_size
        raise ConfigError(field, f"{value} needs at least {gib(need)} ({sizes}), but this machine has "
                                 f"{gib(total)}: make the batch, block or model smaller")
