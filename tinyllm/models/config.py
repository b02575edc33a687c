"""What every model config dataclass shares: a JSON-friendly dict and back (unknown keys ignored, so a
run written by a newer version still loads)."""
from dataclasses import asdict, fields


class ConfigDict:
    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
