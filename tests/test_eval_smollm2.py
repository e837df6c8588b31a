"""The real SmolLM2-135M-Instruct (offline GGUF) scores trivially easy questions sensibly."""

import numpy as np
import pytest

EASY = [
    {"question": "What is the capital of France?", "choices": ["a banana", "Paris", "the moon", "seven"],
     "answer": 1},
    {"question": "What colour is the sky on a clear day?", "choices": ["blue", "granite", "a sandwich", "Tuesday"],
     "answer": 0},
]


@pytest.mark.slow
def test_smollm2_cloze_picks_the_obvious_answer(smollm2_instruct):
    from tokeff import flops
    from tokeff.eval import evaluate_methods

    loaded = smollm2_instruct
    results = evaluate_methods(loaded, EASY, ("cloze", "cloze_norm", "letter"), batch_size=8)
    for res in results.values():
        assert res.scores.shape == (2, 4) and np.isfinite(res.scores).all()
        assert res.scores.max() <= 0.0  # log-probabilities
    np.testing.assert_array_equal(results["cloze"].predicted, [1, 0])
    np.testing.assert_array_equal(results["cloze_norm"].predicted, [1, 0])
    assert 0.0 < results["cloze"].loss < 10.0
    # One group per question (the prompt once, then its 4 choices) of <= 16 tokens, both packed
    # in one row: one [1, 32] batch reading <= 16 answer-token logits (it was 8 rows of prompt +
    # choice before, then 8 padded rows of one question each).
    assert results["cloze"].flops == flops.eval_forward_flops(loaded.config, 1, 32, 16)
