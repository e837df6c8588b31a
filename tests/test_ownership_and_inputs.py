"""What the bad-input table cannot show (it only sees refusals): the accepted side of the ownership
rule, the bounded reader and the user-module loader, and the behaviours that replaced silent
acceptance: a misfit is not ok, ignored flags warn once, dropped rows are listed, `--map` leaves
DATA alone, output directories get the mode mkdir gives, ties survive 6-digit rounding."""

from __future__ import annotations

import json
import os
import pathlib
import stat

import numpy as np
import pytest

from tokeff.errors import UserError


def _main(argv, capsys) -> tuple[int, str, list[str]]:
    from tokeff.cli import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, [line for line in out.err.splitlines() if line.strip()]


def _table(path, extra_rows: str = "") -> str:
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), 16))
    d = np.exp(rng.uniform(np.log(5e9), np.log(5e11), 16))
    # 1% noise on log loss: a noiseless table drives MAP's noise scale to zero, where it cannot converge
    loss = (1.69 + 406.4 / n**0.34 + 410.7 / d**0.28) * np.exp(0.01 * np.random.default_rng(1).standard_normal(16))
    rows = "".join(f"{a:.6g},{b:.6g},{c:.6g}\n" for a, b, c in zip(n, d, loss))
    path.write_text("params,tokens,loss\n" + rows + extra_rows)
    return str(path)


# --- directories: new, empty or tokeff's own ------------------------------------------------


def test_a_workdir_is_accepted_new_empty_or_marked_and_refused_otherwise(tmp_path):
    from tokeff.ownership import WORKDIR_MARKER, check_workdir_owned
    from tokeff.workdir import workdir_lock

    check_workdir_owned(str(tmp_path / "new"), "train")
    (tmp_path / "empty").mkdir()
    with workdir_lock(tmp_path / "empty", kind="train") as wd:
        assert json.loads(open(os.path.join(wd, WORKDIR_MARKER)).read()) == {"kind": "train"}
    assert os.listdir(tmp_path / "empty") == []  # nothing else written: the marker goes too
    from tokeff.train.defaults import base_config

    legacy = tmp_path / "legacy"  # a train workdir from before markers: its config.json is its record
    legacy.mkdir()
    (legacy / "config.json").write_text(json.dumps(base_config().to_dict()))
    check_workdir_owned(str(legacy), "train")
    with pytest.raises(UserError, match="not a sweep workdir"):
        (tmp_path / "t").mkdir()
        (tmp_path / "t" / WORKDIR_MARKER).write_text('{"kind": "train"}')
        check_workdir_owned(str(tmp_path / "t"), "sweep")
    with pytest.raises(UserError, match="tokeff did not create it"):
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.txt").write_text("keep")
        check_workdir_owned(str(tmp_path / "mine"), "train")
    in_flight = tmp_path / "in_flight"  # another run is writing its marker: tokeff's, so the lock decides
    in_flight.mkdir()
    (in_flight / f".{WORKDIR_MARKER}.x81dhtp3.tmp").write_text("{")
    check_workdir_owned(str(in_flight), "train")


@pytest.mark.parametrize("kind,name,text", [
    ("sweep", "sweep.json", '{"method": "bayes", "parameters": {}}'),  # another tool's sweep config
    ("train", "point.json", '{"x": 1.5, "y": 2}'),
    ("train", "config.json", '{"architectures": ["LlamaForCausalLM"], "hidden_size": 64}'),  # a model folder
])
def test_a_folder_is_a_workdir_from_before_markers_by_its_record_not_a_file_name(tmp_path, kind, name, text):
    """A user's sweep.json or point.json beside their own files was taken for a run record: `tokeff
    sweep` then replaced that sweep.json, `tokeff train` cut the user's metrics.jsonl to its step rows."""
    from tokeff.ownership import check_workdir_owned

    (tmp_path / name).write_text(text)
    (tmp_path / "metrics.jsonl").write_text("my own log\n")
    with pytest.raises(UserError, match="tokeff did not create it"):
        check_workdir_owned(str(tmp_path), kind)
    assert sorted(os.listdir(tmp_path)) == sorted([name, "metrics.jsonl"])


def test_a_sweep_into_a_folder_of_the_users_own_writes_nothing_whoever_calls_it(tmp_path):
    """`run_sweep` checks its folder itself: the demo runs its sweep in RUN/sweep without `tokeff sweep`'s lock."""
    from tokeff import sweep
    from tokeff.train.config import load_config

    config = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "sweep_tiny.py"), [])
    mine = tmp_path / "sweep"
    mine.mkdir()
    (mine / "results.jsonl").write_text('{"mine": true}\n')

    def runner(*args):
        raise AssertionError("no point may run in a folder tokeff did not create")

    with pytest.raises(UserError, match="--workdir: .* tokeff did not create it"):
        sweep.run_sweep(config, str(mine), runner=runner, progress=False)
    assert os.listdir(mine) == ["results.jsonl"] and (mine / "results.jsonl").read_text() == '{"mine": true}\n'


