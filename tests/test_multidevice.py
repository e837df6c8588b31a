"""Several devices and several processes: the tiny run on 8 simulated CPU devices (the same loss
trajectory on every mesh, a resume onto a different mesh), sweep points at once on one device each
(the rows they would give alone), and two processes over gloo collectives (one training over both,
one sweep whose points they split; process 0 alone writes the table).

The device count is fixed before JAX starts, so the work happens in subprocesses
(tests/multidevice/worker.py); this pytest process never changes its devices. Each device layout
is started once: one 8-device process and one pair of 4-device processes serve every test here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tokeff import results

pytestmark = [pytest.mark.multidevice, pytest.mark.slow]

WORKER = os.path.join(os.path.dirname(__file__), "multidevice", "worker.py")


def worker_env(cache, devices: int) -> dict:
    # Optimisation level 0: these tiny steps take milliseconds, their compilation seconds.
    flags = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
    return {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "TOKEFF_CACHE": str(cache / "tokens")}


@pytest.fixture(scope="module")
def eight_devices(tmp_path_factory):
    """(root, output) of the 8-device process: losses per mesh, then the sweep together and alone."""
    root = tmp_path_factory.mktemp("devices")
    result = subprocess.run([sys.executable, WORKER, "devices", str(root)], capture_output=True, text=True,
                            env=worker_env(tmp_path_factory.mktemp("xla8"), 8), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """(root, [output of process 0, of process 1]): 2 processes x 4 devices, one training, one sweep."""
    root = tmp_path_factory.mktemp("hosts")
    (root / "users").mkdir()
    (root / "users" / "notes.txt").write_text("mine")  # a user's folder: the last sweep is refused
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = worker_env(tmp_path_factory.mktemp("xla4"), 4)
    procs = [subprocess.Popen([sys.executable, WORKER, "host", str(i), str(port), str(root)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(2)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    return root, outputs


def assert_same_rows(rows, reference):
    assert sorted(rows) == sorted(reference)
    for run_id, row in rows.items():
        other = reference[run_id]
        assert {k: row[k] for k in ("n_examples", "flops_used", "steps")} == \
            {k: other[k] for k in ("n_examples", "flops_used", "steps")}, run_id
        for key in ("eval_loss", "accuracy", "loss"):
            assert row[key] == pytest.approx(other[key], rel=1e-5, abs=1e-6), (run_id, key)


def test_same_loss_trajectory_on_every_mesh(eight_devices):
    losses = eight_devices[1]["meshes"]
    reference = np.asarray(losses["1"])
    assert len(reference) == 6 and reference[-1] < reference[0]
    for name in ("data8", "data2_fsdp4", "data2_fsdp2_tensor2"):
        np.testing.assert_allclose(losses[name], reference, rtol=1e-5, err_msg=name)


def test_checkpoint_from_one_mesh_resumes_on_another(eight_devices):
    losses = eight_devices[1]["meshes"]
    assert losses["resumed_mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
    np.testing.assert_allclose(losses["resumed_on_2x2x2"], losses["data2_fsdp4"], rtol=1e-5)


def test_points_run_at_once_one_per_device_as_they_would_alone(eight_devices):
    root, out = eight_devices
    out = out["lanes"]
    assert len(out["together"]) == 4 and out["most"] == 4  # all four in flight at once
    lanes = list(out["devices"].values())
    assert all(len(lane) == 1 for lane in lanes) and len({lane[0] for lane in lanes}) == 4  # one device each
    assert_same_rows(out["together"], out["alone"])
    rows = results.read_rows(root / "lanes" / "together" / "results.jsonl", dedupe=False)
    assert sorted(r["run_id"] for r in rows) == sorted(out["together"])  # each point once


def test_two_processes_train_as_one(two_processes, eight_devices):
    """Two processes x 4 CPU devices (gloo collectives), each feeding its half of every batch."""
    root, outputs = two_processes
    assert [o["devices"] for o in outputs] == [8, 8]
    assert outputs[0]["flops_used"] == outputs[1]["flops_used"]
    np.testing.assert_allclose(outputs[0]["losses"], eight_devices[1]["meshes"]["data8"], rtol=1e-5)
    assert sorted(os.listdir(root / "run" / "checkpoints")) == ["3", "6"]


def test_two_processes_split_the_points_and_process_zero_writes_the_table(two_processes):
    root, (first, second) = two_processes
    assert len(first["ran"]) == len(second["ran"]) == 1 and not set(first["ran"]) & set(second["ran"])
    assert first["rows"] == second["rows"] and len(first["rows"]) == 2
    rows = results.read_rows(root / "sweep" / "results.jsonl", dedupe=False)
    assert sorted(r["run_id"] for r in rows) == sorted(first["rows"])  # each point once, by process 0


def test_a_folder_process_zero_refuses_is_refused_on_every_process(two_processes):
    """Only process 0 reads the folder, but no process may wait for it at a collective: both end
    with a one-line refusal, and the user's folder is as it was."""
    root, (first, second) = two_processes
    assert first["refused"].startswith("--workdir: ") and "tokeff did not create it" in first["refused"]
    assert second["refused"].startswith("--workdir: process 0 refused")
    assert os.listdir(root / "users") == ["notes.txt"] and (root / "users" / "notes.txt").read_text() == "mine"
