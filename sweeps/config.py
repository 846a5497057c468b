"""Validation of a resolved sweep config (plain dicts), before Ray or MLflow start.

Every error is a :class:`ConfigError` whose message names the dotted key, the value and what
is allowed. Validation reuses the engine's own checks (``prune_core.checks``), so the sweep
accepts exactly what ``compress_network`` accepts.
"""

from __future__ import annotations

import copy
import difflib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prune_core import importance
from prune_core.checks import (
    boolean,
    fraction,
    fraction_below_one,
    is_int,
    non_negative_int,
    non_negative_number,
    one_of,
    positive_int,
    positive_int_or_auto,
    positive_number,
    writable_folder,
)
from prune_core.data import DATASETS
from prune_core.models.registry import check_model_name, check_width
from prune_core.options import LEARN_RATE_SCHEDULES, SOLVERS
from sweeps.report import ITERATION_METRICS, OBJECTIVE_METRICS

if TYPE_CHECKING:
    from sweeps.schema import SweepConfig

GENERIC_SUBSETS = ("early_convs", "late_convs")
"""Subsets every model has: the first and the second half of its prunable convs (graph order)."""


class ConfigError(ValueError):
    """A user error in the sweep config: reported as one paragraph, without a traceback."""


def get_path(cfg: dict, key: str) -> Any:
    """``cfg["a"]["b"]`` for ``key="a.b"``; ConfigError when a part is missing."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"config key {key!r} does not exist; top-level keys are {sorted(cfg)}.")
        node = node[part]
    return node


def with_overrides(cfg: dict, overrides: dict[str, Any]) -> dict:
    """A deep copy of ``cfg`` with dotted keys replaced (each key must already exist)."""
    result = copy.deepcopy(cfg)
    for key, value in overrides.items():
        get_path(result, key)
        *parents, last = key.split(".")
        node = result
        for part in parents:
            node = node[part]
        node[last] = copy.deepcopy(value)
    return result


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """Dotted keys for nested dicts: ``{"prune": {"layers": "all"}}`` -> ``{"prune.layers": "all"}``."""
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def dotted_keys(cfg: dict, prefix: str = "") -> set[str]:
    """Every key of ``cfg``, inner ones included: ``{"prune": {"layers": "all"}}`` -> ``{"prune", "prune.layers"}``."""
    keys: set[str] = set()
    for key, value in cfg.items():
        keys.add(f"{prefix}{key}")
        if isinstance(value, dict):
            keys |= dotted_keys(value, f"{prefix}{key}.")
    return keys


def did_you_mean(word: str, choices: list[str]) -> str:
    """``"did you mean a or b? "`` for the (at most two) choices closest to ``word``; ``""`` when none is close."""
    close = difflib.get_close_matches(word, choices, n=2, cutoff=0.8)
    return f"did you mean {' or '.join(close)}? " if close else ""


def unknown_key(key: str, known: set[str]) -> str:
    """Why ``key`` (not in ``known``) is wrong: the closest known keys and the keys next to where it would be."""
    hint = did_you_mean(key, sorted(known))
    parent = key.rpartition(".")[0]
    while parent and parent not in known:
        parent = parent.rpartition(".")[0]
    siblings = sorted(k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent)
    where = f"under {parent}" if parent else "at the top level"
    return f"{key} is not a config key; {hint}keys {where}: {', '.join(siblings)}."


def value_label(grid: Any, key: str, value: Any) -> str:
    """How an error names ``key``'s ``value``: ``key=value``, or as a value of its axis when the sweep grid has one."""
    if isinstance(grid, dict) and key in flatten(grid):
        return f"sweep.grid.{key} value {value!r} (grid axis)"
    return f"{key}={value!r}"


def _check(key: str, value: Any, check: Callable[[str, Any], None]) -> None:
    try:
        check(key, value)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _optional(check: Callable[[str, Any], None]) -> Callable[[str, Any], None]:
    def optional_check(key: str, value: Any) -> None:
        if value is not None:
            check(key, value)

    return optional_check


def _choice(allowed: tuple[str, ...]) -> Callable[[str, Any], None]:
    return lambda key, value: one_of(key, value, allowed)


def _non_negative_or_null(key: str, value: Any) -> None:
    if value is not None:
        non_negative_number(key, value)


