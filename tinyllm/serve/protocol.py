"""OpenAI's completions protocol: the request body (checked by pydantic), the errors, and the text of
one choice as its tokens come (incremental decoding, stop strings, the legacy ``logprobs`` object)."""
from typing import Optional, Union

from pydantic import BaseModel, ConfigDict


class APIError(Exception):
    """An error the client caused (or a server fault), sent as OpenAI's ``{"error": {...}}``."""

    def __init__(self, status, message, param=None, code=None, type="invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type

    def body(self):
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class CompletionRequest(BaseModel):
    """The body of POST /v1/completions. Strict types (``"10"`` is not a number), and unknown fields
    are refused rather than ignored, so a typo does not silently fall back to a default."""
    model_config = ConfigDict(strict=True, extra="forbid")

    prompt: Union[str, list[str], list[int], list[list[int]]]
    model: Optional[str] = None
    max_tokens: Optional[int] = 16  # OpenAI's default
    temperature: Optional[float] = 1.0
    top_p: Optional[float] = 1.0
    n: Optional[int] = 1
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = None
    stream: Optional[bool] = False
    stream_options: Optional[dict] = None
    logprobs: Optional[int] = None
    # OpenAI fields this server does not implement: accepted at their neutral values only
    echo: Optional[bool] = False
    best_of: Optional[int] = None
    frequency_penalty: Optional[float] = 0.0
    presence_penalty: Optional[float] = 0.0
    logit_bias: Optional[dict] = None
    suffix: Optional[str] = None
    user: Optional[str] = None


MAX_STOP = 4  # OpenAI's limit on stop strings
MAX_LOGPROBS = 20  # OpenAI allows 5 here (20 in chat); the playground shows the top 10
MAX_CHOICES = 128  # prompts x n in one request (OpenAI's n limit); they queue like any sequences


def check(req, *, vocab_size, max_tokens_limit):
    """Values pydantic's types cannot express; raises APIError(400) naming the parameter."""
    def bad(param, message):
        raise APIError(400, message, param=param)
    if req.max_tokens is not None and not 1 <= req.max_tokens <= max_tokens_limit:
        bad("max_tokens", f"max_tokens must be between 1 and {max_tokens_limit} (this server's per-request token "
                          f"limit), got {req.max_tokens}")
    if req.temperature is not None and not 0 <= req.temperature <= 2:
        bad("temperature", f"temperature must be between 0 and 2 (0: greedy), got {req.temperature}")
    if req.top_p is not None and not 0 <= req.top_p <= 1:
        bad("top_p", f"top_p must be between 0 and 1, got {req.top_p}")
    if req.n is not None and req.n < 1:
        bad("n", f"n must be at least 1, got {req.n}")
    if req.logprobs is not None and not 0 <= req.logprobs <= MAX_LOGPROBS:
        bad("logprobs", f"logprobs must be between 0 and {MAX_LOGPROBS}, got {req.logprobs}")
    if req.seed is not None and req.seed < 0:
        bad("seed", f"seed must be a non-negative integer, got {req.seed}")
    stops = stop_list(req.stop)
    if len(stops) > MAX_STOP or any(not s for s in stops):
        bad("stop", f"stop takes up to {MAX_STOP} non-empty strings, got {req.stop!r}")
    if isinstance(req.prompt, list) and not req.prompt:
        bad("prompt", "prompt must not be an empty list")
    for value, neutral, name in ((req.echo, False, "echo"), (req.best_of, 1, "best_of"),
                                 (req.frequency_penalty, 0, "frequency_penalty"),
                                 (req.presence_penalty, 0, "presence_penalty"), (req.logit_bias, {}, "logit_bias"),
                                 (req.suffix, "", "suffix")):
        if value is not None and value != neutral:
            bad(name, f"{name} is not supported by this server (only {neutral!r} or null)")
    if req.stream_options is not None and (not req.stream or set(req.stream_options) - {"include_usage"}):
        bad("stream_options", "stream_options needs stream: true and takes only include_usage")


def stop_list(stop):
    return [] if stop is None else [stop] if isinstance(stop, str) else list(stop)


def prompts_of(req, tokenizer):
    """The request's prompts as (text, token ids) pairs; a character outside the vocabulary is a 400."""
    p = req.prompt
    if isinstance(p, str):
        texts = [p]
    elif all(isinstance(x, str) for x in p):
        texts = list(p)
    else:  # token ids: one prompt, or a list of them
        rows = [p] if all(isinstance(x, int) for x in p) else p
        if not all(isinstance(r, list) for r in rows):
            raise APIError(400, "prompt: a list must hold only strings, only token ids, or only lists of token ids",
                           param="prompt")
        out = []
        for row in rows:
            bad = next((i for i in row if not 0 <= i < tokenizer.vocab_size), None)
            if bad is not None:
                raise APIError(400, f"prompt: token id {bad} is out of range (the vocabulary has "
                                    f"{tokenizer.vocab_size} tokens)", param="prompt")
            out.append((tokenizer.decode(row), list(row)))
        texts = None
    if texts is not None:
        out = []
        for text in texts:
            try:
                out.append((text, list(tokenizer.encode(text))))
            except ValueError as e:  # names the character and its position
                raise APIError(400, f"prompt: {e}", param="prompt") from None
    for _, ids in out:
        if not ids:
            raise APIError(400, "prompt must not be empty (the model needs at least one token to continue)",
                           param="prompt")
    return out


class ChoiceText:
    """The text of one choice as its tokens come.

    Tokens are decoded together (a multi-byte character split over BPE tokens shows once it is whole).
    A stop string ends the choice: the text stops just before it and the stop string is never sent.
    While streaming, a tail that could still be the start of a stop string is held back until the
    next tokens settle it. ``add`` runs on the engine's thread and returns True at a stop string.
    """

    def __init__(self, tokenizer, stops, prompt_chars, top_logprobs):
        self.tok, self.stops, self.prompt_chars, self.top = tokenizer, stops, prompt_chars, top_logprobs
        self.ids, self.infos, self.starts = [], [], []  # per token: logprobs info, start offset in the text
        self.text = ""  # the decoded text so far (cut at the stop string once found)
        self.sent = 0  # characters of text already handed out
        self.tokens_sent = 0
        self.stopped = False

    def add(self, token, info):
        self.starts.append(len(self.text.rstrip("\ufffd")))
        self.ids.append(token)
        self.infos.append(info)
        self.text = self.tok.decode(self.ids)
        if self.stops:
            from_ = max(0, self.sent - max(map(len, self.stops)))
            hits = [i for i in (self.text.find(s, from_) for s in self.stops) if i >= 0]
            if hits:
                self.text, self.stopped = self.text[:min(hits)], True
        return self.stopped

    def take(self, final=False):
        """(new text, logprobs of the tokens in it or None) since the last call; at ``final`` all the rest."""
        if final:
            end = len(self.text)
            n_tokens = sum(1 for s in self.starts if s < end) if self.stopped else len(self.ids)
        else:
            end = len(self.text.rstrip("\ufffd"))
            for s in self.stops:  # hold back a tail that may begin a stop string
                for k in range(min(len(s) - 1, end - self.sent), 0, -1):
                    if self.text[end - k:end] == s[:k]:
                        end -= k
                        break
            n_tokens = sum(1 for s in self.starts if s < end)
            if end <= self.sent:
                return "", None
        piece = self.text[self.sent:end]
        first, self.sent = self.tokens_sent, max(self.sent, end)
        self.tokens_sent = max(first, n_tokens)
        return piece, self._logprobs(first, self.tokens_sent)

    def _logprobs(self, a, b):
        """OpenAI's legacy logprobs object for tokens a..b-1."""
        if self.top is None:
            return None
        decode = self.tok.decode
        return {"tokens": [decode([t]) for t in self.ids[a:b]],
                "token_logprobs": [self.infos[i][0] for i in range(a, b)],
                "top_logprobs": [{decode([j]): lp for j, lp in self.infos[i][1]} for i in range(a, b)],
                "text_offset": [self.prompt_chars + self.starts[i] for i in range(a, b)]}


def merge_logprobs(parts):
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return {key: [x for p in parts for x in p[key]] for key in ("tokens", "token_logprobs", "top_logprobs",
                                                                 "text_offset")}


def validation_message(error):
    """One line from pydantic's first error: where it is and what is wrong."""
    loc = [str(x) for x in error.get("loc", ()) if x != "body"]
    param = ".".join(loc) or None
    kind, msg = error.get("type", ""), error.get("msg", "invalid value")
    if kind == "json_invalid":
        return "We could not parse the JSON body of your request: " + str(error.get("ctx", {}).get("error", msg)) + \
            ". (HINT: send valid JSON with the header Content-Type: application/json.)", None
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    if kind == "missing":
        return f"Missing required parameter: '{param}'.", param
    if kind == "model_attributes_type" or (kind.endswith("_type") and not loc):
        return "The request body must be a JSON object.", None
    got = type(error.get("input")).__name__
    return f"Invalid value for '{param}': {msg} (got {got}).", param
