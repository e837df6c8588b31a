"""`EvalResult`: one scoring method's accuracy and answer loss over held-out questions.

The record evaluation hands on: the sweep writes it as a run's `eval.json` and reads it into the
results row (`tokeff.sweep.engine`); `tokeff eval` prints one per method. The fields below are
the file's schema, written once; `read` names the file and the field when a key is missing or
unknown.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from tokeff import io
from tokeff.errors import UserError


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Accuracy of one scoring method over n questions, its uncertainty, and the answer loss."""

    method: str  # cloze, cloze_norm, cloze_token or letter (tokeff.eval.multiple_choice)
    accuracy: float
    stderr: float  # binomial sqrt(p(1-p)/n)
    n: int
    ci95: tuple[float, float]  # Wilson score interval
    chance: float  # expected accuracy of uniform guessing: mean of 1/len(choices)
    flops: int  # forward FLOPs of the shapes run for this method (evaluation, not training)
    loss: float | None = None  # cloze methods: mean NLL per token of the correct answers (nats)
    loss_tokens: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of `eval.json` (same keys, in field order; ci95 a list)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=io.json_default))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "eval") -> EvalResult:
        """The record of an `eval.json` object; a missing or unknown key is a UserError."""
        fields = dataclasses.fields(cls)
        required = [f.name for f in fields if f.default is dataclasses.MISSING]
        missing = [n for n in required if n not in data]
        if missing:
            raise UserError(f"{source}: missing field {missing[0]!r} (not a tokeff evaluation?)")
        unknown = sorted(set(data) - {f.name for f in fields})
        if unknown:
            raise UserError(f"{source}: unknown field {unknown[0]!r}")
        values = dict(data)
        values["ci95"] = tuple(values["ci95"])
        return cls(**values)

    def write(self, path: str | os.PathLike) -> None:
        """Write `eval.json` atomically."""
        io.write_json(os.fspath(path), self.as_dict())

    @classmethod
    def read(cls, path: str | os.PathLike) -> EvalResult | None:
        """The evaluation at `path`, or None when there is none yet."""
        path = os.fspath(path)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return cls.from_dict(json.load(f), source=path)
