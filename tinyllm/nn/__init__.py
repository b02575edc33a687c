"""Neural-network building blocks: Module, Parameter, layers, functional ops, init, utils."""
from . import functional, init, utils
from .layers import (GELU, Dropout, Embedding, Identity, LayerNorm, Linear, ModuleDict, ModuleList,
                     ReLU, RMSNorm, Sequential, Sigmoid, SiLU, Tanh)
from .module import Module, Parameter, StateDictError
from .kv_cache import KVCache
from . import lora, quantized
from .lstm import LSTM, LSTMCell
