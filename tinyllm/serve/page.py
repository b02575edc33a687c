"""The playground: one static page at ``GET /`` and the attention maps it draws, ``POST /v1/attention``.

    add_playground(app, model, tokenizer)     # app: a FastAPI app that already serves /v1/completions

The page (``playground.html``: inline CSS and JS, no build step, nothing fetched from outside) streams
``/v1/completions`` with ``logprobs: 10``, shows each token's top-10 next-token probabilities on a
click, and draws the prompt's attention maps from ``/v1/attention``, a tinyllm extension:

    request   {"prompt": str, "layer": int | null, "head": int | null}     (null or absent: all of them)
    response  {"object": "attention", "model": str, "tokens": [str, ...], "truncated": int,
               "n_layer": int, "n_head": int, "layers": [int, ...], "heads": [int, ...],
               "attentions": [[[[float, ...], ...], ...], ...]}

``attentions[l][h][i]`` is the row of query i of the l-th listed layer and h-th listed head: its
probabilities over keys 0..i (the causal triangle only; above the diagonal they are exactly zero), rounded
to 4 decimals. ``tokens`` is the text of each token the model saw: the last block_size tokens of the
prompt, ``truncated`` the number dropped from its front. Errors have OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``.
"""
import json
import pathlib
import threading

import numpy as np

from ..autograd import no_grad

PAGE = pathlib.Path(__file__).with_name("playground.html")
MAX_BODY_BYTES = 1 << 20
# A (layer, head, T, T) answer grows as L * H * T^2 / 2: GPT-2 small over 1024 tokens would be 75M numbers.
# Past this many the request must name a layer or a head (the page asks for one map at a time).
MAX_VALUES = 2_000_000
# No outside resources, no frames, no form posts: the page only talks to the server that served it. Model
# output goes into the DOM as text, never as markup; this is the second line of defence.
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
       "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class AttentionError(ValueError):
    """A request the attention endpoint refuses: an OpenAI-style error with this status, param and code."""

    def __init__(self, message, param=None, code=None, status=400, type="invalid_request_error"):
        super().__init__(message)
        self.param, self.code, self.status, self.type = param, code, status, type

    def body(self):
        return {"error": {"message": str(self), "type": self.type, "param": self.param, "code": self.code}}


def add_playground(app, model, tokenizer, *, model_name="tinyllm", run_in_worker=None):
    """Add ``GET /`` (the playground page) and ``POST /v1/attention`` to ``app``.

    ``run_in_worker(fn)`` awaits ``fn()`` off the event loop; by default a thread of Starlette's pool,
    one forward at a time (autograd's grad mode is process-wide, so forwards are not run side by side).
    A server that already owns a model worker passes its own.
    """
    try:
        from fastapi import Request
        from fastapi.responses import HTMLResponse, JSONResponse
        from starlette.concurrency import run_in_threadpool
    except ImportError as e:  # pragma: no cover - the serve extra is missing
        raise ImportError(f"the playground needs FastAPI: pip install 'tinyllm[serve]' ({e})") from None

    html = PAGE.read_text(encoding="utf-8")
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
    lock = threading.Lock()

    async def default_worker(fn):
        def locked():
            with lock:
                return fn()
        return await run_in_threadpool(locked)

    run = run_in_worker or default_worker

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground():
        return HTMLResponse(html, headers=headers)

    @app.post("/v1/attention")
    async def attention(request: Request):
        try:
            raw = await request.body()
            if len(raw) > MAX_BODY_BYTES:
                raise AttentionError(f"the request body is {len(raw)} bytes, more than the {MAX_BODY_BYTES} allowed",
                                     code="request_too_large", status=413)
            prompt, layer, head = parse_request(raw, model)
            answer = await run(lambda: attention_maps(model, tokenizer, prompt, layer, head))
        except AttentionError as e:
            return JSONResponse(e.body(), status_code=e.status)
        answer["model"] = model_name
        return JSONResponse(answer)

    return app


def parse_request(raw, model):
    """(prompt, layer, head) of an attention request body, checked; AttentionError says what is wrong."""
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise AttentionError(f"could not parse the request body as JSON: {e}") from None
    if not isinstance(body, dict):
        raise AttentionError(f"the request body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - {"prompt", "layer", "head", "model"})
    if unknown:
        raise AttentionError(f"unknown field {unknown[0]!r} (expected prompt, layer, head)", param=unknown[0])
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise AttentionError(f"'prompt' must be a string, got {type(prompt).__name__}", param="prompt")
    if not prompt:
        raise AttentionError("'prompt' must not be empty", param="prompt")
    config = getattr(model, "config", None)
    if not all(hasattr(config, a) for a in ("n_layer", "n_head", "block_size")):
        raise AttentionError(f"attention maps need a GPT model; this server runs a {type(model).__name__}",
                             code="attention_unavailable")
    picked = []
    for name, n in (("layer", config.n_layer), ("head", config.n_head)):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n):
            raise AttentionError(f"'{name}' must be an integer in 0..{n - 1} or null, got {value!r}", param=name)
        picked.append(value)
    return prompt, picked[0], picked[1]


def attention_maps(model, tokenizer, prompt, layer=None, head=None):
    """The attention answer (without "model") for ``prompt``: see the module docstring."""
    try:
        ids = tokenizer.encode(prompt)
    except ValueError as e:  # a character outside the vocabulary
        raise AttentionError(str(e), param="prompt", code="invalid_prompt") from None
    if not ids:
        raise AttentionError("the prompt encodes to no tokens", param="prompt")
    config = model.config
    truncated = max(0, len(ids) - config.block_size)
    ids = ids[truncated:]  # the model sees at most block_size positions: the end of the prompt, as generation does
    layers = list(range(config.n_layer)) if layer is None else [layer]
    heads = list(range(config.n_head)) if head is None else [head]
    T = len(ids)
    if len(layers) * len(heads) * T * (T + 1) // 2 > MAX_VALUES:
        raise AttentionError(f"{len(layers)} layers x {len(heads)} heads of a {T}-token prompt is more than "
                             f"{MAX_VALUES} numbers: ask for one layer or one head", param="layer",
                             code="attention_too_large")
    with no_grad():
        _, _, attentions = model(np.array([ids]), output_attentions=True)
    maps = np.stack([attentions[l].numpy()[0][heads] for l in layers]).astype(np.float64)  # (L', H', T, T)
    maps = np.round(maps, 4)
    rows = [[[m[i, :i + 1].tolist() for i in range(T)] for m in per_head] for per_head in maps]
    return {"object": "attention", "tokens": [tokenizer.decode([i]) for i in ids], "truncated": truncated,
            "n_layer": config.n_layer, "n_head": config.n_head, "layers": layers, "heads": heads,
            "attentions": rows}
