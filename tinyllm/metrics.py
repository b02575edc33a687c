"""Evaluation metrics: loss per token, perplexity and next-token accuracy for language models, and
corpus BLEU for translation."""
import math
from collections import Counter

import numpy as np

from .autograd import no_grad
from .nn import functional as F


@no_grad()
def evaluate_lm(model, tokens, block_size, batch_size=32, max_batches=None, progress=False):
    """Score ``model`` on ``tokens`` cut into non-overlapping windows of ``block_size`` (``progress``:
    a progress bar over the batches, on stderr).

    Returns a dict with ``loss`` (mean cross-entropy per token, nats), ``perplexity`` = exp(loss),
    ``accuracy`` (argmax next-token accuracy) and ``tokens`` (how many were scored).
    """
    n_windows = (len(tokens) - 1) // block_size
    if n_windows < 1:
        raise ValueError(f"evaluate_lm: {len(tokens)} tokens are too few for block_size {block_size}")
    starts = np.arange(n_windows) * block_size
    if max_batches is not None:
        starts = starts[: max_batches * batch_size]
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    from tqdm import tqdm
    for b in tqdm(range(0, len(starts), batch_size), desc="eval", unit="batch", disable=not progress,
                  leave=False, dynamic_ncols=True):
        idx = starts[b:b + batch_size]
        x = np.stack([tokens[i:i + block_size] for i in idx]).astype(np.int64)
        y = np.stack([tokens[i + 1:i + 1 + block_size] for i in idx]).astype(np.int64)
        logits, _ = model(x)
        flat = logits.reshape(-1, logits.shape[-1])
        total_loss += F.cross_entropy(flat, y.reshape(-1), reduction="sum").item()
        correct += int((flat.data.argmax(axis=-1) == y.reshape(-1)).sum())
        count += y.size
    model.train(was_training)
    loss = total_loss / count
    return {"loss": loss, "perplexity": math.exp(loss), "accuracy": correct / count, "tokens": count}


# ---------------------------------------------------------------------------------------------
# BLEU (Papineni et al. 2002), corpus level, with sacrebleu's smoothing methods
# ---------------------------------------------------------------------------------------------
SMOOTH_DEFAULTS = {"none": None, "floor": 0.1, "add-k": 1, "exp": None}


def _ngrams(tokens, n):
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _tokens(sentence):
    return sentence.split() if isinstance(sentence, str) else list(sentence)


def bleu(hypotheses, references, max_order=4, smooth_method="exp", smooth_value=None):
    """Corpus BLEU in [0, 100], as ``sacrebleu.corpus_bleu(..., tokenize='none')`` computes it.

    ``hypotheses``: one sentence per segment, a string (split on whitespace) or a token list.
    ``references``: one stream per reference set, each aligned with the hypotheses (sacrebleu's
    layout), or a single stream. Clipped n-gram counts are summed over the corpus; the brevity penalty
    uses, per segment, the reference length closest to the hypothesis (the shorter on a tie).

        p_n = clipped matches_n / hypothesis n-grams,  BP = min(1, exp(1 - ref_len / hyp_len))
        BLEU = 100 * BP * exp(mean over n of log p_n)

    A corpus with no matching n-gram of any order scores 0 whatever the smoothing. Smoothing for zero counts: 'exp' (sacrebleu's default: the k-th zero precision becomes
    1 / (2^k * total_n)), 'floor' (``smooth_value`` / total_n, 0.1 by default), 'add-k' (add
    ``smooth_value``, 1 by default, to the matches and totals of n > 1) or 'none'.
    Returns a dict: ``score``, ``precisions`` (percent), ``bp``, ``sys_len``, ``ref_len``.
    """
    if smooth_method not in SMOOTH_DEFAULTS:
        raise ValueError(f"bleu: smooth_method must be one of {sorted(SMOOTH_DEFAULTS)}, got {smooth_method!r}")
    if smooth_value is None:
        smooth_value = SMOOTH_DEFAULTS[smooth_method]
    if references and (isinstance(references[0], str) or (references[0] and not isinstance(references[0][0], (list, tuple, str)))):
        references = [references]  # a single reference stream
    for k, stream in enumerate(references):
        if len(stream) != len(hypotheses):
            raise ValueError(f"bleu: reference stream {k} has {len(stream)} segments, the hypotheses "
                             f"{len(hypotheses)}")
    correct, total = [0] * max_order, [0] * max_order
    sys_len = ref_len = 0
    for i, hyp in enumerate(hypotheses):
        hyp = _tokens(hyp)
        refs = [_tokens(stream[i]) for stream in references]
        sys_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        for n in range(1, max_order + 1):
            counts = _ngrams(hyp, n)
            max_ref = Counter()
            for r in refs:
                max_ref |= _ngrams(r, n)  # | keeps the larger count of each n-gram
            correct[n - 1] += sum(min(c, max_ref[g]) for g, c in counts.items())
            total[n - 1] += max(0, len(hyp) - n + 1)
    precisions = [0.0] * max_order
    bp = 1.0 if sys_len >= ref_len else (math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0)
    if not any(correct):  # no n-gram of any order matched: 0, whatever the smoothing (as sacrebleu)
        return {"score": 0.0, "precisions": precisions, "bp": bp, "sys_len": sys_len, "ref_len": ref_len}
    smooth_exp = 1.0
    for n in range(1, max_order + 1):
        c, t = correct[n - 1], total[n - 1]
        if smooth_method == "add-k" and n > 1:
            c, t = c + smooth_value, t + smooth_value
        if t == 0:
            break
        if c == 0:
            if smooth_method == "exp":
                smooth_exp *= 2
                precisions[n - 1] = 100.0 / (smooth_exp * t)
            elif smooth_method == "floor":
                precisions[n - 1] = 100.0 * smooth_value / t
        else:
            precisions[n - 1] = 100.0 * c / t
    if any(p == 0.0 for p in precisions):
        score = 0.0
    else:
        score = bp * math.exp(sum(math.log(p) for p in precisions) / max_order)
    return {"score": score, "precisions": precisions, "bp": bp, "sys_len": sys_len, "ref_len": ref_len}
