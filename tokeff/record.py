"""`JsonRecord`: a frozen dataclass that is also the schema of the JSON file it is saved as.

The records that cross stages (`tokeff.train.summary.RunSummary` as `summary.json`,
`tokeff.eval.result.EvalResult` as `eval.json`) inherit it, so writing, reading and the
refusal of a file whose keys do not match are written once. A field with a default may be
missing from a file written before the field existed; any other missing key, and any unknown
key, is a UserError naming the file and the key (a renamed key fails where it is read, not three
hops later).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, TypeVar

from tokeff import io
from tokeff.errors import UserError

R = TypeVar("R", bound="JsonRecord")


class JsonRecord:
    """Mixin for a frozen dataclass saved as one JSON object (keys = field names, in order)."""

    kind = "record"  # what the file holds, for error messages ("run summary", "evaluation")

    def as_dict(self) -> dict[str, Any]:
        """The JSON object: every field, in field order, as plain JSON values (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=io.json_default))

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any], *, source: str = "record") -> R:
        """The record of a JSON object; a missing required key or an unknown key is a UserError."""
        fields = dataclasses.fields(cls)
        names = [f.name for f in fields]
        missing = [f.name for f in fields
                   if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise UserError(f"{source}: missing field {missing[0]!r} (not a tokeff {cls.kind}?)")
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise UserError(f"{source}: unknown field {unknown[0]!r}")
        return cls(**cls._from_json({n: data[n] for n in names if n in data}))

    @classmethod
    def _from_json(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Field values as read from JSON, converted where JSON has no such type (override)."""
        return values

    def write(self, path: str | os.PathLike) -> None:
        """Write the JSON file atomically."""
        io.write_json(os.fspath(path), self.as_dict())

    @classmethod
    def read(cls: type[R], path: str | os.PathLike) -> R | None:
        """The record saved at `path`, or None when there is none yet."""
        path = os.fspath(path)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return cls.from_dict(json.load(f), source=path)
