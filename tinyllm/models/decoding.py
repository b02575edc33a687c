"""The one decoding loop every tinyllm model generates with: greedy, sampling (temperature / top-k /
top-p) and beam search, with Hugging Face ``generate`` semantics, token for token.

    out = decode(step, reorder, ids, state, max_new_tokens=50, num_beams=4, eos_token_id=0)   # (B, T_out)

A model takes part through two functions (HF's ``generate`` serves every model the same way):

    step(ids, state) -> (logits, state)   logits (N, V) of the token after ``ids`` (N, t), which
                                          extend the sequences ``state`` has seen; the first call
                                          gets the whole prompt and the initial ``state``
    reorder(state, rows) -> state         keep, repeat or reorder the state's batch rows: beams
                                          follow their parents, num_return_sequences repeat a prompt

GPT's state is its per-layer KV caches, the LSTM's its (h, c), the encoder-decoder's the source
memory and the target prefix. The logits processors at the top are plain NumPy functions, each a port
of one Hugging Face class (``NoRepeatNGramLogitsProcessor``, ``TemperatureLogitsWarper``,
``TopKLogitsWarper``, ``TopPLogitsWarper``) and tested against it; the loops below are ports of HF's
``_sample`` and its vectorised ``_beam_search`` (transformers 5.x). Where HF was ambiguous or quirky
we kept its behaviour and said so in a comment.
"""
import os
from contextlib import contextmanager

import numpy as np

from .. import backend
from ..autograd import Tensor, no_grad
from .checks import token_ids

_NEG = np.float32(-1.0e9)  # HF's "this beam does not count" score (float32, like HF's tensors)


# ---------------------------------------------------------------------------------------------
# logits processors: (N, V) float32 scores in, (N, V) scores out; banned entries become -inf
# ---------------------------------------------------------------------------------------------
def no_repeat_ngram(input_ids, scores, ngram_size):
    """Ban every token that would complete an n-gram already present in its row of ``input_ids``.

    For row r with suffix s = ids[-(n-1):], each window w of n tokens with w[:-1] == s bans w[-1]
    (HF's ``NoRepeatNGramLogitsProcessor``; the prompt counts too, as it does for decoder-only models).
    """
    ids = np.asarray(input_ids)
    N, L = ids.shape
    if ngram_size <= 0 or L < ngram_size:
        return scores
    windows = np.lib.stride_tricks.sliding_window_view(ids, ngram_size, axis=1)  # (N, L-n+1, n)
    prefix = ids[:, L + 1 - ngram_size:]  # (N, n-1): the n-gram the next token would complete
    matches = (windows[:, :, :-1] == prefix[:, None, :]).all(axis=-1)  # (N, L-n+1)
    V = scores.shape[-1]
    rows, cols = np.nonzero(matches)
    banned = windows[rows, cols, -1]
    keep = banned < V  # ids the lm_head cannot produce need no ban
    out = scores.copy()
    out[rows[keep], banned[keep]] = -np.inf
    return out


def temperature_warp(scores, temperature):
    """scores / temperature (HF's ``TemperatureLogitsWarper``)."""
    return scores / np.float32(temperature) if scores.dtype == np.float32 else scores / temperature


def top_k_filter(scores, top_k, min_tokens_to_keep=1):
    """Keep every token scoring at least the k-th best (ties at the cut survive, as in HF)."""
    k = min(max(int(top_k), min_tokens_to_keep), scores.shape[-1])
    kth = -np.partition(-scores, k - 1, axis=-1)[..., k - 1:k]  # (N, 1): the k-th largest score
    return np.where(scores < kth, np.float32(-np.inf), scores).astype(scores.dtype, copy=False)


def top_p_filter(scores, top_p, min_tokens_to_keep=1):
    """Nucleus filtering: keep the smallest set of top tokens whose probability reaches ``top_p``.

    HF's ``TopPLogitsWarper``, step for step: sort ascending, cumulative softmax, drop the tokens whose
    cumulative probability is <= 1 - top_p, but never the last ``min_tokens_to_keep``. The cumsum runs
    in float64 and is rounded to float32 because that is what torch's CPU cumsum does for float32.
    """
    order = np.argsort(scores, axis=-1, kind="stable")  # ascending
    sorted_scores = np.take_along_axis(scores, order, axis=-1)
    probs = _softmax(sorted_scores)
    cum = np.cumsum(probs.astype(np.float64), axis=-1).astype(scores.dtype)
    remove_sorted = cum <= (1 - top_p)
    remove_sorted[..., -min_tokens_to_keep:] = False
    remove = np.empty_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return np.where(remove, np.float32(-np.inf), scores).astype(scores.dtype, copy=False)


