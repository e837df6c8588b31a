"""The grid of a sweep: points, their stable run ids, and each point's training config.

A point is (model, FLOP budget, composition, seed). Its `run_id` hashes the point itself, not
its position in the grid, so growing an axis keeps the runs already done. `tokeff propose`
writes points in the same shape (`Point.as_dict()`), which `points_from_file` reads back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import numbers
import re
from collections.abc import Mapping
from typing import Any

import ml_collections

from tokeff import flops
from tokeff.errors import UserError
from tokeff.models.spec import parse_model_spec, preset_for_spec
from tokeff.models.config import get_preset


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: what is trained (model, composition), for how much compute, with which seed."""

    model: str
    budget_flops: float
    composition: tuple[tuple[str, Any], ...]  # sorted (key, value) pairs; must include "strategy"
    seed: int

    @property
    def strategy(self) -> str:
        return dict(self.composition)["strategy"]

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "budget_flops": self.budget_flops,
                "composition": dict(self.composition), "seed": self.seed}

    @property
    def run_id(self) -> str:
        """A readable slug plus a hash of the canonical point: stable across grid edits."""
        canonical = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
        model = re.sub(r"[^A-Za-z0-9.]+", "-", self.model.split("/")[-1].split(":")[-1]).strip("-")
        return f"{model}_{self.budget_flops:.3g}_{self.strategy}_s{self.seed}_{digest}".replace("+", "")


def grid_points(config: ml_collections.ConfigDict) -> list[Point]:
    """The grid of a sweep config, in run order (models, then budgets, compositions, seeds)."""
    grid = config.grid
    for axis in ("models", "budgets", "compositions", "seeds"):
        if not list(grid.get(axis) or []):
            raise UserError(f"config.grid.{axis}: must list at least one value")
    for model in grid.models:  # an unknown model is refused here, before the workdir, not when its turn comes
        parse_model_spec(str(model), field="config.grid.models")
    compositions = [check_composition(c, f"config.grid.compositions[{i}]") for i, c in enumerate(grid.compositions)]
    budgets = [flops.check_budget(b, "config.grid.budgets") for b in grid.budgets]
    seeds = [check_seed(s, "config.grid.seeds") for s in grid.seeds]
    points = [Point(str(m), b, c, s) for m, b, c, s in itertools.product(grid.models, budgets, compositions, seeds)]
    ids = [p.run_id for p in points]
    if len(set(ids)) != len(ids):
        raise UserError("config.grid: two grid points are identical (repeated axis values)")
    return points


def check_composition(composition, where: str) -> tuple[tuple[str, Any], ...]:
    """A point's composition (a mapping with a "strategy") as `Point.composition`; errors name `where`."""
    if isinstance(composition, ml_collections.ConfigDict):
        composition = composition.to_dict()
    if not isinstance(composition, Mapping) or not isinstance(composition.get("strategy"), str):
        raise UserError(f"{where}.strategy: missing (e.g. 'few_long')")
    from tokeff.data.composition import STRATEGIES

    if composition["strategy"] not in STRATEGIES:  # refused before any run, not when its turn comes
        raise UserError(f"{where}.strategy: must be one of {', '.join(STRATEGIES)}, got {composition['strategy']!r}")
    return tuple(sorted(composition.items()))


def check_seed(seed, where: str) -> int:
    """A point's seed: an integer (not a bool)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise UserError(f"{where}: must be an integer, got {seed!r}")
    from tokeff.resources import check_seed as check_seed_range

    return check_seed_range(int(seed), where)


def check_shard(index: int, count: int) -> tuple[int, int]:
    """`(index, count)`: this process runs points index, index + count, ... of `count` shards."""
    if not (count >= 1 and 0 <= index < count):
        raise UserError(f"--shard: must be I/N with 0 <= I < N (shards are numbered from 0), got {index}/{count}")
    return index, count


def parse_shard(text: str) -> tuple[int, int]:
    """`--shard I/N` as a checked `(index, count)`."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard: must be I/N (e.g. 0/4), got {text!r}") from None
    return check_shard(index, count)


