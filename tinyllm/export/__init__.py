"""Writing tinyllm models in other engines' formats (``pip install 'tinyllm[export]'``).

``save_gguf(model, path)`` writes a GPT as a GGUF file that llama.cpp runs with its "gpt2" graph.
"""
from .gguf import gguf_tensors, save_gguf

__all__ = ["gguf_tensors", "save_gguf"]
