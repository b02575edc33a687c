"""The playground page and ``/v1/attention``: the endpoint's answers against ``GPT(ids, output_attentions=True)``
and its OpenAI-style errors; then a headless Chromium, driven over the DevTools protocol, loads the page
from a server on a free localhost port, streams a greedy completion (the text in the DOM must equal the
model's own greedy ``generate``), clicks a token (10 probabilities appear), stops a long stream, shows API
errors, fetches nothing from outside the server, and takes a screenshot.

The page talks to the server's own ``/v1/completions`` (``tinyllm.serve.create_app``).
"""
import base64
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("httpx")

import tinyllm as tl  # noqa: E402
from tinyllm.autograd import no_grad  # noqa: E402
from tinyllm.models.gpt import GPT, GPTConfig  # noqa: E402
from tinyllm.serve import page  # noqa: E402
from tinyllm.serve.page import add_playground  # noqa: E402
from tinyllm.text.char import CharTokenizer  # noqa: E402

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


# ------------------------------------------------------------------------ the app under test
def tiny_model():
    tl.manual_seed(0)
    tok = CharTokenizer.from_text(TEXT + "<>/")  # markup characters, to check the page shows them as text
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=48, n_layer=2, n_head=2, n_embd=32))
    model.eval()
    return model, tok


def make_app(model, tok, name="tiny-char"):
    """The server's own app: /v1/completions from the batching engine, and the page with /v1/attention."""
    from tinyllm.serve import create_app
    return create_app(model, tok, name)


@pytest.fixture(scope="module")
def world():
    model, tok = tiny_model()
    return {"model": model, "tok": tok, "app": make_app(model, tok)}


# ------------------------------------------------------------------------ the endpoint, in process
@pytest.fixture(scope="module")
def client(world):
    from fastapi.testclient import TestClient
    with TestClient(world["app"]) as c:
        yield c


def test_page_is_self_contained_and_never_writes_markup(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    assert "<canvas" in html and "AbortController" in html and "logprobs: 10" in html
    # no outside resources (a CDN, a font) and model output only ever as text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "the page must not load outside resources"
    assert not re.search(r"@import|url\(\s*['\"]?https?:", html)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in html


def test_attention_matches_the_model(client, world):
    model, tok = world["model"], world["tok"]
    prompt = "Speak, speak."
    r = client.post("/v1/attention", json={"prompt": prompt})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = tok.encode(prompt)
    T = len(ids)
    assert body["tokens"] == list(prompt) and body["truncated"] == 0 and body["model"] == "tiny-char"
    assert (body["n_layer"], body["n_head"], body["layers"], body["heads"]) == (2, 2, [0, 1], [0, 1])
    with no_grad():
        _, _, atts = model(np.array([ids]), output_attentions=True)
    for l in range(2):
        for h in range(2):
            rows = body["attentions"][l][h]
            assert [len(r) for r in rows] == list(range(1, T + 1))  # the causal triangle only
            want = atts[l].numpy()[0, h]
            for i, row in enumerate(rows):
                np.testing.assert_allclose(row, want[i, :i + 1], atol=6e-5)
                assert abs(sum(row) - 1) < 1e-3
    one = client.post("/v1/attention", json={"prompt": prompt, "layer": 1, "head": 0}).json()
    assert (one["layers"], one["heads"]) == ([1], [0]) and one["attentions"][0][0] == body["attentions"][1][0]


def test_attention_sees_the_last_block_size_tokens(client, world):
    block = world["model"].config.block_size
    prompt = ("hear me speak. " * 10)[:block + 7]
    body = client.post("/v1/attention", json={"prompt": prompt, "layer": 0, "head": 1}).json()
    assert body["truncated"] == 7 and "".join(body["tokens"]) == prompt[7:]
    assert len(body["attentions"][0][0]) == block


@pytest.mark.parametrize("payload, status, param", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    ({"prompt": 3}, 400, "prompt"),
    ({}, 400, "prompt"),
    ({"prompt": ""}, 400, "prompt"),
    ({"prompt": "Speak \u20ac"}, 400, "prompt"),  # a character outside the vocabulary
    ({"prompt": "Speak", "layer": 2}, 400, "layer"),
    ({"prompt": "Speak", "head": -1}, 400, "head"),
    ({"prompt": "Speak", "head": True}, 400, "head"),
    ({"prompt": "Speak", "heads": 1}, 400, "heads"),
])
def test_attention_errors_have_openai_shape(client, payload, status, param):
    kw = {"content": payload, "headers": {"content-type": "application/json"}} if isinstance(payload, bytes) \
        else {"json": payload}
    r = client.post("/v1/attention", **kw)
    assert r.status_code == status
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["param"] == param
    assert client.post("/v1/attention", json={"prompt": "All"}).status_code == 200  # still serving


