"""What the three exports share: which models they take, host float arrays of the weights, what a GPT-2
file cannot hold as it is, and an output directory that appears whole or not at all."""
import contextlib
import os
import secrets
import shutil

import numpy as np

from ..models.gpt import GPT

__all__ = ["ExportError", "check_gpt", "check_new_dir", "gpt2_notes", "host_array", "new_output_dir",
           "position_table"]


class ExportError(ValueError):
    """A model, tokenizer or output directory an export cannot take; the message says why and what to do."""


def check_gpt(model, who):
    """``model`` must be a float tinyllm GPT: not another architecture, not int8, no unmerged LoRA adapters."""
    from ..nn.lora import LoRALinear
    from ..nn.quantized import QuantizedEmbedding, QuantizedLinear
    if not isinstance(model, GPT):
        raise ExportError(f"{who}: only a tinyllm GPT can be exported (the formats hold GPT-2-style decoders), "
                          f"got {type(model).__name__}")
    kinds = {type(m) for m in model.modules()}
    if kinds & {QuantizedLinear, QuantizedEmbedding}:
        raise ExportError(f"{who}: the model has int8 layers; export the float model it was quantized from "
                          f"(GGUF can store it as q8_0 with dtype='q8_0')")
    if LoRALinear in kinds:
        raise ExportError(f"{who}: the model has LoRA adapters; fold them in first with "
                          f"tinyllm.nn.lora.merge_lora(model)")


def host_array(t, dtype=np.float32):
    """A parameter's (or buffer's) values as a C-contiguous host array of ``dtype``, copying only if needed."""
    a = t.data if hasattr(t, "data") else t
    if not isinstance(a, np.ndarray):  # a cupy array: files are written from host memory
        a = a.get()
    return np.ascontiguousarray(a, dtype=dtype)


def gpt2_notes(model):
    """What a GPT-2 file (HF's GPT2LMHeadModel, llama.cpp's gpt2 graph) cannot hold as tinyllm has it, and
    how the export writes it instead; each conversion is exact. An empty list: nothing to convert."""
    c, notes = model.config, []
    if not c.bias:
        notes.append("bias=False: GPT-2 layers always have biases, so they are written as zeros (exact)")
    if c.pos_encoding == "sinusoidal":
        notes.append("sinusoidal positions: written as GPT-2's learned position table holding the same "
                     "values (exact)")
    if model.lm_head.weight.data.dtype != np.float32:
        notes.append(f"{model.lm_head.weight.data.dtype} weights: written as float32")
    return notes


def position_table(model):
    """The (block_size, n_embd) position embedding as GPT-2 stores it: the learned one, or the sinusoidal
    table it equals."""
    return model.wpe.weight if model.config.pos_encoding == "learned" else model.pos_table


def check_new_dir(out_dir, who=None):
    """``out_dir`` must not exist, or be an empty directory: an export never writes over someone's files."""
    if os.path.lexists(out_dir) and not (os.path.isdir(out_dir) and not os.listdir(out_dir)):
        raise ExportError(f"{who + ': ' if who else ''}{out_dir} already exists and is not an empty directory; "
                          f"choose a new one")


@contextlib.contextmanager
def new_output_dir(out_dir, who):
    """Yields a temporary directory beside ``out_dir``; when the block ends without error it becomes
    ``out_dir``, and otherwise it is removed, so an export never leaves a half-written directory.
    ``out_dir`` must not exist, or be an empty directory (never someone's files)."""
    out_dir = os.fspath(out_dir)
    check_new_dir(out_dir, who)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    # os.mkdir rather than mkdtemp: the directory gets the user's umask, as any directory they make
    tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(out_dir))}.tmp-{secrets.token_hex(4)}")
    os.mkdir(tmp)
    try:
        yield tmp
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)  # still empty (checked above); rename cannot replace it
        os.rename(tmp, out_dir)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
