"""Models built only from ``tinyllm.nn``."""
from .gpt import GPT, GPTConfig
