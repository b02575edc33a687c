"""Command-line entry point: ``python -m tinyllm <command>`` (or the installed ``tinyllm``).

Argument parsing only; each command calls into the library:

    prepare shakespeare|text   ->  tinyllm.data
    train                      ->  tinyllm.train
    sample / eval / plot       ->  tinyllm.generate, tinyllm.metrics, tinyllm.plot
    quantize                   ->  tinyllm.runs.quantize_run (tinyllm.nn.quantized)
    search                     ->  tinyllm.search
    merge                      ->  tinyllm.runs.merge_run (tinyllm.nn.lora)
    demo                       ->  tinyllm.demo
"""
import argparse
import dataclasses
import sys


def _demo(args):
    from . import demo
    demo.run(iters=args.iters, seed=args.seed)
    return 0


def _prepare(args):
    from . import data
    if args.source in ("translation", "parallel"):
        from . import translation
        if args.source == "translation":
            meta = translation.prepare_synthetic(args.out, args.pairs, args.seed)
        else:
            if not (args.file and args.target):
                raise SystemExit("prepare parallel: give the source file and --target TARGET_FILE")
            meta = translation.prepare_pair(args.file, args.target, args.out)
        print(f"wrote {args.out}: {meta['train_pairs']:,} train / {meta['val_pairs']:,} val sentence pairs "
              f"({meta['source']})")
        return 0
    if args.source == "shakespeare":
        meta = data.prepare_shakespeare(args.out, args.tokenizer, args.vocab_size)
    else:
        if not args.file:
            raise SystemExit("prepare text: give the text file to prepare, e.g. `prepare text corpus.txt --out data/mine`")
        with open(args.file, encoding="utf-8") as f:
            meta = data.prepare_text(f.read(), args.out, args.tokenizer, args.vocab_size, source=args.file,
                                     tokenizer_from=args.tokenizer_from)
    print(f"wrote {args.out}: {meta['characters']:,} characters, vocabulary {meta['vocab_size']}, "
          f"{meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens")
    return 0


def _train(args):
    from .train import TrainingDiverged, train
    from .train_config import TrainConfig, flat_names
    names = flat_names()
    cfg = TrainConfig.from_flat(**{k: v for k, v in vars(args).items() if k in names and v is not None})
    try:
        result = train(args.data, args.out, cfg, resume=args.resume)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result:
        print(f"done: iter {result['iter']}, train loss {result['train_loss']:.4f}, val loss {result['val_loss']:.4f}")
    return 0


def _sample(args):
    import numpy as np
    from .runs import load_run
    model, tok, _ = load_run(args.run, args.checkpoint, device=args.device)
    prompt = tok.encode(args.prompt) if args.prompt else [0]
    from .models import GPT
    window = dict(crop_context=True) if isinstance(model, GPT) and args.num_beams == 1 else {}  # nanoGPT's sliding window
    out = model.generate(np.array([prompt]), max_new_tokens=args.max_new_tokens, do_sample=args.num_beams == 1
                         and not args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                         num_beams=args.num_beams, seed=args.seed, **window)
    start = 0 if args.prompt else 1
    print(tok.decode([int(i) for i in out[0][start:]]))
    return 0


def _eval(args):
    from . import data
    from .metrics import evaluate_lm
    from .runs import load_run
    model, _, run_config = load_run(args.run, args.checkpoint)
    data_dir = args.data or run_config["data_dir"]
    tokens = data.load_split(data_dir, args.split)
    r = evaluate_lm(model, tokens, run_config["train"]["block_size"], max_batches=args.max_batches)
    print(f"{args.split} loss {r['loss']:.4f} | perplexity {r['perplexity']:.3f} | "
          f"next-token accuracy {r['accuracy']:.4f} | {r['tokens']:,} tokens")
    return 0


def _quantize(args):
    from .runs import quantize_run
    before, after = quantize_run(args.run, args.out, args.checkpoint)
    print(f"wrote {args.out}: model file {before / 2**20:.2f} MiB -> {after / 2**20:.2f} MiB (int8 weights)")
    return 0


def _search(args):
    import json
    import os
    from .search import format_leaderboard, plot_leaderboard, run_search
    with open(args.space) as f:
        space = json.load(f)
    rows = run_search(args.data, args.out, space, args.strategy, args.trials, args.budget_iters, args.seed)
    print(format_leaderboard(rows))
    try:
        print(f"wrote {plot_leaderboard(rows, os.path.join(args.out, 'leaderboard.png'))}")
    except RuntimeError as e:  # no matplotlib: the table is still there
        print(f"(no plot: {e})")
    return 0


def _merge(args):
    from .runs import merge_run
    print(f"wrote {merge_run(args.run, args.out, args.checkpoint)} (LoRA adapters merged into the weights)")
    return 0


def _plot(args):
    from .plot import plot_run
    path = plot_run(args.run, args.out)
    print(f"wrote {path}")
    return 0


def _add_flag(parser, name, annotation, help):
    """``--field-name`` for a dataclass field; unset, it is None, so the config's default applies."""
    flag = "--" + name.replace("_", "-")
    if annotation in (bool, "bool"):
        parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help)
    else:
        kind = {"int": int, "float": float, "str": str}.get(annotation if isinstance(annotation, str) else annotation.__name__)
        parser.add_argument(flag, dest=name, type=kind, default=None, help=help)


