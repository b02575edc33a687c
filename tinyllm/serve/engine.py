"""The decode engine behind the server: one worker thread that decodes every active sequence together.

Each step the worker admits waiting sequences (up to ``max_batch`` at once; the rest queue), prefills
the newcomers one by one, picks each active sequence's next token, drops the finished and cancelled
ones, and runs ONE batched decode step for all that remain. Sequences join and leave between steps.

The KV-cache layout: every sequence keeps its own per-layer ``nn.KVCache`` (its own length, so no
padding and no copying when others join or leave). The batched step stacks the N new tokens into
(N, 1, C) and runs the embeddings, LayerNorms, Linear projections and MLPs once for all of them; only
attention runs per sequence, against that sequence's cache, with ``F.scaled_dot_product_attention``
as ``GPT.decode_step`` does. So a sequence gets the logits it would get alone, up to float32 rounding
of the batched matrix products (tests/serve/test_server.py checks this).

Past the block size a sequence slides its window the way ``tinyllm sample`` does (``GPT._window_step``):
once its cache is full, the last block_size tokens are prefilled afresh (solo) for each new token.

Sampling reuses ``models/decoding.py``: a sequence alone in ``GPT.generate`` with the same seed draws
the same tokens, so the server's text for a seed is ``generate``'s (``crop_context=True``) text.
"""
import collections
import threading
import time

import numpy as np

from ..autograd import cat, no_grad
from ..models.decoding import _host_scores, _log_softmax, _process, _sample_rows, _softmax, _topk_indices, eval_mode
from ..nn import functional as F


class Sequence:
    """One choice being generated: its prompt (token ids), sampling settings, caches and new tokens.

    ``on_token(token, logprobs)`` runs on the worker thread for each new token and returns True to
    stop (a stop string was reached); ``on_end(reason, error)`` runs once at the end with reason
    "stop", "length", "cancelled" or "error". ``logprobs`` is None or (the token's log-probability,
    [(id, log-probability)] of the top ``top_logprobs`` tokens), from the model's raw distribution.
    """

    def __init__(self, prompt, max_tokens, *, temperature=1.0, top_p=1.0, seed=None, top_logprobs=None,
                 on_token=None, on_end=None):
        self.prompt = np.asarray(prompt, dtype=np.int64).reshape(-1)
        if self.prompt.size == 0:
            raise ValueError("Sequence: the prompt needs at least one token")
        self.max_tokens = int(max_tokens)
        # decoding.py's warp tuple (temperature, top_k, top_p, min_tokens_to_keep); None is greedy
        self.warp = None if temperature == 0 else (float(temperature), None, top_p if top_p < 1 else None, 1)
        self.rng = np.random.default_rng(seed)
        self.top_logprobs = top_logprobs
        self.on_token, self.on_end = on_token, on_end
        self.tokens = []  # the new tokens so far
        self.caches = self.recent = self.logits = None  # recent: the last block_size tokens fed
        self.cancelled = False  # set from any thread; the worker drops the sequence at its next step
        self.done = False

    def choose(self):
        """The next token from ``self.logits`` (V,), as ``decoding._greedy_or_sample`` picks it for one row."""
        scores = self.logits[None]  # (1, V)
        if self.warp is None:
            token = int(scores.argmax(axis=-1)[0])
        else:
            token = int(_sample_rows(_softmax(_process(None, scores, 0, self.warp)), self.rng)[0])
        info = None
        if self.top_logprobs is not None:
            logp = _log_softmax(scores)  # (1, V): the model's own distribution, before temperature / top-p
            top = _topk_indices(logp, min(self.top_logprobs, logp.shape[-1]))[0] if self.top_logprobs else []
            info = (float(logp[0, token]), [(int(i), float(logp[0, i])) for i in top])
        return token, info


def batched_decode_step(model, tokens, caches):
    """Logits (N, V) of the token after each of N sequences, each fed one new token ``tokens[r]`` at
    its own position ``len(caches[r][0])`` against its own per-layer caches (which then hold it).

    Row r equals ``model.decode_step(tokens[r:r+1, None], caches[r])`` up to float32 rounding: the
    same layers and the same attention call, with everything but attention batched.
    """
    ids = np.asarray(tokens, dtype=np.int64)[:, None]  # (N, 1)
    pos = np.array([len(c[0]) for c in caches])[:, None]  # (N, 1): each row's own position
    tok = model.wte(ids)  # (N, 1, C)
    x = model.drop(tok + (model.wpe(pos) if model.config.pos_encoding == "learned" else model.pos_table[pos]))
    for layer, block in enumerate(model.h):
        x = x + _attention(block.attn, block.ln_1(x), [c[layer] for c in caches])
        x = x + block.mlp(block.ln_2(x))
    logits = model.lm_head(model.ln_f(x))  # (N, 1, V)
    return logits.data[:, -1]


