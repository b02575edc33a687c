"""Data parallelism over MPI: which process of how many this is, and the few collective calls training
makes (average the gradients, sum the evaluation losses, let rank 0 decide, end every rank together).

``world()`` is one process unless an MPI launcher (``mpiexec``, ``srun``) started several; only then is
mpi4py imported, so a plain run imports nothing MPI and behaves as before. Gradients travel as one
contiguous NumPy buffer through mpi4py's buffer methods (no pickling); small control objects (a
decision, an error, RNG states at a checkpoint) use the pickling ``bcast``/``gather``.
"""
import contextlib
import copy
import os
import sys
import time

import numpy as np

# What the common launchers export: MPICH/Intel MPI (Hydra, and srun --mpi=pmi2), Open MPI, MVAPICH.
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_world = None


class DistributedError(RuntimeError):
    """MPI was asked for but cannot be used (mpi4py missing, or a setting that several processes cannot share)."""


def launched_processes():
    """The number of processes the launcher says it started (1 when no launcher variable is set)."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 2 if "PMIX_RANK" in os.environ else 1  # PMIx gives the rank only: ask MPI for the size


def world():
    """The processes training together: a ``SingleProcess`` unless a launcher started several (then an
    ``MPIWorld`` over ``MPI.COMM_WORLD``, the same object on every call)."""
    global _world
    if _world is None:
        _world = SingleProcess() if launched_processes() < 2 else _mpi_world()
    return _world


def _mpi_world():
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistributedError(f"started as one of {launched_processes()} MPI processes, but mpi4py is not "
                               f"installed: pip install 'tinyllm[mpi]' (or mpi4py built against your MPI)") from None
    comm = MPI.COMM_WORLD
    return MPIWorld(comm, MPI) if comm.Get_size() > 1 else SingleProcess()


class SingleProcess:
    """One process: every collective call is the identity, so the training loop reads the same either way."""
    rank, size, local_size, is_root = 0, 1, 1, True

    def root_decides(self, fn):
        return fn()

    def bcast(self, obj):
        return obj

    def gather(self, obj):
        return [obj]

    def sum_(self, buf):
        return buf

    def average_gradients(self, params, extras=()):
        return np.asarray(extras, dtype=np.float64)

    @contextlib.contextmanager
    def failing_together(self, collective=lambda e: True):
        yield


class MPIWorld:
    """``size`` processes under MPI; rank 0 alone writes the run directory."""

    def __init__(self, comm, MPI):
        self.comm, self.MPI = comm, MPI
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.is_root = self.rank == 0
        self.local_size = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()  # ranks on this machine
        self._buffer = None

    def root_decides(self, fn):
        """``fn()`` on rank 0 only (the checks that read the run directory); its result, or the exception
        it raised, reaches every rank, so all go on or all stop with the same error."""
        outcome = None
        if self.is_root:
            try:
                outcome = (True, fn())
            except Exception as e:  # noqa: BLE001  (whatever it is, every rank must raise it)
                outcome = (False, _picklable(e))
        ok, value = self.comm.bcast(outcome, root=0)
        if not ok:
            raise value
        return value

    def bcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def gather(self, obj):
        """Every rank's ``obj`` as a list on rank 0 (None elsewhere)."""
        return self.comm.gather(obj, root=0)

    def sum_(self, buf):
        """Sum a float64 array over the ranks, in place."""
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        return buf

    def average_gradients(self, params, extras=()):
        """Replace every gradient by its mean over the ranks, with ONE in-place Allreduce of one contiguous
        buffer holding all of them and ``extras`` (scalars to sum on the way: the loss, a stop request).
        Returns the summed extras. A gradient that is None stays None (the graph is the same on every rank)."""
        params = list(params)
        sizes = [p.data.size for p in params]
        n = sum(sizes)
        dtype = np.result_type(*[p.grad.dtype if p.grad is not None else p.dtype for p in params])
        if self._buffer is None or self._buffer.size != n + len(extras) or self._buffer.dtype != dtype:
            self._buffer = np.empty(n + len(extras), dtype=dtype)
        buf, off = self._buffer, 0
        for p, size in zip(params, sizes):
            buf[off:off + size] = 0 if p.grad is None else p.grad.reshape(-1)
            off += size
        buf[n:] = extras
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        buf[:n] /= dtype.type(self.size)
        off = 0
        for p, size in zip(params, sizes):
            if p.grad is not None:
                np.copyto(p.grad, buf[off:off + size].reshape(p.grad.shape))
            off += size
        return buf[n:].astype(np.float64)

    @contextlib.contextmanager
    def failing_together(self, collective=lambda e: False):
        """An exception that only this rank raises would leave the others waiting in a collective call
        for ever, so it ends the whole job: one line on stderr, then ``MPI.Abort``. Exceptions that
        ``collective(e)`` says every rank raises at the same point propagate as usual."""
        try:
            yield
        except BaseException as e:
            if collective(e):
                raise
            print(f"tinyllm: rank {self.rank} of {self.size} failed: {type(e).__name__}: {e}; ending all "
                  f"{self.size} processes", file=sys.stderr, flush=True)
            # Abort kills the launcher's I/O forwarding with the processes; on a loaded machine the line
            # above was lost unless the launcher got a moment to pass it on
            time.sleep(1.0)
            self.comm.Abort(1)


def _picklable(e):
    """``e`` if it can be rebuilt from its reduced form, as the other ranks will rebuild it from mpi4py's
    pickle, else a RuntimeError with its message."""
    try:
        copy.copy(e)  # copy rebuilds from __reduce_ex__ as unpickling does
        return e
    except Exception:  # noqa: BLE001
        return RuntimeError(str(e))


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_rank(w=None):
    """Threads each rank may use so that the ranks on one machine times their threads do not exceed its
    cores: cores // ranks on this machine, at least 1."""
    w = w or world()
    return max(1, available_cores() // w.local_size)


def set_threads_per_rank(w=None):
    """Limit numba's threads and every BLAS/OpenMP pool of this process to ``threads_per_rank()``: a
    process-wide change, which the CLI makes when it runs under MPI (several ranks each running a
    full-width thread pool would fight for the cores). Returns the thread count."""
    import numba
    from threadpoolctl import threadpool_limits
    n = threads_per_rank(w)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(limits=n)
    return n


# ------------------------------------------------------------------------------------ data streams
def shard_rng(seed, shard):
    """The batch stream of data shard ``shard``: shard 0 is ``default_rng(seed)`` (a one-process run's
    stream), shard j > 0 is the j-th child of the seed. Micro-batch k of rank r reads shard r*K + k, so
    one process with K micro-batches and K processes with one each see the same batches."""
    if shard == 0:
        return np.random.default_rng(seed)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(shard,)))


def eval_rng(seed, rank):
    """Rank ``rank``'s evaluation stream: rank 0's is a one-process run's ``default_rng(seed + 1)``."""
    if rank == 0:
        return np.random.default_rng(seed + 1)
    return np.random.default_rng(np.random.SeedSequence(seed + 1, spawn_key=(rank,)))


def dropout_seed(seed, rank):
    """The seed of rank ``rank``'s own generator for dropout and other noise once the model is built
    (rank 0 keeps the generator the model was initialised from, as one process does)."""
    return np.random.SeedSequence(seed, spawn_key=(0, rank))  # child 0 is no shard's stream: shard 0 is the seed
