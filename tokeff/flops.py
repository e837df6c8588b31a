"""The analytic FLOP accountant: the budget of record for every training run.

Budgets are charged with what the accelerator actually computes, counted from the shapes of
the matmuls the model runs (multiply-accumulate = 2 FLOPs). XLA's own count is the
cross-check (`xla_step_flops`; tests/test_flops_xla.py, bench/flops_vs_xla.py), not the record,
because it depends on compiler version, partitioning and whether a loop is a scan.

What is counted, per layer, for one row of S tokens (D model width, H query heads, G kv heads,
K head dim, F MLP width, V vocabulary: the package's axis legend, tokeff/__init__.py):

- qkv: 2·S·D·(H + 2G)·K — grouped-query attention projects G, not H, key/value heads.
- attn_scores (q·kᵀ) and attn_values (p·v): 2·H·E·K each, E the query-key pairs scored.
  Every attention path (`tokeff.models.attention`) skips the blocks above the diagonal; E is
  what its blocks cover (`tokeff.models.causal_blocks.score_entries`). The reference path
  (CPU) scores each block of queries against the keys up to its own end: E = S² up to 128
  tokens, 0.625·S² at 512, 0.5625·S² from 1024 on. Splash (TPU) and cuDNN (GPU) compute
  square tiles on and below the diagonal: splash's are a quarter of the row (E = 0.625·S² from
  512 to 2048 tokens; short rows are padded to one 128 tile), cuDNN's are 128 wide
  (E = S·(S + 128)/2 for multiples of 128). Still quadratic in the row length: this is why the same tokens in
  longer examples cost more. The masked entries inside the computed blocks (the diagonal
  blocks' future keys, cross-segment entries of a packed row, padding positions, splash's
  padding of a row to whole tiles) ARE counted: they are computed.
- out_proj: 2·S·H·K·D.
- mlp: 2·S·3·D·F (SwiGLU: gate, up and down matmuls).
plus, once, logits: 2·S·D·V. The embedding lookup is a gather: 0 FLOPs.

Not counted: elementwise work (RMSNorm, RoPE, softmax, SiLU·gate, residual adds, q/k/v bias
adds, the loss, the optimizer update). It is O(S·D) per layer against O(S·D²) for the matmuls,
a fraction of a percent at real widths. XLA counts it: it is the whole gap between XLA's
cost analysis and this count, whose matmul FLOPs match XLA's exactly (tests/test_flops_xla.py).

Training = forward + backward = 3 × forward: the backward of Y = X·W needs dX = dY·Wᵀ and
dW = Xᵀ·dY, two matmuls of the forward's size, and every matmul here needs both (the first
layer's dX too, because the embedding is trained). With `ModelConfig.remat` every block's
forward is recomputed in the backward pass: the accelerator then runs 3 × forward plus one more
forward of the blocks less their MLP down projections, whose outputs the backward never needs
(between 3 and 4 × forward; the logits matmul is not recomputed either). The budget of
record is what the accelerator runs, so `step_training_flops` and `example_training_flops`
charge that recomputation; `FlopBreakdown.training` stays the remat-free 3 × forward (the
"model FLOPs" of the MFU convention), and `FlopBreakdown.remat_recompute` is the difference.

The flash kernels (splash, cuDNN) keep no [S, S] probabilities for the backward: they
recompute the scores q·kᵀ there, one attn_scores more per training step
(`FlopBreakdown.attn_recompute`, charged like remat's recomputation: in `computed_training`,
not in the 3 × forward "model FLOPs"). "auto" counts the path the backend runs; planning
code that runs before JAX knows its devices (sweep grids, allocation) counts the reference
path, and the training loop charges the path it resolved.

Padded and packed layouts both compute full [rows, row_len] rows: `step_training_flops` is
what a step costs; `example_training_flops` (one example alone at its own length) is the
useful compute; `batch_flops` gives both for a batch.

Literature conventions, reported beside the exact count so results compare with papers:
`six_nd` (Kaplan et al. 2020; Hoffmann et al. 2022: C ≈ 6·N·D) and `chinchilla_appendix_f`
(Hoffmann et al. 2022, Appendix F).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Sequence

from tokeff.errors import UserError
from tokeff.models.causal_blocks import score_entries
from tokeff.models.config import ModelConfig, attention_path

_COMPONENTS = ("qkv", "attn_scores", "attn_values", "out_proj", "mlp", "logits")


@dataclasses.dataclass(frozen=True)
class FlopBreakdown:
    """Forward FLOPs of one row, per component (all layers summed), plus remat's extra cost."""

    qkv: int
    attn_scores: int
    attn_values: int
    out_proj: int
    mlp: int
    logits: int
    remat_recompute: int = 0  # blocks' forward recomputed in the backward (cfg.remat), else 0
    attn_recompute: int = 0  # scores recomputed in a flash kernel's backward (splash, cudnn), else 0

    @property
    def forward(self) -> int:
        return self.qkv + self.attn_scores + self.attn_values + self.out_proj + self.mlp + self.logits

    @property
    def training(self) -> int:
        """Forward + backward (3 × forward), without remat's recomputation ("model FLOPs")."""
        return 3 * self.forward

    @property
    def computed_training(self) -> int:
        """What a training step runs on the accelerator: `training` plus recomputation (remat's
        and the flash kernels' scores)."""
        return self.training + self.remat_recompute + self.attn_recompute

    def as_dict(self) -> dict[str, int]:
        out = {name: getattr(self, name) for name in _COMPONENTS}
        out.update(
            forward=self.forward,
            training=self.training,
            remat_recompute=self.remat_recompute,
            attn_recompute=self.attn_recompute,
            computed_training=self.computed_training,
        )
        return out


