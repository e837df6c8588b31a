"""`evaluate`: score a model on multiple-choice questions by one or more methods, with the answer
loss and the evaluation FLOPs counted once — what `tokeff eval` prints, callable from a notebook.

The three cloze methods share one forward pass (its FLOPs count once); letter scoring is a second
pass. The answer loss comes from the cloze pass when there is one, else from a held-out loss
pass over the correct answers (`tokeff.eval.loss`), whose FLOPs are added.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from tokeff.data.prompts import PromptFormat
from tokeff.eval.loss import heldout_loss
from tokeff.eval.multiple_choice import CLOZE_METHODS, METHODS, MCResult, evaluate_methods


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Every method's result over the same questions, the answer loss, and what it all cost."""

    results: dict[str, MCResult]  # method -> result, in the order asked
    loss: float  # mean NLL per answer token of the correct choices (nats)
    loss_tokens: int
    flops: int  # forward FLOPs of every pass run (padding included; not a training budget)

    @property
    def n(self) -> int:
        return next(iter(self.results.values())).n

    @property
    def chance(self) -> float:
        return next(iter(self.results.values())).chance


def evaluate(
    loaded,
    records: Iterable[Mapping],
    methods: str | Sequence[str] = "cloze",
    *,
    prompt_format: str | PromptFormat = "qa",
    exemplars=None,
    bos_id: int | None = None,
    batch_size: int = 16,
    mesh=None,
    progress: bool = False,
) -> Evaluation:
    """Score `records` by `methods` ("all", one method name, or several), plus the answer loss.

    Arguments as `tokeff.eval.multiple_choice.evaluate_methods`.
    """
    if isinstance(methods, str):
        methods = METHODS if methods == "all" else (methods,)
    records = list(records)
    common = dict(prompt_format=prompt_format, exemplars=exemplars, bos_id=bos_id, batch_size=batch_size,
                  mesh=mesh, progress=progress)
    results = evaluate_methods(loaded, records, tuple(methods), **common)
    cloze = next((r for m, r in results.items() if m in CLOZE_METHODS), None)
    flops = (cloze.flops if cloze else 0) + (results["letter"].flops if "letter" in results else 0)
    if cloze is not None:
        return Evaluation(results, cloze.loss, cloze.loss_tokens, flops)
    held = heldout_loss(loaded, records, **common)
    return Evaluation(results, held.loss, held.n_tokens, flops + held.flops)
