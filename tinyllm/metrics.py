"""Evaluation metrics for language models: loss per token, perplexity, next-token accuracy."""
import math

import numpy as np

from .autograd import no_grad
from .nn import functional as F


@no_grad()
def evaluate_lm(model, tokens, block_size, batch_size=32, max_batches=None):
    """Score ``model`` on ``tokens`` cut into non-overlapping windows of ``block_size``.

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
    for b in range(0, len(starts), batch_size):
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
