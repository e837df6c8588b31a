"""Log-probabilities of chosen tokens under a model, run in fixed bucketed shapes, without waste.

Every evaluation here (cloze choices, letter scoring, held-out loss) reduces to running the
model over rows of tokens and reading log-probabilities at chosen positions. Two things keep
that cheap:

- **One row per shared prompt.** Sequences whose unscored beginnings (the prompt) are equal are
  laid out in one row: the prompt once, then every continuation (answer choice) after it. A
  block mask lets each continuation attend to the prompt and to itself only, and positions
  restart after the prompt, so each continuation sees exactly what it would alone. A four-choice
  question costs one prompt, not four. Short questions then share rows (`pack_rows`): each
  one is a group of its own, positions restart per group, and the mask keeps groups apart.
- **Logits only where they are read.** The hidden states of the positions that predict a scored
  token are gathered and only they are unembedded: never [S, vocab] for prompt positions.

Rows are sorted by length and right-padded to a short ladder of bucket lengths with a fixed
row count (as is the number of read positions), so XLA compiles once per bucket pair rather
than once per question. The row count spreads the rows evenly over the fewest batches
(`balanced_rows`), so no batch is mostly padding.

The parameters are an argument of the jitted function, not constants folded into it, so the
same code runs sharded as in training: given a `mesh` (from `tokeff.train.mesh.make_mesh`),
parameters are placed by their logical axis names (`tokeff.train.sharding`) and rows are
split over the batch axes (the row count is rounded up to a multiple of their size). Without a
mesh everything runs on the default device.

FLOPs are those of the shapes actually run (pad rows, pad tokens and read positions included),
from `tokeff.flops.eval_forward_flops`: evaluation compute is recorded, never charged to training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P
from tqdm.auto import tqdm

from tokeff import flops as flops_lib
from tokeff.devices import backend_jit
from tokeff.errors import UserError
from tokeff.models.config import ModelConfig

MIN_BUCKET = 16
PACKED_ROW = 128  # tokens per scoring row that several short questions share


def bucket_length(n: int) -> int:
    """Smallest length on the ladder 16, 24, 32, 48, 64, 96, ... that holds n tokens.

    Powers of two and 1.5x them: padding wastes at most a third of a row, and a few thousand
    questions of any length compile a handful of shapes.
    """
    size = MIN_BUCKET
    while size < n:
        size = size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3
    return size


def _block_mask(groups_BxS: jax.Array, blocks_BxS: jax.Array) -> jax.Array:
    """[B, S, S]: causal, within one group (one prompt and its continuations, several groups
    packed per row), and a key is visible if it is in the group's prompt (block 0) or in the
    query's own block. Padding (group -1) sees only padding, so no softmax row is empty."""
    s = blocks_BxS.shape[1]
    causal_SxS = jnp.tril(jnp.ones((s, s), jnp.bool_))
    key_BxSxS, query_BxSxS = blocks_BxS[:, None, :], blocks_BxS[:, :, None]
    same_group = groups_BxS[:, None, :] == groups_BxS[:, :, None]
    visible = (key_BxSxS == query_BxSxS) | ((key_BxSxS == 0) & (query_BxSxS >= 0))
    return causal_SxS & same_group & visible


def _read_logprobs(model, tokens_BxS, positions_BxS, groups_BxS, blocks_BxS, read_BxN, targets_BxN):
    """log p(targets | the hidden state at positions `read`), float32 [B, N]."""
    mask_BxSxS = _block_mask(groups_BxS, blocks_BxS)
    hidden_BxSxD = model.hidden_states(tokens_BxS, positions_BxS=positions_BxS, mask_BxSxS=mask_BxSxS)
    picked_BxNxD = jnp.take_along_axis(hidden_BxSxD, read_BxN[..., None], axis=1)
    logits_BxNxV = model.logits(picked_BxNxD).astype(jnp.float32)
    target_BxN = jnp.take_along_axis(logits_BxNxV, targets_BxN[..., None], axis=-1)[..., 0]
    return target_BxN - jax.nn.logsumexp(logits_BxNxV, axis=-1)


