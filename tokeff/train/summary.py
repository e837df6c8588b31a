"""`RunSummary`: what a finished (or stopped) training run hands on, and its `summary.json`.

Training makes it (`tokeff.train.loop.train`); the sweep reads it into the results row
(`tokeff.sweep.engine`), `tokeff train` prints it. The fields below are the file's schema,
written once: `summary.json` is `as_dict()`, and reading one back (`read`) names the file and
the field when a key is missing or unknown, instead of failing three hops later.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tokeff.record import JsonRecord


@dataclasses.dataclass(frozen=True)
class RunSummary(JsonRecord):
    """One training run's outcome: what it trained on, what it spent, how it ran."""

    kind = "run summary"

    status: str  # "completed", or why the loop stopped early ("preempted", ...)
    model: str  # the config's model spec
    params: int
    non_embedding_params: int
    dtype: str
    dataset: str  # the config's data.source
    strategy: str
    seed: int
    n_examples: int  # examples in the training set
    avg_tokens: float  # their mean length
    unique_tokens: int  # distinct training tokens the steps actually read
    dataset_tokens: int  # tokens in the training set
    tokens_seen: int
    epochs: float  # tokens_seen / dataset_tokens
    budget_flops: int
    budget_tokens: int
    budget_epochs: int
    flops_used: int
    steps: int
    planned_steps: int
    final_loss: float | None
    wall_seconds: float
    compile_seconds: float
    flops_per_second: float | None  # training FLOPs over the seconds spent stepping
    mesh: dict[str, int]  # axis name -> size
    devices: int
    device_kind: str
    batch_granularity_rows: int  # a batch's rows are a multiple of this (the mesh's batch shards)
    selection: dict[str, Any]  # the data selection's own record (tokeff.train.dataset)
    # Fields with defaults: a summary.json written before they existed still reads.
    attention: str = "reference"  # the attention path that ran (tokeff.models.attention)
    mfu: float | None = None  # flops_per_second over the devices' peak (None where unknown: CPUs)

    @property
    def completed(self) -> bool:
        return self.status == "completed"
