"""The llamacpp section: greedy generation, tinyllm against llama.cpp (through llama-cpp-python) on the
same random GPT-2-small weights, exported with ``tinyllm.export.gguf.save_gguf``. Skipped without llama_cpp.

llama.cpp takes the opponent's place in the row (the ``torch_*`` keys, as HF does in ``generate``), so
the ratio is tinyllm's time / llama.cpp's time.
"""
import os
import tempfile
import time

import numpy as np

from benchmarks.harness import THREADS, alternate, make_row, tinyllm_side

# GPT-2 small (124M parameters), with the tanh GELU of llama.cpp's gpt2 graph so both compute one function
SHAPE = dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768, activation="gelu_tanh")
PROMPT_LEN = 16
GGML_TYPE_F32 = 0  # ggml's type id for float32, for the KV cache (llama.cpp's default is f16)


def build(shape=SHAPE, seed=0):
    """The tinyllm GPT with seeded random weights (GPT-2's init)."""
    from tinyllm import backend
    from tinyllm.models.gpt import GPT, GPTConfig
    backend.manual_seed(seed)
    return GPT(GPTConfig(**shape))


def load_llama(model):
    """llama.cpp on ``model``'s weights: written as f32 GGUF into a temporary folder, read into llama.cpp's
    own memory (no mmap) so the file is gone before anything is timed. KV cache in f32, as tinyllm's."""
    import llama_cpp

    from tinyllm.export.gguf import save_gguf
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.gguf")
        save_gguf(model, path)  # no tokenizer: a byte-level stand-in vocabulary, enough for token ids
        return llama_cpp.Llama(model_path=path, n_ctx=model.config.block_size, n_batch=512, n_threads=THREADS,
                               n_threads_batch=THREADS, use_mmap=False, type_k=GGML_TYPE_F32,
                               type_v=GGML_TYPE_F32, seed=0, verbose=False)


def run_llama(llm, prompt, n):
    """``n`` greedy tokens after ``prompt`` (a list of ids), from token ids, no text on either side."""
    llm.reset()  # a fresh context each call: no reuse of the last call's prompt, so both sides prefill
    out = []
    for tok in llm.generate(prompt, temp=0.0, repeat_penalty=1.0, reset=True):
        out.append(int(tok))
        if len(out) == n:
            break
    return np.array(out)


def run_ours(model, prompt, n):
    return model.generate(np.array([prompt]), max_new_tokens=n)[0, len(prompt):]


def first_difference(a, b):
    """The first position where two token sequences differ, or None."""
    diff = np.flatnonzero(a[:min(len(a), len(b))] != b[:min(len(a), len(b))])
    return int(diff[0]) if len(diff) else (None if len(a) == len(b) else min(len(a), len(b)))


def run(ctx, quick, shape=None, new_tokens=None, reps=None):
    try:
        import llama_cpp
    except ImportError:
        return [], ["skipped: needs llama-cpp-python (`pip install llama-cpp-python`, which builds llama.cpp "
                    "from source; not part of CI)"]
    try:
        import gguf  # noqa: F401
    except ImportError:
        return [], ["skipped: needs the gguf package (`pip install 'tinyllm[export]'`)"]
    shape = shape or SHAPE
    n = new_tokens or (20 if quick else 100)
    reps = ctx.n(reps or (2 if quick else 5))
    t = time.perf_counter()
    model = build(shape)
    llm = load_llama(model)
    load_s = time.perf_counter() - t
    prompt = [int(i) for i in np.random.default_rng(0).integers(0, shape["vocab_size"], PROMPT_LEN)]
    sides = {"numba": tinyllm_side("numba", lambda: run_ours(model, prompt, n)),
             "torch": lambda: run_llama(llm, prompt, n)}  # the opponent's slot: llama.cpp
    outs = {k: step() for k, step in sides.items()}  # warm-up, and the tokens to compare
    # one call is hundreds of ms or more: no untimed settle call before each turn
    times = alternate(sides, reps, warmup=0, settle=False, ctx=ctx)
    same = float((outs["numba"] == outs["torch"]).mean()) if len(outs["numba"]) == len(outs["torch"]) else 0.0
    row = make_row("llamacpp", f"gpt2-small, {n} new tokens" if shape is SHAPE else f"{n} new tokens", times,
                   opponent=f"llama.cpp (llama-cpp-python {llama_cpp.__version__})", new_tokens=n,
                   prompt_len=PROMPT_LEN, export_load_s=round(load_s, 2), same_tokens=same,
                   first_difference=first_difference(outs["numba"], outs["torch"]))
    for side in ("numba", "torch"):
        row[f"{side}_tok_s"] = round(n / row[f"{side}_ms"] * 1e3, 1)
        row[f"{side}_best_tok_s"] = round(n / row[f"{side}_best_ms"] * 1e3, 1)
    del llm, model  # ~1 GB between the two copies of the weights
    notes = [f"Greedy decoding at batch 1 from a {PROMPT_LEN}-token prompt (token ids, no text), {THREADS} threads "
             "each, f32 weights and KV cache on both sides. tinyllm's GPT (GPT-2 small, random weights, tanh GELU) "
             "is exported with `tinyllm.export.gguf.save_gguf` and run by llama.cpp's gpt2 graph through "
             "`Llama.generate(temp=0)`. ms is one whole call (prefill included); the ratio is tinyllm's time / "
             "llama.cpp's, so below 1.0 tinyllm is faster.",
             "Target: at least llama.cpp's tokens/s (ratio <= 1.0) with identical tokens."]
    if same < 1.0:
        notes.append(f"the tokens differ: {same:.0%} equal, first difference at new token "
                     f"{row['first_difference']}")
    return [row], notes
