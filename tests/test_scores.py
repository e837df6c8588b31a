"""Proper scores checked against values worked out by hand on small arrays."""

import numpy as np
import pytest

from tokeff.laws import scores


def test_crps_of_a_point_forecast_is_the_absolute_error():
    draws = np.full((5, 2), 2.0)
    assert scores.crps(draws, np.array([2.5, 1.0])) == pytest.approx([0.5, 1.0])


def test_crps_energy_form_by_hand():
    # draws {1, 2, 4}, y = 3: E|X - y| = (2 + 1 + 1) / 3 = 4/3; E|X - X'| over the 9 ordered pairs
    # = 2 (1 + 3 + 2) / 9 = 4/3, so CRPS = 4/3 - 2/3 = 2/3.
    draws = np.array([[4.0], [1.0], [2.0]])
    assert scores.crps(draws, np.array([3.0]))[0] == pytest.approx(2 / 3)
    assert scores.relative_crps(draws, np.array([3.0]))[0] == pytest.approx(2 / 9 * 100)


def test_crps_matches_the_normal_closed_form():
    # Gneiting & Raftery (2007): CRPS(N(0, 1), y) = y (2 Phi(y) - 1) + 2 phi(y) - 1 / sqrt(pi).
    from scipy.stats import norm

    x = norm.ppf((np.arange(20000) + 0.5) / 20000)[:, None]
    y = 0.7
    exact = y * (2 * norm.cdf(y) - 1) + 2 * norm.pdf(y) - 1 / np.sqrt(np.pi)
    assert scores.crps(x, np.array([y]))[0] == pytest.approx(exact, abs=1e-4)


def test_interval_score_by_hand():
    lo, hi = np.array([1.0, 1.0, 1.0]), np.array([2.0, 2.0, 2.0])
    y = np.array([1.5, 0.5, 3.0])
    # 90% interval (alpha 0.1): width 1, plus 20 x the miss: 0, 20 x 0.5, 20 x 1.
    assert scores.interval_score(lo, hi, y, 0.9) == pytest.approx([1.0, 11.0, 21.0])
    assert scores.interval_score(lo, hi, y, 0.5) == pytest.approx([1.0, 3.0, 5.0])


def test_a_wider_interval_that_covers_scores_worse_than_a_sharp_one_that_covers():
    y = np.array([2.0])
    sharp = np.linspace(1.9, 2.1, 101)[:, None]
    wide = np.linspace(1.0, 3.0, 101)[:, None]
    assert scores.crps(sharp, y)[0] < scores.crps(wide, y)[0]
    assert scores.relative_interval_score(sharp, y, 0.9)[0] < scores.relative_interval_score(wide, y, 0.9)[0]
    assert scores.log_density(sharp, y)[0] > scores.log_density(wide, y)[0]


def test_log_density_is_close_to_the_normal_density():
    from scipy.stats import norm

    x = norm.ppf((np.arange(4000) + 0.5) / 4000)[:, None]
    got = scores.log_density(x, np.array([0.3]), log_scale=False)[0]
    assert got == pytest.approx(norm.logpdf(0.3), abs=0.02)
    # On log y: the density of log y at log 2 for draws exp(N(log 2, 0.1)).
    y = np.exp(np.log(2.0) + 0.1 * x)
    assert scores.log_density(y, np.array([2.0]))[0] == pytest.approx(norm.logpdf(0, scale=0.1), abs=0.02)


def test_pointwise_and_summary_leave_non_finite_predictions_unscored():
    draws = np.array([[1.0, 1.0], [2.0, np.nan], [3.0, 2.0]])
    points = scores.pointwise(draws, np.array([2.0, 1.5]))
    assert np.isfinite(points["crps_rel_pct"][0]) and np.isnan(points["crps_rel_pct"][1])
    summary = scores.summarise(points)
    assert summary["crps_rel_pct"] is None and summary["sharpness_90_pct"] is None
    ok = scores.summarise(scores.pointwise(draws[:, :1], np.array([2.0])))
    # draws {1, 2, 3}, y = 2: E|X - y| = 2/3, E|X - X'| = 8/9, CRPS = 2/3 - 4/9 = 2/9 (of 2: 11.1%).
    assert ok["crps_rel_pct"] == pytest.approx(2 / 9 / 2 * 100)
    # 90% interval of {1, 2, 3} by linear quantiles: [1.1, 2.9], width 1.8 = 90% of the median 2.
    assert ok["sharpness_90_pct"] == pytest.approx(90.0)
    assert ok["interval_score_rel_pct"]["0.9"] == pytest.approx(90.0)