def test_the_demo_refuses_another_tokeff_output_as_its_run_folder(tmp_path):
    """The demo writes results.csv, report.txt, ... in place: in a fit's folder they would replace
    files the user put there beside the fit."""
    from tokeff.demo import _claim_workdir
    from tokeff.io import output_dir
    from tokeff.ownership import release_held_locks

    fit = tmp_path / "fit"
    with output_dir(fit, "fit") as staging:
        (pathlib.Path(staging) / "summary.json").write_text("{}")
    (fit / "results.csv").write_text("my own table\n")
    before = {p.name: p.read_bytes() for p in fit.iterdir()}
    with pytest.raises(UserError, match="--workdir: .* holds a tokeff fit, not a demo run folder"):
        _claim_workdir(str(fit))
    assert {p.name: p.read_bytes() for p in fit.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["fit"]  # the lock beside it is released
    _claim_workdir(str(tmp_path / "run"))  # a new folder becomes a demo's
    _claim_workdir(str(tmp_path / "run"))  # and is accepted again
    release_held_locks()


def test_an_output_directory_is_locked_until_the_command_returns(tmp_path):
    from tokeff.io import claim_output_dir
    from tokeff.ownership import release_held_locks

    out = tmp_path / "a" / "b" / "fit"  # parents missing: the lock goes beside the nearest that exists
    claim_output_dir(out, "fit")
    claim_output_dir(out, "fit")  # the same process again: already its own
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tokeff-lock")]
    release_held_locks()
    assert os.listdir(tmp_path) == []  # nothing created, the lock file removed


# --- the same rule on an object store (fsspec: memory:// and file:// stand in for gs://) ---------


@pytest.fixture
def memfs():
    import fsspec

    fs = fsspec.filesystem("memory")
    yield fs
    if fs.exists("/t"):
        fs.rm("/t", recursive=True)


def test_a_remote_workdir_follows_the_same_rule_and_is_locked(memfs):
    from tokeff.ownership import check_workdir_owned
    from tokeff.workdir import workdir_lock

    with workdir_lock("memory://t/run", kind="train") as wd:
        assert wd == "memory://t/run"
        assert json.loads(memfs.cat_file("/t/run/.tokeff-workdir.json")) == {"kind": "train"}
        holder = json.loads(memfs.cat_file("/t/run/.tokeff-lock"))
        assert holder["pid"] == os.getpid()
        with pytest.raises(UserError, match=rf"in use by process {os.getpid()} on "):
            with workdir_lock("memory://t/run", kind="train"):
                pass
        memfs.pipe_file("/t/run/metrics.jsonl", b"{}\n")
    assert not memfs.exists("/t/run/.tokeff-lock")  # released
    with workdir_lock("memory://t/run", kind="train"):  # a rerun: marked by tokeff, so accepted
        pass
    with pytest.raises(UserError, match="not a sweep workdir"):
        check_workdir_owned("memory://t/run", "sweep")
    memfs.pipe_file("/t/mine/notes.txt", b"keep")
    with pytest.raises(UserError, match=r"tokeff did not create it \(it holds notes.txt\)"):
        check_workdir_owned("memory://t/mine", "train")
    memfs.pipe_file("/t/afile", b"keep")
    with pytest.raises(UserError, match="is a file"):
        check_workdir_owned("memory://t/afile", "train")
    with workdir_lock("memory://t/refused", kind="train"):
        pass
    assert not memfs.exists("/t/refused/.tokeff-workdir.json")  # nothing added: the marker goes too


def test_a_remote_lock_left_by_a_dead_process_on_this_host_is_taken_over_others_are_named(memfs):
    import socket
    import subprocess
    import sys

    from tokeff.workdir import workdir_lock

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    memfs.pipe_file("/t/run/.tokeff-workdir.json", b'{"kind": "train"}')
    memfs.pipe_file("/t/run/.tokeff-lock", json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)}).encode())
    with workdir_lock("memory://t/run", kind="train"):
        assert json.loads(memfs.cat_file("/t/run/.tokeff-lock"))["pid"] == os.getpid()
    memfs.pipe_file("/t/run/.tokeff-lock", json.dumps({"host": "worker-7", "pid": 12, "since": "then"}).encode())
    with pytest.raises(UserError, match=r"in use by process 12 on worker-7 since then .*delete memory://t/run/"):
        with workdir_lock("memory://t/run", kind="train"):
            pass


