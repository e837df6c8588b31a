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


@pytest.fixture(scope="session")
def smollm2_instruct():
    """The offline SmolLM2-135M-Instruct (GGUF, dequantised to float32): loaded once per session."""
    from tokeff.models.load import load_model

    return load_model("gguf:smollm2-135m-instruct")
