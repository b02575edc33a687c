"""Whether ops record a graph: ``no_grad``, ``enable_grad``, ``set_grad_enabled``, as in torch."""
import functools

enabled = True  # read by Function.apply on every op


def is_grad_enabled():
    return enabled


class set_grad_enabled:
    """Turn graph recording on or off: as a call (``tl.set_grad_enabled(False)``), a context manager
    (the previous mode comes back on exit) or a decorator, as in torch."""

    def __init__(self, mode):
        global enabled
        self.previous, self.mode = enabled, bool(mode)
        enabled = self.mode

    def __enter__(self):
        pass

    def __exit__(self, *exc):
        global enabled
        enabled = self.previous

    def __call__(self, fn):
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            global enabled
            previous, enabled = enabled, mode
            try:
                return fn(*args, **kwargs)
            finally:
                enabled = previous

        return wrapper


class no_grad(set_grad_enabled):
    """``with tl.no_grad():``, ``@tl.no_grad()`` or ``@tl.no_grad``: ops record no graph inside."""

    _mode = False

    def __new__(cls, fn=None):
        if fn is not None and callable(fn):  # used bare, as @tl.no_grad
            return cls()(fn)
        return super().__new__(cls)

    def __init__(self, fn=None):
        self.mode = self._mode  # the mode switches on __enter__, not at construction

    def __enter__(self):
        global enabled
        self.previous, enabled = enabled, self.mode


class enable_grad(no_grad):
    _mode = True