# The largest budget taken: 1e30 FLOPs is some thousand times the largest training run yet; beyond
# it the laws' frontier overflows float32 and candidate counts overflow integers.
MAX_BUDGET = 1e30


def check_budget(value, field: str) -> float:
    """A FLOP budget as a float: a positive, finite number (not a string or a bool). Every budget
    a user gives (a grid, a points file, a run's config, `allocate`) passes here; anything else is
    refused in one line naming `field`."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0.0 < float(value) < math.inf
    if not ok:
        raise UserError(f"{field}: must be a positive, finite number of FLOPs, got {value!r}")
    if float(value) > MAX_BUDGET:
        raise UserError(f"{field}: {float(value):.3g} FLOPs is over the limit of {MAX_BUDGET:.0e}")
    return float(value)


def _check_len(name: str, value: int) -> int:
    if int(value) != value or value <= 0:
        raise UserError(f"{name}: must be a positive integer, got {value!r}")
    return int(value)


def forward_breakdown(cfg: ModelConfig, seq_len: int, backend: str | None = None) -> FlopBreakdown:
    """Forward FLOPs of ONE row of `seq_len` tokens; attention counts the query-key pairs of
    the blocks that `cfg.attention` computes on `backend` (masked entries inside them
    included; "auto" with no backend counts the reference path)."""
    s = _check_len("seq_len", seq_len)
    path = attention_path(cfg.attention, cfg.dtype, backend)
    d, h, k, hd, layers = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.n_layers
    qkv = layers * 2 * s * d * (h + 2 * k) * hd
    attn_scores = layers * 2 * h * score_entries(s, path) * hd
    attn_values = layers * 2 * h * score_entries(s, path) * hd
    out_proj = layers * 2 * s * h * hd * d
    mlp = layers * 2 * s * 3 * d * cfg.d_ff
    # Remat recomputes each block's forward inside its backward, except the MLP down
    # projection: its output only feeds the residual sum that is the block's (saved) output,
    # so JAX's partial evaluation drops it. One of the three MLP matmuls is not recomputed.
    recompute = qkv + attn_scores + attn_values + out_proj + mlp * 2 // 3
    return FlopBreakdown(
        qkv=qkv,
        attn_scores=attn_scores,
        attn_values=attn_values,
        out_proj=out_proj,
        mlp=mlp,
        logits=2 * s * d * cfg.vocab_size,
        remat_recompute=recompute if cfg.remat else 0,
        attn_recompute=attn_scores if path != "reference" else 0,
    )


def step_training_flops(cfg: ModelConfig, rows: int, row_len: int) -> int:
    """FLOPs a train step over a [rows, row_len] batch computes (pads, masked and
    cross-segment attention entries and remat recomputation included)."""
    rows = _check_len("rows", rows)
    return rows * forward_breakdown(cfg, row_len).computed_training


def packed_token_budget(cfg: ModelConfig, row_len: int, budget: float, fill: float = 1.0) -> int:
    """Tokens whose packed rows of `row_len` cost `fill` x `budget` FLOPs: the selection target of
    a packed run that trains one epoch just inside its budget (a sweep's `token_budget_fill`, and
    the options `tokeff allocate --row-len` weighs: both call this)."""
    per_token = step_training_flops(cfg, 1, int(row_len)) / int(row_len)
    return int(budget * fill / per_token)


def example_training_flops(cfg: ModelConfig, length: int) -> int:
    """Training FLOPs of one example alone in a row of its own length: the useful compute."""
    return step_training_flops(cfg, 1, length)


def eval_forward_flops(cfg: ModelConfig, rows: int, row_len: int, logit_positions: int | None = None) -> int:
    """Forward-only FLOPs of scoring a [rows, row_len] batch; with `logit_positions`, only that
    many positions per row are unembedded (the scorer reads the logits of answer tokens only)."""
    rows = _check_len("rows", rows)
    breakdown = forward_breakdown(cfg, row_len)
    if logit_positions is None:
        return rows * breakdown.forward
    logits = 2 * _check_len("logit_positions", logit_positions) * cfg.d_model * cfg.vocab_size
    return rows * (breakdown.forward - breakdown.logits + logits)


@dataclasses.dataclass(frozen=True)
class BatchFlops:
    """Computed vs useful training FLOPs and tokens of one batch."""

    computed_flops: int  # full [rows, row_len] rows
    useful_flops: int  # sum over examples of example_training_flops
    computed_tokens: int
    useful_tokens: int

    @property
    def efficiency(self) -> float:
        """Useful / computed FLOPs (1.0 for a batch of full-length examples, one per row)."""
        return self.useful_flops / self.computed_flops


def batch_flops(
    cfg: ModelConfig,
    lengths: Sequence[int],
    *,
    layout: str,
    row_len: int,
    rows: int | None = None,
) -> BatchFlops:
    """Computed and useful FLOPs for a batch of examples with the given token lengths.

    layout "padded": one example per row, `rows` defaults to len(lengths) (more rows mean
    blank padding rows). layout "packed": several examples per row; `rows` is the row count
    the packer produced (required: this module does not re-implement packing).
    """
    row_len = _check_len("row_len", row_len)
    lengths = [_check_len("lengths", n) for n in lengths]
    if not lengths:
        raise UserError("lengths: empty batch")
    if max(lengths) > row_len:
        raise UserError(f"lengths: an example of {max(lengths)} tokens does not fit row_len {row_len}")
    if layout == "padded":
        rows = len(lengths) if rows is None else rows
        if rows < len(lengths):
            raise UserError(f"rows: {rows} rows cannot hold {len(lengths)} padded examples")
    elif layout == "packed":
        if rows is None:
            raise UserError("rows: required for the packed layout (the packer's row count)")
        if sum(lengths) > rows * row_len:
            raise UserError(f"rows: {sum(lengths)} tokens do not fit {rows} rows of {row_len}")
    else:
        raise UserError(f"layout: must be 'padded' or 'packed', got {layout!r}")
    return BatchFlops(
        computed_flops=step_training_flops(cfg, rows, row_len),
        useful_flops=sum(example_training_flops(cfg, n) for n in lengths),
        computed_tokens=rows * row_len,
        useful_tokens=sum(lengths),
    )


def six_nd(cfg: ModelConfig, tokens: int, *, non_embedding: bool = False) -> int:
    """The C ≈ 6·N·D convention (Kaplan et al. 2020 use non-embedding N; Hoffmann et al. 2022
    total N). Ignores attention's quadratic term and counts parameters, not matmuls."""
    n = cfg.non_embedding_params if non_embedding else cfg.params
    return 6 * n * int(tokens)


