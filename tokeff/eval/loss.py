"""Held-out language-model loss on answer tokens.

The mean negative log-likelihood per answer token (nats) of held-out (prompt, answer) pairs:
the training objective measured on data the run never saw, as the results table's
`eval_loss`. Rows are built exactly as the training data is (`tokeff.data.tokenize`), so the
number is comparable with the training loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import jax
from flax import nnx

from tokeff.data.prompts import PromptFormat, render
from tokeff.data.tokenize import TokenizedExample
from tokeff.errors import UserError
from tokeff.eval import scoring
from tokeff.eval.multiple_choice import continuation_rows, prompt_format_of, unpack
from tokeff.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class LossResult:
    loss: float  # mean NLL per scored token, nats
    n_tokens: int
    n_examples: int
    flops: int  # forward FLOPs of the shapes run (evaluation, not training)


def examples_loss(
    model: nnx.Module,
    config: ModelConfig,
    examples: Sequence[TokenizedExample],
    *,
    batch_size: int = 16,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = False,
) -> LossResult:
    """Mean NLL over the loss-masked tokens of already tokenized examples."""
    if not examples:
        raise UserError("records: no examples to compute a loss on")
    logprob, n_tokens, flops = scoring.sequence_logprobs(
        model, config, [e.input_ids for e in examples], [e.loss_mask for e in examples],
        batch_size=batch_size, mesh=mesh, progress=progress,
    )
    total = int(n_tokens.sum())
    if total == 0:
        raise UserError("records: no answer tokens to compute a loss on")
    return LossResult(float(-logprob.sum() / total), total, len(examples), flops)


def heldout_loss(
    loaded,
    records: Iterable[Mapping],
    *,
    prompt_format: str | PromptFormat = "qa",
    exemplars=None,
    bos_id: int | None = None,
    batch_size: int = 16,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = False,
) -> LossResult:
    """Mean NLL of the answers of `records` (multiple-choice: the correct choice's text;
    prompt/response records: the response) given their prompts."""
    model, tokenizer, config, chat_template = unpack(loaded)
    if tokenizer is None:
        raise UserError("model: has no tokenizer; a held-out loss on text needs one")
    pairs = render(records, prompt_format_of(prompt_format, chat_template), exemplars=exemplars)
    if not pairs:
        raise UserError("records: no examples to compute a loss on")
    sequences, masks = continuation_rows(tokenizer, pairs, bos_id)
    examples = [TokenizedExample(s, m) for s, m in zip(sequences, masks)]
    return examples_loss(model, config, examples, batch_size=batch_size, mesh=mesh, progress=progress)
