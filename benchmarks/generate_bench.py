"""Greedy decoding speed on the KV cache: tinyllm ``generate`` vs Hugging Face ``GPT2LMHeadModel.generate``.

Same random weights in both (HF model -> save_pretrained -> ``GPT.from_pretrained``), batch 1, a
16-token prompt, 2 threads on each side. Runs alternate after a warm-up; we report median tokens/s
(new tokens / wall time of the whole ``generate`` call, prefill included) and the ratio.

    python benchmarks/generate_bench.py                 # both shapes
    python benchmarks/generate_bench.py --shapes recipe --reps 3 --json out.json
"""
import os

# 2 threads for everyone, and set before NumPy / numba / torch are imported so their pools obey.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

SHAPES = {
    # the training recipe's model: 4 layers, 4 heads, width 128, vocab 84, 500 new tokens
    "recipe": dict(n_layer=4, n_head=4, n_embd=128, vocab_size=84, n_positions=1024, new_tokens=500),
    # GPT-2 small: 124M parameters, 100 new tokens
    "gpt2-small": dict(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=1024, new_tokens=100),
}
PROMPT_LEN = 16


def build(shape, workdir):
    import torch
    import transformers

    from tinyllm.models.gpt import GPT

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=shape["vocab_size"], n_positions=shape["n_positions"],
                                  n_embd=shape["n_embd"], n_layer=shape["n_layer"], n_head=shape["n_head"],
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                  bos_token_id=None, eos_token_id=None, pad_token_id=None)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    t = time.perf_counter()
    hf.save_pretrained(workdir)
    ours = GPT.from_pretrained(workdir)
    return hf, ours, time.perf_counter() - t


def run_hf(hf, prompt, n):
    import torch
    torch.set_num_threads(2)  # again: numba's OpenMP pool resets the process's OpenMP thread count at start-up
    ids = torch.tensor(prompt)
    out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                      pad_token_id=0, eos_token_id=None)
    return out.numpy()


def run_ours(model, prompt, n):
    return model.generate(prompt, max_new_tokens=n)


def bench_shape(name, shape, reps):
    import torch
    torch.set_num_threads(2)
    n = shape["new_tokens"]
    prompt = np.random.default_rng(0).integers(0, shape["vocab_size"], (1, PROMPT_LEN))
    with tempfile.TemporaryDirectory() as d:
        hf, ours, load_s = build(shape, d)
    # warm-up: numba compile / cache load, torch's first-call paths, page faults on the weights
    a, b = run_ours(ours, prompt, n), run_hf(hf, prompt, n)
    same = float((a == b).mean())
    t_ours, t_hf = [], []
    for _ in range(reps):  # alternate so that machine noise hits both sides alike
        t = time.perf_counter()
        run_ours(ours, prompt, n)
        t_ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        run_hf(hf, prompt, n)
        t_hf.append(time.perf_counter() - t)
    ours_tps, hf_tps = n / statistics.median(t_ours), n / statistics.median(t_hf)
    ours_best, hf_best = n / min(t_ours), n / min(t_hf)
    return dict(shape=name, new_tokens=n, prompt_len=PROMPT_LEN, reps=reps, save_load_s=round(load_s, 2),
                tinyllm_tok_s=round(ours_tps, 1), hf_tok_s=round(hf_tps, 1), ratio=round(ours_tps / hf_tps, 2),
                tinyllm_best_tok_s=round(ours_best, 1), hf_best_tok_s=round(hf_best, 1),
                ratio_best=round(ours_best / hf_best, 2),
                tinyllm_runs_s=[round(x, 3) for x in t_ours], hf_runs_s=[round(x, 3) for x in t_hf],
                greedy_tokens_equal=same)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    from tinyllm import backend
    backend.tune_for_training()  # a program: the allocator and thread-pool setup training runs get
    import torch
    import transformers
    rows = [bench_shape(s, SHAPES[s], args.reps) for s in args.shapes]
    print(f"\ngreedy decode, batch 1, prompt {PROMPT_LEN}, 2 threads; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, numpy {np.__version__}, {platform.processor() or platform.machine()}")
    # medians are the headline; the best runs show what each side does when the machine leaves it alone
    print("| shape | new tokens | tinyllm tok/s | HF tok/s | tinyllm / HF | best runs: tinyllm, HF, ratio | same tokens |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['shape']} | {r['new_tokens']} | {r['tinyllm_tok_s']} | {r['hf_tok_s']} | {r['ratio']}x "
              f"| {r['tinyllm_best_tok_s']}, {r['hf_best_tok_s']}, {r['ratio_best']}x | {r['greedy_tokens_equal']:.0%} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