def _softmax(x):
    m = x.max(axis=-1, keepdims=True)
    e = np.exp(x - np.where(np.isfinite(m), m, 0))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    z = x - np.where(np.isfinite(m), m, 0)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _process(ids, scores, ngram, warp):
    """HF's processor order: n-gram ban first, then (sampling only) temperature, top-k, top-p."""
    if ngram:
        scores = no_repeat_ngram(ids, scores, ngram)
    if warp is not None:
        temperature, top_k, top_p, keep = warp
        if temperature != 1.0:
            scores = temperature_warp(scores, temperature)
        if top_k:
            scores = top_k_filter(scores, top_k, keep)
        if top_p is not None and top_p < 1.0:
            scores = top_p_filter(scores, top_p, keep)
    return scores


def _sample_rows(probs, rng):
    """One draw per row of ``probs`` (N, V) by inverting the CDF; zero-probability tokens are never drawn."""
    cdf = np.cumsum(probs.astype(np.float64), axis=-1)  # (N, V)
    u = rng.random(cdf.shape[0]) * cdf[:, -1]  # (N,) in [0, total)
    tok = (cdf <= u[:, None]).sum(axis=-1)  # first index whose cdf exceeds u: its probability is > 0
    return np.minimum(tok, probs.shape[-1] - 1).astype(np.int64)


def _sample_without_replacement(probs, k, rng, name):
    """k distinct draws per row (HF: ``torch.multinomial(probs, k)`` without replacement)."""
    out = np.empty((probs.shape[0], k), dtype=np.int64)
    for r, p in enumerate(probs.astype(np.float64)):
        p = p / p.sum()
        if np.count_nonzero(p) < k:
            raise ValueError(f"{name}: beam sampling needs {k} candidates with non-zero probability, "
                             f"only {np.count_nonzero(p)} are left (loosen top_k/top_p/no_repeat_ngram_size)")
        out[r] = rng.choice(p.size, size=k, replace=False, p=p)
    return out


def _topk_indices(x, k):
    """Indices of the k largest entries of each row, best first (earlier index wins a tie)."""
    n = x.shape[-1]
    if k < n:
        part = np.argpartition(-x, k - 1, axis=-1)[..., :k]
        vals = np.take_along_axis(x, part, axis=-1)
        # sort the k survivors by (value desc, index asc)
        order = np.lexsort((part, -vals), axis=-1)
        return np.take_along_axis(part, order, axis=-1)
    return np.argsort(-x, axis=-1, kind="stable")[..., :k]


