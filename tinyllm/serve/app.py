"""The HTTP side: a FastAPI app speaking OpenAI's completions API over the decode engine.

    app = create_app(model, tokenizer, "my-run")       # then uvicorn.run(app), or `tinyllm serve`

Routes: POST /v1/completions (streamed as server-sent events with ``stream: true``), GET /v1/models,
GET /health. Every error, the framework's own included (validation, malformed JSON, unknown routes,
oversized bodies), is OpenAI's ``{"error": {"message", "type", "param", "code"}}``.

The event loop never runs the model: requests become engine ``Sequence``s, the engine's thread hands
their tokens back through ``loop.call_soon_threadsafe`` into one asyncio queue per request, and the
engine never waits for a client, so a slow reader only grows its own queue.
"""
import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from .engine import Engine, Sequence
from .page import add_playground
from .protocol import (MAX_CHOICES, APIError, ChoiceText, CompletionRequest, check, merge_logprobs, prompts_of,
                       stop_list, validation_message)



def choice_seed(seed, j):
    """Choice j's sampling seed: choice 0 uses the request's seed itself (so n=1 draws what
    ``GPT.generate(seed=seed)`` draws), choice j > 0 the pair (seed, j), a stream no single int gives."""
    if seed is None:
        return None  # fresh OS entropy
    return seed if j == 0 else [seed, j]


def create_app(model, tokenizer, run_name, *, max_concurrent=16, max_tokens_limit=1024, max_request_bytes=1 << 20):
    """A FastAPI app serving ``model`` (a GPT) as ``run_name``. ``max_concurrent`` sequences are decoded
    together, more wait in the queue; ``max_tokens`` above ``max_tokens_limit`` and bodies above
    ``max_request_bytes`` are refused (400, 413)."""
    if not hasattr(model, "h") or not hasattr(model, "new_caches"):
        raise ValueError(f"serve: the batching engine runs GPT models, not {type(model).__name__}")
    engine = Engine(model, max_batch=max_concurrent)
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app):
        engine.start()
        try:
            yield
        finally:
            engine.stop()

    app = FastAPI(title="tinyllm", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.add_middleware(_BodyLimit, limit=max_request_bytes)

    def error_response(e):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(APIError)
    async def _api_error(request, e):
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e):
        message, param = validation_message(e.errors()[0] if e.errors() else {})
        return error_response(APIError(400, message, param=param))

    @app.exception_handler(HTTPException)
    async def _http(request, e):
        if e.status_code == 404:
            message, code = f"Invalid URL ({request.method} {request.url.path})", "unknown_url"
        elif e.status_code == 405:
            message, code = f"Method not allowed ({request.method} {request.url.path})", "method_not_allowed"
        else:
            message, code = str(e.detail), None
        return error_response(APIError(e.status_code, message, code=code))

    @app.exception_handler(Exception)
    async def _fault(request, e):
        return error_response(APIError(500, f"internal error: {type(e).__name__}: {e}", type="server_error"))

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": run_name, **engine.stats()}

    def model_card():
        return {"id": run_name, "object": "model", "created": created, "owned_by": "tinyllm",
                "block_size": model.config.block_size, "vocab_size": tokenizer.vocab_size,
                "max_tokens_limit": max_tokens_limit}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def one_model(name: str):
        if name != run_name:
            raise APIError(404, f"The model '{name}' does not exist (this server serves '{run_name}')",
                           param="model", code="model_not_found")
        return model_card()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        if body.model is not None and body.model != run_name:
            raise APIError(404, f"The model '{body.model}' does not exist (this server serves '{run_name}')",
                           param="model", code="model_not_found")
        check(body, vocab_size=tokenizer.vocab_size, max_tokens_limit=max_tokens_limit)
        prompts = prompts_of(body, tokenizer)
        n = body.n or 1
        if len(prompts) * n > MAX_CHOICES:
            raise APIError(400, f"{len(prompts)} prompts x n={n} makes {len(prompts) * n} choices; at most "
                                f"{MAX_CHOICES} per request", param="n")
        job = _Job(asyncio.get_running_loop(), tokenizer, body, prompts, n)
        engine.submit(job.sequences)
        head = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": run_name}
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return _Stream(job.sse(head, request, include_usage), lambda: engine.cancel(job.sequences))
        try:
            await job.wait(request)
        finally:
            engine.cancel(job.sequences)  # a no-op once they are done; frees them if the client left
        if job.error is not None:
            raise job.error
        choices = [{"text": c.text, "index": i, "logprobs": c.logprobs, "finish_reason": c.reason}
                   for i, c in enumerate(job.choices)]
        return {**head, "choices": choices, "usage": job.usage()}

    add_playground(app, model, tokenizer, model_name=run_name)  # GET / and POST /v1/attention

    return app


