"""Priors for scaling-law parameters, written as short strings so configs and CLIs can override them.

A prior is stated on the natural value of a parameter (E, A, alpha, ...). NUTS samples in the
unconstrained space of the distribution's support, so `lognormal(6, 2)` on a coefficient means the
sampler moves in log A, where power-law posteriors are well shaped, and `uniform(0, 1.5)` on an
exponent is a bounded exponent sampled through a logit.

Spec grammar: `normal(loc, scale)`, `lognormal(loc, scale)` (log x ~ Normal), `uniform(low, high)`,
`halfnormal(scale)`, `truncnormal(loc, scale, low, high)`, `gamma(concentration, rate)`,
`beta(a, b)` (a share in (0, 1)).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from tokeff.commalist import comma_items
from tokeff.errors import UserError

# name -> number of arguments
_ARITY = {"normal": 2, "lognormal": 2, "uniform": 2, "halfnormal": 1, "truncnormal": 4, "gamma": 2, "beta": 2}
_SPEC = re.compile(r"^\s*([a-z_]+)\s*\(([^()]*)\)\s*$")


@dataclasses.dataclass(frozen=True)
class Prior:
    """One parameter's prior: a distribution name and its numeric arguments."""

    dist: str
    args: tuple[float, ...]

    def __post_init__(self):
        if self.dist not in _ARITY:
            raise UserError(f"prior: unknown distribution '{self.dist}' (known: {', '.join(_ARITY)})")
        if len(self.args) != _ARITY[self.dist]:
            raise UserError(f"prior: {self.dist} takes {_ARITY[self.dist]} arguments, got {len(self.args)}")
        if not all(np.isfinite(self.args)):
            raise UserError(f"prior: {self}: arguments must be finite numbers")
        scale = {"normal": 1, "lognormal": 1, "truncnormal": 1, "halfnormal": 0}.get(self.dist)
        if scale is not None and self.args[scale] <= 0:
            raise UserError(f"prior: {self}: the scale must be positive")
        if self.dist == "gamma" and min(self.args) <= 0:
            raise UserError(f"prior: {self}: concentration and rate must be positive")
        if self.dist == "beta" and min(self.args) <= 0:
            raise UserError(f"prior: {self}: both concentrations must be positive")
        bounds = {"uniform": (0, 1), "truncnormal": (2, 3)}.get(self.dist)
        if bounds is not None and not self.args[bounds[0]] < self.args[bounds[1]]:
            raise UserError(f"prior: {self}: the lower bound must be below the upper bound")

    @classmethod
    def parse(cls, spec: "str | Prior") -> "Prior":
        """`Prior.parse("lognormal(6, 2)")`; a Prior passes through unchanged."""
        if isinstance(spec, Prior):
            return spec
        m = _SPEC.match(str(spec))
        if not m:
            raise UserError(f"prior: cannot parse '{spec}' (expected e.g. 'lognormal(6, 2)')")
        text = m.group(2)  # an empty argument (`normal(0,,1)`) is refused, not dropped; `halfnormal()`
        # has none at all, which the arity check refuses
        items = comma_items(text, "prior", what="argument",
                            hint=f"give numbers, as in lognormal(6, 2) (got '{spec}')") if text.strip() else []
        try:
            args = tuple(float(a) for a in items)
        except ValueError:
            raise UserError(f"prior: non-numeric argument in '{spec}'") from None
        return cls(m.group(1), args)

    def __str__(self) -> str:
        return f"{self.dist}({', '.join(f'{a:g}' for a in self.args)})"

    def to_numpyro(self):
        import numpyro.distributions as dist

        a = self.args
        if self.dist == "normal":
            return dist.Normal(a[0], a[1])
        if self.dist == "lognormal":
            return dist.LogNormal(a[0], a[1])
        if self.dist == "uniform":
            return dist.Uniform(a[0], a[1])
        if self.dist == "halfnormal":
            return dist.HalfNormal(a[0])
        if self.dist == "truncnormal":
            return dist.TruncatedNormal(a[0], a[1], low=a[2], high=a[3])
        if self.dist == "beta":
            return dist.Beta(a[0], a[1])
        return dist.Gamma(a[0], a[1])

    def shifted_numpyro(self, offset):
        """The distribution of value + offset (offset may be traced): for centring an exponent."""
        import numpyro.distributions as dist

        a = self.args
        if self.dist == "normal":
            return dist.Normal(a[0] + offset, a[1])
        if self.dist == "uniform":
            return dist.Uniform(a[0] + offset, a[1] + offset)
        if self.dist == "truncnormal":
            return dist.TruncatedNormal(a[0] + offset, a[1], low=a[2] + offset, high=a[3] + offset)
        raise UserError(f"prior: {self} cannot be shifted (centring on the log scale needs a positive prior)")

    def shiftable(self) -> bool:
        return self.dist in ("normal", "uniform", "truncnormal")

    def positive(self) -> bool:
        """True when the support is (0, inf): the classic fit then optimises log(value)."""
        return self.dist in ("lognormal", "halfnormal", "gamma")

    def quantiles(self, qs) -> np.ndarray:
        """Prior quantiles (for initialisation grids and prior-predictive plots)."""
        from scipy import stats

        a = self.args
        frozen = {
            "normal": lambda: stats.norm(a[0], a[1]),
            "lognormal": lambda: stats.lognorm(s=a[1], scale=np.exp(a[0])),
            "uniform": lambda: stats.uniform(a[0], a[1] - a[0]),
            "halfnormal": lambda: stats.halfnorm(scale=a[0]),
            "truncnormal": lambda: stats.truncnorm((a[2] - a[0]) / a[1], (a[3] - a[0]) / a[1], a[0], a[1]),
            "gamma": lambda: stats.gamma(a[0], scale=1.0 / a[1]),
            "beta": lambda: stats.beta(a[0], a[1]),
        }[self.dist]()
        return frozen.ppf(np.asarray(qs, dtype=float))
