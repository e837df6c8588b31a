"""Multiple-choice scoring and held-out loss against log-likelihoods computed by hand.

The model here is a bigram table (logits depend on the previous token only), so every score
has a closed form in numpy; the scorer must reproduce it through the batched, bucketed, jitted
path.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from tokenizers import Tokenizer, models, pre_tokenizers

from tokeff import flops
from tokeff.errors import UserError
from tokeff.eval import (
    binomial_stderr,
    evaluate_methods,
    evaluate_multiple_choice,
    heldout_loss,
    wilson_interval,
)
from tokeff.eval.scoring import bucket_length
from tokeff.models.config import get_preset

WORDS = ["[UNK]", "Question", ":", "Answer", ".", "A", "B", "C", "D",
         "capital", "France", "Paris", "banana", "moon", "seven", "sky", "blue", "very", "long", "reply"]
ID = {w: i for i, w in enumerate(WORDS)}


def word_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordLevel(ID, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


class Bigram(nnx.Module):
    """logits[t] = table[token t]: log p(next | previous) is a row of log_softmax(table)."""

    def __init__(self, table_VxV: np.ndarray):
        self.cfg = get_preset("tiny").replace(name="bigram", vocab_size=table_VxV.shape[0])
        self.table = nnx.Param(jnp.asarray(table_VxV, jnp.float32))

    def hidden_states(self, tokens_BxS, **_):
        return self.table[...][tokens_BxS]

    def logits(self, hidden_BxNxV):
        return hidden_BxNxV


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def reference_logprob(table, tok, prompt: str, answer: str) -> tuple[float, int]:
    """Sum of log p(answer tokens | prompt) under the bigram table, and the answer's token count."""
    ids = tok.encode(prompt, add_special_tokens=False).ids
    ans = tok.encode(answer, add_special_tokens=False).ids
    seq, lp = ids + ans, log_softmax(table)
    return sum(lp[seq[t - 1], seq[t]] for t in range(len(ids), len(seq))), len(ans)


RECORDS = [
    {"question": "capital France", "choices": ["banana", "Paris", "moon", "very long reply"], "answer": 1},
    {"question": "sky", "choices": ["blue", "seven", "banana", "Paris"], "answer": 0},
    {"question": "seven", "choices": ["moon", "blue", "seven", "long reply"], "answer": 2},
]


@pytest.fixture(scope="module")
def table():
    return np.random.default_rng(0).normal(0, 2.0, (len(WORDS), len(WORDS)))


def test_cloze_scores_are_the_hand_computed_log_likelihoods(table):
    tok = word_tokenizer()
    results = evaluate_methods((Bigram(table), tok), RECORDS, ("cloze", "cloze_norm", "cloze_token"),
                               batch_size=5)
    total_lp, total_tokens = 0.0, 0
    for i, r in enumerate(RECORDS):
        prompt = f"Question: {r['question']} Answer:"
        for k, choice in enumerate(r["choices"]):
            lp, n_tok = reference_logprob(table, tok, prompt, " " + choice)
            assert results["cloze"].scores[i, k] == pytest.approx(lp, abs=1e-4)
            assert results["cloze_norm"].scores[i, k] == pytest.approx(lp / len(choice.encode()), abs=1e-4)
            assert results["cloze_token"].scores[i, k] == pytest.approx(lp / n_tok, abs=1e-4)
            if k == r["answer"]:
                total_lp, total_tokens = total_lp + lp, total_tokens + n_tok
    for res in results.values():
        np.testing.assert_array_equal(res.predicted, res.scores.argmax(1))
        np.testing.assert_array_equal(res.correct, res.predicted == [r["answer"] for r in RECORDS])
        assert res.n == 3 and res.accuracy == res.correct.mean() and res.chance == 0.25
        assert res.loss == pytest.approx(-total_lp / total_tokens, rel=1e-5)
        assert res.loss_tokens == total_tokens


def test_length_normalisation_changes_the_winner():
    # A long answer whose every token is likely vs a short one that is merely plausible:
    # the sum prefers the short one, the per-token and per-byte means the long one.
    table = np.zeros((len(WORDS), len(WORDS)))
    table[ID[":"], ID["banana"]] = 2.0
    table[ID[":"], ID["very"]] = 1.0
    table[ID["very"], ID["long"]] = 6.0
    table[ID["long"], ID["reply"]] = 6.0
    records = [{"question": "sky", "choices": ["banana", "very long reply"], "answer": 1}]
    results = evaluate_methods((Bigram(table), word_tokenizer()), records, ("cloze", "cloze_norm", "cloze_token"))
    assert results["cloze"].predicted[0] == 0
    assert results["cloze_token"].predicted[0] == 1
    assert results["cloze_norm"].predicted[0] == 1


