"""The defaults (Student-t on log loss, the discrepancy term, the exclusion rule) keep a
Chinchilla-like fit's compute-optimal allocation where it belongs: 12-30 tokens per parameter at
Gopher's 5.76e23 FLOPs. The NUTS figure is in docs/laws.md; this is the quick MAP check."""

import numpy as np

from tokeff.decide.frontier import allocate_pretraining
from tokeff.laws.fit import fit
from tokeff.laws.forms import get_form
from tokeff.laws.simulate import design, simulate
from tokeff.published import CHINCHILLA_RUN, PUBLISHED_CHINCHILLA

EPOCH = PUBLISHED_CHINCHILLA["Epoch AI replication (Besiroglu et al. 2024)"]


def test_tokens_per_param_at_gophers_budget_from_a_chinchilla_like_fit():
    form = get_form("chinchilla")
    d = simulate(form, EPOCH, design(form, 150, seed=11), sigma=0.02, seed=12)
    # Three runs that diverged back to an initial-level loss, as real sweeps keep them.
    table = {"params": np.append(d["N"], [1e8, 1e9, 5e9]), "tokens_seen": np.append(d["D"], [1e10, 5e10, 2e11]),
             "eval_loss": np.append(d["y"], [10.9, 11.2, 10.7])}
    result = fit(table, "chinchilla", method="map", seed=0)
    assert result.diagnostics["ok"] and len(result.summary["excluded"]) == 3
    decision = allocate_pretraining(form, result.samples, CHINCHILLA_RUN["C"])["decision"]
    assert 12 <= decision["tokens_per_param"]["median"] <= 30, decision["tokens_per_param"]
