"""``tinyllm serve``: the OpenAI completions API checked with the official ``openai`` client against a
server started by a fixture (``python -m tinyllm serve`` on a free localhost port, a 30-iteration char
run), compared with tinyllm's own ``GPT.generate`` and forward pass; errors in OpenAI's shape; the
batching engine against ``decode_step`` alone; a client leaving mid-stream; 16 clients at once; SIGTERM
during a stream and a restart on the same port."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from tinyllm import data, runs, train  # noqa: E402
from tinyllm.autograd import no_grad  # noqa: E402
from tinyllm.models import GPT  # noqa: E402
from tinyllm.models.gpt import GPTConfig  # noqa: E402
from tinyllm.serve.engine import Engine, Sequence, batched_decode_step, wait_idle  # noqa: E402
from tinyllm.train_config import TrainConfig  # noqa: E402

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 20
TINY = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=8, eval_interval=10, eval_iters=1,
            log_interval=10, max_iters=30, progress=False)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Server:
    """``python -m tinyllm serve`` in a subprocess; its URL is read from the line it prints."""

    def __init__(self, run, tmp, *args, port=0):
        self.out = open(os.path.join(tmp, f"serve-{time.monotonic_ns()}.log"), "w+")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "tinyllm", "serve", "--run", run, "--port", str(port),
                                      *args], stdout=self.out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.out.seek(0)
            text = self.out.read()
            if "serving" in text and "http://" in text:
                self.url = text.split("http://", 1)[1].split("/", 1)[0]
                self.url = "http://" + self.url
                self.port = int(self.url.rsplit(":", 1)[1])
                break
            assert self.proc.poll() is None, f"the server exited early:\n{text}"
            time.sleep(0.05)
        else:
            raise AssertionError(f"the server did not start:\n{text}")
        while True:  # the socket is bound before the line is printed; wait for the app itself
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and self.proc.poll() is None, "no /health"
            time.sleep(0.05)

    def log(self):
        self.out.seek(0)
        return self.out.read()

    def health(self):
        return httpx.get(self.url + "/health", timeout=5).json()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    d, run = str(tmp / "data"), str(tmp / "run")
    data.prepare_text(TEXT, d, "char")
    train.train(d, run, TrainConfig.from_flat(**TINY), log=lambda *a: None)
    model, tok, _ = runs.load_run(run)
    server = Server(run, str(tmp), "--max-request-bytes", "100000", "--max-tokens-limit", "1024")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=60)
    yield dict(tmp=str(tmp), run=run, model=model, tok=tok, server=server, client=client, name="run")
    server.stop()


def _generate(world, prompt, max_tokens, **kw):
    """tinyllm's own continuation of ``prompt`` (the sliding window past block_size, as sample does)."""
    ids = world["tok"].encode(prompt)
    out = world["model"].generate(np.array([ids]), max_new_tokens=max_tokens, crop_context=True, **kw)
    return world["tok"].decode(out[0][len(ids):])


def _complete(world, **kw):
    return world["client"].completions.create(model=world["name"], **kw)


# ------------------------------------------------------------------------------------ the engine
@pytest.mark.parametrize("pos_encoding", ["learned", "sinusoidal"])
def test_batched_step_gives_decode_steps_logits(pos_encoding):
    model = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=16, pos_encoding=pos_encoding))
    model.eval()
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 30, size=n) for n in (1, 5, 9, 15)]
    with no_grad():
        batched_caches, alone = [], []
        for p in prompts:
            c = model.new_caches()
            model.decode_step(p[None], c)
            batched_caches.append(c)
            c = model.new_caches()
            model.decode_step(p[None], c)
            alone.append(model.decode_step(np.array([[7]]), c)[0][0])
        batched = batched_decode_step(model, [7] * len(prompts), batched_caches)
    np.testing.assert_allclose(batched, np.stack(alone), rtol=1e-5, atol=1e-6)
    assert [len(c[0]) for c in batched_caches] == [n + 1 for n in (1, 5, 9, 15)]


def test_engine_queues_past_max_batch_and_matches_generate():
    model = GPT(GPTConfig(vocab_size=30, block_size=16, n_layer=2, n_head=2, n_embd=16))
    prompts = [np.arange(n) for n in (1, 4, 7, 2, 3)]
    ends = {}
    seqs = [Sequence(p, 24, temperature=0.9, top_p=0.8, seed=i, on_end=lambda r, e, i=i: ends.__setitem__(i, r))
            for i, p in enumerate(prompts)]
    engine = Engine(model, max_batch=2).start()
    try:
        engine.submit(seqs)
        assert wait_idle(engine)
    finally:
        engine.stop()
    assert ends == {i: "length" for i in range(5)}
    assert engine.max_batch_seen == 2  # batched, and never past the limit: the rest waited in the queue
    for i, (p, seq) in enumerate(zip(prompts, seqs)):  # 24 tokens: past block_size 16, the window slides
        ref = model.generate(p[None], max_new_tokens=24, do_sample=True, temperature=0.9, top_p=0.8, seed=i,
                             crop_context=True)
        assert seq.tokens == ref[0][len(p):].tolist()


