"""One resource estimate per command that can blow up, made before the work starts.

A flag that asks for more memory than the machine has (`fit --draws 1000000000`), or for hours of
work nobody meant (`fit --chains 1000`, `propose --sims 100000000`), is refused in one line naming
the flag, the estimate and the limit, instead of ending in a MemoryError, an XLA abort or a
silent hour. Memory limits are a share of this machine's RAM (`memory_budget`); work limits are
fixed counts of the inner loop, set well above every default and documented use.
"""

from __future__ import annotations

import os

from tokeff.errors import UserError

MAX_SEED = 2**32 - 1  # numpy's and JAX's seeds are unsigned 32-bit words
MAX_CHAINS = 64
MAX_DRAWS = 1_000_000  # per chain, and the same for warmup
MAX_BOOTSTRAP = 100_000
MAX_PROPOSE_SIMS = 100_000
MAX_CANDIDATES = 100_000
# Candidates x simulated outcomes x posterior draws: the inner loop of `propose` (~10 ns each).
MAX_PROPOSE_WORK = 2e10


def memory_budget() -> int:
    """Bytes one array-heavy step may plan for: half of this machine's physical memory."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 16 * 2**30
    return int(total // 2)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_seed(value, field: str) -> int:
    """A seed as an int in [0, 2^32 - 1]; anything else is one line naming `field`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise UserError(f"{field}: must be an integer in [0, {MAX_SEED}], got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise UserError(f"{field}: must be an integer in [0, {MAX_SEED}], got {value!r}")
    if not 0 <= value <= MAX_SEED:
        raise UserError(f"{field}: must be an integer in [0, {MAX_SEED}], got {value:.6g}"
                        if isinstance(value, float) else f"{field}: must be an integer in [0, {MAX_SEED}], got {value}")
    return int(value)


def check_fit_size(*, method: str, chains: int, draws: int, n_params: int, n_points: int) -> None:
    """Refuse a NUTS fit whose draws cannot fit in memory (the counts alone are capped, with the
    other settings, by `tokeff.laws.settings.FitSettings.validate`).

    NUTS keeps chains x draws x (parameters + 2 x points) float64 values (the posterior, the
    pointwise log-likelihood and the predictive), twice when a retry doubles the draws.
    """
    if method != "nuts":
        return
    need = 2 * chains * draws * (n_params + 2 * n_points) * 8
    budget = memory_budget()
    if need > budget:
        raise UserError(f"--draws: {chains} chains x {draws} draws need about {_gib(need)} of memory, over the "
                        f"{_gib(budget)} limit (half of this machine's memory); use fewer --draws or --chains")


def check_predict_size(*, n_points: int, n_draws: int, run_reps: int) -> None:
    """Refuse predictions whose draws cannot fit in memory: `predict` holds points (rows x groups)
    x posterior draws float64 values for a new observation and the mean, and `run_reps` times as
    many for a new run (twice while they are concatenated)."""
    need = 8 * n_points * n_draws * (2 + 2 * run_reps)
    budget = memory_budget()
    if need > budget:
        raise UserError(f"--table: {n_points} points (rows x groups) over {n_draws} posterior draws need about "
                        f"{_gib(need)} of memory, over the {_gib(budget)} limit (half of this machine's memory); "
                        "fewer rows or --group-value")


def check_candidate_count(n: int) -> None:
    """Refuse a candidate grid too large to score (each candidate is a simulation study)."""
    if n > MAX_CANDIDATES:
        raise UserError(f"--grid: {n} candidates is over the limit of {MAX_CANDIDATES}; a coarser grid")


def check_propose_size(*, n_candidates: int, sims: int, n_draws: int) -> None:
    """Refuse a proposal search that cannot fit in memory (candidates x draws, sims x draws) or
    would run for hours (candidates x sims x draws)."""
    if sims > MAX_PROPOSE_SIMS:
        raise UserError(f"--sims: {sims} simulated outcomes is over the limit of {MAX_PROPOSE_SIMS}")
    budget = memory_budget()
    need = 8 * n_draws * max(n_candidates, sims) * 3
    if need > budget:
        flag = "--grid" if n_candidates >= sims else "--sims"
        raise UserError(f"{flag}: {n_candidates} candidates x {sims} sims over {n_draws} posterior draws need about "
                        f"{_gib(need)} of memory, over the {_gib(budget)} limit (half of this machine's memory)")
    work = float(n_candidates) * sims * n_draws
    if work > MAX_PROPOSE_WORK:
        flag = "--sims" if sims > 64 else "--grid"
        raise UserError(f"{flag}: {n_candidates} candidates x {sims} sims x {n_draws} posterior draws = {work:.2g} "
                        f"likelihood evaluations, over the limit of {MAX_PROPOSE_WORK:.0e}; fewer candidates or --sims")
