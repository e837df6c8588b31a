"""`tokeff allocate` and `tokeff propose` refuse bad flags, and an --out another process is
writing, before they read the fit or build a candidate: one line, exit 2, nothing written."""

import os
import subprocess
import sys

import pytest


@pytest.fixture
def no_work(monkeypatch):
    """Reading the fit or building candidates fails the test: the refusal must come first."""
    import tokeff.decide.proposals
    import tokeff.laws.fit

    def not_reached(*args, **kwargs):
        raise AssertionError("read the fit or built candidates before refusing")

    monkeypatch.setattr(tokeff.laws.fit, "load_fit", not_reached)
    monkeypatch.setattr(tokeff.decide.proposals, "candidates", not_reached)


def _listing(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, ds, fs in os.walk(root) for n in ds + fs)


@pytest.mark.parametrize("flag", ["--epochs", "--models", "--n-examples", "--lengths-grid"])
def test_propose_refuses_a_flag_beside_grid_before_any_work(flag, tmp_path, no_work, cli):
    (tmp_path / "fit").mkdir()
    (tmp_path / "grid.json").write_text('{"models": ["tiny"], "n_examples": [100], "avg_tokens": [64]}')
    before = _listing(tmp_path)
    value = "tiny" if flag == "--models" else "2"
    code, err = cli(["propose", str(tmp_path / "fit"), "--grid", str(tmp_path / "grid.json"), flag, value,
                       "--out", str(tmp_path / "out")])
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{flag}: the --grid file lists the candidates" in err
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("argv", [
    ["allocate", "{fit}", "--budget", "1e20"],
    ["propose", "{fit}", "--models", "tiny", "--lengths-grid", "64", "--n-examples", "100"],
])
def test_a_second_process_on_the_same_out_is_refused_before_any_work(argv, tmp_path, no_work, cli):
    (tmp_path / "fit").mkdir()
    out = str(tmp_path / "out")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tokeff.ownership import hold_output_lock; "
         f"hold_output_lock({out!r}, '--out'); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _listing(tmp_path)
        code, err = cli([a.replace("{fit}", str(tmp_path / "fit")) for a in argv] + ["--out", out])
        assert _listing(tmp_path) == before
    finally:
        holder.communicate("", timeout=30)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"--out: {out} is in use by process {holder.pid}" in err
