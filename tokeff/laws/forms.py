"""The forms registry: scaling laws as named, swappable objects.

A `Form` declares what a law needs to be fitted and used: input variables, whether it predicts a
loss or an accuracy, parameters with priors, a JAX mean function and (where one exists) an
allocation rule. Built-ins are registered below; a user registers their own from any module:

    from tokeff.laws.forms import register_form

    @register_form(name="my_law", inputs=("N", "D"), target="loss",
                   params={"E": "lognormal(0.5, 0.5)", "A": "lognormal(6, 2)", "alpha": "uniform(0, 1)"},
                   columns={"N": "params", "D": "tokens_seen"})
    def my_law(p, x):
        return p["E"] + p["A"] * x["N"] ** -p["alpha"]

Mean functions take `p` (parameter name -> array) and `x` (input name -> array) and must broadcast:
during prediction each parameter is a [S, 1] array of posterior draws and each input a [n] array.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from tokeff.errors import UserError
from tokeff.laws.priors import Prior

TARGETS = ("loss", "accuracy")
# Site names the likelihood uses; a form may not call a parameter by these names.
RESERVED = ("sigma", "obs")

MeanFn = Callable[[Mapping, Mapping], "jnp.ndarray"]
# For a coefficient, the rest of its power-law term's log: log(term) = log(coef) + offset(p, x).
OffsetFn = Callable[[Mapping, Mapping], "jnp.ndarray"]
AllocateFn = Callable[[Mapping, "float | jnp.ndarray"], dict]


@dataclasses.dataclass(frozen=True)
class Form:
    """A scaling law. `columns` maps each input to its default results-table column (or `a*b`)."""

    name: str
    inputs: tuple[str, ...]
    target: str
    params: dict[str, Prior]
    mean: MeanFn
    allocate: AllocateFn | None = None
    columns: dict[str, str] = dataclasses.field(default_factory=dict)
    # Input ranges typical of the law's use: simulation designs and prior-predictive plots.
    typical_ranges: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    # Optional log of the mean, for forms with a numerically better log-space expression (LSE).
    log_mean_fn: MeanFn | None = None
    # Initialisation grid of the classic fit, per parameter, in its optimisation space (log of
    # positive coefficients). Default: prior quantiles 10/50/90%.
    classic_grid: dict[str, tuple[float, ...]] | None = None
    # Parameter -> offset (see OffsetFn). NUTS and Laplace then sample a coefficient as its term's
    # log at the data's geometric centre, log(coef) + offset: log A and alpha are otherwise ~0.999
    # correlated (A N^-alpha: log N ~ 20), and the exponent's bounded (logit) transform bends that
    # thin ridge into divergences. An exponent with a normal/uniform prior is sampled as value +
    # offset (e.g. an exponent that itself varies with an input). Same prior, same posterior (a
    # unit-Jacobian shear). Offsets are evaluated in this dict's order and may use parameters that
    # are not centred or come earlier.
    centring: dict[str, OffsetFn] = dataclasses.field(default_factory=dict)
    # Accuracy forms: the parameter that is the accuracy floor (E). Given a chance level c, its
    # uniform(lo, hi) prior is read as a fraction of the way from chance to 1 (`above_chance`):
    # below chance the clipped likelihood is flat, and pilot fits near chance diverged on that edge.
    floor: str | None = None
    # Accuracy forms with a floor: the centred coefficient whose term is the whole lift above the
    # floor (mean = floor + term). NUTS then samples the pair as (h, s): h the accuracy at the
    # data's centre above the floor prior's lower bound (chance), which the data pin down, and s
    # the share of h the term carries (`tokeff.laws.model._sample_lift`). Same prior (with its
    # Jacobian), same posterior; in (E, log term) the posterior of near-chance data is an L-shaped
    # ridge (floor at chance and the term carrying the lift, or the floor carrying it and the
    # term vanishing) whose corner diverged; in (h, s) it is straight.
    lift: str | None = None
    description: str = ""

    def __post_init__(self):
        if self.target not in TARGETS:
            raise UserError(f"form {self.name}: target must be one of {TARGETS}, got '{self.target}'")
        clash = set(self.params) & (set(RESERVED) | set(self.inputs))
        if clash:
            raise UserError(f"form {self.name}: parameter names {sorted(clash)} clash with inputs or {RESERVED}")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "params", {k: Prior.parse(v) for k, v in self.params.items()})
        unknown = set(self.centring) - set(self.params)
        if unknown:
            raise UserError(f"form {self.name}: centring names {sorted(unknown)}, which are not parameters")
        if self.lift is not None and (self.floor is None or self.lift not in self.centring):
            raise UserError(f"form {self.name}: lift '{self.lift}' needs a floor and a centring entry for it")

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.params)

    def log_mean(self, p: Mapping, x: Mapping):
        """log of the mean: what loss likelihoods and the classic Huber fit compare with log y."""
        if self.log_mean_fn is not None:
            return self.log_mean_fn(p, x)
        return jnp.log(self.mean(p, x))

    def above_chance(self, chance: float) -> "Form":
        """A copy whose floor prior uniform(lo, hi) becomes uniform(c + lo (1 - c), c + hi (1 - c))."""
        if not chance or self.floor is None or self.params[self.floor].dist != "uniform":
            return self
        lo, hi = self.params[self.floor].args
        shifted = Prior("uniform", (chance + lo * (1 - chance), chance + hi * (1 - chance)))
        return dataclasses.replace(self, params={**self.params, self.floor: shifted})

    def with_priors(self, overrides: Mapping[str, "str | Prior"] | None) -> "Form":
        """A copy with some priors replaced, e.g. `{"alpha": "uniform(0.2, 0.5)"}` from a config."""
        if not overrides:
            return self
        unknown = set(overrides) - set(self.params)
        if unknown:
            raise UserError(
                f"prior: unknown parameter(s) {sorted(unknown)} for form {self.name} (has {list(self.params)})"
            )
        return dataclasses.replace(self, params={**self.params, **{k: Prior.parse(v) for k, v in overrides.items()}})


_REGISTRY: dict[str, Form] = {}


def register_form(form: Form | None = None, /, **spec):
    """Register a form: `register_form(Form(...))`, or as a decorator on a mean function with
    `@register_form(name=..., inputs=..., target=..., params=..., [allocate=..., columns=...])`.
    Re-registering a name replaces it (so notebooks can redefine a form), except a built-in name."""
    if form is not None:
        if not isinstance(form, Form):
            raise TypeError("register_form takes a Form, or keyword arguments as a decorator")
        builtin = globals().get("BUILTIN_FORMS", ())
        if form.name in builtin and _REGISTRY.get(form.name) is not form:
            raise UserError(f"form {form.name}: is a built-in form; register yours under another name")
        _REGISTRY[form.name] = form
        return form

    def decorate(mean: MeanFn) -> MeanFn:
        register_form(Form(mean=mean, **spec))
        return mean

    return decorate


def get_form(name: str) -> Form:
    if name not in _REGISTRY:
        raise UserError(f"form: unknown form '{name}' (registered: {', '.join(list_forms())})")
    return _REGISTRY[name]


def list_forms() -> list[str]:
    return sorted(_REGISTRY)


def _power(coef, x, exponent):
    """coef * x^exponent computed in log space: float32-safe for x ~ 1e13 and large coefficients."""
    return jnp.exp(jnp.log(coef) + exponent * jnp.log(x))


# --- built-in forms --------------------------------------------------------------------------


def _chinchilla_mean(p, x):
    return p["E"] + _power(p["A"], x["N"], -p["alpha"]) + _power(p["B"], x["D"], -p["beta"])


def _chinchilla_log_mean(p, x):
    # Hoffmann et al.'s log-sum-exp form: log L = LSE(a - alpha log N, b - beta log D, e).
    terms = jnp.stack(
        jnp.broadcast_arrays(
            jnp.log(p["A"]) - p["alpha"] * jnp.log(x["N"]),
            jnp.log(p["B"]) - p["beta"] * jnp.log(x["D"]),
            jnp.log(p["E"]) + 0.0 * jnp.log(x["N"]),
        )
    )
    return jax.nn.logsumexp(terms, axis=0)


def chinchilla_allocation(p: Mapping, budget_flops) -> dict:
    """Compute-optimal N and D under C = 6ND (Hoffmann et al. 2022, eq. 4):
    N_opt = G (C/6)^(b/(a+b)), D_opt = G^-1 (C/6)^(a/(a+b)), G = (a A / (b B))^(1/(a+b))."""
    alpha, beta = p["alpha"], p["beta"]
    log_g = (jnp.log(alpha * p["A"]) - jnp.log(beta * p["B"])) / (alpha + beta)
    log_c6 = jnp.log(jnp.asarray(budget_flops, dtype=jnp.float32) / 6.0)
    log_n = log_g + beta / (alpha + beta) * log_c6
    log_d = -log_g + alpha / (alpha + beta) * log_c6
    return {"N_opt": jnp.exp(log_n), "D_opt": jnp.exp(log_d), "tokens_per_param": jnp.exp(log_d - log_n)}


# The Chinchilla family's shared declarations: the same priors on the shared parameters (E, A, B,
# alpha, beta), the same typical ranges, and A centred on the model-size term at the data's centre.
CHINCHILLA_PRIORS = {
    "E": "lognormal(0.5, 0.5)",
    "A": "lognormal(6, 1.5)",
    "B": "lognormal(7, 1.5)",
    "alpha": "uniform(0.01, 0.8)",
    "beta": "uniform(0.01, 0.8)",
}
CHINCHILLA_RANGES = {"N": (7e7, 1.6e10), "D": (5e9, 5e11)}


def _centre_model_term(p, x):
    return -p["alpha"] * jnp.log(x["N"])


register_form(
    Form(
        name="chinchilla",
        inputs=("N", "D"),
        target="loss",
        params=dict(CHINCHILLA_PRIORS),
        mean=_chinchilla_mean,
        allocate=chinchilla_allocation,
        columns={"N": "params", "D": "tokens_seen"},
        typical_ranges=dict(CHINCHILLA_RANGES),
        log_mean_fn=_chinchilla_log_mean,
        centring={"A": _centre_model_term, "B": lambda p, x: -p["beta"] * jnp.log(x["D"])},
        # Hoffmann et al.'s grid: e in {-1..1} step .5, a, b in {0..25} step 5, alpha, beta in {0..2} step .5.
        classic_grid={
            "E": (-1.0, -0.5, 0.0, 0.5, 1.0),
            "A": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
            "B": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
            "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
            "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
        },
        description="Hoffmann et al. 2022: L = E + A/N^alpha + B/D^beta",
    )
)


def _kaplan_mean(p, x):
    # L = [(Nc/N)^(aN/aD) + Dc/D]^aD, in log space.
    t_n = p["alpha_N"] / p["alpha_D"] * (jnp.log(p["Nc"]) - jnp.log(x["N"]))
    t_d = jnp.log(p["Dc"]) - jnp.log(x["D"])
    return jnp.exp(p["alpha_D"] * jnp.logaddexp(t_n, t_d))


register_form(
    Form(
        name="kaplan",
        inputs=("N", "D"),
        target="loss",
        params={
            "Nc": "lognormal(31.8, 2)",
            "Dc": "lognormal(30.5, 2)",
            "alpha_N": "uniform(0.01, 0.3)",
            "alpha_D": "uniform(0.01, 0.3)",
        },
        mean=_kaplan_mean,
        columns={"N": "non_embedding_params", "D": "tokens_seen"},
        typical_ranges={"N": (1e7, 1e10), "D": (1e8, 1e11)},
        description="Kaplan et al. 2020: L = [(Nc/N)^(aN/aD) + Dc/D]^aD, N non-embedding",
    )
)


FARSEER_N_REF = 1e9  # farseer's beta is the data exponent of a model of this size


def _farseer_data_exponent(p, x):
    return p["beta"] + p["gamma"] * (jnp.log(x["N"]) - jnp.log(FARSEER_N_REF))


def _farseer_log_mean(p, x):
    terms = jnp.stack(
        jnp.broadcast_arrays(
            jnp.log(p["A"]) - p["alpha"] * jnp.log(x["N"]),
            jnp.log(p["B"]) - _farseer_data_exponent(p, x) * jnp.log(x["D"]),
            jnp.log(p["E"]) + 0.0 * jnp.log(x["N"]),
        )
    )
    return jax.nn.logsumexp(terms, axis=0)


register_form(
    Form(
        name="farseer",
        inputs=("N", "D"),
        target="loss",
        params={
            **CHINCHILLA_PRIORS,
            # Per e-fold of N. Li et al. fit a data exponent that moves by ~0.1 over 1e8-1e10
            # parameters (4.6 e-folds): normal(0, 0.03) puts that at 1.5 sd; 0 is Chinchilla.
            "gamma": "normal(0, 0.03)",
        },
        mean=lambda p, x: jnp.exp(_farseer_log_mean(p, x)),
        log_mean_fn=_farseer_log_mean,
        columns={"N": "params", "D": "tokens_seen"},
        typical_ranges=dict(CHINCHILLA_RANGES),
        centring={
            "A": _centre_model_term,
            # The data exponent at the data's centre N (beta and gamma trade off through log N).
            "beta": lambda p, x: p["gamma"] * (jnp.log(x["N"]) - jnp.log(FARSEER_N_REF)),
            "B": lambda p, x: -_farseer_data_exponent(p, x) * jnp.log(x["D"]),
        },
        description="Farseer-like (Li et al. 2025), an N-D interaction: L = E + A/N^alpha + B/D^beta(N), "
                    f"beta(N) = beta + gamma log(N / {FARSEER_N_REF:.0e}); gamma = 0 is Chinchilla",
    )
)


def _volume_mean(p, x):
    return p["E"] + jnp.exp(jnp.log(p["A"]) + p["beta"] * jnp.log(x["V"]) + p["gamma"] * jnp.log(x["M"]))


register_form(
    Form(
        name="volume",
        inputs=("V", "M"),
        target="accuracy",
        params={
            "A": "lognormal(-7, 2)",
            "beta": "uniform(0, 0.5)",
            "gamma": "uniform(0, 0.3)",
            "E": "uniform(0, 0.6)",
        },
        mean=_volume_mean,
        centring={"A": lambda p, x: p["beta"] * jnp.log(x["V"]) + p["gamma"] * jnp.log(x["M"])},
        columns={"V": "n_examples*avg_tokens", "M": "params"},
        floor="E",
        lift="A",
        typical_ranges={"V": (1e4, 1e7), "M": (1.35e8, 1.7e9)},
        description="Lagasse et al. 2025 token-efficiency law: acc = A V^beta M^gamma + E, V = N*L",
    )
)


def _composition_mean(p, x):
    log_term = jnp.log(p["A"]) + p["beta_N"] * jnp.log(x["N"]) + p["beta_L"] * jnp.log(x["L"])
    return p["E"] + jnp.exp(log_term + p["gamma"] * jnp.log(x["M"]))


register_form(
    Form(
        name="composition",
        inputs=("N", "L", "M"),
        target="accuracy",
        params={
            "A": "lognormal(-7, 2)",
            "beta_N": "uniform(0, 0.5)",
            "beta_L": "uniform(-0.5, 0.5)",
            "gamma": "uniform(0, 0.3)",
            "E": "uniform(0, 0.6)",
        },
        mean=_composition_mean,
        centring={
            "A": lambda p, x: p["beta_N"] * jnp.log(x["N"]) + p["beta_L"] * jnp.log(x["L"]) + p["gamma"] * jnp.log(x["M"])
        },
        columns={"N": "n_examples", "L": "avg_tokens", "M": "params"},
        floor="E",
        lift="A",
        typical_ranges={"N": (100, 1e4), "L": (50, 1000), "M": (1.35e8, 1.7e9)},
        description="acc = A N^beta_N L^beta_L M^gamma + E: examples and length enter separately",
    )
)


def _at_one_model(base: Form) -> Form:
    """`base` with M fixed: fine-tuning one model leaves M constant, which no fit can identify,
    so M^gamma is absorbed into A (the demo and any single-model study fit these)."""

    def fixed(p, x):
        return {**p, "gamma": 0.0}, {**x, "M": 1.0}

    def mean(p, x):
        return base.mean(*fixed(p, x))

    return Form(
        name=f"{base.name}_at_one_model",
        inputs=tuple(i for i in base.inputs if i != "M"),
        target=base.target,
        params={k: v for k, v in base.params.items() if k != "gamma"},
        mean=mean,
        columns={k: v for k, v in base.columns.items() if k != "M"},
        typical_ranges={k: v for k, v in base.typical_ranges.items() if k != "M"},
        centring={k: (lambda p, x, f=f: f(*fixed(p, x))) for k, f in base.centring.items()},
        floor=base.floor,
        lift=base.lift,
        description=f"{base.description}; at one model size (M^gamma absorbed into A)",
    )


register_form(_at_one_model(get_form("volume")))
register_form(_at_one_model(get_form("composition")))


def _finetune_mean(p, x):
    return p["E"] + jnp.exp(jnp.log(p["A"]) - p["alpha"] * jnp.log(x["X"]) - p["beta"] * jnp.log(x["Df"]))


register_form(
    Form(
        name="finetune_multiplicative",
        inputs=("X", "Df"),
        target="loss",
        params={
            "A": "lognormal(6, 2)",
            "alpha": "uniform(0, 0.6)",
            "beta": "uniform(0, 0.6)",
            "E": "lognormal(0, 0.5)",
        },
        mean=_finetune_mean,
        centring={"A": lambda p, x: -p["alpha"] * jnp.log(x["X"]) - p["beta"] * jnp.log(x["Df"])},
        columns={"X": "params", "Df": "tokens_seen"},
        typical_ranges={"X": (1e8, 1e10), "Df": (1e5, 1e8)},
        description="Zhang et al. 2024: L = A X^-alpha Df^-beta + E (X: model size, pretraining tokens or PEFT size)",
    )
)


def _finetune_data_log_term(p, x):
    """log of the pre-learned-data term A / (1 + (D / D0)^beta): flat (A) well below D0, a power law
    A (D / D0)^-beta well above it."""
    return jnp.log(p["A"]) - jax.nn.softplus(p["beta"] * (jnp.log(x["D"]) - jnp.log(p["D0"])))


def _finetune_data_log_mean(p, x):
    return jnp.logaddexp(jnp.log(p["E"]) + 0.0 * jnp.log(x["D"]), _finetune_data_log_term(p, x))


register_form(
    Form(
        name="finetune_data",
        inputs=("D",),
        target="loss",
        # Lin et al. 2024's rectified law L = E + B / (D_l + D^beta) (D_l: the data the pretrained
        # model has in effect already learned) as L = E + A / (1 + (D / D0)^beta), with
        # A = B / D_l (the lift above E of the unfine-tuned model) and D0 = D_l^(1/beta) (where the
        # curve turns from flat to a power law). A prior on log D0 is a prior on where the turn is,
        # on the data's own axis; B and D_l are ~1-correlated powers of each other in the raw form.
        params={
            "E": "lognormal(0, 0.7)",
            "A": "lognormal(0, 1)",
            "D0": "lognormal(7, 2.5)",
            "beta": "uniform(0.05, 1.5)",
        },
        mean=lambda p, x: jnp.exp(_finetune_data_log_mean(p, x)),
        log_mean_fn=_finetune_data_log_mean,
        # Sampled as the term's log at the data's centre: in the power-law regime only
        # log A + beta log D0 is pinned down, a ridge in (log A, log D0).
        centring={"A": lambda p, x: -jax.nn.softplus(p["beta"] * (jnp.log(x["D"]) - jnp.log(p["D0"])))},
        columns={"D": "n_examples"},
        typical_ranges={"D": (2e2, 2e6)},
        description="fine-tuning data scaling with a pre-learned-data term (Lin et al. 2024, rectified):"
                    " L = E + A / (1 + (D/D0)^beta) = E + B / (D_l + D^beta), B = A D0^beta, D_l = D0^beta",
    )
)


def _bootstrapped_mean(p, x):
    log_d1 = jnp.log(x["D1"])
    exponent_d2 = -p["alpha2"] + p["alpha3"] * log_d1
    return p["E"] + jnp.exp(jnp.log(p["A"]) - p["alpha1"] * log_d1 + exponent_d2 * jnp.log(x["D2"]))


register_form(
    Form(
        name="bootstrapped",
        inputs=("D1", "D2"),
        target="loss",
        params={
            "A": "lognormal(8, 2)",
            "alpha1": "uniform(0, 0.5)",
            "alpha2": "uniform(0, 0.5)",
            "alpha3": "normal(0, 0.005)",
            "E": "lognormal(0, 0.5)",
        },
        mean=_bootstrapped_mean,
        centring={
            # D2's exponent at the centre's D1 (alpha2 and alpha3 trade off through log D1 ~ 24), then A.
            "alpha2": lambda p, x: -p["alpha3"] * jnp.log(x["D1"]),
            "A": lambda p, x: -p["alpha1"] * jnp.log(x["D1"]) + (p["alpha3"] * jnp.log(x["D1"]) - p["alpha2"]) * jnp.log(x["D2"]),
        },
        columns={"D2": "tokens_seen"},
        typical_ranges={"D1": (1e9, 1e12), "D2": (1e6, 1e9)},
        description="Liew & Kato 2025: L = A D1^-alpha1 D2^(-alpha2 + alpha3 log D1) + E (D1 pretraining tokens)",
    )
)


def _effective_data(p, x):
    """Muennighoff et al. 2023: U unique tokens seen for `epochs` epochs are worth
    D' = U + U R* (1 - exp(-R / R*)) fresh tokens, R = epochs - 1 repetitions (R* ~ 15: returns
    on repeating fade after a few epochs and vanish past ~4 R*)."""
    repeats = x["epochs"] - 1.0
    return x["U"] * (1.0 + p["R_star"] * -jnp.expm1(-repeats / p["R_star"]))


def _repeated_log_mean(p, x):
    terms = jnp.stack(
        jnp.broadcast_arrays(
            jnp.log(p["A"]) - p["alpha"] * jnp.log(x["N"]),
            jnp.log(p["B"]) - p["beta"] * jnp.log(_effective_data(p, x)),
            jnp.log(p["E"]) + 0.0 * jnp.log(x["N"]),
        )
    )
    return jax.nn.logsumexp(terms, axis=0)


register_form(
    Form(
        name="repeated",
        inputs=("N", "U", "epochs"),
        target="loss",
        params={
            **CHINCHILLA_PRIORS,
            "R_star": "lognormal(2.7, 0.7)",
        },
        mean=lambda p, x: jnp.exp(_repeated_log_mean(p, x)),
        log_mean_fn=_repeated_log_mean,
        columns={"N": "params", "U": "unique_tokens", "epochs": "epochs"},
        typical_ranges={"N": (7e7, 1.6e10), "U": (5e8, 5e10), "epochs": (1.0, 40.0)},
        centring={
            "A": _centre_model_term,
            "B": lambda p, x: -p["beta"] * jnp.log(_effective_data(p, x)),
        },
        description="Muennighoff et al. 2023, data-constrained: Chinchilla in effective data "
                    "D' = U + U R* (1 - exp(-R/R*)), U unique tokens, R = epochs - 1 repetitions",
    )
)


def import_form_modules(modules) -> None:
    """Import user modules that register forms (`--module my_forms` or `--module ./my_forms.py`),
    so their names resolve; any failure is one line naming the module (`tokeff.usermodule`)."""
    from tokeff.usermodule import load_user_modules

    load_user_modules(modules)


# The built-in names, fixed here: a user module may not re-register them (that would silently
# change what `--form chinchilla` means); its own names may be redefined (notebooks do).
BUILTIN_FORMS = frozenset(_REGISTRY)


def is_builtin(name: str) -> bool:
    return name in BUILTIN_FORMS
