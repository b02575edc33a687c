"""The autograd engine: Tensor, Function, backward, no_grad, gradcheck."""
from .engine import (Function, Tensor, enable_grad, is_grad_enabled, no_grad, set_grad_enabled,
                     unbroadcast)
from . import ops
from .methods import cat, stack, where
from .factory import (arange, as_tensor, empty, full, ones, ones_like, rand, randint, randn, tensor,
                      zeros, zeros_like)
from .gradcheck import gradcheck
