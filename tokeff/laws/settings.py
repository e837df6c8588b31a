"""`FitSettings`: how a form is fitted, as one validated, serialisable record.

`tokeff fit` and `tokeff backtest` build it from their flags (`tokeff.commands.fit.fit_settings`),
the demo from its config's `fit` section; `tokeff.laws.fit.fit` takes it, and `summary.json` records
it under "settings" (`as_dict`), so `load_fit` can say how a saved fit was made. Every check of a
setting lives here, once; an error names the flag (`--draws`), or `where.key` for a config.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping

from tokeff.errors import UserError

METHODS = ("nuts", "map", "classic")
# Where NUTS chains start; see `tokeff.laws.fit.resolve_init`.
NUTS_INITS = ("auto", "prior", "laplace")
# Fewer resamples than this give 5%/95% bootstrap intervals from a handful of points.
MIN_BOOTSTRAP = 20
# The flag that sets a field, where it is not "--" + the field with dashes.
_FLAGS = {"priors": "--prior", "exclude": "--no-exclude"}


class SettingError(UserError):
    """A bad setting: `field` names it, `problem` says what is wrong (the message names the flag)."""

    def __init__(self, field: str, problem: str):
        self.field, self.problem = field, problem
        super().__init__(f"{flag(field)}: {problem}")


def flag(field: str) -> str:
    """The command-line flag that sets `field`."""
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Everything `fit` needs besides the data and the form. `priors`: (parameter, prior spec)
    pairs (a mapping is accepted too); `chance`: chance accuracy (accuracy forms); `exclude`: drop
    failed and diverged runs (`tokeff.laws.data`); `drop_invalid`: drop rows with NaN/inf inputs."""

    method: str = "nuts"
    likelihood: str = "auto"
    discrepancy: str = "extrapolation"
    chains: int = 4
    draws: int = 1000
    warmup: int = 1000
    seed: int = 0
    target_accept: float = 0.98
    init: str = "auto"
    bootstrap: int = 4000
    laplace_draws: int = 4000
    priors: tuple[tuple[str, str], ...] = ()
    chance: float = 0.0
    exclude: bool = True
    drop_invalid: bool = False

    def __post_init__(self):
        priors = self.priors.items() if isinstance(self.priors, Mapping) else (self.priors or ())
        object.__setattr__(self, "priors", tuple((str(k), str(v)) for k, v in priors))
        self.validate()

    def validate(self) -> None:
        """Refuse, naming the flag, a setting no fit can use or one that would run but report
        meaningless intervals."""
        from tokeff.laws.discrepancy import MODES
        from tokeff.laws.model import LIKELIHOODS

        for name, choices in (("method", METHODS), ("likelihood", ("auto",) + LIKELIHOODS),
                              ("discrepancy", MODES), ("init", NUTS_INITS)):
            if getattr(self, name) not in choices:
                raise SettingError(name, f"must be one of {choices}, got '{getattr(self, name)}'")
        for name in ("chains", "draws", "warmup", "laplace_draws", "bootstrap", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise SettingError(name, f"must be an integer, got {value!r}")
            if name != "seed" and value < 1:
                raise SettingError(name, f"must be >= 1, got {value}")
        from tokeff.resources import MAX_BOOTSTRAP, MAX_CHAINS, MAX_DRAWS, MAX_SEED

        if not 0 <= self.seed <= MAX_SEED:
            raise SettingError("seed", f"must be an integer in [0, {MAX_SEED}], got {self.seed}")
        # Sizes that would run for hours (the memory of the draws is checked with the data, in fit)
        for name, limit in (("chains", MAX_CHAINS), ("draws", MAX_DRAWS), ("warmup", MAX_DRAWS),
                            ("laplace_draws", MAX_DRAWS), ("bootstrap", MAX_BOOTSTRAP)):
            if getattr(self, name) > limit:
                raise SettingError(name, f"{getattr(self, name)} is over the limit of {limit}")
        if not (0.0 < self.target_accept < 1.0):  # also false for NaN
            raise SettingError("target_accept", f"must be a probability strictly between 0 and 1, got {self.target_accept}")
        if not (0.0 <= self.chance < 1.0):
            raise SettingError("chance", f"must be in [0, 1), got {self.chance}")
        if self.method == "classic":
            if self.bootstrap < MIN_BOOTSTRAP:
                raise SettingError("bootstrap", f"must be >= {MIN_BOOTSTRAP} for 5%/95% intervals, got {self.bootstrap}")
            if self.likelihood not in ("auto", "normal"):
                raise SettingError("likelihood", "the classic method is the Huber recipe; it takes no likelihood choice")

    @property
    def prior_overrides(self) -> dict[str, str]:
        """`priors` as a mapping (what `Form.with_priors` takes)."""
        return dict(self.priors)

    def replace(self, **changes) -> "FitSettings":
        """A copy with `changes` applied, validated again."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """JSON-ready: what summary.json records under "settings" (priors as a mapping)."""
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "priors": self.prior_overrides}

    @classmethod
    def from_dict(cls, d: Mapping, *, where: str | None = None) -> "FitSettings":
        """The settings `d` records (keys that are not fields, like a summary's "retried", are
        ignored; missing ones take their defaults). With `where` (e.g. "config.fit"), an error
        names `where.key` instead of the flag."""
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in names})
        except SettingError as e:
            if where is None:
                raise
            raise UserError(f"{where}.{e.field}: {e.problem}") from None

