"""`tokeff train` rejects bad input with one line and exit code 2, leaving nothing behind."""

from __future__ import annotations

import os

import pytest

from tokeff.cli import main

TINY = ["train", "--config", "configs/tiny.py", "--config.log.progress=False"]


def run_cli(capsys, workdir, *overrides) -> str:
    code = main([*TINY, "--workdir", str(workdir), *overrides])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("overrides, message", [
    (["--config.optim.lrr=0.1"], "config.optim.lrr: unknown config key"),
    (["--config.mesh.data=3"], "mesh: {'data': 3, 'fsdp': 1, 'tensor': 1} needs 3 devices but 1 are available"),
    (["--config.batch_size=6", "--config.microbatches=4"], "batch_size: 6 is not divisible by microbatches (4)"),
    (["--config.budget.flops=1e6"], "budget.flops: 1e+06 is less than one step of 1 row(s)"),
])
def test_bad_config_is_one_line_and_writes_nothing(capsys, tmp_path, overrides, message):
    workdir = tmp_path / "run"
    assert message in run_cli(capsys, workdir, *overrides)
    assert not workdir.exists()


def test_budget_error_names_the_minimum(capsys, tmp_path):
    from tokeff.flops import step_training_flops
    from tokeff.models.config import get_preset

    err = run_cli(capsys, tmp_path / "run", "--config.budget.flops=1e6")
    assert f"the minimum budget is {step_training_flops(get_preset('tiny'), 1, 64)}" in err


def test_unwritable_workdir(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    err = run_cli(capsys, blocker / "run")
    assert err.startswith("tokeff train: error: --workdir:") and "not a directory" in err
    assert os.listdir(tmp_path) == ["a_file"]
