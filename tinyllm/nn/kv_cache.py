"""The key/value cache of one attention layer, for incremental decoding (each new token attends to the
keys and values of all earlier positions without recomputing them)."""
from .. import backend
from ..autograd import Tensor, cat, is_grad_enabled


class KVCache:
    """Keys and values (B, n_head, T_so_far, head_size) of the positions seen so far.

    Without gradients (generation) they live in buffers that grow by doubling, and ``k``/``v`` are
    views of the filled part, so a decode step costs no O(T) concatenation. With gradients on,
    ``append`` is a differentiable ``cat``.
    """

    def __init__(self):
        self.k = self.v = None
        self._buffers = None

    def __len__(self):
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k, v):
        """Add this step's keys and values; return (keys, values) of every position so far."""
        if is_grad_enabled():
            if self.k is not None:
                k, v = cat([self.k, k], dim=2), cat([self.v, v], dim=2)
            self.k, self.v, self._buffers = k.detach(), v.detach(), None
            return k, v
        past, n = len(self), len(self) + k.shape[2]
        bufs = self._buffers
        if bufs is None or bufs[0].shape[2] < n or bufs[0].shape[0] != k.shape[0]:
            xp = backend.get_array_module(k.data)
            cap = max(n, 2 * (bufs[0].shape[2] if bufs is not None else 0), 64)
            bufs = tuple(xp.empty(k.shape[:2] + (cap, k.shape[3]), dtype=k.dtype) for _ in range(2))
            if past:
                bufs[0][:, :, :past], bufs[1][:, :, :past] = self.k.data, self.v.data
            self._buffers = bufs
        bufs[0][:, :, past:n], bufs[1][:, :, past:n] = k.data, v.data
        self.k, self.v = Tensor._wrap(bufs[0][:, :, :n]), Tensor._wrap(bufs[1][:, :, :n])
        return self.k, self.v

    def select_rows(self, rows):
        """Keep, reorder or repeat batch rows (beams follow their parents)."""
        if self.k is None:
            return
        n = len(self)
        if self._buffers is not None:
            self._buffers = tuple(b[rows] for b in self._buffers)
            self.k, self.v = (Tensor._wrap(b[:, :, :n]) for b in self._buffers)
        else:
            self.k, self.v = Tensor._wrap(self.k.data[rows]), Tensor._wrap(self.v.data[rows])
