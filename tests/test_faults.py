"""Faults: SIGKILL in the middle of a checkpoint save, a fit save and a results append; two processes
on one workdir; a read-only workdir; a full disk. After each, nothing is lost or duplicated and a
rerun finishes the job.

Kills land at exact moments: the child runs `tokeff.cli.main` with one function wrapped so that
it kills its own process (SIGKILL, no cleanup) at the chosen point. A full disk is a writer that
raises ENOSPC.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY = str(REPO / "configs" / "tiny.py")
# ~10 steps of the tiny model, a checkpoint every 4: seconds per run.
SMALL = ["--config.budget.flops=4e9", "--config.checkpoint.every_steps=4", "--config.log.progress=false"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def _child(code: str, *argv: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (it may kill itself); argv lands in sys.argv[1:]."""
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=ENV,
                          timeout=timeout, cwd=REPO)


def _main(argv: list[str], capsys) -> tuple[int, list[str]]:
    from tokeff.cli import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def _metric_steps(workdir) -> list[int]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["step"] for line in f if line.strip()]


# --- SIGKILL ------------------------------------------------------------------------------

KILL_IN_CHECKPOINT_SAVE = """
import os, signal, sys
import tokeff.train.checkpoint as checkpoint
save = checkpoint.Checkpoints.save
def killing_save(self, step, state, meta):
    save(self, step, state, meta)  # the async save is now in flight: die while it writes
    if step == 8:
        os.kill(os.getpid(), signal.SIGKILL)
checkpoint.Checkpoints.save = killing_save
from tokeff.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # a training in a fresh interpreter (cold compile), then its rerun
def test_sigkill_during_a_checkpoint_save_resumes_without_losing_or_repeating_a_step(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    killed = _child(KILL_IN_CHECKPOINT_SAVE, "train", "--config", TINY, "--workdir", workdir, *SMALL)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not os.path.exists(os.path.join(workdir, "summary.json"))
    code, err = _main(["train", "--config", TINY, "--workdir", workdir, *SMALL], capsys)  # the stale lock is no obstacle
    assert code == 0, err
    with open(os.path.join(workdir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["status"] == "completed" and summary["steps"] == summary["planned_steps"]
    assert _metric_steps(workdir) == list(range(1, summary["steps"] + 1))  # each step once


FIXTURES = str(REPO / "tests" / "fixtures")

KILL_IN_FIT_SAVE = f"""
import os, signal, sys
sys.path.insert(0, {FIXTURES!r})
import arviz
import handmade_fit
import tokeff.laws.fit
tokeff.laws.fit.fit = handmade_fit.patched_fit  # the fit itself is not under test: its save is
def killing_to_netcdf(self, filename, *args, **kwargs):
    with open(filename, "wb") as f:
        f.write(b"\\x89HDF half a file")
    os.kill(os.getpid(), signal.SIGKILL)
arviz.InferenceData.to_netcdf = killing_to_netcdf
from tokeff.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _fit_argv(table: str, out: str) -> list[str]:
    return ["fit", table, "--form", "chinchilla", "--map", "N=params", "--map", "D=tokens", "--target", "loss",
            "--method", "map", "--no-plots", "--out", out]


@pytest.fixture
def handmade(monkeypatch):
    """`tokeff fit` returns a hand-made fit at once (saving is under test, not sampling)."""
    sys.path.insert(0, FIXTURES)
    import handmade_fit

    import tokeff.laws.fit

    monkeypatch.setattr(tokeff.laws.fit, "fit", handmade_fit.patched_fit)
    yield
    sys.path.remove(FIXTURES)


def test_sigkill_during_a_fit_save_leaves_no_half_fit_and_the_rerun_cleans_up(tmp_path, capsys, handmade):
    table = str(tmp_path / "table.csv")
    pathlib.Path(table).write_text("params,tokens,loss\n1,2,3\n")
    out = str(tmp_path / "fit")
    killed = _child(KILL_IN_FIT_SAVE, *_fit_argv(table, out))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not os.path.exists(out)  # staged beside it, never half in place
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tokeff-staging-")]
    code, err = _main(_fit_argv(table, out), capsys)
    assert code == 0, err
    from tokeff.laws.fit import load_fit

    assert load_fit(out).data.n_points == 16
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tokeff-staging-")]  # the killed run's debris