@backend_jit(static_argnames="graphdef")
def _scored_sums(graphdef, state, tokens_BxS, positions_BxS, groups_BxS, blocks_BxS, read_BxN, targets_BxN,
                 owner_BxN):
    """Per row, the sums of read log-probabilities by owner slot [B, N] (slot -1: not scored)."""
    logprob_BxN = _read_logprobs(nnx.merge(graphdef, state), tokens_BxS, positions_BxS, groups_BxS, blocks_BxS,
                                 read_BxN, targets_BxN)
    # where, not multiply: a pad slot's value may be anything, NaN included.
    logprob_BxN = jnp.where(owner_BxN >= 0, logprob_BxN, 0.0)
    n = owner_BxN.shape[1]
    slots_N = jnp.arange(n)
    return jnp.sum(jnp.where(owner_BxN[:, None, :] == slots_N[None, :, None], logprob_BxN[:, None, :], 0.0), -1)


@backend_jit(static_argnames="graphdef")
def _candidate_logprobs(graphdef, state, tokens_BxS, last_B, candidates_K):
    model = nnx.merge(graphdef, state)
    s = tokens_BxS.shape[1]
    positions_BxS = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), tokens_BxS.shape)
    hidden_BxSxD = model.hidden_states(tokens_BxS, positions_BxS=positions_BxS)
    last_Bx1xD = jnp.take_along_axis(hidden_BxSxD, last_B[:, None, None], axis=1)
    last_BxV = model.logits(last_Bx1xD).astype(jnp.float32)[:, 0]
    return jax.nn.log_softmax(last_BxV, axis=-1)[:, candidates_K]


@dataclasses.dataclass
class _SharedRow:
    """One row: a prompt and the continuations of every sequence that starts with it."""

    prompt: np.ndarray
    members: list[int]  # indices of the sequences
    inputs: list[np.ndarray]  # per member: its continuation's tokens that feed a prediction
    targets: list[np.ndarray]  # per member: the scored tokens
    offsets: list[np.ndarray]  # per member: the continuation index predicting each target (-1: last prompt token)

    @property
    def length(self) -> int:
        return len(self.prompt) + sum(len(x) for x in self.inputs)

    @property
    def n_read(self) -> int:
        return sum(len(t) for t in self.targets)


