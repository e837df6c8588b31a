"""The memory plan before launch (compiled step's memory analysis; fail in one line when a device
cannot hold it) and the cost estimate's MFU (assumed, or measured by an earlier sweep)."""

import importlib.util
import pathlib

import pytest

from tokeff import results
from tokeff.errors import UserError
from tokeff.models.config import get_preset
from tokeff.train.defaults import base_config
from tokeff.train.memory import StepMemory, step_memory

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _estimate_cost():
    spec = importlib.util.spec_from_file_location("estimate_cost", ROOT / "experiments" / "estimate_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _train(batch_size: int = 8, microbatches: int = 1, moments: str = "float32"):
    train = base_config()
    train.batch_size, train.microbatches, train.data.row_len = batch_size, microbatches, 32
    train.optim.moments_dtype = moments
    return train


def test_step_memory_holds_the_state_and_bfloat16_moments_halve_them():
    """The compiled step's arguments hold parameters and both Adam moments (float32: 12 bytes a
    parameter, plus the batch); bfloat16 moments take exactly 4 bytes a parameter off."""
    cfg = get_preset("tiny", n_layers=1, attention="reference")
    f32 = step_memory(cfg, _train())
    bf16 = step_memory(cfg, _train(moments="bfloat16"))
    batch = 5 * 8 * 32 * 4
    assert 12 * cfg.params + batch <= f32.arguments < 12 * cfg.params + batch + 1024
    assert f32.arguments - bf16.arguments == 4 * cfg.params
    assert f32.temporaries > 0 and f32.peak == f32.arguments + f32.outputs - f32.aliased + f32.temporaries
    assert f32.aliased >= 12 * cfg.params  # the donated state is updated in place


def test_step_memory_refuses_what_the_run_would_refuse():
    cfg = get_preset("tiny", n_layers=1)
    with pytest.raises(UserError, match="batch_size: 8 is not divisible by microbatches \\(3\\)"):
        step_memory(cfg, _train(microbatches=3))
    with pytest.raises(UserError, match="memory plan: 4096 devices asked for"):
        step_memory(cfg, _train(), devices=4096)


def test_estimate_prints_memory_and_fails_before_launch_when_a_device_cannot_hold_it(capsys):
    estimate_cost = _estimate_cost()
    config = str(ROOT / "configs" / "sweep_tiny.py")
    assert estimate_cost.main(["--config", config, "--device", "h100", "--memory"]) == 0
    out = capsys.readouterr().out
    assert "device holds 80.0 GiB" in out and "reference attention: an upper bound" in out
    assert out.splitlines()[-1].split()[:2] == ["tiny", "8x32"] and out.splitlines()[-1].endswith("yes")
    assert "compiled on 1 x cpu" in out
    assert estimate_cost.main(["--config", config, "--device", "h100", "--memory", "--device-memory-gib", "0.001"]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1].endswith("NO")
    assert captured.err.count("\n") == 1 and captured.err.startswith(
        "estimate_cost: error: memory: tiny needs 0.0 GiB per device for batches of 8x32 tokens on 1 chip(s), "
        "a h100 holds 0.0 GiB")


def _row(run_id: str, model: str, mfu, status: str = "ok") -> dict:
    return dict(run_id=run_id, model=model, params=1, non_embedding_params=1, dataset="d", strategy="s",
                n_examples=1, avg_tokens=1.0, unique_tokens=1, tokens_seen=1, epochs=1.0, budget_flops=1.0,
                flops_used=1.0, steps=1, seed=0, eval_loss=1.0, accuracy=0.5, n_eval=1, wall_seconds=1.0,
                status=status, extra={"mfu": mfu})


def test_estimate_uses_the_mfu_a_sweep_measured(tmp_path, capsys):
    """Each run records its MFU; the next estimate takes the median per model it has run and
    keeps --mfu for the others, and prints which it used beside the FLOPs."""
    table = tmp_path / "results.jsonl"
    for i, mfu in enumerate([0.2, 0.3, 0.4]):
        results.append_row(table, _row(f"r{i}", "tiny", mfu))
    results.append_row(table, _row("cpu", "tiny", None))  # a CPU run records none
    results.append_row(table, _row("bad", "tiny", 0.9, status="failed"))
    estimate_cost = _estimate_cost()
    assert estimate_cost.measured_mfu(str(tmp_path)) == {"tiny": (0.3, 3)}
    config = str(ROOT / "configs" / "sweep_tiny.py")
    args = ["--config", config, "--peak-flops", "1e7", "--overhead-s", "0", "--mfu", "0.5"]
    assert estimate_cost.main(args) == 0
    assumed = capsys.readouterr().out
    assert estimate_cost.main(args + ["--measured", str(tmp_path)]) == 0
    measured = capsys.readouterr().out
    line = lambda text: next(ln for ln in text.splitlines() if ln.startswith("tiny"))  # noqa: E731
    assert "50% assumed" in line(assumed) and "30% measured, 3 runs" in line(measured)
    hours = lambda text: float(line(text).split()[-1])  # noqa: E731
    assert hours(measured) == pytest.approx(hours(assumed) * 0.5 / 0.3, rel=0.02)


def test_step_memory_record_peak():
    mem = StepMemory(arguments=10, outputs=8, aliased=6, temporaries=5)
    assert mem.peak == 17


_TWO_CHIPS = """
from tokeff.train.memory import plan_cpu_devices
assert plan_cpu_devices(2)
from tokeff.models.config import get_preset
from tokeff.train.defaults import base_config
from tokeff.train.memory import step_memory
cfg = get_preset("tiny", n_layers=1, attention="reference")
for data, fsdp in ((1, 1), (2, 1), (1, 2)):
    train = base_config()
    train.data.row_len, train.mesh.data, train.mesh.fsdp = 32, data, fsdp
    mem = step_memory(cfg, train, devices=data * fsdp)
    print(data, fsdp, cfg.params, mem.arguments)
"""


@pytest.mark.slow
def test_memory_plan_partitions_the_step_over_the_chips():
    """A CPU host stands in for N chips (N CPU devices): data parallelism splits the batch and
    keeps the state whole on each device; fsdp splits the state (parameters and moments)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    result = subprocess.run([sys.executable, "-c", _TWO_CHIPS], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    sizes = {(int(d), int(f)): int(a) for d, f, _, a in (line.split() for line in result.stdout.strip().splitlines())}
    params = int(result.stdout.split()[2])
    batch = 5 * 8 * 32 * 4
    assert sizes[(1, 1)] - sizes[(2, 1)] == batch // 2  # the rows split, the state does not
    assert sizes[(1, 1)] - sizes[(1, 2)] >= 0.45 * 12 * params  # about half of the state goes to the other chip
