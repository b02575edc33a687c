"""The backward of an embedding lookup: dW[i] = sum of the upstream rows whose id is i (a scatter-add).
The NumPy twin is ``np.add.at``, which is slow; the numba version is the plain loop."""
import numpy as np
from numba import njit

from .. import backend
from .dispatch import Kernel


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


embedding_backward = Kernel("embedding.embedding_backward", embedding_backward_numba, embedding_backward_numpy,
                            floats=(1,), arrays=(0,), doc="dW (num_embeddings, D) from ids (N,) and rows g (N, D).")
