"""Validation of a whole sweep config: every group's values, then the ``sweep`` section's grid, search space,
objectives, budgets and scheduler, before Ray or MLflow start. Each error is one ConfigError naming the key."""

from __future__ import annotations

import math
import re
from typing import Any

from prune_core.checks import is_int
from sweeps.config import ConfigError, check_groups, check_value, dotted_keys, flatten, get_path, unknown_key
from sweeps.report import OBJECTIVE_METRICS
from sweeps.space import SPACE_TYPES, space_entries

SWEPT_GROUPS = ("prune", "finetune", "data")
"""The config groups a grid axis or a search-space key may set."""

BASELINE_KEYS = ("model.", "finetune.baseline_epochs", "finetune.baseline_learn_rate")
"""Keys (or key prefixes) that would make a trial's network or its training unlike the one baseline every trial
of a sweep starts from: not sweepable. (The baseline also follows the solver, batch size and schedule keys, at the
sweep's own values; sweeping those changes the trials' fine-tuning only.)"""

SWEEPABLE_DATA_KEYS = ("data.max_train_samples", "data.max_val_samples", "data.augment")
"""The ``data`` keys a trial may change: how much of the sweep's own splits it uses, and its augmentation. The
others (the data set, its split, its input shape) would give trials inputs or validation samples unlike the
baseline's."""


def validate_values(cfg: dict) -> None:
    """Check every value of the (plain) config; the first offending key raises ConfigError."""
    check_groups(cfg)
    seeds = get_path(cfg, "sweep.seeds")
    if not isinstance(seeds, list) or not seeds or not all(is_int(s) for s in seeds):
        raise ConfigError(f"sweep.seeds={seeds!r} is not allowed; use a non-empty list of integers, e.g. [0, 1, 2].")
    _check_grid(cfg)
    _check_register_best(cfg["tracking"])
    _check_objectives(cfg["sweep"]["objectives"])
    _check_constraints(cfg["sweep"]["constraints"])
    _check_space(cfg)


def _check_swept_key(cfg: dict, where: str, key: str) -> None:
    """``key`` (a grid axis or a space key, under ``where``) is an existing prune/finetune/data key that does not
    define the sweep's baseline."""
    if key.startswith(BASELINE_KEYS) or (key.startswith("data.") and key not in SWEEPABLE_DATA_KEYS):
        raise ConfigError(
            f"{where}.{key} is not allowed: a sweep trains one baseline (its model, data set and baseline training) "
            f"and every trial starts from it, so {key} cannot change between trials (of the data keys only "
            f"{', '.join(k.partition('.')[2] for k in SWEEPABLE_DATA_KEYS)} can); run one sweep per value "
            f"(e.g. prune-sweep {key}=<value>)."
        )
    if key.split(".")[0] not in SWEPT_GROUPS:
        raise ConfigError(
            f"{where} key {key!r} is not allowed; {where} keys are {', '.join(g + '.*' for g in SWEPT_GROUPS)} keys."
        )
    known = {k for k in dotted_keys(cfg) if k.split(".")[0] != "sweep"}
    if key not in known:
        raise ConfigError(f"{where}.{key}: {unknown_key(key, known)}")


def _check_grid(cfg: dict) -> None:
    """``sweep.grid``: a non-empty list of values per sweepable prune/finetune/data key, each value allowed."""
    grid = get_path(cfg, "sweep.grid")
    if not isinstance(grid, dict):
        raise ConfigError(f"sweep.grid={grid!r} is not allowed; use a mapping of config keys to lists of values.")
    for key, values in flatten(grid).items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep.grid.{key}={values!r} is not allowed; use a non-empty list of values.")
        _check_swept_key(cfg, "sweep.grid", key)
        for value in values:
            check_value(f"sweep.grid.{key} value {value!r} (grid axis)", key, value)


def _check_register_best(tracking: dict) -> None:
    name = tracking["register_best"]
    if name is None:
        return
    if not tracking["log_models"]:
        raise ConfigError(
            f"tracking.register_best={name!r} registers the best trial's logged model, but tracking.log_models=false "
            "logs none; set tracking.log_models=true or tracking.register_best=null."
        )
    if not re.fullmatch(r"[\w.\- ]+", name):
        raise ConfigError(
            f"tracking.register_best={name!r} is not a registered-model name MLflow takes; use letters, digits, "
            "spaces, '_', '-' and '.'."
        )


def _check_objectives(objectives: Any) -> None:
    if not isinstance(objectives, dict) or not objectives:
        raise ConfigError(
            f"sweep.objectives={objectives!r} is not allowed; use a mapping of metrics to max or min, "
            "e.g. {val_accuracy: max, learnables: min}."
        )
    for metric, mode in objectives.items():
        if metric not in OBJECTIVE_METRICS:
            raise ConfigError(
                f"sweep.objectives.{metric} is not a metric of a trial; objectives are {', '.join(OBJECTIVE_METRICS)}."
            )
        if mode not in ("max", "min"):
            raise ConfigError(f"sweep.objectives.{metric}={mode!r} is not allowed; use max or min.")


def _check_constraints(constraints: Any) -> None:
    allowed = [f"{bound}_{metric}" for metric in OBJECTIVE_METRICS for bound in ("max", "min")]
    if not isinstance(constraints, dict):
        raise ConfigError(f"sweep.constraints={constraints!r} is not allowed; use a mapping, e.g. {{max_macs: 1.0e6}}.")
    for key, bound in constraints.items():
        if key not in allowed:
            raise ConfigError(f"sweep.constraints.{key} is not a budget; budgets are {', '.join(allowed)}.")
        if isinstance(bound, bool) or not isinstance(bound, int | float) or bound < 0:
            raise ConfigError(f"sweep.constraints.{key}={bound!r} is not allowed; use a number >= 0.")


