"""The generate section: greedy decoding with the KV cache, tinyllm (both kernel families) against
Hugging Face ``generate`` on benchmarks/generate_bench.py's models."""
import tempfile
import time

import numpy as np

from benchmarks.harness import SIDES, alternate, make_row, tinyllm_side


def run(ctx, quick):
    if ctx.torch is None:
        return [], ["skipped: needs torch and transformers"]
    try:
        import transformers  # noqa: F401
    except ImportError:
        return [], ["skipped: needs transformers"]
    from benchmarks import generate_bench as GB
    plan = [("recipe", 50, 3)] if quick else [("recipe", 500, 5), ("gpt2-small", 100, 3)]
    rows = []
    for name, n, reps in plan:
        shape = GB.SHAPES[name]
        prompt = np.random.default_rng(0).integers(0, shape["vocab_size"], (1, GB.PROMPT_LEN))
        with tempfile.TemporaryDirectory() as d:
            hf, ours, load_s = GB.build(shape, d)
        sides = {k: tinyllm_side(k, lambda: GB.run_ours(ours, prompt, n)) for k in ("numba", "numpy")}
        sides["torch"] = lambda: GB.run_hf(hf, prompt, n)
        outs, warm_s = {}, {}
        for k, step in sides.items():  # warm-up, and the tokens to compare
            t = time.perf_counter()
            outs[k] = np.asarray(step())
            warm_s[k] = time.perf_counter() - t
        # a call of a second or more amortises waking the pools: no untimed settle call before each turn
        times = alternate(sides, ctx.n(reps), warmup=0, settle=max(warm_s.values()) < 1.0, ctx=ctx)
        row = make_row("generate", f"{name}, {n} new tokens", times, new_tokens=n, prompt_len=GB.PROMPT_LEN,
                       save_load_s=round(load_s, 2))
        for side in SIDES:
            if f"{side}_ms" in row:
                row[f"{side}_tok_s"] = round(n / row[f"{side}_ms"] * 1e3, 1)
        row["same_tokens_numba_vs_hf"] = float((outs["numba"] == outs["torch"]).mean())
        row["same_tokens_numpy_vs_hf"] = float((outs["numpy"] == outs["torch"]).mean())
        rows.append(row)
        hf = ours = None  # free this shape's models before the next one is built
    notes = [f"Greedy decoding with the KV cache, batch 1, a {GB.PROMPT_LEN}-token prompt, the same random weights "
             "(HF `GPT2LMHeadModel` -> save_pretrained -> `GPT.from_pretrained`); torch here is HF `generate`. "
             "ms is one whole `generate` call (prefill included); the ratio is of times, so 0.5 means twice "
             "HF's tokens/s.",
             "Targets (benchmarks/README.md, anchors): at least 2x HF's tokens/s on the recipe shape (ratio <= 0.5), "
             "at least 1x on GPT-2-small (ratio <= 1.0); HF measured 357 tok/s (recipe, 500 tokens) and 23 tok/s "
             "(GPT-2-small)."]
    return rows, notes