def test_attention_refuses_huge_answers_and_non_gpt_models(client, monkeypatch):
    monkeypatch.setattr(page, "MAX_VALUES", 200)  # one map of 17 tokens is 153 numbers
    r = client.post("/v1/attention", json={"prompt": "Before we proceed"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "attention_too_large"
    assert client.post("/v1/attention", json={"prompt": "Before we proceed", "layer": 0, "head": 0}).status_code == 200

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    class NoAttention:  # an LSTM-like model: no config.n_head
        config = None
    app = add_playground(FastAPI(), NoAttention(), CharTokenizer.from_text(TEXT))
    with TestClient(app) as c:
        r = c.post("/v1/attention", json={"prompt": "All"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "attention_unavailable"
        assert c.get("/").status_code == 200


# ------------------------------------------------------------------------ the page, in Chromium
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def server(world):
    """uvicorn serving the app on a free 127.0.0.1 port (its socket bound here, so no port race)."""
    import uvicorn
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(world["app"], log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(15)
    sock.close()


class DevTools:
    """The few Chrome DevTools Protocol calls the test needs, over one page's websocket."""

    def __init__(self, url):
        import websocket
        self.ws = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self.next_id, self.events = 0, []

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def js(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, expression, timeout=20):
        deadline = time.monotonic() + timeout
        while not self.js(expression):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}; page state "
                                     f"{self.js('document.body.dataset.state')}, status "
                                     f"{self.js('document.getElementById(`status`).textContent')!r}, error "
                                     f"{self.js('document.getElementById(`error`).textContent')!r}")
            time.sleep(0.05)

    def click(self, selector):
        """A real mouse click at the middle of the element's first box."""
        box = self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getClientRects()[0];"
                      " return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def navigate(self, url):
        self.call("Page.navigate", url=url)
        self.wait("document.readyState === 'complete' && document.getElementById('model-name').textContent !== '…'")

    def close(self):
        self.ws.close()


def launch_chromium(tmp_dir, width=1280, height=900):
    """Headless Chromium with DevTools on a free port; every host but 127.0.0.1 fails to resolve."""
    proc = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", "--mute-audio",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
         f"--user-data-dir={tmp_dir}", f"--window-size={width},{height}", "--remote-debugging-port=0",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    for line in proc.stderr:  # "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
        m = re.search(r"ws://127\.0\.0\.1:(\d+)/", line)
        if m or time.monotonic() > deadline:
            break
    if not m:
        proc.kill()
        raise RuntimeError("chromium did not report its DevTools port")
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining so it never blocks
    port = m.group(1)
    deadline = time.monotonic() + 20
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        if pages or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return proc, pages[0]["webSocketDebuggerUrl"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("no chromium binary (apt-get install chromium)")
    pytest.importorskip("websocket", reason="the DevTools client needs websocket-client")
    proc, url = launch_chromium(str(tmp_path_factory.mktemp("chromium-profile")))
    tab = DevTools(url)
    try:
        tab.call("Page.enable")
        tab.call("Network.enable")
        tab.call("Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False)
        yield tab
    finally:
        tab.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


GENERATED = "Array.from(document.querySelectorAll('#output .tok'), s => s.textContent).join('')"


def test_page_streams_clicks_and_draws(browser, server, world, tmp_path):
    model, tok = world["model"], world["tok"]
    prompt, n = "First Citizen:\n", 24
    browser.navigate(f"{server}/?prompt={urllib.request.quote(prompt)}&temperature=0&max_tokens={n}&autorun=1")
    browser.wait("document.body.dataset.state === 'done'")
    assert browser.js("document.getElementById('model-name').textContent") == "tiny-char"

    # the tokens in the DOM are the model's own greedy continuation, one span per token
    want = tok.decode(model.generate(np.array([tok.encode(prompt)]), max_new_tokens=n, do_sample=False)[0, -n:])
    assert browser.js(GENERATED) == want
    assert browser.js("document.querySelectorAll('#output .tok').length") == n
    assert browser.js("document.querySelector('#output .prompt').textContent") == prompt
    assert browser.js("document.getElementById('status').textContent") == f"done: {n} tokens (length)"

    # clicking a token shows 10 probabilities, best first, the greedy pick first and marked
    browser.click("#output .tok[data-i='3']")
    browser.wait("document.querySelectorAll('#prob-list li').length === 10")
    pcts = browser.js("Array.from(document.querySelectorAll('#prob-list .pct'), e => parseFloat(e.textContent))")
    assert pcts == sorted(pcts, reverse=True) and 0 < sum(pcts) <= 100.5
    assert browser.js("document.querySelector('#prob-list li').classList.contains('chosen')")
    assert browser.js("document.querySelector('#output .tok.sel').dataset.i") == "3"
    browser.call("Input.dispatchKeyEvent", type="rawKeyDown", key="ArrowRight", code="ArrowRight",
                 windowsVirtualKeyCode=39)  # the arrow keys walk the tokens
    assert browser.js("document.querySelector('#output .tok.sel').dataset.i") == "4"

    # the attention map of the prompt, and another head on request
    browser.wait("document.body.dataset.attention === 'ready'")
    assert browser.js("document.getElementById('attn-canvas').width") > 100
    assert browser.js("document.getElementById('layer').options.length") == 2
    browser.js("(() => { const s = document.getElementById('head'); s.value = '1';"
               " s.dispatchEvent(new Event('change')); })()")
    browser.wait("document.getElementById('attn-canvas').getAttribute('aria-label').includes('head 1')")

    png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
    shot = tmp_path / "playground.png"
    shot.write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    print(f"screenshot: {shot}")

    # nothing was fetched from anywhere but this server
    urls = {e["params"]["request"]["url"] for e in browser.events if e["method"] == "Network.requestWillBeSent"}
    assert urls and all(u.startswith(server) for u in urls), sorted(urls)


def test_stop_aborts_the_stream(browser, server):
    browser.navigate(f"{server}/?prompt=All%3A%0A&temperature=0.9&seed=1&max_tokens=1000")
    browser.click("#generate")
    browser.wait("document.querySelectorAll('#output .tok').length >= 2")
    browser.click("#stop")
    browser.wait("document.body.dataset.state === 'stopped'")
    count = browser.js("document.querySelectorAll('#output .tok').length")
    assert count < 1000
    time.sleep(0.3)
    assert browser.js("document.querySelectorAll('#output .tok').length") == count  # nothing after the stop
    assert not browser.js("document.getElementById('generate').disabled")


def test_api_errors_show_in_the_page(browser, server):
    browser.navigate(f"{server}/?prompt=Speak&max_tokens=5000&autorun=1")
    browser.wait("document.body.dataset.state === 'error'")
    assert "max_tokens must be between 1 and 1024" in browser.js("document.getElementById('error').textContent")

    # a character outside the vocabulary: the completion and the attention map both say so, as text
    browser.js("document.getElementById('prompt').value = '<i>Speak</i> \u20ac'")
    browser.js("document.getElementById('max_tokens').value = '5'")
    browser.click("#generate")
    browser.wait("document.body.dataset.state === 'error' && document.body.dataset.attention === 'error'")
    message = browser.js("document.getElementById('error').textContent")
    assert "U+20AC" in message
    assert "U+20AC" in browser.js("document.getElementById('attn-note').textContent")
    assert browser.js("document.querySelector('#output i')") is None  # the prompt was shown as text
    assert browser.js("document.querySelector('#output .prompt').textContent") == "<i>Speak</i> \u20ac"
