"""Both notebooks execute top to bottom on small fits made here (no network), so they cannot rot:
the demo's loss law and the accuracy laws, as `tokeff demo` writes them."""

from __future__ import annotations

import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def fit_dirs(tmp_path_factory):
    """volume and composition fits of a small fine-tuning table (135M and 360M, 4-way MC accuracy),
    and the demo's loss law fitted to one model's answer losses."""
    import pandas as pd

    from tokeff.laws.fit import fit

    rng = np.random.default_rng(0)
    n_examples = np.tile(np.repeat([40, 80, 160, 320], 3), 2)
    avg_tokens = np.tile([30.0, 60.0, 120.0], 8)
    params = np.repeat([134_515_008.0, 361_821_120.0], 12)
    p = 0.25 + 0.02 * (n_examples / 40) ** 0.3 * (avg_tokens / 30) ** 0.1 * (params / 1.3e8) ** 0.2
    n_eval = np.full(24, 120)
    table = pd.DataFrame({"n_examples": n_examples, "avg_tokens": avg_tokens, "params": params,
                          "accuracy": rng.binomial(n_eval, p) / n_eval, "n_eval": n_eval})
    root = tmp_path_factory.mktemp("fits")
    for form in ("volume", "composition"):
        fitted = fit(table, form, method="nuts", chains=2, draws=100, warmup=100, target_accept=0.995,
                     seed=0)  # at the retry's own target: chains this short would always be rerun
        fitted.save(str(root / form), plots=False)
    from tokeff.demo.prediction import LOSS_FORM

    one = table[table["params"] == params[0]]
    loss = 1.2 + 3.0 * one["n_examples"] ** -0.3 * one["avg_tokens"] ** -0.1 * np.exp(rng.normal(0, 0.01, len(one)))
    fitted = fit(one.assign(eval_loss=loss), LOSS_FORM, method="nuts", chains=2, draws=100, warmup=100,
                 target_accept=0.995, target="eval_loss", seed=0)
    fitted.save(str(root / "prediction" / "loss"), plots=False)
    return root


def run_notebook(name: str, env: dict[str, str], tmp_path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors


@pytest.mark.slow
def test_posterior_inspection_notebook(fit_dirs, tmp_path):
    run_notebook("posterior_inspection.ipynb", {
        "TOKEFF_FIT_DIRS": f"{fit_dirs / 'prediction' / 'loss'},{fit_dirs / 'composition'}", "MPLBACKEND": "Agg"},
        tmp_path)


@pytest.mark.slow
def test_allocation_notebook(fit_dirs, tmp_path):
    run_notebook("allocation.ipynb", {"TOKEFF_FIT_DIR": str(fit_dirs / "volume"), "TOKEFF_BUDGET": "3e14",
                                      "TOKEFF_MODELS": "smollm2-135m,smollm2-360m",
                                      "TOKEFF_NOTEBOOK_OUT": str(tmp_path), "MPLBACKEND": "Agg"}, tmp_path)
    assert (tmp_path / "notebook_allocation.png").exists()
