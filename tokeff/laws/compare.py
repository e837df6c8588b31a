"""LOO/WAIC comparison between fits of the same data (ArviZ, PSIS-LOO with standard errors).

`volume` vs `composition` on one table answers "does composition matter beyond total tokens?" as a
difference in expected log predictive density with its standard error, not a claim.
"""

from __future__ import annotations

import numpy as np

from tokeff.errors import UserError


def compare_fits(fits: dict, *, ic: str = "loo"):
    """`fits`: label -> Fit. Returns the ArviZ comparison DataFrame (rank, elpd, p, d_elpd, weight,
    se, dse, warning), best first."""
    import arviz as az

    if ic not in ("loo", "waic"):
        raise UserError(f"--ic: must be loo or waic, got '{ic}'")
    if len(fits) < 2:
        raise UserError("compare: give at least two fit directories")
    labels = list(fits)
    ref = fits[labels[0]]
    for label in labels[1:]:
        other = fits[label]
        same = other.data.n_points == ref.data.n_points and np.allclose(
            np.asarray(other.data.y, np.float64), np.asarray(ref.data.y, np.float64)
        )
        if not same:
            raise UserError(f"compare: {label} was fitted to different data than {labels[0]}; LOO needs the same points")
    return az.compare({label: _pointwise_idata(fits[label], label) for label in labels}, ic=ic)


def _pointwise_idata(fit, label: str):
    """The fit's InferenceData with its pointwise log-likelihood: stored for single-law fits; a
    grouped fit's is computed from its draws (`GroupedFit.log_likelihood`, [S, n])."""
    import arviz as az

    if hasattr(fit.idata, "log_likelihood"):
        return fit.idata
    if not hasattr(fit, "log_likelihood"):  # a single-law fit's posterior.nc without its log-likelihood
        raise UserError(f"fit dir: {label}: posterior.nc has no pointwise log-likelihood, which LOO needs; refit")
    ll = np.asarray(fit.log_likelihood())
    chains = fit.idata.posterior.sizes["chain"]
    return az.from_dict(posterior={k: fit.idata.posterior[k].values for k in fit.idata.posterior.data_vars},
                        log_likelihood={"obs": ll.reshape(chains, -1, ll.shape[-1])},
                        observed_data={"obs": np.asarray(fit.data.y)})


def format_table(table, ic: str = "loo") -> str:
    cols = [f"elpd_{ic}", "se", "elpd_diff", "dse", "weight", f"p_{ic}", "warning"]
    header = f"{'fit':<28} {'elpd':>9} {'se':>7} {'d_elpd':>8} {'dse':>7} {'weight':>7} {'p':>6}  warning"
    lines = [header]
    for label, row in table[cols].iterrows():
        lines.append(
            f"{label:<28} {row[cols[0]]:9.2f} {row['se']:7.2f} {row['elpd_diff']:8.2f} {row['dse']:7.2f}"
            f" {row['weight']:7.3f} {row[cols[5]]:6.2f}  {bool(row['warning'])}"
        )
    return "\n".join(lines)
