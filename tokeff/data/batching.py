"""Batches for training: padded (length buckets) or packed (segment ids), FLOPs as computed.

An example of L tokens becomes L - 1 (input, target) positions: inputs ids[:-1], targets
ids[1:], loss mask loss_mask[1:] (the mask marks the predicted token). Shifting per example
means no position ever predicts across an example boundary.

Layouts:
- "padded": one example per row; rows are padded to the smallest bucket length that holds
  the longest example of the batch. Examples are sorted by length inside windows of
  `sort_window` batches so a batch holds similar lengths (little padding) while the epoch
  stays shuffled; few bucket lengths means few distinct shapes to compile.
- "packed": rows of a fixed `row_len`, each holding several examples (first fit among the
  rows of the batch being built). `segment_ids` number the examples of a row 1..k (0 =
  padding) and positions restart at 0 per example: the model attends only within a
  segment (tokeff.models.Transformer).

`Batch.flops` is `tokeff.flops.step_training_flops(config, rows, row_len)`: what the step
computes, padding and cross-segment attention entries included. `useful_tokens` /
`useful_flops` (each example alone at its own length) are recorded beside it.

The stream is infinite over epochs, reshuffled per epoch from (seed, epoch), and addressable
by a global batch index: `stream.iterate(start=k)` resumes exactly where batch k was.
The last batch of an epoch may have fewer rows (rounded up to `rows_multiple` with empty
rows, e.g. the data-parallel device count). `Batch.take_rows(k)` cuts a batch to its first
k rows, for a final step that must not overrun the FLOP budget.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np

from tokeff.errors import UserError

LAYOUTS = ("padded", "packed")


@dataclasses.dataclass(frozen=True)
class Batch:
    tokens_BxS: np.ndarray  # int32
    targets_BxS: np.ndarray  # int32
    loss_mask_BxS: np.ndarray  # float32, 1.0 where the target is trained on
    segment_ids_BxS: np.ndarray  # int32, 0 = padding, 1..k = example within the row
    positions_BxS: np.ndarray  # int32, restart at 0 per example
    example_ids: np.ndarray  # int64[n_examples] into the stream's examples, row-major
    config: object  # ModelConfig the FLOPs are counted for
    index: int = 0  # global batch position in the stream
    epoch: int = 0

    @property
    def rows(self) -> int:
        return int(self.tokens_BxS.shape[0])

    @property
    def row_len(self) -> int:
        return int(self.tokens_BxS.shape[1])

    @property
    def n_examples(self) -> int:
        return int(self.example_ids.shape[0])

    @property
    def computed_tokens(self) -> int:
        return self.rows * self.row_len

    @property
    def useful_tokens(self) -> int:
        """Positions holding a real (input, target) pair."""
        return int(np.count_nonzero(self.segment_ids_BxS))

    @property
    def loss_tokens(self) -> int:
        return int(self.loss_mask_BxS.sum())

    @property
    def flops(self) -> int:
        """Training FLOPs of the layout computed: [rows, row_len], padding included."""
        from tokeff.flops import step_training_flops

        return step_training_flops(self.config, self.rows, self.row_len)

    @property
    def useful_flops(self) -> int:
        """Training FLOPs if every example ran alone at its own length."""
        from tokeff.flops import example_training_flops

        return sum(example_training_flops(self.config, int(n)) for n in self.segment_lengths())

    def segment_lengths(self) -> np.ndarray:
        """Positions of each example (L - 1 for an example of L tokens), row-major."""
        out = []
        for row in self.segment_ids_BxS:
            ids, counts = np.unique(row[row > 0], return_counts=True)
            out.extend(counts[np.argsort(ids)])
        return np.asarray(out, dtype=np.int64)

    def take_rows(self, k: int) -> "Batch":
        """The first k rows (and their examples) as a batch of its own."""
        if not 1 <= k <= self.rows:
            raise UserError(f"rows: take_rows({k}) on a batch of {self.rows} rows")
        n_kept = int(sum(int(row.max(initial=0)) for row in self.segment_ids_BxS[:k]))
        return dataclasses.replace(
            self, tokens_BxS=self.tokens_BxS[:k], targets_BxS=self.targets_BxS[:k],
            loss_mask_BxS=self.loss_mask_BxS[:k], segment_ids_BxS=self.segment_ids_BxS[:k],
            positions_BxS=self.positions_BxS[:k], example_ids=self.example_ids[:n_kept])

    def summary(self) -> dict:
        return {"index": self.index, "epoch": self.epoch, "rows": self.rows,
                "row_len": self.row_len, "n_examples": self.n_examples,
                "useful_tokens": self.useful_tokens, "computed_tokens": self.computed_tokens,
                "loss_tokens": self.loss_tokens, "flops": self.flops}


def default_buckets(max_len: int, smallest: int = 16) -> list[int]:
    """Powers of two from `smallest`, ending with max_len itself."""
    out, b = [], smallest
    while b < max_len:
        out.append(b)
        b *= 2
    return out + [max_len]


class BatchStream:
    """Deterministic, resumable batches over epochs of tokenized examples.

    examples: `TokenizedExample`s (input_ids, loss_mask); config: the ModelConfig whose
    context bounds row lengths and whose FLOPs are charged. row_len_field: what the user called
    `row_len` (`data.row_len`), so a row longer than the context is refused under that name.
    """

    def __init__(self, examples: Sequence, config, *, batch_size: int, layout: str = "packed",
                 row_len: int | None = None, buckets: Sequence[int] | None = None,
                 seed: int = 0, rows_multiple: int = 1, sort_window: int = 16, row_len_field: str = "row_len"):
        if layout not in LAYOUTS:
            raise UserError(f"layout: must be padded or packed, got {layout!r}")
        if batch_size < 1 or rows_multiple < 1:
            raise UserError(f"batch_size: must be >= 1, got {batch_size}")
        if not examples:
            raise UserError("dataset: empty selection, nothing to batch")
        self.examples = examples
        self.config = config
        self.batch_size = batch_size
        self.layout = layout
        self.seed = seed
        self.rows_multiple = rows_multiple
        self.sort_window = max(1, sort_window)
        self.positions = np.asarray([len(e) - 1 for e in examples], dtype=np.int64)
        if self.positions.min() < 1:
            raise UserError("dataset: an example has fewer than 2 tokens (nothing to predict)")
        context = int(config.max_seq_len)
        longest = int(self.positions.max())
        if row_len is not None and row_len > context:
            raise UserError(f"{row_len_field}: {row_len} exceeds the model context of {context} tokens")
        limit = row_len or context
        if longest > limit:
            raise UserError(f"dataset: an example needs {longest} positions, beyond "
                            f"{'row_len' if row_len else 'the model context'} {limit}; "
                            "select with strategy truncate")
        if layout == "packed":
            self.row_len = row_len or min(context, _next_pow2(longest))
            self.buckets = [self.row_len]
        else:
            self.buckets = sorted(set(buckets)) if buckets else default_buckets(limit)
            if self.buckets[-1] < longest:
                raise UserError(f"buckets: the largest bucket {self.buckets[-1]} cannot hold an "
                                f"example of {longest} positions")
            self.row_len = None
        self._plans: dict[int, list[list[list[int]]]] = {}

    def epoch_plan(self, epoch: int) -> list[list[list[int]]]:
        """Batches of rows of example indices for one epoch (cached)."""
        if epoch not in self._plans:
            if len(self._plans) > 4:
                self._plans.pop(min(self._plans))
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))
            self._plans[epoch] = (self._plan_packed(order) if self.layout == "packed"
                                  else self._plan_padded(order, epoch))
        return self._plans[epoch]

    def batches_per_epoch(self, epoch: int = 0) -> int:
        return len(self.epoch_plan(epoch))

    def __iter__(self) -> Iterator[Batch]:
        return self.iterate(0)

    def iterate(self, start: int = 0) -> Iterator[Batch]:
        """Batches from global position `start` on, forever."""
        epoch, j = self._locate(start)
        position = start
        while True:
            plan = self.epoch_plan(epoch)
            for rows in plan[j:]:
                yield self._make_batch(rows, position, epoch)
                position += 1
            epoch, j = epoch + 1, 0

    def batch_at(self, position: int) -> Batch:
        epoch, j = self._locate(position)
        return self._make_batch(self.epoch_plan(epoch)[j], position, epoch)

    def _locate(self, position: int) -> tuple[int, int]:
        if position < 0:
            raise UserError(f"position: must be >= 0, got {position}")
        epoch = 0
        while position >= (n := self.batches_per_epoch(epoch)):
            position -= n
            epoch += 1
        return epoch, position

    def _plan_padded(self, order: np.ndarray, epoch: int) -> list[list[list[int]]]:
        window = self.batch_size * self.sort_window
        batches = []
        for w in range(0, order.size, window):
            chunk = order[w:w + window]
            chunk = chunk[np.argsort(self.positions[chunk], kind="stable")]
            batches += [[[int(i)] for i in chunk[b:b + self.batch_size]]
                        for b in range(0, chunk.size, self.batch_size)]
        # Sorting made lengths rise within each window; shuffle batch order so they do not.
        full = [b for b in batches if len(b) == self.batch_size]
        partial = [b for b in batches if len(b) < self.batch_size]
        rng = np.random.default_rng([self.seed, epoch, 1])
        return [full[i] for i in rng.permutation(len(full))] + partial

    def _plan_packed(self, order: np.ndarray) -> list[list[list[int]]]:
        batches, rows, room = [], [], []
        for i in order.tolist():
            n = int(self.positions[i])
            slot = next((r for r, free in enumerate(room) if free >= n), None)
            if slot is None:
                if len(rows) == self.batch_size:
                    batches.append(rows)
                    rows, room = [], []
                rows.append([])
                room.append(self.row_len)
                slot = len(rows) - 1
            rows[slot].append(i)
            room[slot] -= n
        batches.append(rows)
        return batches

    def _make_batch(self, rows: list[list[int]], index: int, epoch: int) -> Batch:
        n_rows = -(-len(rows) // self.rows_multiple) * self.rows_multiple
        if self.layout == "packed":
            row_len = self.row_len
        else:
            longest = max(int(self.positions[r[0]]) for r in rows)
            row_len = next(b for b in self.buckets if b >= longest)
        tokens = np.zeros((n_rows, row_len), np.int32)
        targets = np.zeros((n_rows, row_len), np.int32)
        mask = np.zeros((n_rows, row_len), np.float32)
        segments = np.zeros((n_rows, row_len), np.int32)
        positions = np.zeros((n_rows, row_len), np.int32)
        for r, members in enumerate(rows):
            at = 0
            for seg, i in enumerate(members, start=1):
                ids, loss = self.examples[i].input_ids, self.examples[i].loss_mask
                n = len(ids) - 1
                tokens[r, at:at + n] = ids[:-1]
                targets[r, at:at + n] = ids[1:]
                mask[r, at:at + n] = loss[1:]
                segments[r, at:at + n] = seg
                positions[r, at:at + n] = np.arange(n)
                at += n
        example_ids = np.asarray([i for members in rows for i in members], dtype=np.int64)
        return Batch(tokens, targets, mask, segments, positions, example_ids, self.config,
                     index=index, epoch=epoch)


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())
