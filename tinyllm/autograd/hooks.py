"""``RemovableHandle``: what every ``register_*hook`` returns (torch's ``torch.utils.hooks``).

A hook lives in an ordered dict under the handle's id; ``handle.remove()`` deletes it (and its entries
in any companion dicts, such as which forward hooks take kwargs). The handle holds the dicts only
weakly, so it never keeps a module or tensor alive, and removing twice, or after the owner is gone,
does nothing. ``with t.register_hook(fn): ...`` removes the hook when the block ends.
"""
import itertools
import weakref

_ids = itertools.count()


class RemovableHandle:
    def __init__(self, hooks_dict, *, extra_dict=None):
        self.hooks_dict_ref = weakref.ref(hooks_dict)
        self.id = next(_ids)
        extra = [extra_dict] if isinstance(extra_dict, dict) else list(extra_dict or ())
        self.extra_dict_ref = tuple(weakref.ref(d) for d in extra)

    def remove(self):
        for ref in (self.hooks_dict_ref,) + self.extra_dict_ref:
            d = ref()
            if d is not None:
                d.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()

    def __repr__(self):
        return f"<RemovableHandle id={self.id}>"
