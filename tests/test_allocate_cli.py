"""`tokeff allocate` and `tokeff propose` end to end on small synthetic fits saved with Fit.save."""

import json
import pathlib
import sys

import numpy as np
import pytest

from tokeff.cli import _ArgumentParser
from tokeff.errors import UserError

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "fixtures"))
from handmade_fit import save_fit_dir  # noqa: E402

PUBLISHED = dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


def _draws(center, n=400, rel=0.02, seed=0):
    rng = np.random.default_rng(seed)
    return {k: v * np.exp(rel * rng.standard_normal(n)) for k, v in center.items()}


@pytest.fixture(scope="module")
def chinchilla_fit(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), 20))
    d = np.exp(rng.uniform(np.log(5e9), np.log(5e11), 20))
    y = 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28
    draws = {**_draws(PUBLISHED), "sigma": np.full(400, 0.02)}
    root = tmp_path_factory.mktemp("fits")
    return {ok: save_fit_dir(root / f"chinchilla-{ok}", "chinchilla", draws, {"N": n, "D": d}, y, ok=ok)
            for ok in (True, False)}


@pytest.fixture(scope="module")
def volume_fit(tmp_path_factory):
    # acc = A V^beta M^gamma + E with gamma > beta: at a fixed budget the bigger model wins.
    draws = _draws(dict(A=1e-3, beta=0.1, gamma=0.3, E=0.25))
    v = np.geomspace(1e4, 1e6, 12)
    m = np.tile([1.5e5, 1.7e6], 6)
    y = np.clip(1e-3 * v**0.1 * m**0.3 + 0.25, 0, 1)
    return save_fit_dir(tmp_path_factory.mktemp("fits") / "volume", "volume", draws, {"V": v, "M": m}, y,
                    n_eval=np.full(12, 200))


def _run(module_name: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """Parse and run one command as `tokeff` does: UserError -> exit 2 with one line."""
    import importlib

    module = importlib.import_module(f"tokeff.commands.{module_name}")
    parser = _ArgumentParser(prog=f"tokeff {module_name}")
    module.add_arguments(parser)
    try:
        args = parser.parse_args(argv)
        args._extra = []
        code = module.run(args)
    except UserError as e:
        print(f"error: {e}", file=__import__("sys").stderr)
        code = 2
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_allocate_pretraining_with_extrapolation_warning(chinchilla_fit, tmp_path, capsys):
    code, out, err = _run("allocate", [chinchilla_fit[True], "--budget", "5.76e23", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "allocation.json").read_text())
    q = result["decision"]["N_opt"]
    assert q["q05"] < 3.22e10 < q["q95"]
    assert set(q) >= {"median", "q05", "q10", "q90", "q95"}
    # The data's largest 6ND is below 4.8e22: the warning states the factor (>= 12x).
    assert "extrapolating by" in err and "extrapolating by" in result["warnings"][0]
    assert err.count("extrapolating by") == 1 and "extrapolating by" not in out  # each warning once
    factor = float(result["warnings"][0].split("extrapolating by ")[1].rstrip("x"))
    assert factor > 10
    assert (tmp_path / "frontier.png").stat().st_size > 10_000
    assert "N_opt" in out and "tokens_per_param" in out


def test_refuses_unconverged_fit_unless_forced(chinchilla_fit, tmp_path, capsys):
    code, _, err = _run("allocate", [chinchilla_fit[False], "--budget", "1e21", "--out", str(tmp_path)], capsys)
    assert code == 2 and "diagnostics not ok" in err and "--force" in err
    assert not (tmp_path / "allocation.json").exists()
    code, _, err = _run("allocate", [chinchilla_fit[False], "--budget", "1e21", "--out", str(tmp_path), "--force"],
                        capsys)
    assert code == 0, err


@pytest.mark.parametrize("argv,field", [
    (["/nonexistent/fit", "--budget", "1e20"], "FIT_DIR"),
    (["{fit}", "--budget", "-1e20"], "--budget"),
    (["{fit}", "--budget", "lots"], "--budget"),
    (["{fit}", "--budget", "1e20", "--models", "gpt-9"], "model"),
    (["{fit}", "--budget", "1e20", "--models", "tiny", "--lengths-grid", "0"], "--lengths-grid"),
])
def test_bad_input_exits_2(chinchilla_fit, argv, field, tmp_path, capsys):
    argv = [a.format(fit=chinchilla_fit[True]) for a in argv] + ["--out", str(tmp_path / "out")]
    code, _, err = _run("allocate", argv, capsys)
    assert code == 2 and field in err


def test_allocate_finetuning_choice(volume_fit, tmp_path, capsys):
    argv = [volume_fit, "--budget", "2e11", "--models", "tiny,ladder-2m", "--lengths-grid", "64,256",
            "--epochs", "1,2", "--max-examples", "2000", "--out", str(tmp_path)]
    code, out, err = _run("allocate", argv, capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "allocation.json").read_text())
    decision = result["decision"]
    assert decision["model"] == "ladder-2m"
    assert decision["flops"] <= 2e11 and decision["n_examples"] <= 2000
    assert {"median", "q05", "q95"} <= set(decision["predicted"])
    assert 0 < decision["p_best"] <= 1 and decision["expected_regret"] >= 0
    # tiny at 64 tokens would need 4238 examples (2119 over 2 epochs) to spend 2e11 FLOPs.
    assert any(i["label"].startswith("tiny") and "only 2000 available" in i["reason"] for i in result["infeasible"])
    assert all(o["n_examples"] <= 2000 for o in result["options"])
    assert isinstance(result["indistinguishable"], bool) and result["runner_up"]["label"] != decision["label"]
    assert len(result["budget_sweep"]) == 9 and "across budgets" in out
    assert (tmp_path / "allocation_budgets.png").exists()


