"""The backward of an embedding lookup: dW[i] = sum of the upstream rows whose id is i (a scatter-add).
The NumPy twin is ``np.add.at``; the numba twin is the plain loop (~25x faster at the recipe's
768 ids x 128 wide, where ``add.at`` takes ~0.85 ms)."""
import numpy as np
from numba import njit

from .. import backend


def embedding_backward_numpy(ids, g, num_embeddings):
    """dW (num_embeddings, D) from flat ids (N,) and upstream rows g (N, D)."""
    xp = backend.get_array_module(g)
    dw = xp.zeros((num_embeddings, g.shape[1]), dtype=g.dtype)
    xp.add.at(dw, ids, g)
    return dw


@njit(cache=True)
def _scatter_add(ids, g, dw):
    N, D = g.shape
    for n in range(N):
        row = dw[ids[n]]
        gn = g[n]
        for d in range(D):
            row[d] += gn[d]


def embedding_backward_numba(ids, g, num_embeddings):
    g = np.ascontiguousarray(g)
    dw = np.zeros((num_embeddings, g.shape[1]), dtype=g.dtype)
    _scatter_add(np.ascontiguousarray(ids, dtype=np.int64), g, dw)
    return dw


def embedding_backward(ids, g, num_embeddings):
    if (backend.kernels() == "numba" and isinstance(g, np.ndarray) and isinstance(ids, np.ndarray)
            and g.dtype in (np.float32, np.float64)):
        return embedding_backward_numba(ids, g, num_embeddings)
    return embedding_backward_numpy(ids, g, num_embeddings)