def _row(run_id: str, loss: float) -> dict:
    return {"run_id": run_id, "model": "tiny", "params": 1000, "non_embedding_params": 800, "dataset": "arithmetic",
            "strategy": "random", "n_examples": 10, "avg_tokens": 12.0, "unique_tokens": 120, "tokens_seen": 240,
            "epochs": 2.0, "budget_flops": 1e9, "flops_used": 9e8, "steps": 5, "seed": 0, "eval_loss": loss,
            "accuracy": 0.5, "n_eval": 32, "wall_seconds": 1.0, "status": "ok",
            "extra": {"params_for_fit": 1000 * (1 + int(run_id[1:]))}}


KILL_IN_APPEND = """
import json, os, signal, sys
from tokeff import results
rows = json.loads(sys.argv[2])
for row in rows[:-1]:
    results.append_row(sys.argv[1], row)
real_write = os.write
def torn_write(fd, data):
    real_write(fd, data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)
results.os.write = torn_write
results.append_row(sys.argv[1], rows[-1])
"""


def test_sigkill_during_a_results_append_loses_no_row_and_fit_reads_the_same_rows(tmp_path):
    from tokeff import results
    from tokeff.laws.data import read_table

    table = str(tmp_path / "results.jsonl")
    rows = [_row(f"r{i}", 2.0 + 0.1 * i) for i in range(5)]
    killed = _child(KILL_IN_APPEND, table, json.dumps(rows))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    with pytest.warns(UserWarning, match="torn line"):
        read = results.read_rows(table)
    assert [r["run_id"] for r in read] == ["r0", "r1", "r2", "r3"]  # the torn fifth row is not half-read
    results.append_row(table, rows[4])  # the rerun's append: fenced off from the torn bytes
    results.append_row(table, {**rows[0], "eval_loss": 1.5})  # a retried run replaces its row
    with pytest.warns(UserWarning, match="torn line"):
        read = results.read_rows(table)
    assert [r["run_id"] for r in read] == ["r0", "r1", "r2", "r3", "r4"]
    assert read[0]["eval_loss"] == 1.5
    with pytest.warns(UserWarning, match="torn line"):
        frame = read_table(table)  # `tokeff fit` reads through the same reader
    assert list(frame["run_id"]) == ["r0", "r1", "r2", "r3", "r4"] and frame["eval_loss"].iloc[0] == 1.5
    assert "extra.params_for_fit" in frame.columns


def test_fit_merges_shard_tables_of_a_sweep_dir(tmp_path):
    from tokeff import results
    from tokeff.laws.data import read_table

    for i in range(4):
        results.append_row(tmp_path / f"results-{i % 2}-of-2.jsonl", _row(f"r{i}", 2.0 + i))
    results.append_row(tmp_path / "results-0-of-2.jsonl", {**_row("r1", 9.0)})  # the same run in both shards
    frame = read_table(str(tmp_path))
    assert sorted(frame["run_id"]) == ["r0", "r1", "r2", "r3"]


# --- two processes, a read-only workdir -----------------------------------------------------

HOLD_LOCK = """
import sys, time
from tokeff.workdir import workdir_lock
with workdir_lock(sys.argv[1], kind=sys.argv[2]):
    print("locked", flush=True)
    time.sleep(120)
"""