def _string(key: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key}={value!r} is not allowed; use a non-empty string.")


RULES: dict[str, Callable[[str, Any], None]] = {
    "name": _string,
    "verbose": boolean,
    "model.name": check_model_name,
    "model.width": _optional(positive_int),
    "data.name": _choice(DATASETS),
    "prune.learnables_reduction_goal": _optional(fraction),
    "prune.learnables_reduction_increment": fraction,
    "prune.num_importance_score_iterations": positive_int_or_auto,
    "prune.criterion": _choice(tuple(importance.CRITERIA)),
    "prune.channel_multiple": positive_int,
    "prune.group_reduction": _choice(importance.GROUP_REDUCTIONS),
    "prune.validation_threshold": _optional(non_negative_number),
    "finetune.solver": _choice(tuple(SOLVERS)),
    "finetune.initial_learn_rate": positive_number,
    "finetune.learn_rate_schedule": _choice(LEARN_RATE_SCHEDULES),
    "finetune.learn_rate_drop_factor": fraction,
    "finetune.learn_rate_drop_period": positive_int,
    "finetune.learn_rate_floor": non_negative_number,
    "finetune.warmup_fraction": fraction_below_one,
    "finetune.carry_optimizer_state": boolean,
    "finetune.final_fine_tuning_epochs": non_negative_int,
    "finetune.momentum": non_negative_number,
    "finetune.l2_regularization": non_negative_number,
    "finetune.mini_batch_size": positive_int,
    "finetune.max_epochs": positive_int,
    "finetune.baseline_epochs": positive_int,
    "finetune.baseline_learn_rate": positive_number,
    "ray.cpus_per_trial": positive_number,
    "ray.gpus_per_trial": non_negative_number,
    "ray.workers_per_trial": positive_int,
    "ray.cpus_per_worker": positive_number,
    "ray.gpus_per_worker": non_negative_number,
    "ray.num_cpus": _optional(positive_int),
    "ray.num_gpus": _non_negative_or_null,
    "ray.allow_cpu_fallback": boolean,
    "ray.max_concurrent_trials": positive_int,
    "ray.max_failures": lambda key, value: _check_int_at_least(key, value, -1),
    "tracking.experiment": _string,
    "tracking.log_models": boolean,
    "tracking.retry_seconds": positive_number,
    "tracking.register_best": _optional(_string),
    "tracking.system_metrics": boolean,
    "sweep.search": _choice(("grid", "optuna")),
    "sweep.metric": _choice(OBJECTIVE_METRICS),
    "sweep.mode": _choice(("max", "min")),
    "sweep.sampler": _choice(("tpe", "nsga2")),
    "sweep.num_samples": positive_int,
    "sweep.scheduler": _choice(("none", "asha")),
    "sweep.scheduler_metric": _choice(tuple(ITERATION_METRICS)),
    "sweep.grace_period": positive_int,
    "sweep.reduction_factor": lambda key, value: _check_int_at_least(key, value, 2),
}


def _check_int_at_least(key: str, value: Any, low: int) -> None:
    if not is_int(value) or value < low:
        raise ValueError(f"{key}={value!r} is not allowed; use an integer >= {low}.")


def check_groups(cfg: dict) -> None:
    """Check every known key's type and range outside ``sweep.grid`` and ``sweep.space`` (which
    :func:`sweeps.sweep_checks.validate_values` checks); the first offending key raises ConfigError."""
    for key, check in RULES.items():
        _check(key, get_path(cfg, key), check)
    try:
        check_width("model.width", cfg["model"]["name"], cfg["model"]["width"])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if not isinstance(get_path(cfg, "finetune.device"), str):
        raise ConfigError(f"finetune.device={cfg['finetune']['device']!r} is not allowed; use auto, cpu or cuda.")
    floor = cfg["finetune"]["learn_rate_floor"]
    for key in ("initial_learn_rate", "baseline_learn_rate"):
        if floor > cfg["finetune"][key]:
            raise ConfigError(
                f"finetune.learn_rate_floor={floor!r} is above finetune.{key}={cfg['finetune'][key]!r}; "
                f"use a floor in [0, finetune.{key}]."
            )
    for key in ("gpus_per_trial", "gpus_per_worker"):
        gpus = cfg["ray"][key]
        if gpus > 1 and gpus != int(gpus):
            raise ConfigError(f"ray.{key}={gpus!r} is not allowed; use a fraction <= 1 or a whole number.")
    _check_workers(cfg["ray"])


