"""The named setups of ``conf/experiment/`` (what ``prune-sweep +experiment=<name>`` runs), as the benchmarks
read them: one place holds each setup's model, data, budget and goal."""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def experiment_config(name: str) -> dict[str, Any]:
    """The composed sweep config of ``+experiment=<name>``, as plain values (read it, do not change it)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sweeps.names import CONFIG_DIR

    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=[f"+experiment={name}"]), resolve=True)


def task_settings(cfg: dict[str, Any], finetune_epochs: int | None = None) -> dict[str, Any]:
    """The ``bench.pruning.Task`` fields an experiment sets as they are: the goal, the increment and the
    fine-tuning (``finetune_epochs`` in place of its ``finetune.max_epochs`` where given)."""
    finetune, prune = cfg["finetune"], cfg["prune"]
    return {
        "anchor_goal": prune["learnables_reduction_goal"],
        "increment": prune["learnables_reduction_increment"],
        "finetune_learn_rate": finetune["initial_learn_rate"],
        "finetune_epochs": finetune_epochs or finetune["max_epochs"],
        "solver": finetune["solver"],
        "l2_regularization": finetune["l2_regularization"],
        "batch": finetune["mini_batch_size"],
    }
