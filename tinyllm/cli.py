"""Command-line entry point: ``python -m tinyllm <command>`` (or the installed ``tinyllm``).

Argument parsing only; each command calls into the library:

    prepare shakespeare|text   ->  tinyllm.data
    train                      ->  tinyllm.train
    sample / eval / plot       ->  tinyllm.generate, tinyllm.metrics, tinyllm.plot
    attention                  ->  GPT(..., output_attentions=True), tinyllm.plot
    quantize                   ->  tinyllm.runs.quantize_run (tinyllm.nn.quantized)
    search                     ->  tinyllm.search
    merge                      ->  tinyllm.runs.merge_run (tinyllm.nn.lora)
    export                     ->  tinyllm.export (Hugging Face, GGUF, ONNX)
    demo                       ->  tinyllm.demo

Every value is checked before anything on disk is touched, and every error a user can cause is one
line on stderr (``tinyllm train: error: ...``) and a non-zero exit: 2 for a bad value, 1 for a failure
while working, 130/143 when SIGINT/SIGTERM stopped it.
"""
import argparse
import dataclasses
import math
import os
import signal
import sys

DEFAULT_DATA = "data/shakespeare"
DEFAULT_RUN = "runs/shakespeare"
RESUME_FLAGS = ("max_iters", "progress", "device", "log_stats")  # what --resume may change: nothing that alters the run

# One line of --help per training setting (TrainConfig's fields, then the models' config fields).
FIELD_HELP = {
    "block_size": "context length in tokens",
    "batch_size": "sequences per micro-batch (per process, under mpiexec)",
    "grad_accum_steps": "micro-batches whose gradients are averaged into one optimizer step",
    "max_iters": "training iterations (the schedule fits them: see --warmup-iters, --lr-decay-iters)",
    "lr": "peak learning rate (AdamW)",
    "min_lr": "learning rate at the end of the cosine decay",
    "warmup_iters": "linear warm-up iterations (default: min(100, max_iters // 10))",
    "lr_decay_iters": "iteration where the cosine decay reaches --min-lr (default: --max-iters)",
    "decay_lr": "warm up and decay the learning rate (--no-decay-lr: constant --lr)",
    "beta1": "AdamW beta1, in [0, 1)",
    "beta2": "AdamW beta2, in [0, 1)",
    "weight_decay": "AdamW weight decay, on matrices only",
    "grad_clip": "clip the gradient norm to this (0: off)",
    "eval_interval": "evaluate and checkpoint every this many iterations",
    "eval_iters": "batches per split in each evaluation",
    "log_interval": "log the training loss every this many iterations",
    "log_stats": "also log per-layer gradient norms, update/weight ratios, activation mean and std and GELU "
                 "saturation at those iterations (draw them with `plot --stats`)",
    "seed": "seed for initialisation, batches and dropout",
    "dtype": "parameter and activation dtype",
    "device": "where to train (cuda needs the gpu extra)",
    "init_from": "fine-tune: start from this tinyllm run or Hugging Face GPT-2 directory",
    "lora_rank": "> 0: freeze the model and train LoRA adapters of this rank (needs --init-from)",
    "lora_alpha": "LoRA scaling numerator (the update is scaled by alpha / rank)",
    "lora_targets": "comma-separated names of the Linear layers LoRA adapts",
    "progress": "show a progress bar",
    "n_layer": "Transformer blocks",
    "n_head": "attention heads (must divide --n-embd)",
    "n_embd": "embedding width",
    "dropout": "dropout probability, in [0, 1)",
    "bias": "biases in Linear and LayerNorm layers",
    "pos_encoding": "position encoding",
    "tie_weights": "share the token embedding with the output layer",
    "activation": "MLP activation (gelu_tanh is GPT-2's gelu_new)",
    "layer_norm_eps": "LayerNorm epsilon",
    "hidden_size": "hidden units (LSTM, VAE; the feed-forward model's --hidden)",
    "num_layers": "stacked LSTM layers",
    "context": "tokens the feed-forward model sees",
    "hidden": "hidden units of the feed-forward model",
    "latent_size": "VAE latent dimensions",
    "word_dropout": "VAE decoder word dropout, in [0, 1)",
    "kl_anneal_iters": "VAE: iterations over which the KL weight rises to 1",
}


