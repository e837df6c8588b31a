"""Causal attention by query blocks: the key range each block of queries attends to.

A causal query at position s sees keys 0..s only, so a block of queries [lo, hi) needs keys
[0, hi) and never the ones after. Splitting the rows into query blocks and scoring each block
against its key prefix skips the blocks above the diagonal that dense attention computes and
masks: 62.5% of the dense score matrix at 512 tokens (4 blocks), 56% at 2048 (8 blocks).
Within a block the mask still applies (the diagonal block, packed segments, padding).

One function, used by the model (`tokeff.models.transformer.Attention`) and by the FLOP
accountant (`tokeff.flops.forward_breakdown`), so the budget of record counts exactly the
score entries the kernel computes, and XLA's count of the same program agrees.
"""

from __future__ import annotations

import math

BLOCK_UNIT = 128  # query-block length is a multiple of this: rows up to 128 tokens stay dense
MAX_BLOCKS = 8  # longer rows get longer blocks, so a layer runs at most 8 score matmuls


def query_blocks(seq_len: int) -> tuple[tuple[int, int], ...]:
    """[(lo, hi), ...] covering 0..seq_len: queries lo..hi-1 attend to keys 0..hi-1."""
    block = BLOCK_UNIT * max(1, math.ceil(seq_len / (BLOCK_UNIT * MAX_BLOCKS)))
    return tuple((lo, min(lo + block, seq_len)) for lo in range(0, seq_len, block))


def score_entries(seq_len: int) -> int:
    """Query-key pairs scored for one row of `seq_len` tokens (seq_len² when dense)."""
    return sum((hi - lo) * hi for lo, hi in query_blocks(seq_len))
