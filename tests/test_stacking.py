"""Stacking of predictive distributions across forms: weights, the mixture, fit/save/load."""

import numpy as np
import pytest

from tokeff.errors import UserError
from tokeff.laws import stacking


def test_weights_sum_to_one_and_favour_the_form_that_predicts_the_future():
    rng = np.random.default_rng(0)
    y = rng.normal(0, 1, 200)
    from scipy.stats import norm

    good, biased, wide = norm.logpdf(y), norm.logpdf(y, 1.5, 1), norm.logpdf(y, 0, 5)
    w = stacking.stacking_weights(np.stack([biased, good, wide], axis=1))
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert w[1] > 0.9


def test_weights_are_the_maximum_of_the_log_score_by_hand():
    # Densities (rows: held-out runs; columns: forms) (1, 0.5) and (0.5, 1): symmetric, w = (0.5, 0.5).
    sym = np.log(np.array([[1.0, 0.5], [0.5, 1.0]]))
    np.testing.assert_allclose(stacking.stacking_weights(sym), [0.5, 0.5], atol=1e-6)
    # (2, 1) and (1, 1): log(2w + 1 - w) + log(1) = log(1 + w): w = 1.
    np.testing.assert_allclose(stacking.stacking_weights(np.log(np.array([[2.0, 1.0], [1.0, 1.0]]))), [1, 0], atol=1e-3)
    # A mix beats either form: (e^0, e^-10) on one row and (e^-10, e^0) on the other.
    mix = stacking.stacking_weights(np.array([[0.0, -10.0], [-10.0, 0.0], [0.0, -10.0]]))
    assert mix[0] == pytest.approx(2 / 3, abs=1e-3) and mix[1] == pytest.approx(1 / 3, abs=1e-3)


def test_a_form_that_could_not_predict_gets_no_weight():
    lp = np.array([[-1.0, -np.inf], [-1.2, -0.5]])
    w = stacking.stacking_weights(lp)
    assert w.tolist() == [1.0, 0.0]
    with pytest.raises(UserError, match="no stacked form"):
        stacking.stacking_weights(np.full((2, 2), -np.inf))


def test_mixture_counts_follow_the_weights_and_sum_to_the_total():
    assert stacking.mixture_counts(np.array([0.5, 0.3, 0.2]), 10).tolist() == [5, 3, 2]
    counts = stacking.mixture_counts(np.array([1 / 3, 1 / 3, 1 / 3]), 100)
    assert counts.sum() == 100 and sorted(counts.tolist()) == [33, 33, 34]
    assert stacking.mixture_counts(np.array([1.0, 0.0]), 7).tolist() == [7, 0]


def test_form_names_parse_and_refuse():
    assert stacking.form_names("chinchilla") is None
    assert stacking.form_names("chinchilla, kaplan,farseer") == ["chinchilla", "kaplan", "farseer"]
    with pytest.raises(UserError, match="--form"):
        stacking.form_names("chinchilla,chinchilla")
    with pytest.raises(UserError, match="share inputs"):
        stacking.member_forms(["chinchilla", "volume"])