class CommandError(Exception):
    """A bad value the CLI found itself: printed as one line, exit code 2."""


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each flag's default, except where there is none to show (None, or an off switch)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" not in text and "(default" not in text and action.default not in (None, False,
                                                                                          argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``tinyllm train: error: ...``); --help shows the usage."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _flag(name):
    return "--" + {"model_type": "model"}.get(name, name).replace("_", "-")


def _check(condition, flag, allowed, value):
    if not condition:
        raise CommandError(f"{flag} must be {allowed}, got {value!r}")


def _positive_int(flag, value):
    _check(value is None or value >= 1, flag, "a positive integer", value)


# ------------------------------------------------------------------------------------ commands
def _demo(args):
    _positive_int("--iters", args.iters)
    _check(args.seed >= 0, "--seed", "a non-negative integer", args.seed)
    from . import demo
    demo.run(iters=args.iters, seed=args.seed)
    return 0


def _prepare(args):
    from . import data
    _positive_int("--pairs", args.pairs)
    _check(args.seed >= 0, "--seed", "a non-negative integer", args.seed)
    if args.vocab_size is not None:
        _check(args.tokenizer == "bpe", "--vocab-size", "given only with --tokenizer bpe (a character "
               "tokenizer's vocabulary is the text's characters)", args.vocab_size)
        _check(args.vocab_size >= 256, "--vocab-size", "at least 256 (the byte tokens)", args.vocab_size)
    if args.tokenizer_from is not None and not os.path.isfile(os.path.join(args.tokenizer_from, "tokenizer.json")):
        raise CommandError(f"--tokenizer-from: {args.tokenizer_from} has no tokenizer.json to reuse")
    if _already_prepared(args):
        return 0
    if args.source in ("translation", "parallel"):
        from . import translation
        if args.source == "translation":
            meta = translation.prepare_synthetic(args.out, args.pairs, args.seed)
        else:
            if not (args.file and args.target):
                raise CommandError("give the source file and --target TARGET_FILE")
            for path in (args.file, args.target):
                _read_text(path)  # a clear error for a missing, binary or directory path, before any output
            meta = translation.prepare_pair(args.file, args.target, args.out)
        print(f"wrote {args.out}: {meta['train_pairs']:,} train / {meta['val_pairs']:,} val sentence pairs "
              f"({meta['source']})")
        return 0
    log = _progress_line
    if args.source == "shakespeare":
        meta = data.prepare_shakespeare(args.out, args.tokenizer, args.vocab_size, log=log)
    else:
        if not args.file:
            raise CommandError("give the text file to prepare, e.g. `prepare text corpus.txt "
                               "--out data/mine`")
        text = _read_text(args.file)
        if not text:
            raise CommandError(f"prepare text: {args.file} is empty")
        meta = data.prepare_text(text, args.out, args.tokenizer, args.vocab_size, source=args.file,
                                 tokenizer_from=args.tokenizer_from, log=log)
    print(f"wrote {args.out}: {meta['characters']:,} characters, vocabulary {meta['vocab_size']}, "
          f"{meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens")
    return 0


