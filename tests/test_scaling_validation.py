"""Small versions of bench/scaling_validation.py: recovery, calibration, extrapolation.

Fixed seeds, so each is deterministic; sizes are cut so the three take well under a minute on two
cores. The full versions (250 points, 50 datasets per form, 4 x 1000 draws) are in the bench.
"""

import pytest

from tokeff.laws import validation


@pytest.mark.slow
def test_recovery_nuts_and_classic_cover_the_published_chinchilla_parameters():
    nuts = validation.recovery("nuts", n_points=120, chains=2, draws=300, warmup=300)
    classic = validation.recovery("classic", n_points=120, bootstrap=300)
    for result in (nuts, classic):
        missed = {k: v for k, v in result["params"].items() if not v[3]}
        assert not missed, missed
    assert nuts["fit"].diagnostics["divergences"] == 0  # the centred parametrisation's point
    assert classic["fit"].diagnostics["ok"], classic["fit"].diagnostics


@pytest.mark.slow
def test_calibration_small():
    c = validation.calibration("finetune_multiplicative", n_datasets=10, n_points=30, chains=2, steps=200)
    assert c.kept + c.excluded == 10 and c.kept >= 8
    # 40 interval checks at a nominal 90%: fewer than 30 hits means intervals far too narrow; 40 of
    # 40 would be likely (p = 0.015) only if they were far too wide.
    assert 0.75 <= c.pooled < 1.0, c
    assert set(c.per_param) == {"A", "alpha", "beta", "E"}


@pytest.mark.slow
def test_extrapolation_small():
    r = validation.extrapolation(n_points=120, chains=2, draws=300, warmup=300)
    assert r["n_fit"] == 80 and r["n_predicted"] == 40
    assert 0.6 <= r["coverage"] <= 1.0 and 0 < r["median_width_percent"] < 30, r