def chinchilla_appendix_f_forward(cfg: ModelConfig, seq_len: int) -> dict[str, int]:
    """Forward FLOPs of one sequence, per term of Hoffmann et al. 2022, Appendix F.

    The paper's formulas, with key_size = head_dim and num_heads = n_heads (App. F has no
    grouped KV heads, so K and V are charged at full width):
      embeddings             2·seq·vocab·d_model
      attention (per layer)  qkv 2·3·seq·d_model·(key_size·heads)
                             key@query logits 2·seq·seq·(key_size·heads)
                             softmax 3·heads·seq·seq
                             softmax@query reductions 2·seq·seq·(key_size·heads)
                             final linear 2·seq·(key_size·heads)·d_model
      dense (per layer)      2·seq·(d_model·ffw_size + d_model·ffw_size)  — two matmuls
                             (non-gated; a SwiGLU MLP has three, so App. F undercounts it)
      final logits           2·seq·d_model·vocab
      forward = embeddings + layers·(attention + dense) + logits; backward = 2 × forward.
    Note: the paper's Table A4 ratios (Ours/6ND) are reproduced by the per-layer terms alone,
    without embeddings and logits (see tests/test_flops.py).
    """
    s = _check_len("seq_len", seq_len)
    d, heads, kq = cfg.d_model, cfg.n_heads, cfg.head_dim
    attention = (
        2 * 3 * s * d * (kq * heads)
        + 2 * s * s * (kq * heads)
        + 3 * heads * s * s
        + 2 * s * s * (kq * heads)
        + 2 * s * (kq * heads) * d
    )
    dense = 2 * s * (d * cfg.d_ff + d * cfg.d_ff)
    return {
        "embeddings": 2 * s * cfg.vocab_size * d,
        "attention": cfg.n_layers * attention,
        "dense": cfg.n_layers * dense,
        "logits": 2 * s * d * cfg.vocab_size,
    }


