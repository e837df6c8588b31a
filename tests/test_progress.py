"""Large but allowed sizes show a progress bar on stderr; small ones stay silent (`tokeff.progress`).

The thresholds are lowered here (monkeypatched), so a small, fast run stands in for a long one."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "fixtures"))
from handmade_fit import save_fit_dir  # noqa: E402


def test_the_thresholds_and_the_switch(monkeypatch):
    from tokeff.progress import show_progress

    monkeypatch.delenv("TOKEFF_PROGRESS", raising=False)
    assert not show_progress(99, 100) and show_progress(100, 100)
    monkeypatch.setenv("TOKEFF_PROGRESS", "0")
    assert not show_progress(1e12, 100)
    monkeypatch.setenv("TOKEFF_PROGRESS", "1")
    assert show_progress(1, 100)


@pytest.fixture(scope="module")
def volume_fit(tmp_path_factory):
    rng = np.random.default_rng(0)
    draws = {k: v * np.exp(0.02 * rng.standard_normal(200)) for k, v in dict(A=1e-3, beta=0.1, gamma=0.3,
                                                                               E=0.25).items()}
    v, m = np.geomspace(1e4, 1e6, 12), np.tile([1.5e5, 1.7e6], 6)
    y = np.clip(1e-3 * v**0.1 * m**0.3 + 0.25, 0, 1)
    return save_fit_dir(tmp_path_factory.mktemp("fits") / "volume", "volume", draws, {"V": v, "M": m}, y,
                        n_eval=np.full(12, 200))


@pytest.mark.parametrize("large", [False, True])
def test_propose_scoring_shows_progress_when_the_work_is_large(volume_fit, tmp_path, capsys, monkeypatch, large):
    from tokeff.cli import main

    monkeypatch.delenv("TOKEFF_PROGRESS", raising=False)
    if large:  # 4 candidates x 16 sims x 200 draws = 12,800 likelihood evaluations count as large
        monkeypatch.setattr("tokeff.decide.proposals.PROPOSE_WORK", 10_000)
    capsys.readouterr()
    code = main(["propose", volume_fit, "--models", "tiny", "--lengths-grid", "32,64", "--n-examples", "100,1000",
                 "--sims", "16", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert ("propose: scoring candidates" in err and "4/4" in err) == large, err
    assert json.loads((tmp_path / "out" / "proposals.json").read_text())["n_candidates"] == 4


@pytest.mark.parametrize("large", [False, True])
def test_a_classic_bootstrap_shows_progress_when_it_is_large(capsys, monkeypatch, large):
    from tokeff.laws.classic import fit_classic
    from tokeff.laws.forms import get_form

    monkeypatch.delenv("TOKEFF_PROGRESS", raising=False)
    if large:  # 64 refits in chunks of 32 count as large
        monkeypatch.setattr("tokeff.laws.classic.BOOTSTRAP_REFITS", 50)
    rng = np.random.default_rng(0)
    n, d = np.exp(rng.uniform(18, 23, 12)), np.exp(rng.uniform(22, 26, 12))
    y = 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28
    capsys.readouterr()
    result = fit_classic(get_form("chinchilla"), {"N": n, "D": d}, y, bootstrap=64, chunk=32, grid_iter=3,
                         max_iter=5, n_polish=2)
    err = capsys.readouterr().err
    assert ("classic: 64 bootstrap refits" in err and "2/2" in err) == large, err
    assert result["bootstrap"] == 64


def test_a_long_nuts_run_asks_numpyro_for_its_progress_bar(monkeypatch):
    """numpyro draws the NUTS bar itself (and turns it off under CI); what tokeff decides is the request."""
    from tokeff.laws import fit as fit_module

    asked = []

    def fake_run_nuts(*args, progress=False, **kwargs):
        asked.append(progress)
        raise KeyboardInterrupt  # stop here: only the request is under test

    monkeypatch.delenv("TOKEFF_PROGRESS", raising=False)
    monkeypatch.setattr(fit_module, "run_nuts", fake_run_nuts)
    rng = np.random.default_rng(0)
    n, d = np.exp(rng.uniform(18, 23, 12)), np.exp(rng.uniform(22, 26, 12))
    table = {"params": n, "tokens": d, "loss": 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28}
    for steps, expected in [(fit_module.NUTS_STEPS, False), (10, True)]:
        monkeypatch.setattr(fit_module, "NUTS_STEPS", steps)
        with pytest.raises(KeyboardInterrupt):
            fit_module.fit(table, "chinchilla", method="nuts", chains=2, draws=100, warmup=100,
                           mapping={"N": "params", "D": "tokens"}, target="loss")
        assert asked[-1] is expected