def _attention(attn, x, layer_caches):
    """``CausalSelfAttention.forward`` for one new token per row, each row against its own cache."""
    N, T, C = x.shape  # T == 1
    qkv = attn.c_attn(x).reshape(N, T, 3, attn.n_head, C // attn.n_head).permute(2, 0, 3, 1, 4)  # (3, N, nh, 1, hs)
    q, k, v = qkv[0], qkv[1], qkv[2]
    ys = []
    for r, cache in enumerate(layer_caches):
        keys, values = cache.append(k[r:r + 1], v[r:r + 1])  # (1, nh, past + 1, hs)
        # one query that may see every key: no mask, as decode_step with T == 1
        ys.append(F.scaled_dot_product_attention(q[r:r + 1], keys, values))  # (1, nh, 1, hs)
    y = cat(ys, dim=0).transpose(1, 2).reshape(N, T, C)
    return attn.resid_dropout(attn.c_proj(y))


class Engine:
    """The worker thread and its queue. ``submit`` sequences, ``cancel`` them; ``stats`` for /health."""

    def __init__(self, model, max_batch=16):
        if int(max_batch) < 1:
            raise ValueError(f"Engine: max_batch must be a positive integer, got {max_batch!r}")
        self.model, self.max_batch = model, int(max_batch)
        self.block_size = model.config.block_size
        self._pending = collections.deque()
        self._active = []
        self._cv = threading.Condition()
        self._thread = None
        self._stopping = False
        self.max_batch_seen = 0  # the largest batch one decode step has run: > 1 shows requests were batched
        self.steps = self.tokens_generated = self.sequences_done = 0

    # -- the caller's side (any thread) -------------------------------------------------------
    def start(self):
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="tinyllm-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout=10.0):
        """End the worker; sequences still running or queued end as "cancelled"."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, sequences):
        with self._cv:
            if self._stopping:
                raise RuntimeError("the engine is shutting down")
            self._pending.extend(sequences)
            self._cv.notify_all()

    def cancel(self, sequences):
        for seq in sequences:
            seq.cancelled = True
        with self._cv:
            self._cv.notify_all()

    def stats(self):
        with self._cv:
            return {"active": len(self._active), "queued": len(self._pending), "max_concurrent": self.max_batch,
                    "max_batch_seen": self.max_batch_seen, "steps": self.steps,
                    "tokens_generated": self.tokens_generated, "sequences_done": self.sequences_done}

    # -- the worker ----------------------------------------------------------------------------
    def _run(self):
        with eval_mode(self.model), no_grad():
            while True:
                with self._cv:
                    while not self._stopping and not self._pending and not self._active:
                        self._cv.wait()
                    if self._stopping:
                        leftovers = list(self._active) + list(self._pending)
                        self._active, self._pending = [], collections.deque()
                        break
                    for seq in [s for s in self._pending if s.cancelled]:
                        self._pending.remove(seq)
                        self._finish(seq, "cancelled")
                    joining = []
                    while self._pending and len(self._active) + len(joining) < self.max_batch:
                        joining.append(self._pending.popleft())
                    self._active = self._active + joining  # under the lock: stats see them at once
                try:
                    self._step(joining)
                except Exception as e:  # a bug, not a bad request: fail this batch, keep serving
                    with self._cv:
                        failed, self._active = self._active, []
                    for seq in failed:
                        self._finish(seq, "error", e)
        for seq in leftovers:
            self._finish(seq, "cancelled")

    def _step(self, joining):
        for seq in joining:  # prefill each newcomer alone (prompts differ in length)
            self._feed_alone(seq, seq.prompt[None, :])
        going_on = []
        for seq in self._active:
            if seq.cancelled:
                self._finish(seq, "cancelled")
                continue
            token, info = seq.choose()
            seq.tokens.append(token)
            self.tokens_generated += 1
            if seq.on_token is not None and seq.on_token(token, info):
                self._finish(seq, "stop")
            elif len(seq.tokens) >= seq.max_tokens:
                self._finish(seq, "length")
            else:
                going_on.append(seq)
        with self._cv:
            self._active = going_on
        full = [s for s in going_on if len(s.caches[0]) + 1 > self.block_size]
        batch = [s for s in going_on if len(s.caches[0]) + 1 <= self.block_size]
        for seq in full:
            self._feed_alone(seq, np.array([[seq.tokens[-1]]]))
        if batch:
            logits = batched_decode_step(self.model, [s.tokens[-1] for s in batch], [s.caches for s in batch])
            logits = _host_scores(logits)  # (N, V)
            for seq, row in zip(batch, logits):
                seq.recent = np.concatenate([seq.recent, [[seq.tokens[-1]]]], axis=1)[:, -self.block_size:]
                seq.logits = row
            self.steps += 1
            self.max_batch_seen = max(self.max_batch_seen, len(batch))

    def _feed_alone(self, seq, ids):
        """``GPT._window_step`` for one sequence: feed ``ids`` (1, t) on its caches, or, when they would
        overflow the block, rebuild them from the last block_size tokens."""
        recent = ids if seq.recent is None else np.concatenate([seq.recent, ids], axis=1)
        seq.recent = recent[:, -self.block_size:]
        if seq.caches is None or len(seq.caches[0]) + ids.shape[1] > self.block_size:
            seq.caches, ids = self.model.new_caches(), seq.recent
        logits, seq.caches = self.model.decode_step(ids, seq.caches)
        seq.logits = _host_scores(logits)[0]

    def _finish(self, seq, reason, error=None):
        if seq.done:
            return
        seq.done, seq.caches = True, None  # the caches are the sequence's memory: free them now
        self.sequences_done += 1
        if seq.on_end is not None:
            seq.on_end(reason, error)


def wait_idle(engine, timeout=10.0):
    """Block until the engine has nothing active or queued (tests and benchmarks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = engine.stats()
        if not s["active"] and not s["queued"]:
            return True
        time.sleep(0.01)
    return False
