"""FitSettings: validated once (errors name the flag or the config key), recorded in summary.json,
read back by load_fit; the CLI builds it from its flags."""

import json
import pathlib
import sys

import numpy as np
import pytest

from tokeff.errors import UserError
from tokeff.laws.settings import FitSettings

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "fixtures"))
from handmade_fit import save_fit_dir  # noqa: E402


@pytest.mark.parametrize("changes, flag", [
    ({"method": "hmc"}, "--method"),
    ({"likelihood": "cauchy"}, "--likelihood"),
    ({"discrepancy": "always"}, "--discrepancy"),
    ({"init": "median"}, "--init"),
    ({"chains": 0}, "--chains"),
    ({"draws": 2.5}, "--draws"),
    ({"warmup": -1}, "--warmup"),
    ({"target_accept": 1.0}, "--target-accept"),
    ({"target_accept": float("nan")}, "--target-accept"),
    ({"chance": 1.0}, "--chance"),
    ({"method": "classic", "bootstrap": 5}, "--bootstrap"),
    ({"method": "classic", "likelihood": "student_t"}, "--likelihood"),
])
def test_bad_settings_name_their_flag(changes, flag):
    with pytest.raises(UserError, match=f"^{flag}: "):
        FitSettings(**changes)
    with pytest.raises(UserError, match=f"^{flag}: "):
        FitSettings().replace(**changes)
    key = flag.removeprefix("--").replace("-", "_")
    with pytest.raises(UserError, match=f"^config.fit.{key}: "):
        FitSettings.from_dict(changes, where="config.fit")


def test_round_trip_and_priors():
    s = FitSettings(method="map", draws=10, priors={"alpha": "uniform(0.1, 0.6)"}, chance=0.25, exclude=False)
    assert s.priors == (("alpha", "uniform(0.1, 0.6)"),) and s.prior_overrides == {"alpha": "uniform(0.1, 0.6)"}
    d = json.loads(json.dumps(s.as_dict()))
    assert d["priors"] == {"alpha": "uniform(0.1, 0.6)"}
    assert FitSettings.from_dict({**d, "retried": {"draws": 20}, "start": "prior"}) == s
    assert FitSettings.from_dict({}) == FitSettings()
    assert s.replace(seed=3).seed == 3 and s.seed == 0
    hash(s)  # frozen, with hashable fields


def test_summary_records_settings_and_load_fit_reads_them(tmp_path):
    from tokeff.laws.fit import fit, load_fit
    from tokeff.laws.simulate import isoflop_table

    t = isoflop_table("chinchilla", seed=0)
    settings = FitSettings(method="map", laplace_draws=200, seed=4)
    result = fit(t, "chinchilla", settings, discrepancy="none")  # overrides replace single settings
    assert result.settings == settings.replace(discrepancy="none")
    assert result.summary["settings"] == result.settings.as_dict()
    assert result.samples["alpha"].shape == (200,)
    loaded = load_fit(result.save(str(tmp_path / "fit"), plots=False))
    assert loaded.settings == result.settings


def test_a_summary_without_settings_still_loads(tmp_path):
    # summary.json files written before the record held only sampler numbers ("seed", "draws", ...).
    from tokeff.laws.fit import load_fit

    draws = {"E": np.full(20, 1.7), "A": np.full(20, 400.0), "B": np.full(20, 410.0), "alpha": np.full(20, 0.34),
             "beta": np.full(20, 0.28), "sigma": np.full(20, 0.02)}
    n, d = np.geomspace(1e7, 1e9, 6), np.geomspace(1e9, 1e11, 6)
    path = pathlib.Path(save_fit_dir(tmp_path / "old", "chinchilla", draws, {"N": n, "D": d}, 2 + 0 * n))
    summary = json.loads((path / "summary.json").read_text())
    summary["settings"] = {"seed": 0, "chains": 4, "draws": 1000, "init": "prior"}
    (path / "summary.json").write_text(json.dumps(summary))
    assert load_fit(str(path)).settings is None


def test_cli_builds_the_settings_from_its_flags():
    import argparse

    from tokeff.commands import fit as fit_command

    parser = argparse.ArgumentParser()
    fit_command.add_arguments(parser)
    args = parser.parse_args(["data.csv", "--form", "chinchilla", "--out", "o", "--method", "map", "--draws", "7",
                              "--prior", "alpha=uniform(0.1, 0.6)", "--no-exclude", "--chance", "0.25"])
    assert fit_command.fit_settings(args) == FitSettings(method="map", draws=7, priors={"alpha": "uniform(0.1, 0.6)"},
                                                         exclude=False, chance=0.25)
    defaults = parser.parse_args(["data.csv", "--form", "chinchilla", "--out", "o"])
    assert fit_command.fit_settings(defaults) == FitSettings()  # the flags' defaults are the record's