def _shared_rows(sequences: Sequence[np.ndarray], masks: Sequence[np.ndarray], max_len: int) -> list[_SharedRow]:
    """Group sequences by their prompt (the tokens before the first scored one), in first-seen
    order, starting another row of the same prompt when one would outgrow `max_len`. A
    continuation keeps its tokens up to its last scored one, less that last one: the last
    scored token is predicted but never fed."""
    rows: list[_SharedRow] = []
    open_rows: dict[bytes, _SharedRow] = {}
    for i, (seq, mask) in enumerate(zip(sequences, masks)):
        scored = np.flatnonzero(mask)
        if not scored.size:
            continue
        seq = np.asarray(seq, np.int32)
        first, last = int(scored[0]), int(scored[-1])
        prompt, key = seq[:first], seq[:first].tobytes()
        row = open_rows.get(key)
        if row is None or row.length + last - first > max_len:
            row = open_rows[key] = _SharedRow(prompt, [], [], [], [])
            rows.append(row)
        row.members.append(i)
        row.inputs.append(seq[first:last])
        row.targets.append(seq[scored])
        row.offsets.append(scored - first - 1)
    return rows


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of items packed into rows of `capacity` tokens, first-fit decreasing.

    Short questions would otherwise each take a row padded to the bucket of the batch's longest:
    packed, 100 MMLU questions of about 50 tokens fill about 45 rows of 128 instead of 100 rows
    of up to 96. The block mask keeps every group apart, so the scores do not change.
    """
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda j: -int(lengths[j])):
        need = int(lengths[i])
        for b, free in enumerate(room):
            if need <= free:
                bins[b].append(i)
                room[b] -= need
                break
        else:
            bins.append([i])
            room.append(capacity - need)
    return bins


def balanced_rows(n: int, batch_size: int, shards: int = 1) -> int:
    """Rows per batch: as few batches as `batch_size` allows, holding the n rows evenly.

    Every batch has one row count (one compiled shape), and a last batch padded from a few rows
    up to `batch_size` would waste up to a batch of compute: 100 questions in batches of 32
    would run 128 rows, in 4 batches of 25 they run 100. Rounded up to a multiple of `shards`.
    """
    n_batches = max(1, -(-n // max(1, batch_size)))
    rows = -(-max(n, 1) // n_batches)
    return -(-rows // shards) * shards


def _batches(lengths: np.ndarray, batch_size: int, max_len: int):
    """Yield (row_len, indices): rows longest first in batches of `batch_size`, each padded to the
    bucket of its longest row. A too-large shape fails first."""
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield min(bucket_length(int(lengths[idx[0]])), max_len), idx


def _check_fits(lengths: np.ndarray, config: ModelConfig) -> None:
    too_long = np.flatnonzero(lengths > config.max_seq_len)
    if too_long.size:
        i = int(too_long[0])
        raise UserError(
            f"records: item {i} needs {int(lengths[i])} tokens, beyond the model context "
            f"({config.max_seq_len}); {too_long.size} item(s) too long"
        )


def _put(x: np.ndarray, sharding):
    return jax.device_put(x, sharding) if sharding is not None else jnp.asarray(x)


def _place(model: nnx.Module, mesh, batch_size: int, n_rows: int):
    """(graphdef, state, row sharding, rows per batch) for running `n_rows` rows of `model` on
    `mesh` (or not), in batches of at most about `batch_size` rows (`balanced_rows`)."""
    graphdef, state = nnx.split(model)
    if mesh is None:
        return graphdef, state, None, balanced_rows(n_rows, batch_size)
    # Imported here: the trainer evaluates with this module, so a top-level import would cycle.
    from tokeff.train.mesh import BATCH_AXES, batch_shards
    from tokeff.train.sharding import state_shardings

    state = jax.device_put(state, state_shardings(state, mesh))
    rows = balanced_rows(n_rows, batch_size, batch_shards(mesh))
    return graphdef, state, NamedSharding(mesh, P(BATCH_AXES)), rows


def sequence_logprobs(
    model: nnx.Module,
    config: ModelConfig,
    sequences: Sequence[np.ndarray],
    scored: Sequence[np.ndarray],
    *,
    batch_size: int = 16,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Sum of log p(token | tokens before it) over the scored tokens of each sequence.

    `scored[i]` is a bool mask aligned with `sequences[i]` (True = this token is scored); the
    first token has no context and must not be scored. Returns (logprob_sum[n], n_scored[n],
    forward FLOPs run).
    """
    n = len(sequences)
    masks = [np.asarray(m, dtype=bool) for m in scored]
    if any(m[0] for m in masks if m.size):
        raise ValueError("scored: the first token of a sequence has no context to score it from")
    # The last token's logits predict nothing scored: a sequence alone needs len - 1 positions.
    _check_fits(np.array([len(s) - 1 for s in sequences], dtype=np.int64), config)
    groups = _shared_rows(sequences, masks, config.max_seq_len)
    lengths = np.array([g.length for g in groups], dtype=np.int64)
    capacity = min(max(PACKED_ROW, bucket_length(int(lengths.max()))), config.max_seq_len) if groups else 0
    rows = [[groups[i] for i in packed] for packed in pack_rows(lengths, capacity)]
    graphdef, state, data_sharding, batch_size = _place(model, mesh, batch_size, len(rows))
    sums, total_flops, pending = np.zeros(n, np.float64), 0, []
    row_lengths = np.array([sum(g.length for g in row) for row in rows], dtype=np.int64)
    plan = list(_batches(row_lengths, batch_size, config.max_seq_len)) if rows else []
    for row_len, idx in tqdm(plan, desc="scoring", unit="batch", disable=not progress):
        batch_rows = [rows[i] for i in idx]
        n_read = bucket_length(max(sum(g.n_read for g in row) for row in batch_rows))
        arrays = _layout(batch_rows, batch_size, row_len, n_read)
        out = _scored_sums(graphdef, state, *(_put(a, data_sharding) for a in arrays))
        pending.append((batch_rows, out))  # dispatch everything before the first device->host copy
        total_flops += flops_lib.eval_forward_flops(config, batch_size, row_len, n_read)
    for batch_rows, out in pending:
        out = np.asarray(out)
        for r, row in enumerate(batch_rows):
            members = [m for g in row for m in g.members]
            sums[members] = out[r, : len(members)]
    return sums, np.array([int(m[1:].sum()) for m in masks], np.int64), total_flops