# ------------------------------------------------------------------------------------ the API
def test_models_and_health(world):
    models = world["client"].models.list()
    assert [m.id for m in models.data] == [world["name"]]
    h = world["server"].health()
    assert h["status"] == "ok" and h["model"] == "run" and h["max_concurrent"] == 16


def test_greedy_completion_is_generate(world):
    r = _complete(world, prompt="First Citizen", max_tokens=40, temperature=0)  # 13 + 40 > block_size 32
    assert r.object == "text_completion" and r.model == "run" and r.id.startswith("cmpl-")
    (c,) = r.choices
    assert c.text == _generate(world, "First Citizen", 40)
    assert c.finish_reason == "length" and c.index == 0 and c.logprobs is None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (13, 40, 53)


def test_sampling_with_a_seed_is_generates_and_streams_the_same(world):
    kw = dict(prompt="All:\n", max_tokens=30, temperature=0.8, top_p=0.9, seed=11)
    text = _complete(world, **kw).choices[0].text
    assert text == _generate(world, "All:\n", 30, do_sample=True, temperature=0.8, top_p=0.9, seed=11)
    chunks = list(_complete(world, stream=True, **kw))
    assert all(ch.object == "text_completion" for ch in chunks)
    assert "".join(ch.choices[0].text for ch in chunks) == text
    # one chunk per token (a char model), then one with no text and the finish reason
    assert [len(ch.choices[0].text) for ch in chunks] == [1] * 30 + [0]
    assert [ch.choices[0].finish_reason for ch in chunks] == [None] * 30 + ["length"]
    assert _complete(world, **{**kw, "seed": 12}).choices[0].text != text


def test_n_and_prompt_lists(world):
    r = _complete(world, prompt=["First", "All"], max_tokens=12, n=3, temperature=1.0, seed=5)
    assert [c.index for c in r.choices] == list(range(6))
    assert r.usage.prompt_tokens == 5 + 3  # each prompt counted once
    assert r.usage.completion_tokens == 6 * 12 == sum(len(c.text) for c in r.choices)
    # choice 0 of a prompt is what n=1 gives with the seed; the others draw from their own streams
    assert r.choices[0].text == _complete(world, prompt="First", max_tokens=12, seed=5).choices[0].text
    assert r.choices[3].text == _complete(world, prompt="All", max_tokens=12, seed=5).choices[0].text
    assert len({c.text for c in r.choices[:3]}) == 3
    streamed = {}
    for ch in _complete(world, prompt=["First", "All"], max_tokens=12, n=3, seed=5, stream=True):
        for c in ch.choices:
            streamed[c.index] = streamed.get(c.index, "") + c.text
    assert [streamed[i] for i in range(6)] == [c.text for c in r.choices]


def test_stop_strings(world):
    full = _generate(world, "First", 40)
    stop = full[10:12]
    cut = full[:full.index(stop)]
    r = _complete(world, prompt="First", max_tokens=40, temperature=0, stop=[stop, "never-there"])
    assert r.choices[0].text == cut and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == len(cut) + len(stop)  # generated up to the end of the stop string
    chunks = list(_complete(world, prompt="First", max_tokens=40, temperature=0, stop=stop, stream=True))
    streamed = "".join(ch.choices[0].text for ch in chunks)
    assert streamed == cut and stop not in streamed  # the held-back tail that began the stop string never went out
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_logprobs_are_the_models_log_softmax(world):
    r = _complete(world, prompt="Speak", max_tokens=8, temperature=0, logprobs=5)
    lp = r.choices[0].logprobs
    tok, model = world["tok"], world["model"]
    text = r.choices[0].text
    assert lp.tokens == list(text) and lp.text_offset == list(range(5, 5 + len(text)))
    ids = tok.encode("Speak" + text)
    logits, _ = model(np.array([ids]))
    logits = logits.numpy()[0].astype(np.float64)
    for i, (token, token_lp, top) in enumerate(zip(lp.tokens, lp.token_logprobs, lp.top_logprobs)):
        row = logits[4 + i]
        ref = row - row.max() - np.log(np.exp(row - row.max()).sum())  # (V,) log-softmax
        best = np.argsort(-ref)[:5]
        assert list(top) == [tok.decode([j]) for j in best]  # best first
        np.testing.assert_allclose(list(top.values()), ref[best], atol=1e-4)
        np.testing.assert_allclose(token_lp, ref[tok.encode(token)[0]], atol=1e-4)
        assert token == tok.decode([best[0]])  # greedy takes the top token
    chunks = list(_complete(world, prompt="Speak", max_tokens=8, temperature=0, logprobs=5, stream=True))
    assert [t for ch in chunks for t in ch.choices[0].logprobs.tokens] == lp.tokens