class _Choice:
    """One choice's text tracker, its engine sequence, and its result once it ends."""

    def __init__(self, tracker, seq):
        self.tracker, self.seq = tracker, seq
        self.text, self.logprobs, self.reason, self.parts = "", None, None, []


class _Job:
    """One request: its choices (prompt-major, OpenAI's index order) and the queue of their events."""

    def __init__(self, loop, tokenizer, body, prompts, n):
        self.loop, self.queue = loop, asyncio.Queue()
        self.prompt_tokens = sum(len(ids) for _, ids in prompts)
        self.error = None
        stops = stop_list(body.stop)
        temperature = 1.0 if body.temperature is None else body.temperature
        top_p = 1.0 if body.top_p is None else body.top_p
        self.choices = []
        for text, ids in prompts:
            for j in range(n):
                index = len(self.choices)
                tracker = ChoiceText(tokenizer, stops, len(text), body.logprobs)
                seq = Sequence(ids, body.max_tokens or 16, temperature=temperature, top_p=top_p,
                               seed=choice_seed(body.seed, j), top_logprobs=body.logprobs,
                               on_token=self._on_token(index, tracker), on_end=self._on_end(index, tracker))
                self.choices.append(_Choice(tracker, seq))
        self.sequences = [c.seq for c in self.choices]
        self.open = len(self.choices)

    # the engine's thread calls these two (and alone touches the trackers); the loop gets the pieces
    def _on_token(self, index, tracker):
        def on_token(token, info):
            stopped = tracker.add(token, info)
            if not stopped:
                piece, logprobs = tracker.take()
                if piece:
                    self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, piece, logprobs, None, None))
            return stopped
        return on_token

    def _on_end(self, index, tracker):
        def on_end(reason, error):
            piece, logprobs = tracker.take(final=True)
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (index, piece, logprobs, reason, error))
        return on_end

    async def events(self, request):
        """(choice index, text piece, logprobs, finish reason or None) as they come, until every choice ends."""
        while self.open:
            try:
                index, piece, logprobs, reason, error = await asyncio.wait_for(self.queue.get(), timeout=1.0)
            except asyncio.TimeoutError:  # queued or slow: make sure someone is still listening
                if await request.is_disconnected():
                    return
                continue
            if reason is None:
                yield index, piece, logprobs, None
                continue
            self.open -= 1
            if reason == "error":
                self.error = APIError(500, f"the model failed: {type(error).__name__}: {error}", type="server_error")
            elif reason == "cancelled":
                self.error = APIError(503, "the server is shutting down", type="server_error")
            reason = reason if reason in ("stop", "length") else None
            self.choices[index].reason = reason
            yield index, piece, logprobs, reason

    async def wait(self, request):
        async for index, piece, logprobs, reason in self.events(request):
            c = self.choices[index]
            c.text += piece
            c.parts.append(logprobs)
        for c in self.choices:
            c.logprobs = merge_logprobs(c.parts) if c.tracker.top is not None else None
            if c.logprobs is None and c.tracker.top is not None:
                c.logprobs = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}

    def usage(self):
        completion = sum(len(c.seq.tokens) for c in self.choices)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}

    async def sse(self, head, request, include_usage):
        """OpenAI's stream: one ``data: {chunk}`` per piece of text, the finish reason in each choice's
        last chunk, then (stream_options.include_usage) a usage chunk, then ``data: [DONE]``."""
        def event(obj):
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
        async for index, piece, logprobs, reason in self.events(request):
            if self.error is not None:
                yield event(self.error.body())
                return
            choice = {"text": piece, "index": index, "logprobs": logprobs, "finish_reason": reason}
            yield event({**head, "choices": [choice]})
        if self.open:  # the client left
            return
        if include_usage:
            yield event({**head, "choices": [], "usage": self.usage()})
        yield "data: [DONE]\n\n"


class _Stream(StreamingResponse):
    """A server-sent-event response that, however it ends (done, client gone, server shutting down),
    cancels its sequences so their slots are freed at the engine's next step."""

    def __init__(self, chunks, on_close):
        super().__init__(chunks, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.on_close()


class _BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before anything parses it (the
    declared Content-Length is checked first, then the bytes that actually arrive)."""

    def __init__(self, app, limit):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._too_large(scope, receive, send)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # later calls: disconnect detection
        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        e = APIError(413, f"the request body is larger than this server's limit of {self.limit:,} bytes",
                     code="request_too_large")
        await JSONResponse(e.body(), status_code=413, headers={"Connection": "close"})(scope, receive, send)