def _check_space(cfg: dict) -> None:
    """A search has a space of valid entries, one seed, and grid points inside its space (they start it); a grid
    has no space (it would be ignored)."""
    sweep = cfg["sweep"]
    space = sweep["space"]
    if not isinstance(space, dict):
        raise ConfigError(f"sweep.space={space!r} is not allowed; use a mapping of config keys to space entries.")
    entries = space_entries(space)
    if sweep["search"] != "optuna":
        if entries:
            raise ConfigError(
                f"sweep.space sets {', '.join(entries)} but sweep.search={sweep['search']} does not search; set "
                "sweep.search=optuna to search that space, or leave sweep.space empty."
            )
        return
    if not entries:
        raise ConfigError(
            "sweep.search=optuna needs a search space: sweep.space.<config key> entries, e.g. "
            "sweep.space.prune.learnables_reduction_goal={type: uniform, low: 0.5, high: 0.95}."
        )
    if len(sweep["seeds"]) != 1:
        raise ConfigError(
            f"sweep.seeds={sweep['seeds']!r}: a search runs every trial with one seed (and seeds its sampler with "
            "it); use a single seed, e.g. sweep.seeds=[0], and one search per seed."
        )
    for key, entry in entries.items():
        parent, _, leaf = key.rpartition(".")
        if leaf in ("low", "high", "values") and parent in dotted_keys(cfg):
            raise ConfigError(
                f"sweep.space.{parent} has no type; give it one: {{type: uniform|loguniform|int|choice, ...}}."
            )
        _check_swept_key(cfg, "sweep.space", key)
        _check_entry(key, entry)
    _check_start_points(sweep, entries)


def _check_entry(key: str, entry: Any) -> None:
    """One ``sweep.space`` entry: a known type with exactly its keys, bounds in order, values the key allows."""
    label = f"sweep.space.{key}"
    kind = entry.get("type") if isinstance(entry, dict) else None
    if kind not in SPACE_TYPES:
        raise ConfigError(
            f"{label}={entry!r} is not a space entry; use {{type: T, ...}} with T one of {', '.join(SPACE_TYPES)}: "
            "{type: uniform|loguniform|int, low: L, high: H} or {type: choice, values: [...]}."
        )
    wanted = set(SPACE_TYPES[kind])
    if set(entry) - {"type"} != wanted:
        takes = ", ".join(sorted(wanted))
        raise ConfigError(f"{label}: a {kind} entry takes {takes} (and type); it has {', '.join(sorted(entry))}.")
    if kind == "choice":
        if not isinstance(entry["values"], list) or not entry["values"]:
            raise ConfigError(f"{label}.values={entry['values']!r} is not allowed; use a non-empty list.")
        for value in entry["values"]:
            check_value(f"{label} value {value!r}", key, value)
        return
    low, high = entry["low"], entry["high"]
    number = is_int if kind == "int" else (lambda v: not isinstance(v, bool) and isinstance(v, int | float))
    if not (number(low) and number(high)) or low >= high:
        kind_text = "integers" if kind == "int" else "numbers"
        raise ConfigError(f"{label}: low={low!r}, high={high!r} is not allowed; use {kind_text} with low < high.")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{label}: low={low!r} is not allowed for a loguniform entry; use low > 0.")
    for bound in (low, high):
        check_value(f"{label} bound {bound!r}", key, bound)
    if kind != "int":  # a sampled value is a float: the key must take one (not max_epochs, say)
        inside = low + 0.37 * (high - low)
        try:
            check_value(label, key, inside)
        except ConfigError:
            raise ConfigError(
                f"{label}: a {kind} entry samples floats such as {inside:.4g}, which {key} does not take; use "
                "{type: int, low, high} or {type: choice, values: [...]}."
            ) from None


def _check_start_points(sweep: dict, entries: dict[str, Any]) -> None:
    """The grid's points, which start a search, set every space key and no other, inside the space, and fit in
    num_samples."""
    for key, values in flatten(sweep["grid"]).items():
        if key not in entries:
            raise ConfigError(
                f"sweep.grid.{key}: a search starts from the grid's points, so its keys must be space keys; "
                f"{key} is not in sweep.space (space keys: {', '.join(entries)})."
            )
        entry = entries[key]
        for value in values:
            number = not isinstance(value, bool) and isinstance(value, int | float)
            inside = (
                value in entry["values"]
                if entry["type"] == "choice"
                else number and entry["low"] <= value <= entry["high"]
            )
            if not inside:
                raise ConfigError(f"sweep.grid.{key} value {value!r} is outside sweep.space.{key}={entry!r}.")
    points = math.prod(len(values) for values in flatten(sweep["grid"]).values()) if sweep["grid"] else 0
    if points > sweep["num_samples"]:
        raise ConfigError(
            f"sweep.num_samples={sweep['num_samples']} is fewer than the {points} grid points that start the search; "
            f"use sweep.num_samples >= {points}."
        )
    missing = [key for key in entries if key not in flatten(sweep["grid"])]
    if sweep["grid"] and missing:
        raise ConfigError(
            f"sweep.grid sets no value of {', '.join(missing)}: a grid point that starts a search sets every space "
            f"key; add sweep.grid.{missing[0]}=[...] or leave the grid empty."
        )