def _already_prepared(args):
    """Refuse to write over prepared data unless --overwrite; re-preparing Shakespeare with the same
    tokenizer is a no-op (the result would be byte-identical), so the set-up command can be re-run."""
    import json
    out = args.out
    if os.path.isfile(out):
        raise CommandError(f"--out: {out} is a file, not a data directory")
    if args.overwrite or not os.path.isdir(out) or not os.listdir(out):
        return False
    meta = {}
    try:
        with open(os.path.join(out, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        pass
    from .data import SHAKESPEARE_SPEC
    same = (args.source == "shakespeare" and meta.get("source") == SHAKESPEARE_SPEC
            and meta.get("tokenizer") == args.tokenizer
            and (args.vocab_size is None or meta.get("vocab_size") == args.vocab_size))
    if same:
        print(f"{out} already holds this data ({SHAKESPEARE_SPEC}, {args.tokenizer} tokens): nothing to do")
        return True
    what = f"data prepared from {meta['source']}" if meta.get("source") else "files"
    raise CommandError(f"--out: {out} already holds {what}; choose another --out, or pass --overwrite to "
                       "replace it")


def _read_text(path):
    if os.path.isdir(path):
        raise CommandError(f"{path} is a directory; give a text file")
    if not os.path.exists(path):
        raise CommandError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise CommandError(f"{path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                           f"give a text file") from None


def _progress_line(message):
    print(message, file=sys.stderr, flush=True)


def _train(args):
    from . import distributed, runs
    from .train import TrainingInterrupted, train
    world = distributed.world()
    if world.size > 1:
        global _quiet
        _quiet = not world.is_root  # every rank ends with the same verdict; rank 0 alone says it
        distributed.set_threads_per_rank(world)  # ranks x threads <= cores on each machine
    # rank 0 alone reads the run directory; the others get its verdict
    cfg, data_dir = world.root_decides(lambda: _train_config(args))
    try:
        result = train(data_dir, args.out, cfg, resume=args.resume, overwrite=args.overwrite)
    except TrainingInterrupted as e:
        code = 128 + e.signum
        if e.iter is None:
            raise _Failure(f"{e}; continue with: {_resume_command(args.out)}", code) from None
        raise _Failure(f"interrupted at iter {e.iter}: saved {os.path.join(args.out, runs.LAST)}; "
                       f"continue with: {_resume_command(args.out)}", code) from None
    if result and not _quiet:
        print(f"done: iter {result['iter']}, train loss {result['train_loss']:.4f}, val loss {result['val_loss']:.4f}")
    return 0


def _train_config(args):
    """(TrainConfig, data directory) of ``train``'s flags: a new run's, or the run to resume with only
    what --resume may change."""
    from . import runs
    from .train_config import TrainConfig, flat_names
    names = flat_names()
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if args.resume:
        if args.overwrite:
            raise CommandError("--resume and --overwrite exclude each other: --resume continues the run, "
                               "--overwrite replaces it")
        saved = runs.saved_config(args.out)
        changed = sorted(k for k, v in given.items() if k not in RESUME_FLAGS and _saved_value(saved, k) != v)
        if changed:  # repeating the run's own values is fine; changing them would be silently ignored
            raise CommandError(f"--resume continues {args.out} with its own settings, so "
                               f"{', '.join(_flag(k) for k in changed)} cannot be changed (it takes only "
                               f"--max-iters, --device and --[no-]progress)")
        cfg = dataclasses.replace(saved, **{k: v for k, v in given.items() if k in RESUME_FLAGS})
        return cfg, args.data or runs.saved_run_config(args.out).get("data_dir") or DEFAULT_DATA
    return TrainConfig.from_flat(**given), args.data or DEFAULT_DATA


def _saved_value(cfg, name):
    """The run's own value of a flat setting (a TrainConfig field or its model's), or a marker none equals."""
    from .models.registry import get_model
    if name in ("model_type", "model"):
        return cfg.model_type
    if name in {f.name for f in dataclasses.fields(cfg)}:
        return getattr(cfg, name)
    field = get_model(cfg.model_type).rename({name: None}).popitem()[0]
    return getattr(cfg.model, field, object())


def _resume_command(out):
    return f"python -m tinyllm train --out {out} --resume"


def _check_sampling(args):
    _positive_int("--max-new-tokens", args.max_new_tokens)
    _positive_int("--num-beams", args.num_beams)
    _check(args.seed >= 0, "--seed", "a non-negative integer", args.seed)
    if not args.greedy and args.num_beams == 1:
        _check(math.isfinite(args.temperature) and args.temperature > 0, "--temperature",
               "a finite number > 0 (for greedy decoding pass --greedy)", args.temperature)
    _check(args.top_k is None or args.top_k >= 0, "--top-k", "a non-negative integer (0: off)", args.top_k)
    _check(args.top_p is None or 0 < args.top_p <= 1, "--top-p", "in (0, 1]", args.top_p)


class _PrintStreamer:
    """Prints generated text as it comes (the ``put``/``end`` shape of HF's streamers). Tokens are decoded
    in pieces; a piece that ends inside a multi-byte character waits for the rest."""

    def __init__(self, tok, skip):
        self.tok, self.skip, self.pending, self.count = tok, skip, [], 0

    def put(self, ids):
        import numpy as np
        for i in np.asarray(ids).reshape(-1):
            if self.skip:
                self.skip -= 1
                continue
            self.pending.append(int(i))
            self.count += 1
        text = self.tok.decode(self.pending)
        if text and not text.endswith("\ufffd"):
            sys.stdout.write(text)
            sys.stdout.flush()
            self.pending = []

    def end(self):
        sys.stdout.write(self.tok.decode(self.pending) + "\n")
        sys.stdout.flush()
        self.pending = []


def _sample(args):
    import numpy as np
    from .models import GPT
    from .runs import load_run
    _check_sampling(args)
    model, tok, _ = load_run(args.run, args.checkpoint, device=args.device)
    prompt = tok.encode(args.prompt) if args.prompt else [0]
    window = dict(crop_context=True) if isinstance(model, GPT) and args.num_beams == 1 else {}  # nanoGPT's sliding window
    start = 0 if args.prompt else 1
    streamer = _PrintStreamer(tok, start) if args.num_beams == 1 else None  # beam search settles at the end
    try:
        out = model.generate(np.array([prompt]), max_new_tokens=args.max_new_tokens, do_sample=args.num_beams == 1
                             and not args.greedy, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                             num_beams=args.num_beams, seed=args.seed, streamer=streamer, **window)
    except KeyboardInterrupt:
        if streamer is None:
            raise
        print(flush=True)
        raise _Failure(f"interrupted after {streamer.count - len(prompt) + start} new tokens (the text above is "
                       f"what was generated)", 128 + signal.SIGINT) from None
    if streamer is None:
        print(tok.decode([int(i) for i in out[0][start:]]))
    return 0


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _serve(args):
    import socket
    try:
        import uvicorn
        from .serve.app import create_app
    except ImportError as e:
        raise CommandError(f"serve needs FastAPI and uvicorn ({e}); pip install 'tinyllm[serve]'") from None
    from .runs import load_run
    _positive_int("--max-concurrent", args.max_concurrent)
    _positive_int("--max-tokens-limit", args.max_tokens_limit)
    _positive_int("--max-request-bytes", args.max_request_bytes)
    _check(0 <= args.port <= 65535, "--port", "in 0..65535 (0: any free port)", args.port)
    _check(args.drain_timeout >= 0, "--drain-timeout", "a non-negative number of seconds", args.drain_timeout)
    model, tok, _ = load_run(args.run, args.checkpoint, device=args.device)
    name = os.path.basename(os.path.normpath(args.run))
    app = create_app(model, tok, name, max_concurrent=args.max_concurrent, max_tokens_limit=args.max_tokens_limit,
                     max_request_bytes=args.max_request_bytes)
    try:  # bind here, not in uvicorn: a port in use is then a one-line error, and --port 0 reports its port
        family = socket.getaddrinfo(args.host, args.port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
    except OSError as e:
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    if args.host not in LOCAL_HOSTS:
        print(f"warning: --host {args.host} serves the model, the playground and /health to every machine that "
              f"can reach this one on port {port}, with no authentication", file=sys.stderr)
    print(f"serving {name} at http://{host}:{port}/ (OpenAI API: http://{host}:{port}/v1; "
          f"Ctrl-C or SIGTERM stops it)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level,
                                           access_log=args.log_level in ("info", "debug"),
                                           timeout_graceful_shutdown=args.drain_timeout))
    # uvicorn re-raises the signal that stopped it once it is done; a handler of ours takes it, so a
    # requested stop (SIGTERM, Ctrl-C) is a clean exit 0 after the graceful shutdown
    stopped = []
    previous = {sig: signal.signal(sig, lambda signum, frame: stopped.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    if not server.started:
        raise _Failure("the server did not start (see the messages above)", 1)
    print(f"stopped ({signal.Signals(stopped[0]).name})" if stopped else "stopped", flush=True)
    return 0


def _eval(args):
    from . import data
    from .metrics import evaluate_lm
    from .runs import load_run
    _positive_int("--max-batches", args.max_batches)
    model, _, run_config = load_run(args.run, args.checkpoint)
    data_dir = args.data or run_config["data_dir"]
    tokens = data.load_split(data_dir, args.split)
    r = evaluate_lm(model, tokens, run_config["train"]["block_size"], max_batches=args.max_batches, progress=True)
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
    from . import data
    from .search import TRIALS_FILE, format_leaderboard, plot_leaderboard, read_trials, run_search
    _check(args.trials >= 0, "--trials", "a non-negative integer (grid: 0 = all)", args.trials)
    _positive_int("--budget-iters", args.budget_iters)
    _check(args.seed >= 0, "--seed", "a non-negative integer", args.seed)
    if os.path.isdir(args.space) or not os.path.exists(args.space):
        raise CommandError(f"--space: {args.space} is not a file")
    try:
        with open(args.space, encoding="utf-8") as f:
            space = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise CommandError(f"--space: {args.space} is not valid JSON ({e})") from None
    data.read_meta(args.data)  # a missing data directory is reported before the search directory is made
    try:
        rows = run_search(args.data, args.out, space, args.strategy, args.trials, args.budget_iters, args.seed)
    except KeyboardInterrupt:
        done = len(read_trials(args.out))
        raise _Failure(f"interrupted: {done} finished trials are kept in {os.path.join(args.out, TRIALS_FILE)}; "
                       f"run the same command again to continue", 128 + signal.SIGINT) from None
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


def _export(args):
    from .export import export_run
    files = {"hf": "config.json, model.safetensors and the tokenizer", "gguf": "model.gguf", "onnx": "model.onnx"}
    try:
        notes = export_run(args.run, args.format, args.out, checkpoint=args.checkpoint, dtype=args.dtype)
    except ImportError as e:  # the export extra is missing: its message names the pip command
        raise RuntimeError(str(e)) from None
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {args.out} ({files[args.format]})")
    return 0


def _plot(args):
    from .plot import plot_run, plot_stats
    path = (plot_stats if args.stats else plot_run)(args.run, args.out)
    print(f"wrote {path}")
    return 0


def _attention(args):
    import numpy as np
    from .models import GPT
    from .plot import plot_attention, token_label
    from .runs import load_run
    if not args.text:
        raise CommandError("--text must not be empty")
    model, tok, run_config = load_run(args.run, args.checkpoint)
    if not isinstance(model, GPT):
        raise CommandError(f"attention maps need a GPT run; {args.run} is a {run_config['train'].get('model_type')!r} run")
    n_layer, n_head, block = model.config.n_layer, model.config.n_head, model.config.block_size
    for flag, value, n, what in (("--layer", args.layer, n_layer, "layers"), ("--head", args.head, n_head, "heads")):
        _check(value is None or 0 <= value < n, flag, f"in 0..{n - 1} (the run has {n} {what})", value)
    try:
        ids = tok.encode(args.text)
    except ValueError as e:  # a character the char tokenizer never saw
        raise CommandError(f"--text: {e}") from None
    if len(ids) > block:  # the model sees at most block_size positions: draw the end, as sample's window does
        print(f"note: the text is {len(ids)} tokens; drawing its last {block} (the run's block size)")
        ids = ids[-block:]
    _, _, attentions = model(np.array([ids]), output_attentions=True)
    maps = [a.numpy()[0] for a in attentions]  # each (n_head, T, T)
    tokens = [token_label(tok.decode([i])) for i in ids]
    out = args.out or os.path.join(args.run, "attention.png")
    title = f"{os.path.basename(os.path.normpath(args.run))}: attention probabilities"
    print(f"wrote {plot_attention(maps, tokens, out, layer=args.layer, head=args.head, title=title)}")
    return 0


# ------------------------------------------------------------------------------------ the parser
def _add_flag(parser, name, annotation, help, choices=None):
    """``--field-name`` for a dataclass field; unset, it is None, so the config's default applies."""
    flag = "--" + name.replace("_", "-")
    if annotation in (bool, "bool"):
        parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help)
    else:
        kind = {"int": int, "float": float, "str": str}.get(annotation if isinstance(annotation, str) else annotation.__name__)
        parser.add_argument(flag, dest=name, type=kind, default=None, help=help, choices=choices,
                            metavar=None if choices else name.upper())


def _add_train_flags(parser):
    """One flag per TrainConfig field, then one per field of the registered models' configs (a flag the
    chosen model does not have is ignored)."""
    from .models.registry import get_model, model_names
    from .train_config import CHOICES, TrainConfig
    parser.add_argument("--model", "--model-type", dest="model_type", choices=model_names(), default=None,
                        help=f"the model to train (default: {TrainConfig.model_type})")
    seen = {"model_type", "model", "vocab_size"}  # the data sets vocab_size
    recipe = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name not in seen:
            default = "" if "(default" in FIELD_HELP.get(f.name, "") else f" (default: {getattr(recipe, f.name)!r})" \
                if f.type in (str, "str") else f" (default: {getattr(recipe, f.name)})"
            _add_flag(parser, f.name, f.type, FIELD_HELP.get(f.name, f.name) + default, CHOICES.get(f.name))
            seen.add(f.name)
    entries = [get_model(name) for name in model_names()]
    for entry in entries:
        for f in dataclasses.fields(entry.config_class):
            if f.name in seen:
                continue
            seen.add(f.name)
            defaults = ", ".join(f"{e.name}: {getattr(e.default_config(), e.aliases.get(f.name, f.name))}"
                                 for e in entries if f.name in e.field_names() or f.name in e.aliases)
            _add_flag(parser, f.name, f.type, f"{FIELD_HELP.get(f.name, f.name)} (default: {defaults})",
                      CHOICES.get(f.name))


def build_parser():
    version = getattr(sys.modules.get(__package__), "__version__", "(unknown version)")
    parser = _Parser(prog="tinyllm", description="tinyllm: a small, exact LLM library in NumPy")
    parser.add_argument("--version", action="version", version=f"tinyllm {version}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="download or read a corpus, tokenize it and split it 90/10")
    p.add_argument("source", choices=["shakespeare", "text", "translation", "parallel"], help="what to prepare")
    p.add_argument("file", nargs="?", help="the text file (`prepare text`) or the source-side file (`prepare parallel`)")
    p.add_argument("--target", default=None, help="prepare parallel: the target-side file, aligned line by line")
    p.add_argument("--pairs", type=int, default=20000, help="prepare translation: sentence pairs to generate")
    p.add_argument("--seed", type=int, default=0, help="prepare translation: the languages' and sentences' seed")
    p.add_argument("--out", default=None, help="output directory (default: data/shakespeare, data/translation "
                   "or data/<file stem>)")
    p.add_argument("--tokenizer", choices=["char", "bpe"], default="char", help="character or byte-level BPE tokens")
    p.add_argument("--vocab-size", type=int, default=None, help="BPE vocabulary size, at least 256 (default: 512)")
    p.add_argument("--tokenizer-from", default=None, help="prepare text: reuse DIR/tokenizer.json (a data or run "
                   "directory), so a model trained there can be fine-tuned on this text")
    p.add_argument("--overwrite", action="store_true", help="write over data already prepared in --out (without "
                   "it, other data there is refused)")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("train", help="train a model on a prepared data directory (defaults: nanoGPT's CPU recipe)")
    p.add_argument("--data", default=None, help=f"prepared data directory (default: {DEFAULT_DATA}; with "
                   f"--resume: the run's own)")
    p.add_argument("--out", default=DEFAULT_RUN, help="run directory to write; an existing run is refused "
                   "unless --resume or --overwrite")
    p.add_argument("--resume", action="store_true", help="continue RUN from RUN/last, bit-identically (only "
                   "--max-iters, --device and --[no-]progress may change)")
    p.add_argument("--overwrite", "--force", action="store_true", help="replace the run in --out: removes its "
                   "checkpoints, metrics, config and tokenizer (and nothing else)")
    _add_train_flags(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("sample", help="generate text from a trained run (printed as it is generated)")
    p.add_argument("--run", default=DEFAULT_RUN, help="run directory")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint to load")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max-new-tokens", type=int, default=500, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature, > 0")
    p.add_argument("--top-k", type=int, default=None, help="sample only from the k most likely tokens (default: off)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: the smallest set of tokens whose "
                   "probability reaches p, in (0, 1] (default: off)")
    p.add_argument("--num-beams", type=int, default=1, help="beam search with this many beams (> 1: printed at the "
                   "end, limited to the model's block size)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token (no sampling)")
    p.add_argument("--seed", type=int, default=1337, help="sampling seed")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run (cuda needs the gpu extra)")
    p.set_defaults(func=_sample)

    p = sub.add_parser("serve", help="serve a run over HTTP: OpenAI's completions API, streaming, and a playground "
                       "page (needs the serve extra)")
    p.add_argument("--run", default=DEFAULT_RUN, help="run directory (a GPT run)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint to load")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only; "
                   "0.0.0.0 exposes the server to the network)")
    p.add_argument("--port", type=int, default=8000, help="port (0: any free port, printed)")
    p.add_argument("--max-concurrent", type=int, default=16, help="sequences decoded together; more queue")
    p.add_argument("--max-tokens-limit", type=int, default=1024, help="the largest max_tokens a request may ask "
                   "(past the block size the model slides its window, as sample does)")
    p.add_argument("--max-request-bytes", type=int, default=1 << 20, help="request bodies larger than this get 413")
    p.add_argument("--drain-timeout", type=float, default=10.0, help="on SIGTERM/Ctrl-C, seconds to let running "
                   "requests finish before their connections are closed")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"], default="warning",
                   help="uvicorn's log level (info: one line per request)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run (cuda needs the gpu extra)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("eval", help="validation loss, perplexity and next-token accuracy of a run")
    p.add_argument("--run", default=DEFAULT_RUN, help="run directory")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint to load")
    p.add_argument("--data", default=None, help="data directory (default: the one the run trained on)")
    p.add_argument("--split", choices=["train", "val"], default="val", help="which split to score")
    p.add_argument("--max-batches", type=int, default=None, help="score at most this many batches of 32 windows "
                   "(default: the whole split)")
    p.set_defaults(func=_eval)

    p = sub.add_parser("quantize", help="write an int8 copy of a run (per-channel weights) for eval and sample")
    p.add_argument("--run", default=DEFAULT_RUN, help="run directory to quantize")
    p.add_argument("--out", required=True, help="the new run directory (must not exist yet)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint to quantize")
    p.set_defaults(func=_quantize)

    p = sub.add_parser("merge", help="fold a LoRA run's adapters into the weights: a plain run")
    p.add_argument("--run", required=True, help="the LoRA run directory")
    p.add_argument("--out", required=True, help="the new run directory (must not exist yet)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint to merge")
    p.set_defaults(func=_merge)

    p = sub.add_parser("export", help="write a run's model for Hugging Face (hf), llama.cpp (gguf) or ONNX Runtime (onnx)")
    p.add_argument("--run", default=DEFAULT_RUN, help="run directory")
    p.add_argument("--format", required=True, choices=["hf", "gguf", "onnx"], help="what to write")
    p.add_argument("--out", required=True, help="the new directory to write (must not exist, or be empty)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint to export")
    p.add_argument("--dtype", choices=["f32", "f16", "q8_0"], default="f32", help="GGUF weight type (hf and onnx: f32)")
    p.set_defaults(func=_export)

    p = sub.add_parser("search", help="grid or random hyper-parameter search over train's config fields")
    p.add_argument("--data", default=DEFAULT_DATA, help="prepared data directory")
    p.add_argument("--space", required=True, help="JSON file: field -> list of candidates or {uniform|log_uniform|int|choice: ...}")
    p.add_argument("--strategy", choices=["grid", "random"], default="random", help="how trials are chosen")
    p.add_argument("--trials", type=int, default=10, help="random draws (grid: at most this many, 0 = all)")
    p.add_argument("--budget-iters", type=int, default=200, help="training iterations per trial")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    p.add_argument("--out", default="runs/search", help="search directory (run again to resume it)")
    p.set_defaults(func=_search)

    p = sub.add_parser("plot", help="write a loss-curve PNG of a run (needs the plot extra: matplotlib)")
    p.add_argument("--run", default=DEFAULT_RUN, help="run directory")
    p.add_argument("--out", default=None, help="PNG path (default: RUN/loss.png, with --stats RUN/stats.png)")
    p.add_argument("--stats", action="store_true", help="draw the per-layer training statistics of a run trained "
                   "with --log-stats instead of the loss")
    p.set_defaults(func=_plot)

    p = sub.add_parser("attention", help="draw a GPT run's attention maps over a text as a PNG (needs the plot extra)")
    p.add_argument("--run", default=DEFAULT_RUN, help="run directory (a GPT run)")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best", help="which checkpoint to load")
    p.add_argument("--text", required=True, help="the text to run through the model (longer than the block size: "
                   "its last block_size tokens)")
    p.add_argument("--layer", type=int, default=None, help="only this layer (0-based; default: every layer)")
    p.add_argument("--head", type=int, default=None, help="only this head (0-based; default: every head)")
    p.add_argument("--out", default=None, help="PNG path (default: RUN/attention.png)")
    p.set_defaults(func=_attention)

    p = sub.add_parser("demo", help="train a small character model on a built-in text and sample from it")
    p.add_argument("--iters", type=int, default=1500, help="training iterations")
    p.add_argument("--seed", type=int, default=1337, help="seed")
    p.set_defaults(func=_demo)
    return parser


# ------------------------------------------------------------------------------------ running
class _Failure(Exception):
    """A command stopped with a message and an exit code of its own."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def main(argv=None):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error argparse already printed
        return e.code
    prog = f"tinyllm {args.command}"
    if args.command == "prepare" and args.out is None:
        args.out = {"shakespeare": "data/shakespeare", "translation": "data/translation"}.get(args.source) or \
            os.path.join("data", os.path.splitext(os.path.basename(args.file or "text"))[0])
    from . import backend
    from .train_config import ConfigError
    backend.tune_for_training()  # the CLI is a program, not a library: it may tune its own process
    try:
        return args.func(args)
    except _Failure as e:  # not an error: the user stopped it, and the message says how to go on
        if not _quiet:
            print(f"{prog}: {e}", file=sys.stderr)
        return e.code
    except ConfigError as e:
        return _fail(prog, f"{_flag(e.field)} {e.problem}", 2)
    except (CommandError, FileNotFoundError, ValueError) as e:
        return _fail(prog, e, 2)
    except MemoryError as e:
        return _fail(prog, f"out of memory ({e or 'MemoryError'}): make the batch, block, model or output smaller", 1)
    except OSError as e:  # permissions, a full disk, a directory where a file was expected, ...
        return _fail(prog, f"{e.strerror or e}: {e.filename}" if e.filename else e, 1)
    except RuntimeError as e:  # DataError and friends: a clear one-line message, not a traceback
        return _fail(prog, e, 1)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


_quiet = False  # an MPI rank other than 0: its verdict is rank 0's, which rank 0 prints


def _fail(prog, message, code):
    if not _quiet:
        print(f"{prog}: error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
