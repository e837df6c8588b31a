"""Causal attention by blocks: which query-key pairs each attention path computes.

A causal query at position s sees keys 0..s only, so a block of queries [lo, hi) needs keys
[0, hi) and never the ones after. Every path skips the blocks above the diagonal; they differ
in the blocks' shape, so in how much of the masked half they still compute:

- "reference" (`query_blocks`): each block of queries is scored against its whole key prefix,
  62.5% of the dense score matrix at 512 tokens (4 blocks), 56% at 2048 (8 blocks).
- "splash" (`splash_block`): square tiles on or below the diagonal, a quarter of the row wide
  (128 to 512), the row padded up to a whole number of tiles (tiny rows of 64 tokens become
  one 128 tile).
- "cudnn": square tiles of `CUDNN_TILE`, the last one cut at the row's end (cuDNN pads nothing).

Within a computed block the mask still applies (the diagonal block, packed segments, padding):
those entries are computed, so they are counted. One module, used by the model
(`tokeff.models.attention`) and by the FLOP accountant (`tokeff.flops.forward_breakdown`), so
the budget of record counts exactly the score entries the kernel computes, and XLA's count of
the reference path agrees.
"""

from __future__ import annotations

import math

BLOCK_UNIT = 128  # query-block length is a multiple of this: rows up to 128 tokens stay dense
MAX_BLOCKS = 8  # longer rows get longer blocks, so a layer runs at most 8 score matmuls
SPLASH_MAX_BLOCK = 512  # splash tiles: multiples of 128 lanes (the TPU's), at most 512
CUDNN_TILE = 128  # cuDNN flash attention's query/key tile on Hopper for head_dim <= 128


def query_blocks(seq_len: int) -> tuple[tuple[int, int], ...]:
    """[(lo, hi), ...] covering 0..seq_len: queries lo..hi-1 attend to keys 0..hi-1."""
    block = BLOCK_UNIT * max(1, math.ceil(seq_len / (BLOCK_UNIT * MAX_BLOCKS)))
    return tuple((lo, min(lo + block, seq_len)) for lo in range(0, seq_len, block))


def splash_block(seq_len: int) -> int:
    """The splash kernel's square tile for rows of `seq_len` tokens: a quarter of the row
    rounded up to 128 (the TPU's lanes), between 128 and `SPLASH_MAX_BLOCK`; the row is then
    padded to a whole number of tiles. Four tiles a row skip as much as the reference's four
    query blocks (0.625 of S² computed) at 512 to 2048 tokens."""
    return min(SPLASH_MAX_BLOCK, BLOCK_UNIT * max(1, math.ceil(seq_len / (4 * BLOCK_UNIT))))


def padded_len(seq_len: int, block: int) -> int:
    """`seq_len` rounded up to a multiple of `block`."""
    return block * math.ceil(seq_len / block)


def score_entries(seq_len: int, path: str = "reference") -> int:
    """Query-key pairs scored for one row of `seq_len` tokens by attention `path` (a resolved
    path: "reference", "splash" or "cudnn")."""
    if path == "reference":
        return sum((hi - lo) * hi for lo, hi in query_blocks(seq_len))
    if path == "splash":
        block = splash_block(seq_len)
        n = padded_len(seq_len, block) // block
        return n * (n + 1) // 2 * block * block
    if path == "cudnn":
        starts = range(0, seq_len, CUDNN_TILE)
        return sum((min(lo + CUDNN_TILE, seq_len) - lo) * min(lo + CUDNN_TILE, seq_len) for lo in starts)
    raise ValueError(f"attention path: must be reference, splash or cudnn, got {path!r}")
