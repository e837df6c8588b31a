"""Output writing never deletes or overwrites what tokeff did not create (tokeff.io)."""

import json
import os
import subprocess
import sys

import pytest

from tokeff.errors import UserError
from tokeff.io import MANIFEST, claim_output_dir, output_dir, read_manifest, write_json


def _snapshot(root):
    """Every file below `root` with its bytes: 'nothing changed on disk' is equality of these."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def test_new_directory_appears_whole_with_a_manifest(tmp_path):
    with output_dir(tmp_path / "fit", "fit") as staging:
        write_json(os.path.join(staging, "summary.json"), {"a": 1})
        assert not (tmp_path / "fit").exists()  # nothing visible until the end
    assert sorted(os.listdir(tmp_path / "fit")) == [MANIFEST, "summary.json"]
    assert read_manifest(tmp_path / "fit") == {"kind": "fit", "files": ["summary.json"]}
    assert os.listdir(tmp_path) == ["fit"]  # no staging folder left


@pytest.mark.parametrize("setup", ["file", "foreign_dir", "dot"])
def test_foreign_paths_are_refused_and_untouched(tmp_path, setup, monkeypatch):
    (tmp_path / "data.csv").write_text("N,loss\n1,2\n")
    if setup == "file":
        target = tmp_path / "data.csv"
    elif setup == "foreign_dir":
        target = tmp_path / "x"
        target.mkdir()
        (target / "thesis.txt").write_text("keep")
    else:
        monkeypatch.chdir(tmp_path)
        target = "."
    before = _snapshot(tmp_path)
    with pytest.raises(UserError, match="--out"):
        claim_output_dir(target, "fit")
    with pytest.raises(UserError, match="--out"):
        claim_output_dir(target, "fit", force=True)  # --force never covers what tokeff did not write
    with pytest.raises(UserError):
        with output_dir(target, "fit", force=True):
            pass
    assert _snapshot(tmp_path) == before


def test_earlier_output_needs_force_and_force_replaces_only_tokeff_files(tmp_path):
    target = tmp_path / "fit"
    with output_dir(target, "fit") as staging:
        write_json(os.path.join(staging, "summary.json"), {"v": 1})
        write_json(os.path.join(staging, "old_plot.json"), {"v": 1})
    (target / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="--force"):
        claim_output_dir(target, "fit")
    with output_dir(target, "fit", force=True) as staging:
        write_json(os.path.join(staging, "summary.json"), {"v": 2})
    assert json.loads((target / "summary.json").read_text()) == {"v": 2}
    assert not (target / "old_plot.json").exists()  # tokeff's own earlier file, not written this time
    assert (target / "notes.txt").read_text() == "mine"
    assert read_manifest(target)["files"] == ["summary.json"]


def test_force_replaces_only_an_output_of_the_same_kind(tmp_path):
    """`tokeff predict FIT --out FIT --force` deleted the fit it had just read (summary.json, posterior.nc)."""
    target = tmp_path / "fit"
    with output_dir(target, "fit") as staging:
        write_json(os.path.join(staging, "summary.json"), {"v": 1})
    before = sorted(os.listdir(target))
    for kind in ("predict", "backtest"):
        with pytest.raises(UserError, match="--out: .* holds a tokeff fit, and --force replaces only a tokeff"):
            with output_dir(target, kind, force=True) as staging:
                write_json(os.path.join(staging, "predictions.json"), {})
    assert sorted(os.listdir(target)) == before and json.loads((target / "summary.json").read_text()) == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["fit"]  # no staging folder or lock left beside it


def test_adding_files_to_an_output_keeps_its_files_and_refuses_foreign_names(tmp_path):
    target = tmp_path / "fit"
    with output_dir(target, "fit") as staging:
        write_json(os.path.join(staging, "summary.json"), {})
    (target / "allocation.json").write_text("user's own file")
    with pytest.raises(UserError, match="tokeff did not write it"):
        with output_dir(target, "allocation", allow_existing=True) as staging:
            write_json(os.path.join(staging, "allocation.json"), {"x": 1})
    assert (target / "allocation.json").read_text() == "user's own file"
    os.unlink(target / "allocation.json")
    for value in (1, 2):  # a re-run replaces the file tokeff wrote the first time
        with output_dir(target, "allocation", allow_existing=True) as staging:
            write_json(os.path.join(staging, "allocation.json"), {"x": value})
    assert json.loads((target / "allocation.json").read_text()) == {"x": 2}
    assert read_manifest(target) == {"kind": "fit", "files": ["allocation.json", "summary.json"]}


def test_an_error_while_writing_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with output_dir(tmp_path / "fit", "fit") as staging:
            write_json(os.path.join(staging, "summary.json"), {})
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_staging_left_by_a_killed_process_is_cleaned(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".tokeff-staging-{int(dead.stdout)}-abc"
    stale.mkdir()
    (stale / "summary.json").write_text("{}")
    live = tmp_path / f".tokeff-staging-{os.getpid()}-xyz"
    live.mkdir()
    claim_output_dir(tmp_path / "fit", "fit")
    assert not stale.exists() and live.exists()


class _Killed(BaseException):
    """SIGKILL's stand-in: no `except Exception` or cleanup in tokeff's own code acts on it."""


def test_a_kill_while_files_move_into_an_output_leaves_a_rerun_that_is_accepted(tmp_path, monkeypatch):
    with output_dir(tmp_path / "fit", "fit") as staging:
        write_json(os.path.join(staging, "summary.json"), {})
    real_replace = os.replace

    def killed_after_the_first_move(src, dst):
        real_replace(src, dst)
        if os.path.dirname(dst) == str(tmp_path / "fit"):
            raise _Killed  # allocation.json is in place, the final manifest not yet written

    monkeypatch.setattr(os, "replace", killed_after_the_first_move)
    with pytest.raises(_Killed):
        with output_dir(tmp_path / "fit", "allocation", allow_existing=True) as staging:
            write_json(os.path.join(staging, "allocation.json"), {"run": 1})
    monkeypatch.setattr(os, "replace", real_replace)
    with output_dir(tmp_path / "fit", "allocation", allow_existing=True) as staging:  # the rerun
        write_json(os.path.join(staging, "allocation.json"), {"run": 2})
    assert json.loads((tmp_path / "fit" / "allocation.json").read_text()) == {"run": 2}
    assert read_manifest(tmp_path / "fit") == {"kind": "fit", "files": ["allocation.json", "summary.json"]}


def test_a_manifest_left_half_written_by_a_kill_does_not_make_the_folder_foreign(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / f".{MANIFEST}.k3j2.tmp").write_text('{"ki')  # tokeff.io.write_bytes's temp file, killed mid-write
    claim_output_dir(run, "demo", allow_existing=True)
    (run / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="tokeff did not create it"):
        claim_output_dir(run, "demo", allow_existing=True)


def test_read_only_parent_is_refused(tmp_path, monkeypatch):
    (tmp_path / "ro").mkdir(mode=0o555)
    real_access = os.access  # CI runs as root, which writes anywhere: ask as an ordinary user would
    monkeypatch.setattr(os, "access", lambda p, mode: real_access(p, mode) and not str(p).endswith("ro"))
    with pytest.raises(UserError, match="not writable"):
        claim_output_dir(tmp_path / "ro" / "fit", "fit")


def test_long_names_and_file_parents_are_refused(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="too long"):
        claim_output_dir(tmp_path / ("n" * 300), "fit")
    with pytest.raises(UserError, match="is a file"):
        claim_output_dir(tmp_path / "afile" / "fit", "fit")
    assert sorted(os.listdir(tmp_path)) == ["afile"]


def test_fit_cli_refuses_a_foreign_out_before_fitting(tmp_path):
    """The reproduction from the report: `fit --out DIR` once deleted thesis.txt in DIR."""
    table = tmp_path / "table.csv"
    table.write_text("params,tokens,loss\n" + "".join(f"{n},{d},{2 + 1 / n + 1 / d}\n"
                                                      for n in (1e6, 1e7) for d in (1e8, 1e9)))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "thesis.txt").write_text("keep")
    before = _snapshot(tmp_path)
    for out in (tmp_path / "x", table, "."):
        proc = subprocess.run([sys.executable, "-m", "tokeff.cli", "fit", str(table), "--form", "chinchilla",
                               "--map", "N=params", "--map", "D=tokens", "--target", "loss", "--method", "map",
                               "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "--out" in proc.stderr
    assert _snapshot(tmp_path) == before


def test_atomic_files_get_the_mode_a_plain_open_gives(tmp_path):
    import stat

    write_json(tmp_path / "a.json", {})
    (tmp_path / "b.json").write_text("{}")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
    assert mode(tmp_path / "a.json") == mode(tmp_path / "b.json")


def _killed_mid_write(target) -> str:
    """The temp file a tokeff process leaves when killed between writing `target` and renaming it."""
    code = ("import os, tokeff.io as io; os.replace = lambda *a: os._exit(9); "
            f"io.write_json({str(target)!r}, {{'half': True}})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    left = [n for n in os.listdir(os.path.dirname(target)) if n.startswith(f".{os.path.basename(target)}.")]
    assert len(left) == 1, left
    return left[0]


def test_the_next_run_removes_a_killed_writers_temp_file_and_only_that(tmp_path):
    from tokeff.ownership import release_output_lock
    from tokeff.workdir import workdir_lock

    out = tmp_path / "fit"
    with output_dir(out, "fit") as staging:
        write_json(os.path.join(staging, "summary.json"), {"v": 1})
    wd = tmp_path / "run"
    with workdir_lock(wd, kind="train"):
        write_json(wd / "config.json", {})
    for folder, name in ((out, "summary.json"), (wd, "metrics.json")):
        leftover = _killed_mid_write(folder / name)
        alike = [".notes.tmp", f".{name}.abcd1234.tmp", f"{leftover[1:]}", f"{leftover}.bak",
                 leftover.replace("-tmp-", "-tmp-x"), f".{name}.tokeff-tmp-{os.getpid()}-abcd1234.tmp"]
        for other in alike:  # a user's own files, and the temp file of a process still running
            (folder / other).write_text("mine")
        os.symlink(folder / ".notes.tmp", folder / leftover.replace(leftover[-12:-4], "linkedxx"))
        (folder / leftover.replace(leftover[-12:-4], "folderxx")).mkdir()
        before = sorted(os.listdir(folder))
        if folder == out:
            claim_output_dir(out, "fit", force=True)
            release_output_lock(str(out))
        else:
            with workdir_lock(wd, kind="train"):
                pass
        assert sorted(os.listdir(folder)) == sorted(set(before) - {leftover}), leftover
        assert all((folder / other).read_text() == "mine" for other in alike)