def test_letter_scoring_compares_the_letter_logits(table):
    table = table.copy()
    table[ID[":"], ID["C"]] = 20.0  # after "Answer:" the model says C, whatever the question
    res = evaluate_multiple_choice((Bigram(table), word_tokenizer()), RECORDS, method="letter", batch_size=2)
    np.testing.assert_array_equal(res.predicted, [2, 2, 2])
    np.testing.assert_array_equal(res.correct, [False, False, True])
    lp = log_softmax(table)[ID[":"]]
    np.testing.assert_allclose(res.scores, np.tile(lp[[ID["A"], ID["B"], ID["C"], ID["D"]]], (3, 1)), atol=1e-4)
    assert res.loss is None


def test_eval_flops_are_the_accountants_for_the_shapes_run(table):
    model = Bigram(table)
    results = evaluate_methods((model, word_tokenizer()), RECORDS, ("cloze", "letter"), batch_size=5)
    # One group per question (the prompt once, then its 4 choices), the 3 groups packed into
    # one row of 17-24 tokens: one batch of [1, 24], reading the logits of <= 16 answer tokens;
    # letter scoring: 3 prompts of 16-24 tokens (choices listed): 1 batch of [3, 24] (no pad
    # rows: `balanced_rows`), 1 logit each.
    assert results["cloze"].flops == flops.eval_forward_flops(model.cfg, 1, 24, 16)
    assert results["letter"].flops == flops.eval_forward_flops(model.cfg, 3, 24, 1)


def test_heldout_loss_is_the_mean_nll_of_the_correct_answers(table):
    tok = word_tokenizer()
    loss = heldout_loss((Bigram(table), tok), RECORDS, batch_size=2)
    refs = [reference_logprob(table, tok, f"Question: {r['question']} Answer:", " " + r["choices"][r["answer"]])
            for r in RECORDS]
    assert loss.n_tokens == sum(n for _, n in refs) and loss.n_examples == 3
    assert loss.loss == pytest.approx(-sum(lp for lp, _ in refs) / loss.n_tokens, rel=1e-5)
    # The 3 correct answers after their prompts, packed into one row of <= 16 tokens: [1, 16].
    assert loss.flops == flops.eval_forward_flops(Bigram(table).cfg, 1, 16, 16)


def test_bucket_ladder_bounds_padding():
    assert [bucket_length(n) for n in (1, 16, 17, 25, 33, 49, 65, 97, 129)] == [16, 16, 24, 32, 48, 64, 96, 128, 192]
    for n in range(1, 3000):
        assert n <= bucket_length(n) < 1.5 * n + 16


def test_wilson_interval_and_stderr():
    assert binomial_stderr(5, 10) == pytest.approx(math.sqrt(0.025))
    assert binomial_stderr(0, 0) == 0.0
    lo, hi = wilson_interval(5, 10)  # textbook value: 0.2366, 0.7634
    assert lo == pytest.approx(0.23659, abs=1e-4) and hi == pytest.approx(0.76341, abs=1e-4)
    lo, hi = wilson_interval(0, 10)  # Wald would give [0, 0]; Wilson keeps a real upper bound
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-4)
    lo, hi = wilson_interval(90, 100)
    assert lo == pytest.approx(0.82566, abs=1e-4) and hi == pytest.approx(0.94479, abs=1e-4)


def test_interval_stats_on_the_result(table):
    res = evaluate_multiple_choice((Bigram(table), word_tokenizer()), RECORDS * 4, method="cloze")
    k = int(res.correct.sum())
    assert res.n == 12 and res.stderr == pytest.approx(binomial_stderr(k, 12))
    assert res.ci95 == pytest.approx(wilson_interval(k, 12))


@pytest.mark.parametrize("records, message", [
    ([{"question": "q", "answer": 0}], "no field 'choices'"),
    ([{"question": "q", "choices": ["a", "b"], "answer": 2}], "answer 2 is not an index"),
    ([{"question": "q", "choices": ["a"], "answer": 0}], "need at least 2"),
    ([], "no questions"),
])
def test_bad_records_are_user_errors(table, records, message):
    with pytest.raises(UserError, match=message):
        evaluate_multiple_choice((Bigram(table), word_tokenizer()), records)


def test_unknown_method_is_a_user_error(table):
    with pytest.raises(UserError, match="method: unknown"):
        evaluate_multiple_choice((Bigram(table), word_tokenizer()), RECORDS, method="vibes")
