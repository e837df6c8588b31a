"""Progress on stderr for work that is large but allowed.

A size within the limits of `tokeff.resources` may still take minutes: `propose` with many
candidates x sims, `fit --method classic --bootstrap 100000`, NUTS with a million draws. Such work
shows a tqdm bar on stderr, so a long run is seen to move; work below the thresholds stays silent
(a bar on a few seconds is noise, and scripts read stderr for warnings and errors).
`TOKEFF_PROGRESS=0` turns the bars off, `TOKEFF_PROGRESS=1` shows them whatever the size.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

# Work above which a bar is shown, each in its loop's own unit; each is about ten seconds or more
# on one CPU core, and well above the defaults (which stay silent).
PROPOSE_WORK = 1e9  # candidates x simulated outcomes x posterior draws (likelihood evaluations, ~10 ns each)
BOOTSTRAP_REFITS = 20_000  # classic bootstrap refits (the default is 4,000)
NUTS_STEPS = 100_000  # chains x (warmup + draws) (the default is 4 x 2,000)


def show_progress(work: float, threshold: float) -> bool:
    """Whether work of this size shows a bar: at or above `threshold`, unless TOKEFF_PROGRESS says."""
    mode = os.environ.get("TOKEFF_PROGRESS", "").strip()
    if mode == "0":
        return False
    return mode == "1" or work >= threshold


def progress(iterable: Iterable, *, desc: str, work: float, threshold: float, total: int | None = None,
             unit: str = "it"):
    """`iterable`, with a tqdm bar on stderr when `show_progress(work, threshold)`."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=not show_progress(work, threshold))