def test_each_shard_of_a_remote_sweep_holds_its_own_lock(memfs):
    from tokeff.workdir import workdir_lock

    with workdir_lock("memory://t/sweep", kind="sweep", shard=(0, 2)):
        with workdir_lock("memory://t/sweep", kind="sweep", shard=(1, 2)):
            assert sorted(n.rsplit("/", 1)[1] for n in memfs.ls("/t/sweep", detail=False)) == [
                ".tokeff-lock-shard-0-of-2", ".tokeff-lock-shard-1-of-2", ".tokeff-workdir.json"]
        with pytest.raises(UserError, match="in use"):
            with workdir_lock("memory://t/sweep", kind="sweep", shard=(0, 2)):
                pass


def test_a_remote_lock_on_a_real_disk_is_created_exclusively(tmp_path):
    """file:// goes through fsspec's local filesystem: "xb" is O_EXCL, so only one creator wins."""
    from tokeff.ownership import acquire_remote_lock, release_remote_lock

    url = f"file://{tmp_path}/.tokeff-lock"
    assert acquire_remote_lock(url, "--workdir", "w", "test") == url
    with pytest.raises(UserError, match="in use"):
        acquire_remote_lock(url, "--workdir", "w", "test")
    release_remote_lock(url)
    assert os.listdir(tmp_path) == []


def test_outputs_get_the_mode_mkdir_gives_so_a_team_can_read_them(tmp_path):
    from tokeff.io import output_dir, write_json

    with output_dir(tmp_path / "out", "fit") as staging:
        write_json(os.path.join(staging, "a.json"), {})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "out").st_mode) == 0o777 & ~mask


# --- the bounded reader --------------------------------------------------------------------


def test_the_reader_refuses_past_the_limit_naming_it(tmp_path, monkeypatch):
    from tokeff.inputs import read_input_text

    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "1,2\n" * 400_000)  # 1.6 MB
    assert read_input_text(path, "data").startswith("a,b")
    monkeypatch.setenv("TOKEFF_MAX_INPUT_MB", "1")
    with pytest.raises(UserError, match=r"data: .*t.csv is 2 MiB, over the 1 MiB limit"):
        read_input_text(path, "data")


# --- user modules ----------------------------------------------------------------------------

MY_FORMS = """
import dataclasses
from tokeff.laws.forms import get_form, register_form
register_form(dataclasses.replace(get_form("chinchilla"), name="my_chinchilla"))
"""


def test_a_user_form_by_path_or_by_name_in_the_cwd_fits_allocates_and_proposes(tmp_path, capsys, monkeypatch):
    from tokeff.laws import forms

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.dont_write_bytecode", True)
    (tmp_path / "my_forms.py").write_text(MY_FORMS)
    table = _table(tmp_path / "t.csv")
    try:
        code, out, err = _main(["fit", table, "--module", "./my_forms.py", "--form", "my_chinchilla", "--map",
                                "N=params", "D=tokens", "--target", "loss", "--method", "map", "--no-plots",
                                "--out", "fit"], capsys)
        assert code == 0, err
        forms._REGISTRY.pop("my_chinchilla")  # a new process: allocate must import it itself
        code, out, err = _main(["allocate", "fit", "--budget", "1e21", "--module", "my_forms", "--out", "alloc"],
                               capsys)
        assert code == 0, err
        assert json.loads((tmp_path / "alloc" / "allocation.json").read_text())["kind"] == "pretraining"
        # propose too, though the table named D's column its own way (--map D=tokens): options say tokens_seen
        code, out, err = _main(["propose", "fit", "--module", "my_forms", "--models", "smollm2-135m", "--n-examples",
                                "1000,100000", "--lengths-grid", "256,1024", "--out", "prop"], capsys)
        assert code == 0, err
        assert len(json.loads((tmp_path / "prop" / "proposals.json").read_text())["proposals"]) == 4
    finally:
        forms._REGISTRY.pop("my_chinchilla", None)
        import sys

        sys.modules.pop("my_forms", None)
        sys.modules.pop("tokeff_user_my_forms", None)


def test_a_built_in_form_cannot_be_re_registered():
    import dataclasses

    from tokeff.laws.forms import get_form, register_form

    with pytest.raises(UserError, match="chinchilla: is a built-in form"):
        register_form(dataclasses.replace(get_form("chinchilla"), description="mine"))
    register_form(get_form("chinchilla"))  # the very same object: a no-op


# --- fits: misfits, ignored flags, dropped rows, DATA after --map -----------------------------


