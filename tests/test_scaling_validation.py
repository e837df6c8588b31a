"""Small versions of bench/scaling_validation.py: recovery, calibration, extrapolation.

Fixed seeds, so each is deterministic; sizes are cut so the file takes well under a minute on two
cores: recovery runs MAP/Laplace and the classic fit (the one compiled Laplace program is shared
with the other law tests), calibration is the NUTS check (simulation-based calibration needs the
sampler; with 150 instead of 200 steps 5 of 8 fits failed r-hat, so it keeps 200), extrapolation a
short one-chain NUTS fit. The full versions (250 points, 50 datasets per form,
4 x 1000 draws) are in the bench.
"""

import numpy as np

from tokeff.laws import validation
from tokeff.laws.forms import get_form


def test_recovery_map_and_classic_cover_the_published_chinchilla_parameters():
    laplace = validation.recovery("map", n_points=60, discrepancy="none")
    classic = validation.recovery("classic", n_points=60, bootstrap=60)
    for result in (laplace, classic):
        missed = {k: v for k, v in result["params"].items() if not v[3]}
        assert not missed, missed
        assert result["fit"].diagnostics["ok"], result["fit"].diagnostics


def test_calibration_small():
    c = validation.calibration("finetune_multiplicative", n_datasets=10, n_points=30, chains=2, steps=200)
    assert c.kept + c.excluded == 10 and c.kept >= 8
    # 40 interval checks at a nominal 90%: fewer than 30 hits means intervals far too narrow; 40 of
    # 40 would be likely (p = 0.015) only if they were far too wide.
    assert 0.75 <= c.pooled < 1.0, c
    assert set(c.per_param) == {"A", "alpha", "beta", "E"}


def test_extrapolation_small():
    r = validation.extrapolation(n_points=60, chains=1, draws=200, warmup=200, discrepancy="none")
    assert r["n_fit"] == 40 and r["n_predicted"] == 20
    assert r["fit"].diagnostics["divergences"] == 0  # the centred parametrisation's point
    assert 0.6 <= r["coverage"] <= 1.0 and 0 < r["median_width_percent"] < 30, r


def test_simulated_failures_are_one_sided_at_the_drawn_share():
    from tokeff.laws.model import Likelihood
    from tokeff.laws.simulate import design, simulate

    form = get_form("chinchilla")
    truth = {"E": 1.8, "A": 400.0, "B": 400.0, "alpha": 0.34, "beta": 0.28}
    x = design(form, 20_000, seed=0)
    d = simulate(form, truth, x, sigma=0.01, likelihood=Likelihood(kind="failures"), failures=(0.2, 0.2), seed=0)
    law = np.asarray(form.mean(truth, {k: x[k] for k in form.inputs}), np.float64)
    residual = np.log(d["y"] / law)
    assert abs(np.mean(residual > 0.05) - 0.2 * 0.81) < 0.01  # P(|N(0, 0.2)| > 0.05) = 0.80, + noise
    assert np.mean(residual < -0.1) < 0.002  # a failed run is never better than the law (t tails: 3e-4)
