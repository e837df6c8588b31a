"""Shared fixtures. Keep this small: a fixture belongs here only when several test files use it."""

import os
import pathlib

import pytest

# A persistent XLA compilation cache shared by the xdist workers and by the subprocesses that
# tests spawn (multi-device workers, killed-and-resumed runs): many tests compile the same tiny
# programs, and compiling dominates the suite's time on a 2-core machine. Set through the
# environment so that child processes inherit it.
_CACHE = pathlib.Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# CI has no network: any hub call must fail at once, not hang on a timeout. Hub paths are tested
# with local files of the same form (e.g. `hf:` with snapshot_download patched to a local dir).
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_var] = "1"


@pytest.fixture
def cli(capsys):
    """`cli(argv) -> (exit code, stderr's non-blank lines joined)`: `tokeff.cli.main` in-process."""

    def run(argv: list[str]) -> tuple[int, str]:
        from tokeff.cli import main

        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        return code, "\n".join(line for line in capsys.readouterr().err.splitlines() if line.strip())

    return run


@pytest.fixture(scope="session")
def smollm2_instruct():
    """The offline SmolLM2-135M-Instruct (GGUF, dequantised to float32): loaded once per session."""
    from tokeff.models.load import load_model

    return load_model("gguf:smollm2-135m-instruct")


# `make test` runs `pytest -n 2 --dist loadfile --no-loadscope-reorder`: each file is one unit of
# work (its module fixtures are built once, on one worker), handed out in collection order. This
# puts the longest files first (measured per file on a 2-core machine, longest first), so that the two
# workers start on them at once and the short files fill in behind: the wall time is then close to
# half the total, not the tail of the file that happened to start last. Files not listed keep
# pytest's order, those with a `slow` test first. (`--dist loadgroup` no longer groups anything
# under pytest 9.2: xdist's group suffix is lost, pytest-dev/pytest-xdist#1386.)
LONGEST_FIRST = (
    "test_multidevice.py",
    "test_demo.py",
    "test_hierarchy.py",
    "test_fit_scaling.py",
    "test_scaling_validation.py",
    "test_demo_grouped.py",
    "test_checkpoint_resume.py",
    "test_stacking.py",
    "test_intervals.py",
    "test_attention.py",
    "test_faults.py",
    "test_bad_inputs.py",
    "test_selection.py",
    "test_ownership_and_inputs.py",
    "test_model.py",
    "test_allocate_grouped.py",
    "test_laplace.py",
    "test_checkpoint_hf.py",
    "test_allocation_backtest.py",
    "test_generate.py",
    "test_tokens_per_param.py",
    "test_sweep_tiny.py",
    "test_backtest.py",
    "test_sweep_engine.py",
    "test_fit_settings.py",
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    with_slow = {item.path.name for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank) + (item.path.name not in with_slow)))