def _add_train_flags(parser):
    """One flag per TrainConfig field, then one per field of the registered models' configs (a flag the
    chosen model does not have is ignored)."""
    from .models.registry import get_model, model_names
    from .train_config import TrainConfig
    parser.add_argument("--model", "--model-type", dest="model_type", choices=model_names(), default=None,
                        help=f"(default: {TrainConfig.model_type})")
    seen = {"model_type", "model", "vocab_size"}  # the data sets vocab_size
    for f in dataclasses.fields(TrainConfig):
        if f.name not in seen:
            _add_flag(parser, f.name, f.type, f"(default: {f.default})")
            seen.add(f.name)
    entries = [get_model(name) for name in model_names()]
    for entry in entries:
        for f in dataclasses.fields(entry.config_class):
            if f.name in seen:
                continue
            seen.add(f.name)
            defaults = ", ".join(f"{e.name}: {getattr(e.default_config(), e.aliases.get(f.name, f.name))}"
                                 for e in entries if f.name in e.field_names() or f.name in e.aliases)
            _add_flag(parser, f.name, f.type, f"(default: {defaults})")


def build_parser():
    parser = argparse.ArgumentParser(prog="tinyllm", description="tinyllm: a small, exact LLM library in NumPy")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="download or read a corpus, tokenize it and split it 90/10")
    p.add_argument("source", choices=["shakespeare", "text", "translation", "parallel"])
    p.add_argument("file", nargs="?", help="the text file (`prepare text`) or the source-side file (`prepare parallel`)")
    p.add_argument("--target", default=None, help="prepare parallel: the target-side file, aligned line by line")
    p.add_argument("--pairs", type=int, default=20000, help="prepare translation: sentence pairs to generate")
    p.add_argument("--seed", type=int, default=0, help="prepare translation: the languages' and sentences' seed")
    p.add_argument("--out", default=None, help="output directory (default: data/shakespeare or data/<file stem>)")
    p.add_argument("--tokenizer", choices=["char", "bpe"], default="char")
    p.add_argument("--vocab-size", type=int, default=None, help="BPE vocabulary size (default 512)")
    p.add_argument("--tokenizer-from", default=None, help="prepare text: reuse DIR/tokenizer.json (a data or run "
                   "directory), so a model trained there can be fine-tuned on this text")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("train", help="train a model on a prepared data directory (defaults: nanoGPT's CPU recipe)")
    p.add_argument("--data", default="data/shakespeare")
    p.add_argument("--out", default="runs/shakespeare")
    p.add_argument("--resume", action="store_true", help="continue from RUN/last, bit-identically")
    _add_train_flags(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("sample", help="generate text from a trained run")
    p.add_argument("--run", default="runs/shakespeare")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--prompt", default="\n")
    p.add_argument("--max-new-tokens", type=int, default=500)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--greedy", action="store_true")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="cpu", help="cpu or cuda (needs the gpu extra)")
    p.set_defaults(func=_sample)

    p = sub.add_parser("eval", help="validation loss, perplexity and next-token accuracy of a run")
    p.add_argument("--run", default="runs/shakespeare")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--data", default=None, help="data directory (default: the one the run trained on)")
    p.add_argument("--split", choices=["train", "val"], default="val")
    p.add_argument("--max-batches", type=int, default=None)
    p.set_defaults(func=_eval)

    p = sub.add_parser("quantize", help="write an int8 copy of a run (per-channel weights) for eval and sample")
    p.add_argument("--run", default="runs/shakespeare")
    p.add_argument("--out", required=True, help="the new run directory")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.set_defaults(func=_quantize)

    p = sub.add_parser("merge", help="fold a LoRA run's adapters into the weights: a plain run")
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.set_defaults(func=_merge)

    p = sub.add_parser("search", help="grid or random hyper-parameter search over train's config fields")
    p.add_argument("--data", default="data/shakespeare")
    p.add_argument("--space", required=True, help="JSON file: field -> list of candidates or {uniform|log_uniform|int|choice: ...}")
    p.add_argument("--strategy", choices=["grid", "random"], default="random")
    p.add_argument("--trials", type=int, default=10, help="random draws (grid: at most this many, 0 = all)")
    p.add_argument("--budget-iters", type=int, default=200, help="training iterations per trial")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/search")
    p.set_defaults(func=_search)

    p = sub.add_parser("plot", help="write a loss-curve PNG of a run (needs the plot extra: matplotlib)")
    p.add_argument("--run", default="runs/shakespeare")
    p.add_argument("--out", default=None, help="PNG path (default: RUN/loss.png)")
    p.set_defaults(func=_plot)

    p = sub.add_parser("demo", help="train a small character model on a built-in text and sample from it")
    p.add_argument("--iters", type=int, default=1500)
    p.add_argument("--seed", type=int, default=1337)
    p.set_defaults(func=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) == "prepare" and args.out is None:
        import os
        args.out = {"shakespeare": "data/shakespeare", "translation": "data/translation"}.get(args.source) or \
            os.path.join("data", os.path.splitext(os.path.basename(args.file or "text"))[0])
    from . import backend
    backend.tune_for_training()  # the CLI is a program, not a library: it may tune its own process
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # DataError and friends: a clear one-line message, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
