"""The benchmark runner: tinyllm with its numba kernels, tinyllm with its NumPy reference kernels and
torch (eager, CPU), timed in one process, taking turns; writes one dated report (markdown, JSON, PNG).

    python -m benchmarks --quick                 # about a minute: benchmarks/results/<date>-quick.*
    python -m benchmarks                         # the full run (under ~10 minutes): <date>.{md,json,png}
    python -m benchmarks --only matmul ops       # some sections: <date>-only-matmul-ops.*
    python benchmarks/run.py --out /tmp/bench    # the same, as a script, into another folder

Sections: matmul, ops, attention, train_step, generate, cold_start, scale, busy, llamacpp
(benchmarks/sections/, one module each; see benchmarks/README.md). The timing is benchmarks/harness.py,
the report benchmarks/report.py.
Every timing is a median over reps; every ratio is tinyllm's time / torch's time, so below 1 tinyllm is
faster.
"""
import argparse
import datetime
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # `python benchmarks/run.py` puts benchmarks/ on the path, not the repo root
    sys.path.insert(0, ROOT)

# the harness first: it pins the thread counts before NumPy / numba / torch are imported
from benchmarks.harness import Context, import_torch, loadavg, machine_info, rounds_for  # noqa: E402
from benchmarks.report import table, write_results  # noqa: E402
from benchmarks.sections import SECTION_FUNCS, SECTIONS  # noqa: E402


def run_sections(names, quick=False, reps=None, torch=None, log=print):
    """Run the named sections; returns {name: {'rows', 'notes', 'seconds', 'loadavg_start'[, 'error']}}. A section that
    raises is recorded with its error and the others still run."""
    ctx = Context(torch, reps, rounds_for(quick))
    out = {}
    for name in names:
        log(f"\n== {name} ==", flush=True)
        t, load = time.perf_counter(), loadavg()
        try:
            rows, notes = SECTION_FUNCS[name](ctx, quick)
            out[name] = {"rows": rows, "notes": notes}
        except Exception as e:  # report it, keep going: one broken section should not lose the others
            traceback.print_exc()
            out[name] = {"rows": [], "notes": [], "error": f"{type(e).__name__}: {e}".splitlines()[0]}
        out[name].update(seconds=round(time.perf_counter() - t, 1), loadavg_start=load)
        sec = out[name]
        if sec["rows"] and any(not r.get("kind") for r in sec["rows"]):
            log(table(name, sec["rows"]))
        for n in sec["notes"]:
            log(f"- {n}")
        log(f"({sec['seconds']} s)", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer reps, shapes and rounds (about a minute)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                    help=f"run only these sections ({', '.join(SECTIONS)})")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output folder (default benchmarks/results)")
    ap.add_argument("--reps", type=int, help="override every section's rep count (smoke tests)")
    args = ap.parse_args(argv)
    names = [s for s in SECTIONS if s in args.only] if args.only else list(SECTIONS)
    date = datetime.date.today().isoformat()
    stem = date + ("-quick" if args.quick else "")
    if args.only and len(names) < len(SECTIONS):  # keep a partial run from overwriting the day's full report
        stem += "-only-" + "-".join(names)
    torch = import_torch()
    from tinyllm import backend
    tuning = backend.tune_for_training()  # the setup a training run gets (allocator, one pool), as the CLI's
    meta = {"date": date, "quick": args.quick, "sections": names, "loadavg_start": loadavg(), "tinyllm_tuning": tuning,
            "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])}
    t = time.perf_counter()
    sections = run_sections(names, quick=args.quick, reps=args.reps, torch=torch)
    meta.update(wall_s=round(time.perf_counter() - t, 1), loadavg_end=loadavg(), **machine_info(torch))
    paths = write_results(meta, sections, args.out, stem)
    print(f"\nwrote {', '.join(paths.values())} in {meta['wall_s']} s")
    failed = [k for k, s in sections.items() if s.get("error")]
    if failed:
        print(f"failed sections: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
