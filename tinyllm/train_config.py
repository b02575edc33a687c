"""``TrainConfig``: what a run trains (a registered model and that model's own config) and how, read back
from either layout a run's config.json may hold."""
from dataclasses import asdict, dataclass, fields

from . import models  # noqa: F401  (registers the built-in models)
from .models.registry import get_model, model_names

_TYPE_KEYS = ("model_type", "model")


@dataclass
class TrainConfig:
    """Defaults are nanoGPT's CPU recipe: 4 layers, 4 heads, width 128, block 64, batch 12, AdamW 1e-3
    with 100 warm-up iterations and cosine decay to 1e-4 at 2000, betas (0.9, 0.99), weight decay 0.1 on
    matrices only, clip 1.0, eval every 250 iterations over 20 batches, seed 1337.

    ``model`` is the config of the registered model ``model_type``; left as None it is that model's
    recipe config, with this ``block_size`` where the model has one. The data sets its ``vocab_size``.
    """
    model_type: str = "gpt"
    model: object = None
    # batches
    block_size: int = 64
    batch_size: int = 12
    # optimisation
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
    lora_rank: int = 0  # > 0: freeze the model, train LoRA adapters on the lora_targets only
    lora_alpha: float = 16.0
    lora_targets: str = "c_attn,c_proj,c_fc"  # comma-separated names of the Linear layers to adapt
    progress: bool = True

    def __post_init__(self):
        entry = get_model(self.model_type)
        if self.model is None:
            self.model = entry.default_config(**self._block_size_for(entry))
        elif isinstance(self.model, dict):
            self.model = entry.config_class.from_dict(self.model)
        elif not isinstance(self.model, entry.config_class):
            raise TypeError(f"TrainConfig: model_type {self.model_type!r} takes a {entry.config_class.__name__} "
                            f"as model, got {type(self.model).__name__}")

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
