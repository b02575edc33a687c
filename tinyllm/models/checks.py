"""The input check every model's forward and generate paths share: token ids of shape (B, T), integer,
inside the vocabulary and the model's positions, with one wording for each error."""
import numpy as np

from ..autograd import Tensor


def token_ids(idx, name, vocab_size=None, what="idx", max_positions=None, positions_name="block_size", past=0,
              one_row=False):
    """``idx`` (a Tensor or array-like) as a (B, T) integer NumPy array, or ValueError naming ``name``.

    ``one_row`` also takes a (T,) prompt, as (1, T). ``max_positions`` bounds ``past + T`` (``past``:
    positions already in a cache); ``vocab_size`` bounds the ids.
    """
    ids = idx.data if isinstance(idx, Tensor) else np.asarray(idx)
    if one_row and ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2:
        raise ValueError(f"{name}: {what} must have shape (B, T){' or (T,)' if one_row else ''}, got {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise ValueError(f"{name}: {what} must hold integer token ids, got dtype {ids.dtype}")
    if ids.size == 0:
        raise ValueError(f"{name}: {what} must hold at least one token per row, got shape {ids.shape}")
    if max_positions is not None and past + ids.shape[1] > max_positions:
        raise ValueError(f"{name}: {what}: sequence length {past + ids.shape[1]} exceeds {positions_name} {max_positions}")
    if vocab_size is not None:
        lo, hi = ids.min(), ids.max()
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name}: {what}: token id {int(bad)} is outside the vocabulary (size {vocab_size})")
    return ids
