"""The one cache root: `$TOKEFF_CACHE`, else `~/.cache/tokeff`.

Everything tokeff caches lives below it — compiled XLA programs in `jax/`, tokenised datasets in
`tokens/` — so one variable moves (or, pointed at an empty folder, empties) all of it. On a CPU,
compiling the 30-layer model can take longer than a run, and sweeps and reruns compile the same
shapes again: that is why the compilation cache is on by default. JAX_COMPILATION_CACHE_DIR,
when set, still wins (an empty value turns the cache off).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_root() -> Path:
    """$TOKEFF_CACHE, else ~/.cache/tokeff (read at call time: tests and users may change it)."""
    return Path(os.environ.get("TOKEFF_CACHE") or Path.home() / ".cache" / "tokeff")


def enable_compilation_cache(min_compile_seconds: float = 0.5) -> None:
    """Persist compiled programs under cache_root()/jax, unless the user chose a cache already.

    Works before JAX is imported (through the environment, so child processes inherit it) and
    after (through jax.config)."""
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache_root() / "jax"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", str(min_compile_seconds))
    if "jax" in sys.modules:
        import jax

        if not jax.config.jax_compilation_cache_dir and os.environ["JAX_COMPILATION_CACHE_DIR"]:
            jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
            jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
