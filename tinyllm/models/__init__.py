"""Models built only from ``tinyllm.nn``, and the registry that lets training build them by name."""
from .ffn import FeedForwardLM, FeedForwardLMConfig
from .gpt import GPT, GPTConfig
from .lstm_lm import LSTMLM, LSTMLMConfig
from .registry import get_model, model_names, register_model
from .vae import TextVAE, TextVAEConfig
from .seq2seq import Seq2SeqConfig, Seq2SeqTransformer

# The recipes: what `tinyllm train --model NAME` builds where that differs from the config's defaults.
register_model("gpt", GPTConfig, GPT, recipe=dict(bias=False))  # nanoGPT's CPU recipe: no biases
register_model("lstm", LSTMLMConfig, lambda c: LSTMLM(**c.to_dict()), recipe=dict(tie_weights=True))
register_model("vae", TextVAEConfig, lambda c: TextVAE(**c.to_dict()), recipe=dict(n_embd=128, num_layers=2))
register_model("ffn", FeedForwardLMConfig, lambda c: FeedForwardLM(**c.to_dict()), recipe=dict(n_embd=128, hidden=256),
               aliases=dict(hidden_size="hidden"))
