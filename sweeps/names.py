"""One name per setting: the ``prune`` and ``finetune`` keys are the engine's own argument names.

``prune.<key>`` is a keyword argument of ``compress_network`` (a :class:`PruningSettings` field),
``finetune.<key>`` a :class:`TrainingOptions` field (or ``final_fine_tuning_epochs``, also a
``compress_network`` argument); :func:`engine_arguments` maps a section onto the call. The keys
with no engine counterpart are ``prune.layers`` (a named subset of the model's layers, resolved to
``layer_names``), ``finetune.baseline_epochs`` and ``finetune.baseline_learn_rate`` (how the
unpruned baseline is trained).

The names of earlier releases stay accepted for one release: :data:`RENAMED` maps them to the new
ones, on the command line, in config files and in the saved config of a sweep resumed. Keys added since
(:data:`ADDED_IN`) take their defaults where such a config lacks them.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

RENAMED = {
    "prune.reduction_goal": "prune.learnables_reduction_goal",
    "prune.reduction_increment": "prune.learnables_reduction_increment",
    "prune.importance_iterations": "prune.num_importance_score_iterations",
    "finetune.learn_rate": "finetune.initial_learn_rate",
    "finetune.weight_decay": "finetune.l2_regularization",
    "finetune.batch_size": "finetune.mini_batch_size",
    "finetune.epochs": "finetune.max_epochs",
    "finetune.final_epochs": "finetune.final_fine_tuning_epochs",
}
"""Old dotted key -> its name since the keys follow the engine (deprecated; removed in the next release)."""

ADDED_IN = {
    "sweep/base.yaml": ("search", "objectives", "constraints", "space", "sampler", "num_samples", "scheduler")
    + ("scheduler_metric", "grace_period", "reduction_factor"),
    "tracking/local.yaml": ("register_best", "system_metrics"),
    "ray/local.yaml": ("workers_per_trial", "cpus_per_worker", "gpus_per_worker"),
    "model/digits_cnn.yaml": ("width",),
}
"""Keys added since the previous release, by the config file (``<group>/<option>.yaml``) holding their defaults."""

SEARCHED = ("sweep.grid.", "sweep.space.")
"""Where a key may also appear under a prefix (a grid axis, a search-space entry)."""


def _config_dir() -> str:
    """The Hydra config: the repository's top-level ``conf/``, installed as the package data ``sweeps/conf`` by
    a wheel (pyproject.toml maps package ``sweeps.conf`` to ``conf``). Editable installs and source checkouts
    read ``conf/`` next to ``sweeps/`` (setuptools' editable finder cannot import the mapped data package)."""
    here = Path(__file__).resolve().parent
    installed = here / "conf"
    return str(installed if (installed / "config.yaml").is_file() else here.parent / "conf")


CONFIG_DIR = _config_dir()


def with_added_keys(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` (plain, nested) with each key added since the previous release (:data:`ADDED_IN`) set to its default
    where missing (a sweep resumed from that release, a user's sweep file without ``defaults: [base, _self_]``)."""
    from omegaconf import OmegaConf

    for file, keys in ADDED_IN.items():
        group = file.partition("/")[0]
        if isinstance(cfg.get(group), dict):
            defaults = OmegaConf.to_container(OmegaConf.load(Path(CONFIG_DIR) / file))
            cfg[group] = {**{key: defaults[key] for key in keys}, **cfg[group]}
    return cfg


def engine_arguments(section: dict[str, Any], engine_type: type) -> dict[str, Any]:
    """The entries of a config ``section`` whose keys are fields of the dataclass ``engine_type``."""
    names = {field.name for field in fields(engine_type)}
    return {key: value for key, value in section.items() if key in names}


def _deprecated(old: str, new: str) -> None:
    print(f"prune-sweep: {old} is deprecated; use {new} (the old name goes in the next release).", file=sys.stderr)


def _new_key(key: str) -> str | None:
    for prefix in ("", *SEARCHED):
        old = key[len(prefix) :] if key.startswith(prefix) else None
        if old in RENAMED:
            return prefix + RENAMED[old]
    return None


def current_name(key: str) -> str:
    """``key`` under its current name (a grid axis of a sweep started by an earlier release, say)."""
    return _new_key(key) or key


def renamed_overrides(lines: list[str]) -> list[str]:
    """Command-line overrides with old keys renamed (``[+|++|~]key=value``), each rename announced."""
    renamed = []
    for line in lines:
        sign = line[: len(line) - len(line.lstrip("+~"))]
        key, equals, value = line[len(sign) :].partition("=")
        new = _new_key(key)
        if new is not None:
            _deprecated(key, new)
            line = f"{sign}{new}{equals}{value}"
        renamed.append(line)
    return renamed


def renamed_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` (plain, nested) with old keys renamed, each rename announced; an old key set wins over the new
    key's default."""
    for prefix in ("", *SEARCHED):
        for old, new in RENAMED.items():
            *path, old_leaf = (prefix + old).split(".")
            node = cfg
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and old_leaf in node:
                _deprecated(prefix + old, prefix + new)
                value = node.pop(old_leaf)
                node[new.rpartition(".")[2]] = value
    return cfg
