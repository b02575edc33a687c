"""Writing tinyllm GPTs in other engines' formats (``pip install 'tinyllm[export]'``).

    to_hf(model, tokenizer, out_dir)                 a save_pretrained directory for transformers
    to_gguf(model, tokenizer, out_dir, dtype="f32")  out_dir/model.gguf for llama.cpp
    to_onnx(model, tokenizer, out_dir)               out_dir/model.onnx (with a KV cache) for ONNX Runtime
    export_run(run_dir, format, out_dir, ...)        any of them from a training run (``tinyllm export``)

Each writes a new directory whole or not at all, and returns notes on what it had to convert.
"""
import os

from .common import ExportError, check_new_dir
from .gguf import gguf_tensors, save_gguf, to_gguf
from .hf import to_hf, write_hf_tokenizer
from .onnx import to_onnx

__all__ = ["ExportError", "FORMATS", "export_run", "gguf_tensors", "save_gguf", "to_gguf", "to_hf", "to_onnx",
           "write_hf_tokenizer"]

FORMATS = ("hf", "gguf", "onnx")


def export_run(run_dir, format, out_dir, *, checkpoint="best", dtype="f32"):
    """Export a training run's ``best`` (or ``last``) checkpoint to ``out_dir`` as ``format`` (hf, gguf or
    onnx); ``dtype`` (f32, f16, q8_0) is GGUF's. A LoRA run is exported with its adapters folded in; an
    int8 run is refused (export the float run it was quantized from). Returns the notes of the export."""
    from ..nn.lora import LoRALinear, merge_lora
    from ..runs import load_run
    if format not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if dtype != "f32" and format != "gguf":
        raise ExportError(f"dtype {dtype!r} applies to the gguf format only; hf and onnx are written as float32")
    check_new_dir(out_dir)  # before the run is read, so a wrong --out costs nothing and is never touched
    run_config = _run_config(run_dir, checkpoint)
    if run_config.get("quantized"):
        parent = run_config.get("quantized_from")
        raise ExportError(f"{run_dir} is an {run_config['quantized']} run: export the float run it was quantized "
                          f"from{f' ({parent})' if parent else ''}" + (", with dtype q8_0 for a small GGUF" if
                                                                      format == "gguf" else ""))
    model_type = run_config.get("train", {}).get("model_type", "gpt")
    if model_type != "gpt":
        raise ExportError(f"{run_dir} holds a {model_type!r} model; only GPT runs can be exported (the formats "
                          f"hold GPT-2-style decoders)")
    model, tokenizer, _ = load_run(run_dir, checkpoint)
    notes = []
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        merge_lora(model)
        notes.append("LoRA adapters folded into the weights")
    if format == "hf":
        notes += to_hf(model, tokenizer, out_dir)
    elif format == "gguf":
        notes += to_gguf(model, tokenizer, out_dir, dtype=dtype)
    else:
        notes += to_onnx(model, tokenizer, out_dir)
    return notes


def _run_config(run_dir, which):
    """The run config of ``run_dir``'s ``which`` checkpoint, or one line saying what is missing."""
    from .. import checkpoint as ck
    if not os.path.isdir(run_dir):
        raise ExportError(f"{run_dir} does not exist (expected a training run directory)")
    ck_dir = os.path.join(run_dir, which)
    try:
        return ck.read_config(ck_dir)
    except FileNotFoundError:
        others = [w for w in ("best", "last") if w != which and os.path.isdir(os.path.join(run_dir, w))]
        hint = f"; it has {others[0]!r} (--checkpoint {others[0]})" if others else \
            " (has it been trained up to its first evaluation?)"
        raise ExportError(f"{run_dir} has no {which!r} checkpoint{hint}") from None
