"""Concurrent sweep points: 8 at once on 8 simulated CPU devices, and a sweep split over 2 processes.

Each case needs its device count fixed before JAX starts, so it runs in subprocesses
(tests/multidevice/sweep_worker.py); this pytest process never changes its devices.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tokeff import results

pytestmark = [pytest.mark.multidevice, pytest.mark.slow, pytest.mark.xdist_group("train_multidevice")]

WORKER = os.path.join(os.path.dirname(__file__), "multidevice", "sweep_worker.py")


def worker_env(cache, devices: int) -> dict:
    flags = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    return {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "TOKEFF_CACHE": str(cache / "tokens")}


def assert_same_rows(rows, reference):
    assert sorted(rows) == sorted(reference)
    for run_id, row in rows.items():
        other = reference[run_id]
        assert {k: row[k] for k in ("n_examples", "flops_used", "steps")} == \
            {k: other[k] for k in ("n_examples", "flops_used", "steps")}, run_id
        for key in ("eval_loss", "accuracy", "loss"):
            assert row[key] == pytest.approx(other[key], rel=1e-5, abs=1e-6), (run_id, key)


def test_eight_points_run_at_once_on_eight_devices_as_they_would_alone(tmp_path):
    result = subprocess.run([sys.executable, WORKER, "lanes", str(tmp_path)], capture_output=True, text=True,
                            env=worker_env(tmp_path / "xla", 8), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(out["together"]) == 8 and out["most"] == 8  # all eight in flight at once
    lanes = list(out["devices"].values())
    assert all(len(lane) == 1 for lane in lanes) and len({lane[0] for lane in lanes}) == 8  # one device each
    assert_same_rows(out["together"], out["alone"])
    rows = results.read_rows(tmp_path / "together" / "results.jsonl", dedupe=False)
    assert sorted(r["run_id"] for r in rows) == sorted(out["together"])  # each point once


def test_two_processes_split_the_points_and_process_zero_writes_the_table(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = worker_env(tmp_path / "xla", 4)
    procs = [subprocess.Popen([sys.executable, WORKER, "host", str(i), str(port), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(2)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    first, second = outputs
    assert len(first["ran"]) == len(second["ran"]) == 4 and not set(first["ran"]) & set(second["ran"])
    assert first["rows"] == second["rows"] and len(first["rows"]) == 8
    rows = results.read_rows(tmp_path / "sweep" / "results.jsonl", dedupe=False)
    assert sorted(r["run_id"] for r in rows) == sorted(first["rows"])  # each point once, by process 0
