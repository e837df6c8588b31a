"""The shared-prompt scorer (one row per prompt, logits of answer tokens only) gives the
scores of the plain computation it replaced: every sequence in its own row, full logits."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tokeff.data.prompts import PromptFormat, render
from tokeff.data.sources import load_multiple_choice
from tokeff.eval import evaluate_methods
from tokeff.eval.multiple_choice import continuation_rows
from tokeff.eval.scoring import sequence_logprobs
from tokeff.models.config import get_preset
from tokeff.models.load import load_model
from tokeff.models.transformer import Transformer

_full_logits = jax.jit(lambda graphdef, state, t: nnx.merge(graphdef, state)(t))


def plain_logprobs(model, sequences, masks) -> np.ndarray:
    """The old computation: each sequence alone, log_softmax of every position's logits."""
    graphdef, state = nnx.split(model)
    width = max(len(s) for s in sequences)  # right padding changes no causal logit: one compile
    out = []
    for seq, mask in zip(sequences, masks):
        seq, mask = np.asarray(seq), np.asarray(mask, bool)
        padded = np.zeros(width, np.int32)
        padded[: len(seq)] = seq
        logp = np.asarray(jax.nn.log_softmax(_full_logits(graphdef, state, jnp.asarray(padded[None]))[0]))
        out.append(float(logp[np.arange(len(seq) - 1), seq[1:]][mask[1:]].sum()))
    return np.array(out)


def test_shared_prompts_equal_each_sequence_alone():
    """Shared and distinct prompts, gaps of unscored tokens, trailing unscored tokens, a row with
    nothing scored, and a context small enough that one prompt's continuations need two rows."""
    cfg = get_preset("tiny").replace(max_seq_len=24)
    model = Transformer(cfg, nnx.Rngs(3))
    rng = np.random.default_rng(0)
    prompt_a, prompt_b = rng.integers(0, 512, 9), rng.integers(0, 512, 5)
    sequences, masks = [], []
    for prompt, n_tail in [(prompt_a, 3), (prompt_a, 1), (prompt_b, 4), (prompt_a, 6), (prompt_b, 2), (prompt_a, 5)]:
        tail = rng.integers(0, 512, n_tail)
        sequences.append(np.concatenate([prompt, tail]))
        masks.append(np.concatenate([np.zeros(len(prompt), bool), np.ones(n_tail, bool)]))
    masks[3][len(prompt_a) + 2] = False  # an unscored token between scored ones
    masks[5][-1] = False  # a trailing unscored token
    sequences.append(rng.integers(0, 512, 7))
    masks.append(np.zeros(7, bool))  # nothing scored: sum 0
    sums, n_scored, _ = sequence_logprobs(model, cfg, sequences, masks, batch_size=2)
    np.testing.assert_allclose(sums, plain_logprobs(model, sequences, masks), atol=1e-4)
    np.testing.assert_array_equal(n_scored, [m[1:].sum() for m in masks])


def test_real_mmlu_cloze_scores_equal_the_plain_computation():
    loaded = load_model("tiny")
    records = load_multiple_choice("mmlu", subjects="anatomy").select(range(3)).to_list()
    results = evaluate_methods(loaded, records, ("cloze",), batch_size=4)
    expanded = [{**r, "answer": k} for r in records for k in range(len(r["choices"]))]
    sequences, masks = continuation_rows(loaded.tokenizer, render(expanded, PromptFormat(name="qa")))
    plain = plain_logprobs(loaded.model, sequences, masks).reshape(len(records), -1)
    np.testing.assert_allclose(results["cloze"].scores, plain, atol=1e-4)
    # One row per question: four prompts' worth of compute saved on each.
    assert len({tuple(s[: np.flatnonzero(m)[0]]) for s, m in zip(sequences, masks)}) == len(records)