def _holder(workdir: str, kind: str = "train") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, workdir, kind], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_a_second_process_on_a_workdir_is_refused_naming_the_holder(command, tmp_path, capsys):
    workdir = str(tmp_path / "wd")
    holder = _holder(workdir, command)
    try:
        config = TINY if command == "train" else str(REPO / "configs" / "sweep_tiny.py")
        code, err = _main([command, "--config", config, "--workdir", workdir], capsys)
        assert code == 2 and len(err) == 1, err
        assert f"process {holder.pid}" in err[0] and "--workdir" in err[0]
    finally:
        holder.kill()
        holder.wait()
    # left by the killed holder: a stale lock, not binding, and the marker of a workdir tokeff made
    assert sorted(os.listdir(workdir)) == [".tokeff-lock", ".tokeff-workdir.json"]
    from tokeff.workdir import workdir_lock

    with workdir_lock(workdir, kind=command):
        pass
    assert os.listdir(workdir) == [".tokeff-workdir.json"]


@pytest.mark.slow  # a training in a fresh interpreter (cold compile), then its rerun
def test_two_real_trainings_on_one_workdir_one_runs_one_is_refused(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    first = subprocess.Popen([sys.executable, "-m", "tokeff.cli", "train", "--config", TINY, "--workdir", workdir,
                              *SMALL], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(workdir, ".tokeff-lock")) and time.time() < deadline:
        time.sleep(0.05)
    code, err = _main(["train", "--config", TINY, "--workdir", workdir, *SMALL], capsys)
    _, first_err = first.communicate(timeout=180)
    assert first.returncode == 0, first_err[-2000:]
    assert code == 2 and len(err) == 1 and f"process {first.pid}" in err[0], err
    summary = json.loads((pathlib.Path(workdir) / "summary.json").read_text())
    assert _metric_steps(workdir) == list(range(1, summary["steps"] + 1))  # no rows lost or doubled


def test_a_read_only_workdir_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    workdir = tmp_path / "run"
    workdir.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if str(p).startswith(str(workdir)) and m & os.W_OK
                        else real(p, m, *a, **k))  # CI runs as root, where os.access says yes to all
    code, err = _main(["train", "--config", TINY, "--workdir", str(workdir), *SMALL], capsys)
    assert code == 2 and len(err) == 1 and "not writable" in err[0], err
    assert list(workdir.iterdir()) == []


# --- a full disk -----------------------------------------------------------------------------


def _enospc(path="checkpoints"):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


def test_full_disk_during_training_is_one_line_exit_1_and_the_last_checkpoint_resumes(tmp_path, capsys,
                                                                                     monkeypatch):
    import tokeff.train.checkpoint as checkpoint

    workdir = str(tmp_path / "run")
    save = checkpoint.Checkpoints.save

    def filling_save(self, step, state, meta):
        if step > 4:
            raise RuntimeError("tensorstore write failed") from _enospc()  # wrapped, as orbax does
        save(self, step, state, meta)

    monkeypatch.setattr(checkpoint.Checkpoints, "save", filling_save)
    argv = ["train", "--config", TINY, "--workdir", workdir, *SMALL, "--config.checkpoint.async_save=false"]
    code, err = _main(argv, capsys)
    assert code == 1 and len(err) == 1, err
    assert "no space left" in err[0] and workdir in err[0] and "step 4" in err[0]
    monkeypatch.setattr(checkpoint.Checkpoints, "save", save)
    code, err = _main(argv, capsys)
    assert code == 0, err
    summary = json.loads((pathlib.Path(workdir) / "summary.json").read_text())
    assert _metric_steps(workdir) == list(range(1, summary["steps"] + 1))


def test_full_disk_during_a_fit_save_is_one_line_exit_1_and_leaves_nothing(tmp_path, capsys, monkeypatch,
                                                                          handmade):
    import arviz

    def full(self, filename, *args, **kwargs):
        raise RuntimeError("NetCDF: HDF error") from _enospc(filename)  # wrapped, as h5netcdf does

    monkeypatch.setattr(arviz.InferenceData, "to_netcdf", full)
    table = str(tmp_path / "table.csv")
    pathlib.Path(table).write_text("params,tokens,loss\n1,2,3\n")
    out = str(tmp_path / "fit")
    code, err = _main(_fit_argv(table, out), capsys)
    assert code == 1 and len(err) == 1 and "no space left" in err[0], err
    assert sorted(os.listdir(tmp_path)) == ["table.csv"]


# --- two writers on one output directory, hostile inputs, a user module that raises -----------

