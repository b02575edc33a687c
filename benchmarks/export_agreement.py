"""How closely each export of a trained run agrees with tinyllm, measured by the library that runs it.

    python -m tinyllm train                              # once: the recipe run in runs/shakespeare
    python benchmarks/export_agreement.py                # ~20 s a run; --run RUN (repeatable) for others

Exports the run with ``tinyllm.export.export_run`` (hf; gguf in f32, f16 and q8_0; onnx) and, for each,
reports the largest |logit difference| against tinyllm on every position of one full block of
validation text (and that difference relative to the largest |logit|), the share of positions whose
argmax agrees, and the share of identical tokens in a greedy continuation that fills the block (beam
search too for transformers). llama.cpp runs with an f32 KV cache, so the figure measures the file, not
the cache. Skips a format whose library is missing. Writes benchmarks/results/export_agreement.{md,json}.
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "2")

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPT = 8  # tokens of validation text the greedy continuations start from


def _compare(theirs, ours):
    diff = float(np.abs(theirs - ours).max())
    return {"max_abs": diff, "max_rel": diff / float(np.abs(ours).max()),
            "argmax_agree": float((theirs.argmax(-1) == ours.argmax(-1)).mean())}


def _same(a, b):
    return float(np.mean(np.asarray(a) == np.asarray(b)))


def check_hf(model, window, want, out):
    import torch
    import transformers
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        theirs = hf(torch.tensor(window[None])).logits.numpy()[0]
        n = len(window) - PROMPT
        prompt = torch.tensor(window[None, :PROMPT])
        greedy = hf.generate(prompt, max_new_tokens=n, do_sample=False, pad_token_id=0)[0, PROMPT:].numpy()
        beam = hf.generate(prompt, max_new_tokens=n, do_sample=False, num_beams=4, pad_token_id=0)[0, PROMPT:]
    r = _compare(theirs, want["logits"])
    r.update(greedy_same=_same(greedy, want["greedy"]), beam_same=_same(beam.numpy(), want["beam"]))
    return r


def check_gguf(model, window, want, out):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=os.path.join(out, "model.gguf"), n_ctx=len(window), n_threads=2,
                          logits_all=True, type_k=0, type_v=0, verbose=False)
    llm.eval([int(i) for i in window])
    theirs = np.array(llm.scores[:len(window)])
    llm.reset()
    greedy = []
    for t in llm.generate([int(i) for i in window[:PROMPT]], temp=0.0, repeat_penalty=1.0):
        greedy.append(int(t))
        if len(greedy) == len(window) - PROMPT:
            break
    r = _compare(theirs, want["logits"])
    r.update(greedy_same=_same(greedy, want["greedy"]))
    return r


def check_onnx(model, window, want, out):
    import onnxruntime as ort
    sess = ort.InferenceSession(os.path.join(out, "model.onnx"), providers=["CPUExecutionProvider"])
    c = model.config
    empty = {i.name: np.zeros((1, c.n_head, 0, c.n_embd // c.n_head), np.float32)
             for i in sess.get_inputs() if i.name.startswith("past_")}

    def run(ids, start, past):
        pos = np.arange(start, start + ids.shape[1], dtype=np.int64)[None]
        logits, *present = sess.run(None, {"input_ids": ids, "position_ids": pos, **past})
        names = [o.name.replace("present", "past") for o in sess.get_outputs()[1:]]
        return logits, dict(zip(names, present))

    theirs = run(window[None].astype(np.int64), 0, empty)[0][0]
    ids, past, greedy = window[None, :PROMPT].astype(np.int64), empty, []
    n = 0
    while len(greedy) < len(window) - PROMPT:  # one token per step through the cache
        logits, past = run(ids, n, past)
        n += ids.shape[1]
        ids = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
        greedy.append(int(ids[0, 0]))
    r = _compare(theirs, want["logits"])
    r.update(greedy_same=_same(greedy, want["greedy"]))
    return r


CASES = [("hf", "f32", ("transformers", "torch", "tokenizers"), check_hf),
         ("gguf", "f32", ("gguf", "llama_cpp"), check_gguf),
         ("gguf", "f16", ("gguf", "llama_cpp"), check_gguf),
         ("gguf", "q8_0", ("gguf", "llama_cpp"), check_gguf),
         ("onnx", "f32", ("onnx", "onnxruntime", "tokenizers"), check_onnx)]


def measure(run):
    """The rows of one run: every format whose library is installed, and the skipped ones."""
    from tinyllm import data
    from tinyllm.export import export_run
    from tinyllm.runs import load_run
    model, tok, run_config = load_run(run)
    T = model.config.block_size
    window = np.asarray(data.load_split(run_config["data_dir"], "val")[:T], dtype=np.int64)
    prompt = window[None, :PROMPT]
    want = {"logits": model(window[None])[0].data[0].astype(np.float64),
            "greedy": model.generate(prompt, max_new_tokens=T - PROMPT)[0, PROMPT:],
            "beam": model.generate(prompt, max_new_tokens=T - PROMPT, num_beams=4)[0, PROMPT:]}
    name = os.path.basename(os.path.abspath(run))
    rows, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, dtype, needs, check in CASES:
            missing = [m for m in needs if importlib.util.find_spec(m) is None]
            if missing:
                skipped.append(f"{fmt} {dtype}: needs {', '.join(missing)}")
                continue
            out = os.path.join(tmp, f"{fmt}-{dtype}")
            notes = export_run(run, fmt, out, dtype=dtype)
            rows.append(dict(run=name, activation=model.config.activation, format=fmt, dtype=dtype, notes=notes,
                             **check(model, window, want, out)))
            r = rows[-1]
            print(f"{name} {fmt:5s} {dtype:5s} max |diff| {r['max_abs']:.2e} (rel {r['max_rel']:.1e}), "
                  f"argmax {r['argmax_agree']:.1%}, greedy {r['greedy_same']:.1%}", flush=True)
    return model.config, rows, skipped


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", help="a trained GPT run directory (repeat for several; "
                    "default runs/shakespeare)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "export_agreement"), help="report path, no suffix")
    args = ap.parse_args()
    lines = [f"# Export agreement, {datetime.date.today()}", "",
             f"Per run, one block of validation tokens; greedy (and, for hf, 4-beam) continuations of its first "
             f"{PROMPT} tokens to the block's end. Relative: max |diff| / max |logit|.", "",
             "| run (GELU) | format | dtype | max abs logit diff | relative | argmax agreement | greedy tokens same "
             "| beam tokens same |", "|---|---|---|---:|---:|---:|---:|---:|"]
    configs, all_rows, all_notes = {}, [], set()
    for run in args.run or ["runs/shakespeare"]:
        config, rows, skipped = measure(run)
        configs[os.path.basename(os.path.abspath(run))] = config.to_dict()
        for r in rows:
            beam = f"{r['beam_same']:.0%}" if "beam_same" in r else ""
            lines.append(f"| {r['run']} ({r['activation']}) | {r['format']} | {r['dtype']} | {r['max_abs']:.1e} | "
                         f"{r['max_rel']:.1e} | {r['argmax_agree']:.1%} | {r['greedy_same']:.0%} | {beam} |")
            all_notes.update(r["notes"])
        all_rows += rows
        lines += [f"- skipped {s}" for s in skipped]
    lines += ["", "Configs: " + "; ".join(f"`{k}`: {v}" for k, v in configs.items()), "",
              "Notes the exports printed:", ""] + sorted(f"- {n}" for n in all_notes)
    with open(args.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(args.out + ".json", "w") as f:
        json.dump({"configs": configs, "rows": all_rows}, f, indent=1)
    print(f"wrote {args.out}.md")


if __name__ == "__main__":
    main()
