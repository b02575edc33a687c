"""``tinyllm serve`` under load: throughput (completion tokens/s) and p50/p99 request latency at 1, 4 and
16 concurrent clients, batched (``--max-concurrent 16``) vs served one at a time (``--max-concurrent 1``:
the same requests queue and run one after another).

Each server is ``python -m tinyllm serve`` in its own process on 127.0.0.1 (so client and server do not
share a GIL). Each of C clients sends ``--requests`` requests back to back (closed loop; sampling at
temperature 0.8, its own seed, ``--max-tokens`` new tokens, prompts of 4 to 20 characters). Latency is
the wall time of one whole non-streamed request as the client sees it, queueing included.

    python benchmarks/serve_bench.py                          # a random-weight run of the recipe's shape
    python benchmarks/serve_bench.py --run out/shakespeare --json benchmarks/results/serve_bench.json
"""
import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 50


def make_run(tmp):
    """A run directory with the training recipe's model shape (4 layers, 4 heads, width 128, block 64)
    after one training step: the speed does not depend on how well it is trained."""
    sys.path.insert(0, ROOT)
    from tinyllm import data, train
    from tinyllm.train_config import TrainConfig
    d, run = os.path.join(tmp, "data"), os.path.join(tmp, "run")
    data.prepare_text(TEXT, d, "char")
    train.train(d, run, TrainConfig.from_flat(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=4,
                                              max_iters=1, eval_interval=1, eval_iters=1, progress=False),
                log=lambda *a: None)
    return run


def start_server(run, max_concurrent, max_tokens, log):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "tinyllm", "serve", "--run", run, "--port", "0",
                             "--max-concurrent", str(max_concurrent), "--max-tokens-limit", str(max(max_tokens, 16))],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        log.seek(0)
        text = log.read()
        if "http://" in text:
            return proc, "http://" + text.split("http://", 1)[1].split("/", 1)[0]
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited:\n{text}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the server did not start")


async def load(url, clients, requests, max_tokens):
    import httpx
    prompts = ["First", "All:\nSpeak", "Before we proceed", "You are all resolved", "hear me"]
    latencies, tokens = [], 0

    async def client(c, http):
        nonlocal tokens
        for r in range(requests):
            body = {"prompt": prompts[(c + r) % len(prompts)], "max_tokens": max_tokens, "temperature": 0.8,
                    "seed": 1000 * c + r}
            t0 = time.perf_counter()
            response = await http.post(url + "/v1/completions", json=body)
            latencies.append(time.perf_counter() - t0)
            response.raise_for_status()
            tokens += response.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        # warm-up: the first long and the first batched requests compile numba kernels (prefill, window)
        warm = {"prompt": "First", "max_tokens": max_tokens}
        await asyncio.gather(*(http.post(url + "/v1/completions", json=warm) for _ in range(min(clients, 4))))
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        wall = time.perf_counter() - t0
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    return {"clients": clients, "requests": len(latencies), "tokens": tokens, "seconds": wall,
            "tokens_per_s": tokens / wall, "p50_s": q[49], "p99_s": q[98]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default=None, help="run directory (default: a random-weight recipe-shaped run)")
    parser.add_argument("--clients", default="1,4,16", help="concurrency levels")
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or make_run(tmp)
        for mode, max_concurrent in (("batched", 16), ("serial", 1)):
            with open(os.path.join(tmp, f"{mode}.log"), "w+") as log:
                proc, url = start_server(run, max_concurrent, args.max_tokens, log)
                try:
                    for clients in levels:
                        row = asyncio.run(load(url, clients, args.requests, args.max_tokens))
                        row["mode"] = mode
                        rows.append(row)
                        print(f"{mode:8s} {clients:3d} clients: {row['tokens_per_s']:8.1f} tok/s  "
                              f"p50 {row['p50_s']:.3f}s  p99 {row['p99_s']:.3f}s", flush=True)
                finally:
                    proc.terminate()
                    proc.wait(30)
    by = {(r["mode"], r["clients"]): r for r in rows}
    lines = ["| clients | batched tok/s | serial tok/s | speed-up | batched p50 / p99 (s) | serial p50 / p99 (s) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for c in levels:
        b, s = by[("batched", c)], by[("serial", c)]
        lines.append(f"| {c} | {b['tokens_per_s']:.0f} | {s['tokens_per_s']:.0f} | "
                     f"{b['tokens_per_s'] / s['tokens_per_s']:.2f}x | {b['p50_s']:.2f} / {b['p99_s']:.2f} | "
                     f"{s['p50_s']:.2f} / {s['p99_s']:.2f} |")
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "max_tokens": args.max_tokens, "requests_per_client": args.requests,
                       "machine": platform.platform(), "cpus": os.cpu_count()}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
