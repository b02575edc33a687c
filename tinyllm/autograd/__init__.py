"""The autograd engine (``engine.py``), its ops (``ops.py``: arithmetic, elementwise and reductions;
``shapes.py``: shapes and indexing; ``fused.py``: fused ops with hand-derived backward passes),
tensor factories, torch's function forms of the Tensor methods (``functions.py``) and gradcheck."""
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .engine import Function, Tensor
from . import ops, shapes, fused, selection
from .ops import unbroadcast
from .shapes import cat, stack, where
from .einsum import einsum
from .factory import (arange, as_tensor, empty, empty_like, eye, full, full_like, linspace, ones, ones_like,
                      rand, rand_like, randint, randn, randn_like, tensor, zeros, zeros_like)
from . import functions
from .gradcheck import gradcheck
