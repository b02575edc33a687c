"""The models that training builds by name: each entry ties a name to a config class and a builder, so
the training loop and the run files need no list of models."""
from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class ModelEntry:
    """``build(config)`` makes the model; ``recipe`` holds the values a training run starts from where
    they differ from the config class's own defaults; ``aliases`` maps other names for a config field
    (flat config layouts, CLI flags) to the field."""
    name: str
    config_class: type
    build: object
    recipe: dict = field(default_factory=dict)
    aliases: dict = field(default_factory=dict)

    def field_names(self):
        return {f.name for f in fields(self.config_class)}

    def default_config(self, **values):
        """The recipe's config, with ``values`` (its field names or aliases) on top."""
        return self.config_class(**{**self.recipe, **self.rename(values)})

    def rename(self, values):
        """``values`` with aliases replaced by the field names they stand for."""
        return {self.aliases.get(k, k): v for k, v in values.items()}


_MODELS = {}


def register_model(name, config_class, build, recipe=None, aliases=None):
    """Make ``name`` buildable by training: ``build(config_class(...))`` returns the model. A model's
    config needs a ``vocab_size`` field (the data sets it) and ``to_dict`` / ``from_dict``."""
    if name in _MODELS and _MODELS[name].config_class is not config_class:
        raise ValueError(f"register_model: {name!r} is already registered with {_MODELS[name].config_class.__name__}")
    unknown = set(recipe or {}) - {f.name for f in fields(config_class)}
    if unknown:
        raise ValueError(f"register_model: recipe fields {sorted(unknown)} are not fields of {config_class.__name__}")
    _MODELS[name] = ModelEntry(name, config_class, build, dict(recipe or {}), dict(aliases or {}))
    return _MODELS[name]


def unregister_model(name):
    _MODELS.pop(name, None)


def get_model(name):
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r} (available: {', '.join(_MODELS)})") from None


def model_names():
    return list(_MODELS)


def entry_for_config(config):
    """The entry whose config class ``config`` is an instance of, or None."""
    for entry in _MODELS.values():
        if type(config) is entry.config_class:
            return entry
    return None
