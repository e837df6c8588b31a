"""Small versions of bench/scaling_validation.py: recovery, calibration, extrapolation.

Fixed seeds, so each is deterministic; sizes are cut so the file takes well under a minute on two
cores: recovery runs MAP/Laplace and the classic fit (the one compiled Laplace program is shared
with the other law tests), calibration is the one NUTS check (simulation-based calibration needs
the sampler), extrapolation a short NUTS fit. The full versions (250 points, 50 datasets per form,
4 x 1000 draws) are in the bench.
"""

from tokeff.laws import validation


def test_recovery_map_and_classic_cover_the_published_chinchilla_parameters():
    laplace = validation.recovery("map", n_points=60, discrepancy="none")
    classic = validation.recovery("classic", n_points=60, bootstrap=60)
    for result in (laplace, classic):
        missed = {k: v for k, v in result["params"].items() if not v[3]}
        assert not missed, missed
        assert result["fit"].diagnostics["ok"], result["fit"].diagnostics


def test_calibration_small():
    c = validation.calibration("finetune_multiplicative", n_datasets=8, n_points=24, chains=2, steps=150)
    assert c.kept + c.excluded == 8 and c.kept >= 6
    # 4 parameters x >= 6 datasets at a nominal 90%: under 70% hits means intervals far too narrow;
    # every hit would be likely only if they were far too wide.
    assert 0.7 <= c.pooled < 1.0, c
    assert set(c.per_param) == {"A", "alpha", "beta", "E"}


def test_extrapolation_small():
    r = validation.extrapolation(n_points=60, chains=1, draws=200, warmup=200, discrepancy="none")
    assert r["n_fit"] == 40 and r["n_predicted"] == 20
    assert r["fit"].diagnostics["divergences"] == 0  # the centred parametrisation's point
    assert 0.6 <= r["coverage"] <= 1.0 and 0 < r["median_width_percent"] < 30, r