def points_from_file(path: str) -> list[Point]:
    """The points `tokeff propose` wrote (sweep_points.json: {"points": [Point.as_dict(), ...]})."""
    from tokeff.inputs import read_input_text

    text = read_input_text(path, "--points")  # regular files only, size-bounded
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--points: cannot read {path!r} ({e})") from None
    entries = payload.get("points") if isinstance(payload, Mapping) else None
    if not isinstance(entries, list) or not entries:
        raise UserError(f"--points: {path} has no non-empty \"points\" list")
    points = []
    for i, entry in enumerate(entries):
        where = f"--points: {path}: points[{i}]"
        if not isinstance(entry, Mapping):
            raise UserError(f"{where}: must be an object")
        missing = sorted({"model", "budget_flops", "composition", "seed"} - entry.keys())
        if missing:
            raise UserError(f"{where}.{missing[0]}: missing")
        unknown = sorted(entry.keys() - {"model", "budget_flops", "composition", "seed"})
        if unknown:
            raise UserError(f"{where}.{unknown[0]}: unknown key")
        try:
            preset_for_spec(str(entry["model"]))  # an unknown model is refused here, not listed as pending
        except UserError as e:
            raise UserError(f"{where}.model: {e}") from None
        points.append(Point(str(entry["model"]), flops.check_budget(entry["budget_flops"], f"{where}.budget_flops"),
                            check_composition(entry["composition"], f"{where}.composition"),
                            check_seed(entry["seed"], f"{where}.seed")))
    if len({p.run_id for p in points}) != len(points):
        raise UserError(f"--points: {path} lists the same point twice")
    return points


def point_train_config(config: ml_collections.ConfigDict, point: Point) -> ml_collections.ConfigDict:
    """The base training config with the point's model, budget, composition and seed set.

    `config.axis_keys` says where each lives in the training config (dotted paths), so a sweep
    can drive any training config layout without code changes.
    """
    train_config = ml_collections.ConfigDict(config.train.to_dict())
    keys = config.axis_keys
    _set(train_config, keys.model, point.model)
    _set(train_config, keys.budget, point.budget_flops)
    _set(train_config, keys.seed, point.seed)
    for key, value in point.composition:
        _set(train_config, f"{keys.composition}.{key}", value)
    fill = float(config.get("token_budget_fill") or 0.0)
    targets = {"token_budget", "n_examples", "avg_tokens"}
    if fill and not targets & dict(point.composition).keys():
        _set(train_config, f"{keys.composition}.token_budget", _filling_token_budget(point, train_config, keys, fill))
    return train_config


def _filling_token_budget(point: Point, train_config, keys, fill: float) -> int:
    """Tokens whose packed rows cost `fill` x the point's FLOP budget: one epoch just inside it.

    Packed rows cost the same whatever the examples' lengths, so the selection's token count
    fixes its cost; the run then spends the rest of its budget on a short second pass and
    stops exactly at the budget, and every strategy trains on one epoch of its own selection.
    """
    data = train_config
    for name in keys.composition.split("."):
        data = data[name]
    if data.get("layout", "packed") != "packed" or not int(data.get("row_len", 0) or 0):
        raise UserError("config.token_budget_fill: needs the packed layout with a fixed data.row_len")
    return flops.packed_token_budget(get_preset(preset_for_spec(point.model)), int(data.row_len),
                                     point.budget_flops, fill)


def _set(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = config
    for name in parents:
        if name not in node:
            raise UserError(f"config.axis_keys: {dotted!r}: training config has no {name!r}")
        node = node[name]
    if leaf not in node:
        raise UserError(f"config.axis_keys: {dotted!r}: training config has no {leaf!r}")
    current = node[leaf]
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float) \
            and value.is_integer():
        value = int(value)
    try:
        node[leaf] = value
    except TypeError as e:
        raise UserError(f"config.axis_keys: {dotted!r}: cannot set {value!r} ({e})") from None
