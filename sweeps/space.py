"""The sweep grid: from ``sweep.grid`` and ``sweep.seeds`` to trial configs and a Ray Tune param_space."""

from __future__ import annotations

import itertools
from typing import Any

from sweeps.config import flatten, with_overrides
from sweeps.names import current_name
from sweeps.schema import GridSection

SEED_KEY = "seed"


def grid_points(sweep: GridSection) -> list[dict[str, Any]]:
    """Every trial's overrides (the cartesian product of the grid, times the seeds), in Tune's order."""
    grid = {**flatten(sweep.grid), SEED_KEY: sweep.seeds}
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def param_space(sweep: GridSection) -> dict[str, Any]:
    """Ray Tune param_space: one ``tune.grid_search`` per (dotted) grid key, plus the seeds."""
    from ray import tune

    grid = {**flatten(sweep.grid), SEED_KEY: sweep.seeds}
    return {key: tune.grid_search(list(values)) for key, values in grid.items()}


def trial_config(base: dict, params: dict[str, Any]) -> dict:
    """The full config of one trial: the base config with its grid values applied."""
    overrides = {current_name(key): value for key, value in params.items() if key != SEED_KEY}
    trial = with_overrides(base, overrides)
    trial[SEED_KEY] = params.get(SEED_KEY, 0)
    return trial
