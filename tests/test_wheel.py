"""A non-editable install runs `tokeff demo`: the wheel carries the demo's config.

The wheel is built from this checkout (`pip wheel --no-deps --no-build-isolation`: no network)
and installed into a fresh virtual environment that borrows this environment's dependencies
(a .pth line to its site-packages, whose own .pth files, this checkout's editable install among
them, are not run). Everything then runs from a folder outside the repository, so nothing of
the checkout is on the path.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import sysconfig
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the checkout stays off the path
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(tmp / "dist"), str(ROOT)], check=True, cwd=tmp, env=env, capture_output=True)
    wheel = next((tmp / "dist").glob("tokeff-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp / "venv")], check=True, env=env)
    python = tmp / "venv" / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True, env=env).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, capture_output=True, env=env)
    # Then the dependencies (after the install: pip would take this environment's tokeff for it).
    pathlib.Path(site, "_tokeff_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    outside = tmp / "elsewhere"
    outside.mkdir()
    return wheel, tmp / "venv" / "bin", env, outside, site


@pytest.mark.slow
def test_the_wheel_ships_the_demo_config_and_resolves_it_outside_the_repo(installed):
    wheel, bin_dir, env, outside, site = installed
    assert "tokeff/demo/configs/demo.py" in zipfile.ZipFile(wheel).namelist()

    probe = ("import json, tokeff\nfrom tokeff.demo.config import DEFAULT_CONFIG, load_demo_config\n"
             "c = load_demo_config(':smoke')\n"
             "print(json.dumps([tokeff.__file__, DEFAULT_CONFIG, c.train.model, len(c.grid.budgets)]))")
    run = subprocess.run([bin_dir / "python", "-c", probe], cwd=outside, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    package, config, model, budgets = json.loads(run.stdout)
    assert package.startswith(site) and config.startswith(site)  # the installed copy, not the checkout
    assert model == "tiny" and budgets == 3

    usage = subprocess.run([bin_dir / "tokeff", "demo", "--help"], cwd=outside, env=env, capture_output=True,
                           text=True)
    assert usage.returncode == 0 and ":smoke" in usage.stdout

    # The packaged config goes through the demo's checks: a bad value is refused, nothing written.
    refused = subprocess.run([bin_dir / "tokeff", "demo", "--config", ":smoke", "--workdir", "run",
                              "--config.check.interval=1.5"], cwd=outside, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "tokeff demo: error: config.check.interval: must be in (0, 1), got 1.5"]
    assert not (outside / "run").exists()