def test_map_leaves_data_alone_ignored_flags_warn_once_and_dropped_rows_are_listed(tmp_path, capsys):
    table = _table(tmp_path / "t.csv", extra_rows="nan,1e10,3.0\n")
    out = tmp_path / "fit"
    code, stdout, err = _main(["fit", "--map", "N=params", "D=tokens", table, "--form", "chinchilla", "--target",
                               "loss", "--method", "map", "--draws", "50", "--chains", "2", "--init", "prior", "--drop-invalid",
                               "--no-plots", "--out", str(out)], capsys)
    assert code == 0, err
    assert err == ["tokeff fit: warning: --chains, --draws, --init: ignored by --method map"]
    assert "excluded 1 row(s)" in stdout and "row 16" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["excluded"] == [{"row": 16, "value": 3.0, "reason": "invalid: NaN/inf in a used column "
                                                                       "(--drop-invalid)"}]
    assert summary["diagnostics"]["ok"] and summary["diagnostics"]["outside_90"] < 0.5


def test_a_fit_that_misses_its_own_data_is_not_ok(tmp_path):
    from tokeff.laws.fit import fit

    table = _table(tmp_path / "t.csv")  # losses 2.0-3.4: a floor E in (5, 6) is above every one
    result = fit(table, "chinchilla", method="map", priors={"E": "uniform(5, 6)"},
                 mapping={"N": "params", "D": "tokens"}, target="loss")
    diag = result.diagnostics
    assert not diag["ok"] and diag["one_side_of_median"] == 1.0
    assert any("one side of their own predictive median" in p for p in diag["problems"])


# --- backtest cuts, allocation wording, help --------------------------------------------------


def test_cuts_keep_isoflop_budgets_whole_in_a_table_rounded_to_6_digits():
    from tokeff.laws.data import cut_between_ties

    rng = np.random.default_rng(1)
    products = []
    for budget in (1e18, 3e18, 1e19, 3e19, 1e20):
        n = np.geomspace(1e7, 1e9, 8) * rng.uniform(0.9, 1.1)
        d = budget / (6 * n)
        rounded = [float(f"{x:.6g}") * float(f"{y:.6g}") for x, y in zip(n, d)]
        products += rounded
    assert len(set(products)) > 5  # rounding made the ties inexact
    values = np.sort(products)
    for cut in range(1, 40):
        assert cut_between_ties(values, cut) % 8 == 0


def test_a_small_step_outside_the_range_is_stated_as_a_percentage():
    from tokeff.decide.allocation import _beyond

    assert _beyond(1.004) == "0.4% beyond it"
    assert _beyond(34.0) == "extrapolating by 34x"


def test_help_states_defaults_and_prints_percent_signs_once(capsys):
    for argv, wanted in ((["eval", "--help"], "95% interval"), (["fit", "--help"], "default 4, at most 64"),
                         (["fit", "--help"], "(default: nuts)"), (["fit", "--help"], "default 1000, at most 1,000,000"),
                         (["fit", "--help"], "in [0, 2^32 - 1] (default 0)"), (["fit", "--help"], "write no PNG plots"),
                         (["backtest", "--help"], "default 4, at most 64"), (["backtest", "--help"], "(default: nuts)"),
                         (["compare", "--help"], "default: loo")):
        code, out, _ = _main(argv, capsys)
        assert code == 0 and wanted in " ".join(out.split()) and "%%" not in out


def test_every_default_a_help_states_is_the_flag_default():
    """A help text's "(default X)" is checked against argparse's default, for every flag of every
    command (a changed default with a stale help fails here); an output flag names its own kind."""
    import argparse
    import re

    from tokeff.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    checked = 0
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.default is None or isinstance(action.default, bool) or not action.help:
                continue
            for stated in re.findall(r"default:? ([\w.$~/:-]+)", action.help):
                stated = stated.rstrip(":")  # "(default 0: the model context)"
                assert stated == str(action.default), f"{name} {action.option_strings}: {stated} != {action.default}"
                checked += 1
        outputs = {a.option_strings[0]: a.help for a in command._actions if a.option_strings[:1] in (["--out"],
                                                                                                   ["--force"])}
        for flag in ("--out", "--force"):
            if name in ("fit", "backtest", "predict"):
                assert f"tokeff {name} already" in outputs[flag], (name, flag, outputs[flag])
    assert checked >= 25


@pytest.mark.parametrize("argv", [["fit", "t.csv", "--form", "volume", "--group", "model", "--init", "laplace"],
                                  ["backtest", "t.csv", "--form", "finetune_data", "--decision", "model", "--by", "D",
                                   "--init", "prior"]])
def test_init_on_a_hierarchical_fit_is_refused_not_ignored(argv, tmp_path, capsys):
    """A grouped fit's chains start at the prior medians whatever --init says: refused before --out."""
    code, _, err = _main([*argv, "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err) == 1 and "--init" in err[0], err
    assert not (tmp_path / "out").exists()