def _layout(batch_rows: list[list[_SharedRow]], batch_size: int, row_len: int, n_read: int):
    """The device arrays of one batch of packed rows: tokens, positions, groups, blocks [B, S];
    read positions, targets and owners (member slot, -1 for padding) [B, N]."""
    tokens = np.zeros((batch_size, row_len), np.int32)
    positions = np.zeros((batch_size, row_len), np.int32)
    groups = np.full((batch_size, row_len), -1, np.int32)
    blocks = np.full((batch_size, row_len), -1, np.int32)
    read = np.zeros((batch_size, n_read), np.int32)
    targets = np.zeros((batch_size, n_read), np.int32)
    owner = np.full((batch_size, n_read), -1, np.int32)
    for r, row in enumerate(batch_rows):
        at, slot, member = 0, 0, 0
        for g, group in enumerate(row):
            p, start = len(group.prompt), at
            tokens[r, at:at + p], positions[r, at:at + p], blocks[r, at:at + p] = group.prompt, np.arange(p), 0
            at += p
            for k, (inputs, tgt, offsets) in enumerate(zip(group.inputs, group.targets, group.offsets)):
                m = len(inputs)
                tokens[r, at:at + m], positions[r, at:at + m], blocks[r, at:at + m] = inputs, p + np.arange(m), k + 1
                read[r, slot:slot + len(tgt)] = np.where(offsets < 0, start + p - 1, at + offsets)
                targets[r, slot:slot + len(tgt)], owner[r, slot:slot + len(tgt)] = tgt, member
                at, slot, member = at + m, slot + len(tgt), member + 1
            groups[r, start:at] = g
    return tokens, positions, groups, blocks, read, targets, owner


def next_token_logprobs(
    model: nnx.Module,
    config: ModelConfig,
    contexts: Sequence[np.ndarray],
    candidate_ids: Sequence[int],
    *,
    batch_size: int = 16,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, int]:
    """log p(candidate | context) for each context and candidate token: ([n, K], FLOPs run)."""
    n = len(contexts)
    lengths = np.array([len(c) for c in contexts], dtype=np.int64)
    _check_fits(lengths, config)
    graphdef, state, data_sharding, batch_size = _place(model, mesh, batch_size, n)
    candidates = jnp.asarray(np.asarray(candidate_ids, np.int32))
    result = np.zeros((n, len(candidate_ids)), np.float64)
    total_flops, pending = 0, []
    plan = list(_batches(lengths, batch_size, config.max_seq_len)) if n else []
    for row_len, idx in tqdm(plan, desc="scoring", unit="batch", disable=not progress):
        tokens = np.zeros((batch_size, row_len), np.int32)
        last = np.zeros(batch_size, np.int32)
        for r, i in enumerate(idx):
            tokens[r, : lengths[i]], last[r] = contexts[i], lengths[i] - 1
        out = _candidate_logprobs(
            graphdef, state, _put(tokens, data_sharding), _put(last, data_sharding), candidates
        )
        pending.append((idx, out))
        total_flops += flops_lib.eval_forward_flops(config, batch_size, row_len, 1)
    for idx, out in pending:
        result[idx] = np.asarray(out)[: len(idx)]
    return result, total_flops
