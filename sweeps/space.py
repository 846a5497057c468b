"""What a sweep's trials run: the grid's points, or an Optuna search space, as Ray Tune's param_space."""

from __future__ import annotations

import itertools
from typing import Any

from sweeps.config import flatten, with_overrides
from sweeps.names import current_name
from sweeps.schema import SweepSection

SEED_KEY = "seed"
SPACE_TYPES = {"uniform": ("low", "high"), "loguniform": ("low", "high"), "int": ("low", "high"), "choice": ("values",)}
"""``sweep.space`` entry types -> the keys each one takes besides ``type``."""


def grid_points(sweep: SweepSection) -> list[dict[str, Any]]:
    """Every trial's overrides (the cartesian product of the grid, times the seeds), in Tune's order."""
    grid = {**flatten(sweep.grid), SEED_KEY: sweep.seeds}
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def space_entries(space: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``sweep.space`` by dotted config key: ``{"prune": {"criterion": {"type": ...}}}`` -> ``{"prune.criterion":
    {"type": ...}}`` (a mapping with a ``type`` key is an entry; anything else that is not a mapping is too)."""
    entries: dict[str, Any] = {}
    for key, value in space.items():
        if isinstance(value, dict) and value and "type" not in value:
            entries |= space_entries(value, f"{prefix}{key}.")
        else:
            entries[f"{prefix}{key}"] = value
    return entries


def trial_count(sweep: SweepSection) -> int:
    """How many trials the sweep runs."""
    return sweep.num_samples if sweep.search == "optuna" else len(grid_points(sweep))


def param_space(sweep: SweepSection) -> dict[str, Any]:
    """Ray Tune param_space: one ``tune.grid_search`` per (dotted) grid key plus the seeds; for a search, one Tune
    domain per space key and the (single) seed."""
    from ray import tune

    if sweep.search == "optuna":
        return {**{key: _domain(entry) for key, entry in space_entries(sweep.space).items()}, SEED_KEY: sweep.seeds[0]}
    grid = {**flatten(sweep.grid), SEED_KEY: sweep.seeds}
    return {key: tune.grid_search(list(values)) for key, values in grid.items()}


def search_start_points(sweep: SweepSection) -> list[dict[str, Any]]:
    """The grid's points that a search evaluates first (its keys are space keys; no seed: a search has one)."""
    if not sweep.grid:
        return []
    return [{k: v for k, v in point.items() if k != SEED_KEY} for point in grid_points(sweep)]


def checked_points(sweep: SweepSection) -> list[dict[str, Any]]:
    """Trial values that validation builds whole configs of: every grid point; for a search, its start points
    and every space entry's choices or bounds (one key at a time)."""
    if sweep.search != "optuna":
        return grid_points(sweep)
    extremes = [
        {key: value}
        for key, entry in space_entries(sweep.space).items()
        for value in (entry["values"] if entry["type"] == "choice" else (entry["low"], entry["high"]))
    ]
    return [{**point, SEED_KEY: sweep.seeds[0]} for point in [*search_start_points(sweep), *extremes]]


def _domain(entry: dict[str, Any]) -> Any:
    from ray import tune

    kind = entry["type"]
    if kind == "choice":
        return tune.choice(list(entry["values"]))
    if kind == "int":
        return tune.randint(entry["low"], entry["high"] + 1)  # Tune's upper bound is exclusive; the config's is not
    sample = tune.loguniform if kind == "loguniform" else tune.uniform
    return sample(entry["low"], entry["high"])


def trial_config(base: dict, params: dict[str, Any]) -> dict:
    """The full config of one trial: the base config with its grid (or sampled) values applied."""
    overrides = {current_name(key): value for key, value in params.items() if key != SEED_KEY}
    trial = with_overrides(base, overrides)
    trial[SEED_KEY] = params.get(SEED_KEY, 0)
    return trial