def chinchilla_appendix_f(cfg: ModelConfig, seq_len: int, tokens: int) -> int:
    """Training FLOPs (3 × forward) for `tokens` tokens in sequences of `seq_len`, per
    Hoffmann et al. 2022 App. F (see `chinchilla_appendix_f_forward`)."""
    per_sequence = sum(chinchilla_appendix_f_forward(cfg, seq_len).values())
    return 3 * per_sequence * int(tokens) // int(seq_len)


@dataclasses.dataclass(frozen=True)
class XlaCount:
    """XLA's view of one lowered step: its whole cost analysis, and its matmuls alone."""

    cost_analysis: float  # `jit(f).lower(...).cost_analysis()["flops"]`: matmuls + elementwise
    dot_flops: int  # 2 × MACs of every dot_general in the lowered StableHLO
    n_dots: int


# `stablehlo.dot_general %a, %b, ..., contracting_dims = [2] x [0], ... : (tensor<2x128x256xf32>,
# tensor<...>) -> tensor<2x128x768xf32>`: FLOPs = 2 · |output| · ∏ lhs contracting sizes.
_DOT_RE = re.compile(
    r"stablehlo\.dot_general .*?contracting_dims = \[([\d, ]*)\] x \[[\d, ]*\]"
    r".*?: \(tensor<([\dx]+)x\w+>, tensor<[^>]*>\) -> tensor<([\dx]+)x\w+>"
)


def _stablehlo_dot_flops(text: str) -> tuple[int, int]:
    total = n = 0
    for match in _DOT_RE.finditer(text):
        contracting = [int(c) for c in match.group(1).split(",") if c.strip()]
        lhs = [int(v) for v in match.group(2).split("x")]
        out = [int(v) for v in match.group(3).split("x")]
        total += 2 * math.prod(out) * math.prod(lhs[c] for c in contracting)
        n += 1
    if n != text.count("stablehlo.dot_general"):
        raise RuntimeError("unparsed dot_general in the lowered module (StableHLO syntax changed?)")
    return total, n


def xla_step_flops(cfg: ModelConfig, rows: int, row_len: int, *, forward_only: bool = False,
                   packed: bool = False) -> XlaCount:
    """XLA's count of the real model's forward+backward (or forward) on a [rows, row_len] batch.

    Lowered, not compiled, from abstract parameters (`nnx.eval_shape`): nothing is allocated,
    so large presets are cheap. `lower().cost_analysis()` is the global (unpartitioned) count;
    `.compile().cost_analysis()` would be per device after sharding. The model's layers are an
    unrolled Python loop: a `lax.scan` body would be counted once, not once per layer.
    `packed=True` passes segment ids and positions (two examples per row) to show the dense
    kernel computes the same matmuls either way.
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from tokeff.models.transformer import Transformer

    graphdef, abstract_state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))

    def loss_fn(state, tokens_BxS, segment_ids_BxS, positions_BxS):
        model = nnx.merge(graphdef, state)
        if packed:
            logits_BxSxV = model(tokens_BxS, segment_ids_BxS=segment_ids_BxS, positions_BxS=positions_BxS)
        else:
            logits_BxSxV = model(tokens_BxS)
        logp_BxSxV = jax.nn.log_softmax(logits_BxSxV)
        return -jnp.mean(jnp.take_along_axis(logp_BxSxV, tokens_BxS[..., None], axis=-1))

    ids = jax.ShapeDtypeStruct((rows, row_len), jnp.int32)
    fn = loss_fn if forward_only else jax.grad(loss_fn)
    lowered = jax.jit(fn).lower(abstract_state, ids, ids, ids)
    dot_flops, n_dots = _stablehlo_dot_flops(lowered.as_text())
    return XlaCount(float(lowered.cost_analysis()["flops"]), dot_flops, n_dots)
