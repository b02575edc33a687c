"""Models built only from ``tinyllm.nn``."""
from .ffn import FeedForwardLM, FeedForwardLMConfig
from .gpt import GPT, GPTConfig
from .lstm_lm import LSTMLM, LSTMLMConfig
from .vae import TextVAE, TextVAEConfig
from .seq2seq import Seq2SeqConfig, Seq2SeqTransformer