def _check_workers(ray_cfg: dict) -> None:
    """A multi-worker trial reserves per worker (GPUs asked per trial would be reserved by its idle process), and
    a Ray started here must have the CPUs for one trial's workers (a cluster's are checked once joined)."""
    workers, gpus = ray_cfg["workers_per_trial"], ray_cfg["gpus_per_trial"]
    wanted = workers * ray_cfg["cpus_per_worker"]
    local_cpus = ray_cfg["num_cpus"] or os.cpu_count() or 1
    ray = sys.modules.get("ray")  # a Ray this process already runs is the one the sweep takes
    starts_ray = ray_cfg["address"] is None and not os.environ.get("RAY_ADDRESS") and not (ray and ray.is_initialized())
    if workers > 1 and starts_ray and wanted > local_cpus:
        raise ConfigError(
            f"ray.workers_per_trial={workers} x ray.cpus_per_worker={ray_cfg['cpus_per_worker']} CPUs but the Ray "
            f"started here would have {local_cpus} (ray.num_cpus, else this machine's): one trial could never be "
            "placed; ask for fewer, or join a larger cluster with ray.address."
        )
    if workers > 1 and gpus:
        raise ConfigError(
            f"ray.gpus_per_trial={gpus!r} with ray.workers_per_trial={workers}: a multi-worker trial reserves GPUs "
            f"per worker; use ray.gpus_per_worker={gpus / workers:g} (and ray.gpus_per_trial=0)."
        )


def check_value(label: str, key: str, value: Any) -> None:
    """``value`` of the config key ``key`` passes its rule (when it has one); the error names it as ``label``."""
    if key not in RULES:
        return
    try:
        RULES[key](key, value)
    except ValueError as err:
        message, plain = str(err), f"{key}={value!r}"
        reason = message.removeprefix(plain) if message.startswith(plain) else f": {message}"
        raise ConfigError(f"{label}{reason}") from None


def check_output_folders(cfg: dict) -> None:
    """``output_dir`` and ``ray.storage_path`` (when set) must be creatable and writable; nothing is created."""
    for key in ("output_dir", "ray.storage_path"):
        value = get_path(cfg, key)
        if value is None:
            continue
        path = Path(str(value)).expanduser().resolve()
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            raise ConfigError(f"{key}={value!r} cannot be created: {existing} is a file; choose another folder.")
        try:
            writable_folder(key, existing)
        except ValueError as err:
            raise ConfigError(f"{err.args[0][:-1]} ({existing} is where it would be created).") from None


def selects_all_layers(config: SweepConfig) -> bool:
    """``prune.layers`` is ``all``: :func:`layer_names_for` needs no list of the model's prunable convs."""
    return config.prune.layers in (None, "all")


def layer_names_for(config: SweepConfig, prunable: list[str]) -> list[str] | None:
    """Resolve ``prune.layers`` (all, a named subset, or conv names) against the model's prunable convs."""
    layers, model = config.prune.layers, config.model.name
    if selects_all_layers(config):
        return None
    subsets = dict(config.model.layer_subsets or {})
    half = (len(prunable) + 1) // 2
    early, late = GENERIC_SUBSETS
    subsets.setdefault(early, prunable[:half])
    subsets.setdefault(late, prunable[half:] or prunable[-1:])
    label = value_label(config.sweep.grid, "prune.layers", layers)
    if isinstance(layers, str):
        if layers not in subsets:
            raise ConfigError(
                f"{label} is not a layer subset of model {model!r}; "
                f"use all, one of {sorted(subsets)}, or a list of conv names from {prunable}."
            )
        layers = subsets[layers]
    if not isinstance(layers, list) or not layers:
        raise ConfigError(f"{label} is not allowed; use all, a subset name or a list of conv names.")
    unknown = [name for name in layers if name not in prunable]
    if unknown:
        raise ConfigError(
            f"{label} names {unknown}, which are not prunable convs of model {model!r}; valid conv names: {prunable}."
        )
    return list(layers)