def _host_scores(logits):
    """A step's logits as contiguous float32 NumPy on the host: the loops below are NumPy."""
    data = logits.data if isinstance(logits, Tensor) else logits
    return np.ascontiguousarray(backend.to_device(data, "cpu"), dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------
@contextmanager
def eval_mode(model):
    """``model`` in eval mode inside the block; every submodule's train/eval flag is restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)


def decode(step, reorder, input_ids, state=None, max_new_tokens=None, max_length=None, do_sample=False,
           temperature=1.0, top_k=None, top_p=None, num_beams=1, no_repeat_ngram_size=0, num_return_sequences=1,
           eos_token_id=None, pad_token_id=None, length_penalty=1.0, early_stopping=False, seed=None,
           streamer=None, vocab_size=None, max_positions=None, name="generate"):
    """Continue ``input_ids`` (B, T) or (T,) through ``step``; returns int64 (B * num_return_sequences, T_out).

    Hugging Face ``generate`` semantics: greedy (default), sampling (``do_sample=True``: temperature,
    then top-k, then top-p), beam search (``num_beams > 1``) or beam sampling (both). The output
    includes the prompt. Rows that finish early (``eos_token_id``) are padded with ``pad_token_id``,
    which defaults to the first eos id. ``state`` is what the first ``step`` call gets with the prompt.

    Length: ``max_new_tokens`` wins over ``max_length`` (the total, prompt included); with neither,
    20 new tokens, capped at ``max_positions`` (HF's default). ``max_positions`` is how many positions
    the model can be fed (None: unbounded); the last token is never fed back, so ``max_length`` may
    exceed it by one, and anything longer is an error raised before any work.

    Differences from HF, on purpose: ``top_k=None`` means no top-k filter (HF defaults to 50);
    prompts are taken as unpadded (no attention mask, no left padding), so rows must share a length;
    sampling draws from a NumPy Generator (``seed``, else ``tinyllm.backend.rng()``), not torch's RNG.
    ``step`` runs under ``no_grad``; putting the model in eval mode is the caller's (``eval_mode``).
    Errors name ``name``; ``vocab_size`` checks the prompt's ids.

    ``streamer`` (greedy and sampling only, as in HF): an object with ``put(ids)`` and ``end()``; it gets
    the prompt (B, T) first, then each step's new tokens (B,) as they are chosen, then ``end()``, so a
    caller can show text while it is generated (and keep it when generation is interrupted).
    """
    ids = token_ids(input_ids, name, vocab_size, what="input_ids", one_row=True).astype(np.int64)
    max_length = _resolve_length(ids.shape[1], max_new_tokens, max_length, max_positions, name)
    eos = _eos_array(eos_token_id, name)
    if pad_token_id is None and eos is not None:
        pad_token_id = int(eos[0])  # HF: "Setting pad_token_id to eos_token_id"
    _check_args(name, do_sample, temperature, top_k, top_p, num_beams, no_repeat_ngram_size,
                num_return_sequences, length_penalty, early_stopping)
    if streamer is not None and num_beams > 1:
        raise ValueError(f"{name}: streamer works with greedy decoding and sampling, not beam search "
                         f"(num_beams={num_beams})")
    _check_output_memory(ids.shape[0] * num_return_sequences * num_beams, max_length, name)
    rng = np.random.default_rng(seed) if seed is not None else backend.rng()
    with no_grad():
        if num_beams == 1:
            warp = (float(temperature), top_k, top_p, 1) if do_sample else None
            return _greedy_or_sample(step, reorder, ids, state, max_length, do_sample, warp, no_repeat_ngram_size,
                                     num_return_sequences, eos, pad_token_id, rng, streamer)
        # HF keeps n_eos + 1 (at least 2) tokens in beam sampling's warpers
        keep = 1 + len(eos) if eos is not None else 2
        warp = (float(temperature), top_k, top_p, keep) if do_sample else None
        return _beam_search(step, reorder, ids, state, max_length, num_beams, do_sample, warp, no_repeat_ngram_size,
                            num_return_sequences, eos, pad_token_id, float(length_penalty), early_stopping, rng, name)


def _resolve_length(T, max_new_tokens, max_length, max_positions, name):
    if max_new_tokens is not None:
        if int(max_new_tokens) != max_new_tokens or max_new_tokens < 1:
            raise ValueError(f"{name}: max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        max_length = T + int(max_new_tokens)
    elif max_length is not None:
        if int(max_length) != max_length:
            raise ValueError(f"{name}: max_length must be an integer, got {max_length!r}")
        max_length = int(max_length)
        if T >= max_length:
            raise ValueError(f"{name}: the prompt has {T} tokens but max_length is {max_length}; "
                             f"max_length counts the prompt too (or pass max_new_tokens)")
    else:  # HF 5.x: 20 new tokens, capped at the model's number of positions
        max_length = T + 20 if max_positions is None else min(T + 20, max_positions)
        if T >= max_length:
            raise ValueError(f"{name}: the prompt has {T} tokens, which leaves no room below the default "
                             f"max_length {max_length} (block_size {max_positions}); pass max_new_tokens")
    if max_positions is not None:
        if T > max_positions:
            raise ValueError(f"{name}: the prompt has {T} tokens, more than the model's block_size {max_positions}")
        if max_length - 1 > max_positions:
            raise ValueError(f"{name}: max_length {max_length} needs {max_length - 1} positions but the model's "
                             f"block_size is {max_positions}; ask for at most {max_positions + 1 - T} new tokens")
    return max_length


def _check_output_memory(rows, max_length, name):
    """Refuse, before allocating, an output (rows, max_length) of int64 ids larger than physical memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return
    need = 8 * rows * max_length
    if need > total:
        raise ValueError(f"{name}: max_length {max_length:,} would need {need / 2**30:,.0f} GiB for the token ids "
                         f"alone, more than this machine's {total / 2**30:,.0f} GiB; ask for fewer new tokens")


def _eos_array(eos_token_id, name):
    if eos_token_id is None:
        return None
    eos = np.atleast_1d(np.asarray(eos_token_id))
    if eos.ndim != 1 or eos.size == 0 or eos.dtype.kind not in "iu":
        raise ValueError(f"{name}: eos_token_id must be an int or a list of ints, got {eos_token_id!r}")
    return eos.astype(np.int64)


def _check_args(name, do_sample, temperature, top_k, top_p, num_beams, ngram, nrs, length_penalty, early_stopping):
    if int(num_beams) != num_beams or num_beams < 1:
        raise ValueError(f"{name}: num_beams must be a positive integer, got {num_beams!r}")
    if int(nrs) != nrs or nrs < 1:
        raise ValueError(f"{name}: num_return_sequences must be a positive integer, got {nrs!r}")
    if num_beams == 1 and not do_sample and nrs > 1:
        raise ValueError(f"{name}: greedy decoding returns one sequence per prompt; num_return_sequences={nrs} "
                         f"needs do_sample=True or num_beams >= {nrs}")
    if num_beams > 1 and nrs > num_beams:
        raise ValueError(f"{name}: num_return_sequences ({nrs}) must be <= num_beams ({num_beams})")
    if int(ngram) != ngram or ngram < 0:
        raise ValueError(f"{name}: no_repeat_ngram_size must be a non-negative integer, got {ngram!r}")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"{name}: early_stopping must be True, False or 'never', got {early_stopping!r}")
    if not np.isfinite(length_penalty):
        raise ValueError(f"{name}: length_penalty must be a finite number, got {length_penalty!r}")
    if do_sample:  # the warpers only exist when sampling; HF ignores them otherwise (with a warning)
        if not temperature > 0:
            raise ValueError(f"{name}: temperature must be > 0 when sampling, got {temperature!r} "
                             f"(for greedy decoding pass do_sample=False)")
        if top_k is not None and (int(top_k) != top_k or top_k < 0):
            raise ValueError(f"{name}: top_k must be a non-negative integer (0 or None: off), got {top_k!r}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"{name}: top_p must be in (0, 1], got {top_p!r}")


def _greedy_or_sample(step, reorder, ids, state, max_length, do_sample, warp, ngram, nrs, eos, pad, rng,
                      streamer=None):
    """HF's ``_sample``: one token per row per step; finished rows are padded with ``pad``."""
    if streamer is not None:
        streamer.put(ids)
    logits, state = step(ids, state)  # prefill once per distinct prompt
    logits = _host_scores(logits)
    if nrs > 1:  # HF repeat_interleaves the prompts: rows b*nrs .. b*nrs+nrs-1 share prompt b
        rows = np.repeat(np.arange(ids.shape[0]), nrs)
        ids, logits = ids[rows], logits[rows]
        state = reorder(state, rows)
    N = ids.shape[0]
    out = np.empty((N, max_length), dtype=np.int64)
    out[:, :ids.shape[1]] = ids
    cur = ids.shape[1]
    unfinished = np.ones(N, dtype=bool)
    processed = bool(ngram) or warp is not None
    while True:
        scores = _process(out[:, :cur], logits, ngram, warp) if processed else logits
        if do_sample:
            nxt = _sample_rows(_softmax(scores), rng)
        else:
            nxt = scores.argmax(axis=-1)
        if eos is not None:
            nxt = np.where(unfinished, nxt, pad)
        out[:, cur] = nxt
        cur += 1
        if streamer is not None:
            streamer.put(nxt)
        if eos is not None:
            unfinished &= ~np.isin(nxt, eos)
        if cur >= max_length or not unfinished.any():
            if streamer is not None:
                streamer.end()
            return out[:, :cur]
        logits, state = step(nxt[:, None], state)
        logits = _host_scores(logits)


def _beam_search(step, reorder, ids, state, max_length, nb, do_sample, warp, ngram, nrs, eos, pad, length_penalty,
                 early_stopping, rng, name):
    """A NumPy port of transformers 5.x ``GenerationMixin._beam_search`` (vectorised over the batch).

    Each step scores all nb * V continuations of the running beams, keeps the best K = max(2, 1 + n_eos) * nb
    (enough that nb of them are still running even if nb just emitted eos), moves the top-nb running ones
    on, and merges those of the top nb that finished into a length-penalised pool of nb finished
    hypotheses. Scores are float32 throughout, like HF's.
    """
    B, T0 = ids.shape
    n_eos = 0 if eos is None else len(eos)
    K = max(2, 1 + n_eos) * nb
    top_nb = np.arange(K) < nb  # (K,) only these may enter the finished pool
    # HF: `pad_token_id or eos_token_id[0] if eos_token_id is not None else -1`; precedence makes that
    # (pad or eos[0]) if eos else -1, so a pad id of 0 fills with eos[0]. Kept for token identity.
    fill = (pad if pad else int(eos[0])) if eos is not None else -1
    L = max_length

    running_seq = np.full((B, nb, L), fill, dtype=np.int64)
    running_seq[:, :, :T0] = ids[:, None, :]
    sequences = running_seq.copy()  # the finished pool
    running_scores = np.zeros((B, nb), dtype=np.float32)
    running_scores[:, 1:] = _NEG  # only beam 0 may expand at the first step: all beams are the same prompt
    beam_scores = np.full((B, nb), _NEG, dtype=np.float32)
    finished = np.zeros((B, nb), dtype=bool)
    improvable = np.ones((B, 1), dtype=bool)  # HF's is_early_stop_heuristic_unsatisfied
    running_bidx = np.full((B, nb, L - T0), -1, dtype=np.int64)
    pool_bidx = running_bidx.copy()
    batch_offset = np.arange(B)[:, None] * nb  # (B, 1)

    logits, state = step(ids, state)  # (B, V): prefill each prompt once, then copy it to its beams
    rows = np.repeat(np.arange(B), nb)
    logits = _host_scores(logits)[rows]
    state = reorder(state, rows)
    V = logits.shape[-1]

    cur = T0
    while True:
        flat_seq = running_seq[:, :, :cur].reshape(B * nb, cur)
        logp = _process(flat_seq, _log_softmax(logits), ngram, warp)  # (B*nb, V)
        logp = (logp.reshape(B, nb, V) + running_scores[:, :, None]).reshape(B, nb * V)

        # c. the top K continuations over all beams (or K draws without replacement)
        if do_sample:
            top = _sample_without_replacement(_softmax(logp), K, rng, name)  # (B, K)
        else:
            top = _topk_indices(logp, K)
        topk_logp = np.take_along_axis(logp, top, axis=1)  # (B, K)
        parent = top // V
        token = top % V
        topk_seq = np.take_along_axis(running_seq, parent[:, :, None], axis=1)  # (B, K, L)
        topk_seq[:, :, cur] = token
        topk_bidx = np.take_along_axis(running_bidx, parent[:, :, None], axis=1)
        topk_bidx[:, :, cur - T0] = parent + batch_offset

        # d. which candidates stop here (max length or eos)
        hits = np.full((B, K), cur + 1 >= max_length)
        if eos is not None:
            hits |= np.isin(token, eos)

        # e. the best nb candidates that did not stop keep running
        run_logp = topk_logp + hits.astype(np.float32) * _NEG
        nxt = _topk_indices(run_logp, nb)
        running_seq = np.take_along_axis(topk_seq, nxt[:, :, None], axis=1)
        running_scores = np.take_along_axis(run_logp, nxt, axis=1)
        running_bidx = np.take_along_axis(topk_bidx, nxt[:, :, None], axis=1)

        # f. merge newly finished hypotheses (top nb only) into the pool, length-penalised
        just_finished = hits & top_nb[None, :]
        cand = topk_logp / np.float32((cur + 1 - T0) ** length_penalty)
        pool_full = finished.all(axis=-1, keepdims=True) & (early_stopping is True)
        cand = cand + pool_full.astype(np.float32) * _NEG
        cand = cand + (~improvable).astype(np.float32) * _NEG
        cand = cand + (~just_finished).astype(np.float32) * _NEG
        merged_scores = np.concatenate([beam_scores, cand], axis=1)  # (B, nb + K)
        keep = _topk_indices(merged_scores, nb)
        sequences = np.take_along_axis(np.concatenate([sequences, topk_seq], axis=1), keep[:, :, None], axis=1)
        beam_scores = np.take_along_axis(merged_scores, keep, axis=1)
        pool_bidx = np.take_along_axis(np.concatenate([pool_bidx, topk_bidx], axis=1), keep[:, :, None], axis=1)
        finished = np.take_along_axis(np.concatenate([finished, just_finished], axis=1), keep, axis=1)

        # g. stop? (HF's _check_early_stop_heuristic and _beam_search_has_unfinished_sequences)
        parents = running_bidx[:, :, cur - T0].reshape(-1)
        cur += 1
        if early_stopping == "never" and length_penalty > 0.0:
            best_len = max_length - T0
        else:
            best_len = cur - T0
        best_running = running_scores[:, :1] / np.float32(best_len ** length_penalty)  # (B, 1)
        worst_finished = np.where(finished, beam_scores.min(axis=1, keepdims=True), _NEG)  # (B, nb)
        improvable = improvable & (best_running > worst_finished).any(axis=-1, keepdims=True)
        go_on = improvable.any() and not (finished.all() and early_stopping is True) and not hits.all()
        if not go_on:
            break
        state = reorder(state, parents)
        logits, state = step(running_seq[:, :, cur - 1].reshape(B * nb, 1), state)
        logits = _host_scores(logits)

    sequences = sequences[:, :nrs].reshape(B * nrs, L)
    generated = (pool_bidx[:, :nrs].reshape(B * nrs, -1) != -1).sum(axis=1).max()
    return sequences[:, :T0 + generated]
