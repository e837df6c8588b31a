"""The training budget: FLOPs (primary), optionally tokens and epochs, and what each step costs.

Every step is charged the analytic FLOPs of the [rows, row_len] batch it actually runs
(`Batch.flops`, from `tokeff.flops.step_training_flops`: pads and masked attention entries are
computed, so they are charged). When the next batch does not fit what is left, its largest
row prefix that fits is run instead. Rows come in multiples of `granularity` (the number of
batch shards of the mesh: every device must get the same number of rows), so a run ends less
than `granularity` rows' FLOPs short of its budget; on one device that is less than one row,
i.e. one example in the padded layout.
"""

from __future__ import annotations

import dataclasses

from tokeff.errors import UserError
from tokeff.flops import check_budget


@dataclasses.dataclass(frozen=True)
class Budget:
    """Limits of one run; a run stops at the first one reached. 0 means "no limit" for tokens/epochs."""

    flops: int
    tokens: int = 0  # example tokens seen (len(example) each, as composition counts N·L)
    epochs: int = 0

    def __post_init__(self):
        check_budget(self.flops, "budget.flops")
        if self.tokens < 0 or self.epochs < 0:
            raise UserError("budget.tokens/budget.epochs: must be >= 0 (0 = no limit)")


@dataclasses.dataclass
class Spent:
    """What a run has used so far (checkpointed, so a resumed run charges nothing twice)."""

    flops: int = 0
    tokens: int = 0  # example tokens (len(example) each, bos/eos included; padding excluded)
    steps: int = 0
    position: int = 0  # global batch index of the next batch in the stream

    def charge(self, batch, tokens: int) -> None:
        self.flops += int(batch.flops)
        self.tokens += int(tokens)
        self.steps += 1
        self.position += 1


def fit_to_budget(batch, budget: Budget, spent: Spent, granularity: int, tokens_of):
    """The batch to run next: `batch`, its largest prefix of whole shards that fits, or None (done).

    `tokens_of(batch)` counts a batch's example tokens (for the token budget).
    """
    if budget.epochs and batch.epoch >= budget.epochs:
        return None
    rows = batch.rows
    while rows > 0:
        part = batch if rows == batch.rows else batch.take_rows(rows)
        if spent.flops + part.flops <= budget.flops and (
                not budget.tokens or spent.tokens + tokens_of(part) <= budget.tokens):
            return part
        rows = (rows - 1) // granularity * granularity
    return None


def check_minimum(first_batch, budget: Budget, granularity: int) -> None:
    """A budget too small for even one step of `granularity` rows is a user error naming the minimum."""
    smallest = first_batch.take_rows(min(granularity, first_batch.rows))
    if smallest.flops > budget.flops:
        raise UserError(
            f"budget.flops: {budget.flops:.4g} is less than one step of {smallest.rows} row(s) "
            f"({smallest.flops} FLOPs); the minimum budget is {smallest.flops}"
        )
