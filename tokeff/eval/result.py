"""`EvalResult`: one scoring method's accuracy and answer loss over held-out questions.

The record evaluation hands on: the sweep writes it as a run's `eval.json` and reads it into the
results row (`tokeff.sweep.engine`); `tokeff eval` prints one per method. The fields below are
the file's schema, written once; `read` names the file and the field when a key is missing or
unknown.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tokeff.record import JsonRecord


@dataclasses.dataclass(frozen=True)
class EvalResult(JsonRecord):
    """Accuracy of one scoring method over n questions, its uncertainty, and the answer loss."""

    kind = "evaluation"

    method: str  # cloze, cloze_norm, cloze_token or letter (tokeff.eval.multiple_choice)
    accuracy: float
    stderr: float  # binomial sqrt(p(1-p)/n)
    n: int
    ci95: tuple[float, float]  # Wilson score interval
    chance: float  # expected accuracy of uniform guessing: mean of 1/len(choices)
    flops: int  # forward FLOPs of the shapes run for this method (evaluation, not training)
    loss: float | None = None  # cloze methods: mean NLL per token of the correct answers (nats)
    loss_tokens: int | None = None

    @classmethod
    def _from_json(cls, values: dict[str, Any]) -> dict[str, Any]:
        return {**values, "ci95": tuple(values["ci95"])}