HOLD_OUT = """
import sys, time
from tokeff.io import claim_output_dir
claim_output_dir(sys.argv[1], "fit")
print("locked", flush=True)
time.sleep(120)
"""


def test_two_fits_on_one_out_the_second_is_one_line_exit_2_naming_the_holder(tmp_path, capsys, handmade):
    table = str(tmp_path / "table.csv")
    pathlib.Path(table).write_text("params,tokens,loss\n1,2,3\n")
    out = str(tmp_path / "fit")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_OUT, out], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = _main(_fit_argv(table, out), capsys)
        assert code == 2 and len(err) == 1, err
        assert f"process {holder.pid}" in err[0] and "--out" in err[0]
        assert not os.path.exists(out)
    finally:
        holder.kill()
        holder.wait()
    code, err = _main(_fit_argv(table, out), capsys)  # the holder died: its stale lock binds nobody
    assert code == 0, err
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tokeff-lock")]  # the lock file went with the run


LIMITED = """
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from tokeff.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _limited(argv: list[str], cwd, limit_bytes: int = 6 * 2**30, timeout: float = 120):
    """`tokeff ARGV` in a fresh interpreter under an address-space limit: a reader that grows
    without bound dies of MemoryError there instead of taking the machine (and CI) down."""
    return subprocess.run([sys.executable, "-c", LIMITED, str(limit_bytes), *argv], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=timeout)


@pytest.mark.parametrize("kind", ["fifo", "zero", "urandom"])
def test_a_fifo_or_a_device_as_input_is_refused_unread_under_a_memory_limit(kind, tmp_path):
    table = tmp_path / "table.csv"
    if kind == "fifo":
        os.mkfifo(table)  # nobody writes it: a reader would hang for ever
    else:
        os.symlink(f"/dev/{kind}", table)  # a reader would grow until killed
    proc = _limited(_fit_argv(str(table), str(tmp_path / "fit")), tmp_path, timeout=60)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "table.csv" in lines[0] and "regular file" in lines[0]
    assert sorted(os.listdir(tmp_path)) == ["table.csv"]


def test_an_input_over_the_size_limit_is_refused_by_its_size_naming_the_limit(tmp_path):
    table = tmp_path / "results.jsonl"
    with open(table, "wb") as f:
        f.truncate(2**30)  # 1 GiB sparse: reading it took over a minute
    start = time.time()
    proc = _limited(["eval", "--model", "tiny", "--dataset", str(table)], tmp_path, timeout=60)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert "results.jsonl" in lines[0] and "256 MiB" in lines[0]
    assert time.time() - start < 50


def test_a_user_module_that_raises_is_one_line_through_the_real_entry_point(tmp_path):
    (tmp_path / "my_forms.py").write_text("import json\nraise KeyError('no such law')\n")
    table = tmp_path / "table.csv"
    table.write_text("params,tokens,loss\n1,2,3\n")
    for module in ("my_forms", "./my_forms.py"):  # a name found in the current directory, or a path
        proc = subprocess.run([sys.executable, "-m", "tokeff.cli", *_fit_argv(str(table), str(tmp_path / "fit")),
                               "--module", module], capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert module in lines[0] and "KeyError" in lines[0] and "no such law" in lines[0]
    assert not (tmp_path / "fit").exists()


def test_a_deleted_current_directory_is_one_line_exit_2(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    proc = subprocess.run(["bash", "-c", f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -m tokeff.cli '
                           "flops --model tiny --seq-len 64"], capture_output=True, text=True, env=ENV, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "current directory" in lines[0], proc.stderr[-2000:]


def test_a_reader_that_leaves_early_is_no_traceback(tmp_path):
    """`tokeff ... | head -c1`: the pipe's reader is gone before tokeff writes."""
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([sys.executable, "-m", "tokeff.cli", "flops", "--model", "tiny", "--seq-len", "64"],
                          stdout=write, stderr=subprocess.PIPE, text=True, env=ENV, timeout=120)
    os.close(write)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 141
