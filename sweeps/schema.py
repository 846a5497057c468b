"""The typed sweep config: one frozen dataclass per config group, built once from the composed config.

The YAML files in ``conf/`` give the values; these classes are their schema. Hydra composes the
config, :func:`sweeps.sweep_checks.validate_values` checks every value with a message naming the key,
and :meth:`SweepConfig.from_dict` turns the plain result into typed sections; a key no section has
is a ConfigError (a mistyped key in a user's group file would otherwise be ignored). Each sweeps
module receives the section it reads.

The schemas are not in Hydra's ConfigStore: a structured schema there checks keys while Hydra
composes, before the names of the previous release (:mod:`sweeps.names`) can be renamed, so a
user's config file with an old name would fail instead of being accepted with a deprecation
message. They move there when the old names go.

Run state (sweep id, folder, tracking run ids, the baseline) is a :class:`SweepContext`, not config.
"""

from __future__ import annotations

import copy
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from prune_core import TrainingOptions
from prune_core.pruning_settings import PruningSettings
from sweeps.config import ConfigError, unknown_key
from sweeps.names import engine_arguments


@dataclass(frozen=True)
class ModelSection:
    """``model``: which network, its trained weights, and named subsets of its layers."""

    name: str
    width: int | None
    checkpoint: str | None
    layer_subsets: dict[str, Any]


@dataclass(frozen=True)
class PruneSection:
    """``prune``: ``compress_network``'s pruning arguments by their names, and ``layers`` (a subset name or
    layer names, resolved to ``layer_names`` against the model)."""

    learnables_reduction_goal: float | None
    learnables_reduction_increment: float
    num_importance_score_iterations: int | str
    layers: str | list[str]
    criterion: str
    channel_multiple: int
    group_reduction: str
    validation_threshold: float | None

    def engine_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``compress_network`` this section sets."""
        return engine_arguments(asdict(self), PruningSettings)


@dataclass(frozen=True)
class FinetuneSection:
    """``finetune``: ``TrainingOptions`` fields by their names, ``final_fine_tuning_epochs``, and how the
    unpruned baseline is trained (``baseline_epochs``, ``baseline_learn_rate``)."""

    solver: str
    initial_learn_rate: float
    learn_rate_schedule: str
    learn_rate_drop_factor: float
    learn_rate_drop_period: int
    learn_rate_floor: float
    warmup_fraction: float
    carry_optimizer_state: bool
    final_fine_tuning_epochs: int
    momentum: float
    l2_regularization: float
    mini_batch_size: int
    max_epochs: int
    device: str
    baseline_epochs: int
    baseline_learn_rate: float

    def engine_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``compress_network`` this section sets (not the TrainingOptions)."""
        return engine_arguments(asdict(self), PruningSettings)

    def training_fields(self, baseline: bool = False) -> dict[str, Any]:
        """The TrainingOptions fields this section sets (not ``device``, which the caller resolves); the
        baseline trains for ``baseline_epochs`` from ``baseline_learn_rate`` and carries no optimizer state."""
        values = engine_arguments(asdict(self), TrainingOptions)
        del values["device"]
        if baseline:
            values |= {"max_epochs": self.baseline_epochs, "initial_learn_rate": self.baseline_learn_rate}
            del values["carry_optimizer_state"]
        return values


@dataclass(frozen=True)
class SweepSection:
    """``sweep``: a grid, or an Optuna search over ``space``; the objectives of its Pareto front, hard budgets,
    the order of its table, and an optional early-stopping scheduler (conf/sweep/base.yaml documents each key)."""

    search: str
    grid: dict[str, Any]
    seeds: list[int]
    metric: str
    mode: str
    objectives: dict[str, str]
    constraints: dict[str, float]
    space: dict[str, Any]
    sampler: str
    num_samples: int
    scheduler: str
    scheduler_metric: str
    grace_period: int
    reduction_factor: int


@dataclass(frozen=True)
class RaySection:
    """``ray``: where trials run and what each one reserves."""

    address: str | None
    num_cpus: int | None
    num_gpus: float | None
    cpus_per_trial: float
    gpus_per_trial: float
    workers_per_trial: int
    cpus_per_worker: float
    gpus_per_worker: float
    allow_cpu_fallback: bool
    max_concurrent_trials: int
    storage_path: str | None
    max_failures: int


@dataclass(frozen=True)
class TrackingSection:
    """``tracking``: the MLflow store, experiment, model logging and retry budget."""

    uri: str | None
    experiment: str
    log_models: bool
    retry_seconds: float
    register_best: str | None
    system_metrics: bool


SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "prune": PruneSection,
    "finetune": FinetuneSection,
    "sweep": SweepSection,
    "ray": RaySection,
    "tracking": TrackingSection,
}
"""Config group -> its schema (``data`` is checked by ``prune_core.data``, its keys depend on the data set)."""


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep (or, with ``seed``, trial) config."""

    name: str
    output_dir: str
    resume: str | None
    verbose: bool
    model: ModelSection
    data: dict[str, Any]
    prune: PruneSection
    finetune: FinetuneSection
    sweep: SweepSection
    ray: RaySection
    tracking: TrackingSection
    seed: int = 0
    """A trial's seed (a sweep's configs leave it at 0)."""

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> SweepConfig:
        """The typed config of a plain one, which :func:`sweeps.sweep_checks.validate_values` has checked; a key
        no schema has, or one missing, is a ConfigError naming it."""
        check_keys(cfg)
        values = copy.deepcopy(cfg)
        sections = {group: schema(**values[group]) for group, schema in SECTIONS.items()}
        return cls(**{**values, **sections})

    def to_dict(self) -> dict[str, Any]:
        """The plain config (JSON-ready), as composed."""
        return asdict(self)


def check_keys(cfg: dict[str, Any]) -> None:
    """Every key of ``cfg`` is in the schema, and every key of the schema in ``cfg`` (else a ConfigError naming
    it, with the keys next to it)."""
    schema = {group: {f.name for f in fields(section)} for group, section in SECTIONS.items()}
    top = {f.name for f in fields(SweepConfig)}
    known = top | {f"{group}.{name}" for group, names in schema.items() for name in names}
    unknown = [key for key in cfg if key not in top]
    unknown += [f"{group}.{key}" for group in schema if isinstance(cfg.get(group), dict) for key in cfg[group]]
    for key in unknown:
        if key not in known:
            raise ConfigError(unknown_key(key, known))
    required = [f.name for f in fields(SweepConfig) if f.default is MISSING]
    for key in required + [f"{group}.{name}" for group, names in schema.items() for name in sorted(names)]:
        group, _, leaf = key.rpartition(".")
        section = cfg.get(group) if group else cfg
        if not isinstance(section, dict) or leaf not in section:
            raise ConfigError(f"config key {key!r} is missing; the config files of {group or 'the top level'} set it.")


@dataclass(frozen=True)
class SweepContext:
    """Run state of a started sweep: what its trials and a resume need besides the config."""

    sweep_id: str
    folder: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    baseline_path: str
    baseline_metrics: dict[str, float]
    baseline_learnables: int
