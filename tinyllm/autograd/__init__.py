"""The autograd engine (``engine.py``), its ops (``ops.py``: arithmetic, elementwise and reductions;
``shapes.py``: shapes and indexing; ``fused.py``: fused ops with hand-derived backward passes),
tensor factories and gradcheck."""
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .engine import Function, Tensor
from . import ops, shapes, fused, selection
from .ops import unbroadcast
from .shapes import cat, stack, where
from .factory import (arange, as_tensor, empty, full, ones, ones_like, rand, randint, randn, tensor,
                      zeros, zeros_like)
from .gradcheck import gradcheck