def test_propose_ranks_and_writes_sweep_points(volume_fit, tmp_path, capsys):
    grid = {"models": ["tiny", "ladder-2m"], "n_examples": [50, 400], "avg_tokens": [64, 256], "seeds": [0]}
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    argv = [volume_fit, "--grid", str(tmp_path / "grid.json"), "--top", "3", "--budget", "2e11",
            "--sims", "16", "--out", str(tmp_path / "out")]
    code, out, err = _run("propose", argv, capsys)
    assert code == 0, err
    proposals = json.loads((tmp_path / "out" / "proposals.json").read_text())
    assert proposals["n_candidates"] == 8 and len(proposals["proposals"]) == 3
    ratios = [p["information_per_pflop"] for p in proposals["proposals"]]
    assert ratios == sorted(ratios, reverse=True)
    points = json.loads((tmp_path / "out" / "sweep_points.json").read_text())["points"]
    assert set(points[0]) == {"model", "budget_flops", "composition", "seed"}
    assert points[0]["composition"] == {"strategy": "random", "n_examples": proposals["proposals"][0]["n_examples"],
                                        "avg_tokens": proposals["proposals"][0]["avg_tokens"]}
    assert points[0]["budget_flops"] == proposals["proposals"][0]["flops"]


def test_propose_pretraining_and_bad_grid(chinchilla_fit, tmp_path, capsys):
    argv = [chinchilla_fit[True], "--models", "ladder-7m,ladder-57m", "--n-examples", "1000,100000",
            "--lengths-grid", "1024", "--budget", "1e21", "--sims", "16", "--out", str(tmp_path / "out")]
    code, out, err = _run("propose", argv, capsys)
    assert code == 0, err
    assert "log10 N_opt" in out and len(json.loads((tmp_path / "out" / "proposals.json").read_text())["proposals"]) == 4
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = _run("propose", [chinchilla_fit[True], "--grid", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o2")],
                        capsys)
    assert code == 2 and "--grid" in err


def test_allocate_strategies_from_dataset_lengths(volume_fit, tmp_path, capsys):
    lengths = np.random.default_rng(0).integers(20, 400, 300)
    (tmp_path / "lengths.txt").write_text("\n".join(map(str, lengths)))
    argv = [volume_fit, "--budget", "1e10", "--models", "tiny", "--strategies", "few_long,many_short,balanced",
            "--lengths", str(tmp_path / "lengths.txt"), "--out", str(tmp_path / "out")]
    code, _, err = _run("allocate", argv, capsys)
    assert code == 0, err
    options = {o["strategy"]: o for o in json.loads((tmp_path / "out" / "allocation.json").read_text())["options"]}
    assert set(options) == {"few_long", "many_short", "balanced"}
    assert options["few_long"]["avg_tokens"] > options["balanced"]["avg_tokens"] > options["many_short"]["avg_tokens"]
    assert all(o["flops"] <= 1e10 and o["n_examples"] < 300 for o in options.values())
    code, _, err = _run("allocate", argv[:-4] + ["--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "--lengths" in err


def test_propose_with_a_grid_informs_a_choice_among_strategies(volume_fit, tmp_path, capsys):
    """--strategies beside --grid is not ignored: the decision the candidates inform is among strategies."""
    lengths = np.random.default_rng(0).integers(20, 400, 300)
    (tmp_path / "lengths.txt").write_text("\n".join(map(str, lengths)))
    (tmp_path / "grid.json").write_text(json.dumps({"models": ["tiny"], "n_examples": [50, 200], "avg_tokens": [64]}))
    outcomes = {}
    for label, extra in (("lengths", []), ("strategies", ["--strategies", "few_long,many_short,balanced",
                                                           "--lengths", str(tmp_path / "lengths.txt")])):
        argv = [volume_fit, "--grid", str(tmp_path / "grid.json"), "--budget", "1e10", "--sims", "8", *extra,
                "--out", str(tmp_path / label)]
        code, _, err = _run("propose", argv, capsys)
        assert code == 0, err
        outcomes[label] = json.loads((tmp_path / label / "proposals.json").read_text())
    assert "of 1 options" in outcomes["lengths"]["uncertainty"]
    assert "of 3 options" in outcomes["strategies"]["uncertainty"]
