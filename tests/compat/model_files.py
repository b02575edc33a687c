"""Load one torch model file twice: as written (under torch), and with its torch imports answered by
tinyllm, so the same source text runs on both and can be compared. The file itself is not changed."""
import importlib.util
import pathlib
import sys

import tinyllm

HERE = pathlib.Path(__file__).parent
# What a model file's ``import torch``, ``import torch.nn as nn`` and ``from torch.nn import functional
# as F`` find while it loads under tinyllm.
TINYLLM_AS_TORCH = {"torch": tinyllm, "torch.nn": tinyllm.nn, "torch.nn.functional": tinyllm.nn.functional}


def load(relative_path, framework):
    """The model file at ``tests/compat/<relative_path>`` as a fresh module, its ``torch`` being real
    torch (``framework='torch'``) or tinyllm (``framework='tinyllm'``)."""
    path = HERE / relative_path
    name = f"compat_{framework}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    if framework == "torch":
        spec.loader.exec_module(module)
        return module
    if framework != "tinyllm":
        raise ValueError(f"framework must be 'torch' or 'tinyllm', got {framework!r}")
    saved = {key: sys.modules.get(key) for key in TINYLLM_AS_TORCH}
    sys.modules.update(TINYLLM_AS_TORCH)  # only while the file's top-level imports run
    try:
        spec.loader.exec_module(module)
    finally:
        for key, value in saved.items():
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
    return module


class Without:
    """A view of a module without some of its attributes (``hasattr`` is False for them), so that a
    model file takes its fallback path. ``hidden`` maps a dotted path below the module to the names
    hidden there: ``Without(torch, {'nn.functional': {'scaled_dot_product_attention'}})``."""

    def __init__(self, module, hidden):
        self._module, self._hidden = module, hidden

    def __getattr__(self, name):
        if name in self._hidden.get("", ()):
            raise AttributeError(f"{name!r} is hidden from this view of {self._module.__name__}")
        value = getattr(self._module, name)
        below = {path[len(name):].lstrip("."): names for path, names in self._hidden.items()
                 if path == name or path.startswith(name + ".")}
        return Without(value, below) if below else value
