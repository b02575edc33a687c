"""Train the encoder-decoder on the synthetic translation task and score it with corpus BLEU.

    python benchmarks/translate.py                 # ~4 minutes of training, then BLEU on the val split
    python benchmarks/translate.py --quick         # a smoke run

The task comes from ``python -m tinyllm prepare translation`` (made here in a temporary folder when
--data is not given): a seeded lexicon, SOV reordering and gender/number agreement. Greedy and beam-4
decoding are scored with ``tinyllm.metrics.bleu`` (BLEU-4, exp smoothing, as sacrebleu's default).
Writes benchmarks/results/translate[_quick].{md,json}.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def load(data_dir, split, vocab_src, vocab_tgt):
    def ids(path, vocab):
        with open(path, encoding="utf-8") as f:
            return [[vocab.get(w, 3) for w in line.split()] for line in f]
    return ids(os.path.join(data_dir, f"{split}.src"), vocab_src), ids(os.path.join(data_dir, f"{split}.tgt"), vocab_tgt)


def batch(src, tgt, idx):
    from tinyllm.models.seq2seq import BOS, EOS, PAD
    S = max(len(src[i]) for i in idx) + 1
    T = max(len(tgt[i]) for i in idx) + 1
    s = np.full((len(idx), S), PAD, np.int64)
    t_in = np.full((len(idx), T), PAD, np.int64)
    t_out = np.full((len(idx), T), PAD, np.int64)
    for r, i in enumerate(idx):
        s[r, :len(src[i]) + 1] = src[i] + [EOS]
        t_in[r, :len(tgt[i]) + 1] = [BOS] + tgt[i]
        t_out[r, :len(tgt[i]) + 1] = tgt[i] + [EOS]
    return s, t_in, t_out


def run(data_dir, budget_s, eval_n, log=print, seed=0):
    import tinyllm as tl
    from tinyllm import nn, optim
    from tinyllm.metrics import bleu
    from tinyllm.models.seq2seq import EOS, PAD, Seq2SeqConfig, Seq2SeqTransformer
    vs = json.load(open(os.path.join(data_dir, "vocab.src.json")))
    vt = json.load(open(os.path.join(data_dir, "vocab.tgt.json")))
    inv_t = {i: w for w, i in vt.items()}
    src, tgt = load(data_dir, "train", vs, vt)
    vsrc, vtgt = load(data_dir, "val", vs, vt)
    tl.manual_seed(seed)
    cfg = Seq2SeqConfig(src_vocab_size=len(vs), tgt_vocab_size=len(vt), n_layer=2, n_head=4, n_embd=128, max_len=48)
    model = Seq2SeqTransformer(cfg)
    opt = optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01)
    rng = np.random.default_rng(seed)
    t0, step, losses = time.perf_counter(), 0, []
    while time.perf_counter() - t0 < budget_s:
        idx = rng.integers(0, len(src), 32)
        s, ti, to = batch(src, tgt, idx)
        _, loss = model(s, ti, to)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 200 == 0:
            log(f"step {step}, {time.perf_counter() - t0:.0f} s: loss {np.mean(losses[-200:]):.4f}")
    train_s = time.perf_counter() - t0
    model.eval()

    def words(ids):
        out = []
        for i in ids:
            if int(i) in (EOS, PAD):
                break
            out.append(inv_t[int(i)])
        return " ".join(out)

    refs = [" ".join(inv_t[i] for i in t) for t in vtgt[:eval_n]]
    results = {}
    for name, beams in (("greedy", 1), ("beam 4", 4)):
        hyps, t1 = [], time.perf_counter()
        for b in range(0, eval_n, 64):
            s, _, _ = batch(vsrc, vtgt, list(range(b, min(eval_n, b + 64))))
            hyps += [words(row) for row in model.translate(s, max_new_tokens=30, num_beams=beams)]
        score = bleu(hyps, [refs])
        exact = float(np.mean([h == r for h, r in zip(hyps, refs)]))
        results[name] = {"bleu": score["score"], "exact_match": exact, "seconds": round(time.perf_counter() - t1, 1),
                         "example": {"hyp": hyps[0], "ref": refs[0]}}
        log(f"{name}: BLEU {score['score']:.2f}, exact sentences {exact:.1%}")
    return {"steps": step, "train_seconds": round(train_s, 1), "final_train_loss": float(np.mean(losses[-100:])),
            "params": model.num_parameters(), "val_sentences": eval_n, "decoding": results}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--data", default=None)
    ap.add_argument("--budget", type=float, default=None, help="training seconds (default 240; --quick 15)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from tinyllm import backend
    backend.tune_for_training()  # a program: the allocator and thread-pool setup training runs get
    budget = args.budget or (15 if args.quick else 240)
    eval_n = 128 if args.quick else 1000
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data
        if data_dir is None:
            from tinyllm.translation import prepare_synthetic
            data_dir = os.path.join(tmp, "translation")
            prepare_synthetic(data_dir, 20000, seed=0)
        res = run(data_dir, budget, eval_n)
    res["date"] = datetime.date.today().isoformat()
    lines = [f"# Encoder-decoder on the synthetic translation task, {res['date']}{' (quick)' if args.quick else ''}", "",
             f"{res['params']:,} parameters, {res['steps']:,} steps of batch 32 in {res['train_seconds']} s "
             f"(final train loss {res['final_train_loss']:.4f}); scored on {res['val_sentences']} held-out sentences.", "",
             "| decoding | BLEU-4 | exact sentences | seconds |", "|---|---:|---:|---:|"]
    for name, r in res["decoding"].items():
        lines.append(f"| {name} | {r['bleu']:.2f} | {r['exact_match']:.1%} | {r['seconds']} |")
    ex = res["decoding"]["beam 4"]["example"]
    lines += ["", f"Example (beam 4): `{ex['hyp']}`; reference: `{ex['ref']}`"]
    md = "\n".join(lines)
    stem = args.out or os.path.join(HERE, "results", "translate" + ("_quick" if args.quick else ""))
    with open(stem + ".md", "w") as f:
        f.write(md + "\n")
    with open(stem + ".json", "w") as f:
        json.dump(res, f, indent=2)
    print(md)


if __name__ == "__main__":
    main()
