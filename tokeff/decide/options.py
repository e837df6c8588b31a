"""What may be run at a budget: options (model x examples x length x epochs, or a strategy's
selection), their exact FLOP cost from the accountant, and whether the data for them exists.

The options a decision weighs are the runs a sweep would do: a strategy's examples come from
tokeff.data.composition's own selection (the same seeded tie-break), and each option is costed
by one of two rules, both from the FLOP accountant:

- `PerExample()`: every example at its own length (`example_training_flops`), as an unpacked
  run computes it; an option fills the budget with whole examples.
- `PackedRows(row_len, fill)`: what a packed sweep runs (`token_budget_fill` in a sweep config):
  packed rows cost the same whatever the examples' lengths, so a strategy greedily fills
  `packed_token_budget(...)` tokens and the run spends exactly its budget.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Mapping

import numpy as np

from tokeff.commalist import comma_items
from tokeff.data.composition import select
from tokeff.errors import UserError
from tokeff.flops import check_budget

STRATEGIES = ("few_long", "many_short", "balanced")  # the Lagasse et al. greedy strategies


@dataclasses.dataclass(frozen=True)
class PerExample:
    """Cost rule: each example at its own length, fill the budget with whole examples."""


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """Cost rule of a packed sweep: rows of `row_len` tokens, one epoch of `fill` x the budget."""

    row_len: int
    fill: float = 1.0


def packed_token_budget(model: str, row_len: int, budget: float, fill: float) -> int:
    """Tokens whose packed rows of `row_len` cost `fill` x `budget` FLOPs on `model`'s shapes: the
    selection target a packed sweep point trains one epoch of (tokeff.sweep uses the same)."""
    from tokeff.flops import packed_token_budget as tokens_for
    from tokeff.models.config import get_preset
    from tokeff.models.spec import preset_for_spec

    return tokens_for(get_preset(preset_for_spec(model)), row_len, budget, fill)


@dataclasses.dataclass(frozen=True)
class Option:
    """One thing a researcher could run: a model trained on n_examples of avg_tokens for epochs.

    `flops` is the training compute by the accountant: epochs x the sum over examples of
    `example_training_flops(cfg, length)` (each example at its own length, attention's quadratic
    term included). Padding or packing adds to this; see tokeff.flops for the layouts.
    """

    model: str
    n_examples: int
    avg_tokens: float
    epochs: int
    flops: float
    strategy: str | None = None
    group: str | None = None  # a grouped fit's group this run predicts for (`model` is its preset, for costs)

    @property
    def label(self) -> str:
        how = self.strategy or f"L={self.avg_tokens:.0f}"
        ep = f" x{self.epochs}ep" if self.epochs != 1 else ""
        return f"{self.group or self.model} N={self.n_examples} {how}{ep}"

    def row(self) -> dict:
        """The results-table columns this run would have (tokeff.results schema)."""
        from tokeff.models.config import get_preset

        cfg = get_preset(self.model)
        return {
            "model": self.model,
            "params": cfg.params,
            "non_embedding_params": cfg.non_embedding_params,
            "strategy": self.strategy,
            "n_examples": self.n_examples,
            "avg_tokens": self.avg_tokens,
            "unique_tokens": self.n_examples * self.avg_tokens,
            "tokens_seen": self.epochs * self.n_examples * self.avg_tokens,
            "epochs": self.epochs,
            "budget_flops": self.flops,
            "flops_used": self.flops,
        }


@dataclasses.dataclass(frozen=True)
class Infeasible:
    label: str
    reason: str


@dataclasses.dataclass(frozen=True)
class DataPool:
    """The data actually available: example lengths (tokens), or only a count."""

    lengths: np.ndarray | None = None  # int[P], one per available example
    max_examples: int | None = None

    def check(self, n_examples: int, avg_tokens: float) -> str | None:
        """Why (n_examples, avg_tokens) cannot be drawn from the pool, or None if it can.

        With a length list, some n-subset has mean length L (to within one swap's step) iff L
        lies between the mean of the n shortest and the mean of the n longest: swapping one
        example at a time walks the mean from one to the other.
        """
        limit = self.max_examples if self.lengths is None else len(self.lengths)
        if limit is not None and n_examples > limit:
            return f"needs {n_examples} examples, only {limit} available"
        if self.lengths is not None and n_examples > 0:
            s = np.sort(self.lengths)
            lo, hi = s[:n_examples].mean(), s[-n_examples:].mean()
            if not lo - 0.5 <= avg_tokens <= hi + 0.5:  # half a token: lengths are rounded
                return (f"no {n_examples} available examples average {avg_tokens:.0f} tokens "
                        f"(possible {lo:.0f}..{hi:.0f})")
        return None


def example_flops(model: str, length: int) -> int:
    from tokeff.flops import example_training_flops
    from tokeff.models.config import get_preset

    return int(example_training_flops(get_preset(model), int(length)))


def grid_options(budget: float, models, lengths, *, epochs=(1,), n_examples=None,
                 pool: DataPool = DataPool()) -> tuple[list[Option], list[Infeasible]]:
    """Options model x length x epochs (x n_examples): feasible ones and why the others are not.

    Without `n_examples`, each option spends the budget: N = floor(budget / (E x flops(L))).
    """
    feasible, infeasible = [], []
    for model in models:
        for L in lengths:
            per_example = example_flops(model, L)
            for E in epochs:
                ns = n_examples or [int(budget // (E * per_example))]
                for N in ns:
                    option = Option(model, int(N), float(L), int(E), float(E * N * per_example))
                    if N < 1:
                        why = f"one example of {L} tokens costs {E * per_example:.3g} FLOPs > budget"
                    elif option.flops > budget * (1 + 1e-12):
                        why = f"costs {option.flops:.3g} FLOPs > budget {budget:.3g}"
                    else:
                        why = pool.check(int(N), float(L))
                    if why:
                        infeasible.append(Infeasible(option.label, why))
                    else:
                        feasible.append(option)
    return feasible, infeasible


def strategy_order(lengths_P: np.ndarray, strategy: str, seed: int = 0) -> np.ndarray:
    """Pool indices in the order a subsampling strategy takes them: tokeff.data.composition's
    own order, seeded tie-break included, so an option holds the examples a sweep would train on."""
    if strategy not in STRATEGIES:
        raise UserError(f"strategy: unknown {strategy!r}; known: {', '.join(STRATEGIES)}")
    lengths_P = np.asarray(lengths_P, dtype=np.int64)
    return select(lengths_P, strategy, n_examples=lengths_P.size, seed=seed).indices


def strategy_options(budget: float, models, strategies, lengths_P: np.ndarray, *,
                     epochs=(1,), seed: int = 0,
                     cost: PerExample | PackedRows = PerExample()) -> tuple[list[Option], list[Infeasible]]:
    """Options model x strategy x epochs: each strategy takes examples in its order until the
    next one would exceed the budget (exact per-example cost), or the pool runs out; under
    `PackedRows`, the selection a packed sweep point trains on (one epoch, the whole budget)."""
    lengths_P = np.asarray(lengths_P, dtype=np.int64)
    if isinstance(cost, PackedRows):
        return _packed_strategy_options(budget, models, strategies, lengths_P, seed, cost)
    feasible, infeasible = [], []
    for model in models:
        cost_of = {int(L): example_flops(model, int(L)) for L in np.unique(lengths_P)}
        cost_P = np.array([cost_of[int(L)] for L in lengths_P], dtype=np.float64)
        for strategy in strategies:
            order = strategy_order(lengths_P, strategy, seed)
            for E in epochs:
                cum = E * np.cumsum(cost_P[order])
                n = int(np.searchsorted(cum, budget * (1 + 1e-12), side="right"))
                if n < 1:
                    infeasible.append(Infeasible(f"{model} {strategy} x{E}ep",
                                                 f"first example costs {cum[0]:.3g} FLOPs > budget"))
                    continue
                chosen = lengths_P[order[:n]]
                feasible.append(Option(model, n, float(chosen.mean()), int(E), float(cum[n - 1]), strategy))
    return feasible, infeasible


def _packed_strategy_options(budget, models, strategies, lengths_P, seed, cost: PackedRows):
    feasible, infeasible = [], []
    for model in models:
        tokens = packed_token_budget(model, cost.row_len, budget, cost.fill)
        for strategy in strategies:
            if strategy not in STRATEGIES:
                raise UserError(f"strategy: unknown {strategy!r}; known: {', '.join(STRATEGIES)}")
            fits = lengths_P[lengths_P <= cost.row_len]
            if tokens < (fits.min() if fits.size else cost.row_len + 1):
                infeasible.append(Infeasible(f"{model} {strategy}", f"{budget:.3g} FLOPs buy {tokens} tokens, "
                                             "less than the shortest example"))
                continue
            chosen = select(lengths_P, strategy, token_budget=tokens, seed=seed, context_len=cost.row_len)
            feasible.append(Option(model, int(chosen.lengths.size), float(chosen.lengths.mean()), 1, float(budget),
                                   strategy))
    return feasible, infeasible


@dataclasses.dataclass(frozen=True)
class OptionSpace:
    """What may be chosen at a budget: models, and either lengths (x n_examples) or strategies."""

    models: tuple[str, ...]
    lengths: tuple[int, ...] = ()
    strategies: tuple[str, ...] = ()
    epochs: tuple[int, ...] = (1,)
    n_examples: tuple[int, ...] = ()
    pool: DataPool = DataPool()
    cost: PerExample | PackedRows = PerExample()
    seed: int = 0  # the strategies' tie-break seed (a sweep point's seed)
    groups: tuple[tuple[str, str], ...] = ()  # grouped fits: (group label, its model's preset), see `grouped_space`
    # A group's own data, where it differs from `pool` (another tokenizer gives the same examples other lengths).
    group_pools: tuple[tuple[str, DataPool], ...] = ()

    def at(self, budget: float) -> tuple[list[Option], list[Infeasible]]:
        if self.groups and self.group_pools:
            pools, found = dict(self.group_pools), ([], [])
            for label, preset in self.groups:
                one = dataclasses.replace(self, models=(preset,), groups=((label, preset),), group_pools=(),
                                          pool=pools.get(label, self.pool))
                for into, part in zip(found, one.at(budget)):
                    into += part
            return found
        if self.strategies:
            if self.pool.lengths is None:
                raise UserError("strategies: need the dataset's example lengths (--lengths FILE)")
            found = strategy_options(budget, self.models, self.strategies, self.pool.lengths, epochs=self.epochs,
                                     seed=self.seed, cost=self.cost)
        else:
            if not self.lengths:
                raise UserError("lengths: give candidate average lengths (--lengths-grid) or strategies")
            found = grid_options(budget, self.models, self.lengths, epochs=self.epochs,
                                 n_examples=list(self.n_examples) or None, pool=self.pool)
        return with_groups(*found, self.groups) if self.groups else found


def with_groups(options: list[Option], infeasible: list[Infeasible], groups: tuple[tuple[str, str], ...]):
    """Options (and infeasible ones) per group: each group gets its model preset's options, with the
    group's label (two groups may share a preset: the same architecture, other weights)."""
    out, why = [], []
    for label, preset in groups:
        out += [dataclasses.replace(o, group=label) for o in options if o.model == preset]
        why += [Infeasible(f"{label}{i.label[len(preset):]}", i.reason) for i in infeasible
                if i.label.split(" ", 1)[0] == preset]
    return out, why


def group_preset(label: str, column: str, field: str) -> str:
    """The model preset whose shapes cost a group's runs: the group's label is a model spec
    (`smollm2-135m`, `hf:HuggingFaceTB/SmolLM2-135M-Instruct`, ...), as a sweep's `model` column is."""
    from tokeff.models.spec import preset_for_spec

    try:
        return preset_for_spec(str(label))
    except UserError:
        raise UserError(f"{field}: {column} '{label}' names no model preset, so its runs cannot be costed in FLOPs; "
                        "allocate and propose choose among models tokeff can cost (compare other groups at "
                        "fixed inputs with `tokeff predict`)") from None


def grouped_space(fit, space: OptionSpace, group_values=None, *, new_group: bool = False) -> OptionSpace:
    """`space` over a grouped fit's groups (every fitted one, or `group_values`; with `new_group` a
    label the fit never saw is a new model drawn from the population): the groups are the models."""
    groups = fit.groups
    if space.models:
        raise UserError(f"--models: a grouped fit's models are its groups (per {groups.column}); "
                        "choose some with --group-value")
    labels = tuple(str(g) for g in group_values) if group_values else groups.labels
    _check_unique(labels, "--group-value")
    groups.lookup(labels, new_groups=new_group)  # an unknown label fails here, naming --group-value
    field = "--group-value" if group_values else "FIT_DIR"
    pairs = tuple((label, group_preset(label, groups.column, field)) for label in labels)
    for _, preset in pairs:
        check_context(preset, max(space.lengths, default=0), "--lengths-grid")
    return dataclasses.replace(space, models=tuple(dict.fromkeys(p for _, p in pairs)), groups=pairs)


def option_inputs(options: list[Option], columns: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Form inputs ([O] arrays) for each option through the fit's input -> column expression
    mapping (`FitData.columns`, e.g. {"V": "n_examples*avg_tokens", "M": "params"}, or
    `option_columns` of it), so an option is described to the law exactly as the runs it was
    fitted on were."""
    rows = [o.row() for o in options]
    inputs = {}
    for name, expr in columns.items():
        if name in ("target", "n_eval"):
            continue
        value_O = np.ones(len(rows))
        for column in expr.split("*"):
            column = column.strip()
            if column not in rows[0]:
                raise UserError(f"input {name}: column {column!r} is not something an option defines "
                                f"({', '.join(rows[0])})")
            value_O = value_O * np.array([r[column] for r in rows], dtype=np.float64)
        inputs[name] = value_O
    return inputs


def option_columns(fit) -> dict[str, str]:
    """The fit's input -> column expressions as an option can answer them: an input the table
    named its own way (`--map D=tokens`) is read from the form's default column for it (D:
    tokens_seen), which every option defines."""
    known = set(Option("tiny", 1, 1.0, 1, 1.0).row())
    columns = dict(fit.data.columns)
    for name, expr in fit.data.columns.items():
        if name in ("target", "n_eval") or all(c.strip() in known for c in expr.split("*")):
            continue
        if name in fit.form.columns:
            columns[name] = fit.form.columns[name]
    return columns


def check_context(model: str, length: float, field: str) -> None:
    """Refuse an example length over `model`'s context length (no run could train on it)."""
    from tokeff.models.config import get_preset

    limit = get_preset(model).max_seq_len
    if length > limit:
        raise UserError(f"{field}: {length:g} tokens is over {model}'s context length of {limit}")


def parse_flops(text: str, field: str) -> float:
    """A FLOP count given on the command line (`--budget 1e20`): a number, checked as a budget."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UserError(f"{field}: expected a number, got {text!r}") from None
    return check_budget(value, field)


MAX_COUNT = 10**12  # the largest example count, length or epoch count a flag takes


def int_list(text: str | None, field: str) -> tuple[int, ...]:
    """Comma-separated positive integers (1e3 is 1000; 1.5 is refused), each at most once; not
    given (None) is none, an empty value is refused (an unset shell variable, say)."""
    if text is None:
        return ()
    if not text.strip():
        raise UserError(f"{field}: empty; give comma-separated positive integers")
    items = comma_items(text, field)
    try:
        floats = [float(x) for x in items]
    except ValueError:
        raise UserError(f"{field}: expected comma-separated integers, got {text!r}") from None
    if not floats or min(floats) < 1:
        raise UserError(f"{field}: values must be positive integers, got {text!r}")
    if max(floats) > MAX_COUNT:
        raise UserError(f"{field}: {max(floats):.3g} is over the limit of {MAX_COUNT:.0e}")
    fractional = [x for x in floats if not x.is_integer()]
    if fractional:
        raise UserError(f"{field}: values must be whole numbers, got {fractional[0]:g}")
    values = tuple(int(x) for x in floats)
    _check_unique(values, field)
    return values


def _check_unique(values, field: str) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
    if repeated:
        raise UserError(f"{field}: {repeated[0]} is listed twice; each option once")


def read_lengths(path: str):
    import numpy as np

    from tokeff.io import read_user_text

    text = read_user_text(path, "--lengths")
    try:
        values = json.loads(text) if text.lstrip().startswith("[") else [float(x) for x in text.split()]
        lengths = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        raise UserError(f"--lengths: {path}: expected a JSON list or one number per line") from None
    if lengths.ndim != 1 or len(lengths) == 0 or not (lengths >= 1).all():
        raise UserError(f"--lengths: {path}: need a non-empty list of positive token lengths")
    if lengths.max() > MAX_COUNT:
        raise UserError(f"--lengths: {path}: {lengths.max():.3g} is over the limit of {MAX_COUNT:.0e}")
    return np.round(lengths).astype(np.int64)


def option_space(*, models: str | None = None, lengths_grid: str | None = None, strategies: str | None = None,
                 epochs: str | None = "1", n_examples: str | None = None, lengths_file: str | None = None,
                 max_examples: int | None = None, row_len: int | None = None, fill: float = 1.0) -> OptionSpace:
    """An OptionSpace from the comma-separated flags of `tokeff allocate` / `tokeff propose`,
    each value checked (unknown presets and strategies fail naming the flag)."""
    from tokeff.models.config import get_preset

    model_names = tuple(comma_items(models, "--models")) if models else ()
    for m in model_names:
        get_preset(m, field="--models")
    _check_unique(model_names, "--models")
    strategy_names = tuple(comma_items(strategies, "--strategies")) if strategies else ()
    _check_unique(strategy_names, "--strategies")
    for s in strategy_names:
        if s not in STRATEGIES:
            raise UserError(f"--strategies: unknown {s!r}; known: {', '.join(STRATEGIES)}")
    if max_examples is not None and max_examples < 1:
        raise UserError(f"--max-examples: must be positive, got {max_examples}")
    pool = DataPool(read_lengths(lengths_file) if lengths_file else None, max_examples)
    cost = PerExample()
    if row_len is not None:
        if row_len < 1:
            raise UserError(f"--row-len: must be a positive number of tokens, got {row_len}")
        if not 0 < fill <= 1:
            raise UserError(f"--fill: must be in (0, 1], got {fill}")
        if not strategy_names:
            raise UserError("--row-len: packed costs apply to strategies (give --strategies and --lengths)")
        cost = PackedRows(int(row_len), float(fill))
    elif fill != 1.0:
        raise UserError("--fill: applies only to packed costs; give --row-len with it")
    lengths = int_list(lengths_grid, "--lengths-grid")
    for m in model_names:
        check_context(m, max(lengths, default=0), "--lengths-grid")
    return OptionSpace(model_names, lengths, strategy_names,
                       int_list(epochs, "--epochs"), int_list(n_examples, "--n-examples"), pool, cost)