@pytest.mark.parametrize("kw, status, param, words", [
    (dict(temperature=-0.5), 400, "temperature", "between 0 and 2"),
    (dict(max_tokens=5000), 400, "max_tokens", "1024"),
    (dict(prompt="Fir$t"), 400, "prompt", "'$'"),
    (dict(max_tokens="ten"), 400, "max_tokens", "integer"),
    (dict(top_p=1.5), 400, "top_p", "between 0 and 1"),
    (dict(n=0), 400, "n", "at least 1"),
    (dict(logprobs=50), 400, "logprobs", "between 0 and 20"),
    (dict(stop=["a", "b", "c", "d", "e"]), 400, "stop", "up to 4"),
    (dict(extra_body={"colour": "blue"}), 400, "colour", "Unrecognized request argument"),
    (dict(model="gpt-4"), 404, "model", "does not exist"),
])
def test_bad_requests_get_openai_errors(world, kw, status, param, words):
    args = {"model": world["name"], "prompt": "First", "max_tokens": 4, **kw}
    with pytest.raises(openai.APIStatusError) as info:
        world["client"].completions.create(**args)
    e = info.value
    assert e.status_code == status
    assert isinstance(e, openai.BadRequestError if status == 400 else openai.NotFoundError)
    assert e.body["param"] == param and e.body["type"] == "invalid_request_error"
    assert words in e.body["message"]


def test_raw_errors_have_openai_shape(world):
    url = world["server"].url
    cases = [
        (httpx.post(url + "/v1/completions", content=b'{"prompt": "First", ', headers={"Content-Type":
                                                                                       "application/json"}), 400),
        (httpx.post(url + "/v1/completions", json=[1, 2]), 400),
        (httpx.post(url + "/v1/completions", json={"max_tokens": 3}), 400),  # no prompt
        (httpx.get(url + "/v2/nothing"), 404),
        (httpx.delete(url + "/health"), 405),
        (httpx.post(url + "/v1/completions", json={"prompt": "a" * 200_000}), 413),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "parse the JSON" in cases[0][0].json()["error"]["message"]
    assert cases[2][0].json()["error"]["param"] == "prompt"
    assert _complete(world, prompt="First", max_tokens=3).choices[0].text  # still serving


def test_a_client_leaving_mid_stream_frees_its_slot(world):
    server = world["server"]
    body = dict(model="run", prompt="First", max_tokens=1000, stream=True, temperature=0.5)
    with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as response:
        lines = response.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert got[0].startswith("data: {")
        assert server.health()["active"] == 1
    deadline = time.monotonic() + 10
    while (h := server.health())["active"] or h["queued"]:
        assert time.monotonic() < deadline, h
        time.sleep(0.05)
    assert h["tokens_generated"] < 1000 * 2  # it did not run to its max_tokens


def test_sixteen_clients_at_once_get_their_solo_text(world):
    client, server = world["client"], world["server"]
    kw = [dict(prompt=["First", "All:", "Speak", "You are"][i % 4], max_tokens=48, temperature=0.9, seed=100 + i)
          for i in range(16)]
    solo = [_complete(world, **k).choices[0].text for k in kw]
    results = [None] * 16
    start = threading.Barrier(16)

    def ask(i):
        start.wait()
        results[i] = client.completions.create(model="run", **kw[i]).choices[0].text
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == solo
    assert server.health()["max_batch_seen"] > 1  # they were decoded together, not one by one


def test_sigterm_during_a_stream_drains_exits_0_and_restarts(world):
    server = Server(world["run"], world["tmp"])
    try:
        port = server.port
        body = dict(model="run", prompt="First", max_tokens=400, stream=True, temperature=0)
        with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: {")
            server.proc.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line]
        # the stream was drained: it ran to its end and closed properly
        assert rest[-1] == "data: [DONE]"
        assert json.loads(rest[-2][len("data: "):])["choices"][0]["finish_reason"] == "length"
        assert server.proc.wait(15) == 0, server.log()
        assert "stopped (SIGTERM)" in server.log()
    finally:
        server.stop()
    again = Server(world["run"], world["tmp"], port=port)
    try:
        assert again.port == port and again.health()["status"] == "ok"
    finally:
        again.stop()
    assert again.proc.returncode == 0


def test_sigterm_past_the_drain_timeout_closes_the_stream(world):
    server = Server(world["run"], world["tmp"], "--drain-timeout", "0.5", "--max-tokens-limit", "100000")
    try:
        body = dict(model="run", prompt="First", max_tokens=100000, stream=True, temperature=0)
        with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=30) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: {")
            server.proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            with pytest.raises(httpx.HTTPError):  # closed before its end: no [DONE]
                for line in lines:
                    assert line != "data: [DONE]"
        assert server.proc.wait(15) == 0, server.log()
        assert time.monotonic() - t0 < 10
    finally:
        server.stop()


def test_cli_errors_are_one_line(world, capsys):
    from tinyllm.cli import main
    assert main(["serve", "--run", world["run"], "--max-concurrent", "0"]) == 2
    assert "--max-concurrent must be a positive integer" in capsys.readouterr().err
    assert main(["serve", "--run", world["run"], "--port", str(world["server"].port)]) == 2
    assert "cannot listen" in capsys.readouterr().err
