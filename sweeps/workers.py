"""Trials over several workers: a Tune trial that runs its compress_network as data-parallel training on Ray Train.

The Tune function builds a ``TorchTrainer`` (Ray Train's process group: gloo on CPU, NCCL on GPUs) whose workers
each run :func:`sweeps.trial.prune_trial` on their share of every mini-batch; prune_core keeps their masks the
same (see :mod:`prune_core.data_parallel`). Rank 0 writes the MLflow records and the trial checkpoint; all ranks
report each pruning iteration to Ray Train, whose ``TuneReportCallback`` hands rank 0's metrics to Tune (and so to
ASHA). A failed worker fails the trial; Tune restarts it, and every rank resumes from the trial checkpoint.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from prune_core.data import DataBundle
from sweeps.schema import SweepConfig, SweepContext
from sweeps.space import trial_config
from sweeps.trial import TrialPlace, prune_trial

TRAIN_FOLDER = "ray_train"
"""Folder of the sweep folder for Ray Train's run records (one per trial start)."""


def run_on_workers(params: dict[str, Any], base: dict, context: SweepContext, data: DataBundle, place: TrialPlace):
    """Run the trial on ``ray.workers_per_trial`` Ray Train workers (this Tune function waits for them)."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    ray_section = SweepConfig.from_dict(trial_config(base, params)).ray
    use_gpu = ray_section.gpus_per_worker > 0 and ray.cluster_resources().get("GPU", 0) > 0  # else: CPU fallback
    per_worker = {"CPU": ray_section.cpus_per_worker} | ({"GPU": ray_section.gpus_per_worker} if use_gpu else {})
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"params": params, "base": base, "context": context, "data": ray.put(data), "place": place},
        scaling_config=ScalingConfig(
            num_workers=ray_section.workers_per_trial, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=RunConfig(
            name=f"{place.trial_id}",
            storage_path=str(Path(context.folder) / TRAIN_FOLDER),
            failure_config=FailureConfig(max_failures=0),  # Tune restarts the trial (ray.max_failures)
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def _worker(loop_config: dict) -> None:
    """One Ray Train worker of a trial."""
    import ray
    import ray.train
    import ray.train.torch

    config = SweepConfig.from_dict(trial_config(loop_config["base"], loop_config["params"]))
    device = config.finetune.device
    if device == "auto":
        device = str(ray.train.torch.get_device()) if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))  # NCCL's collectives run on the current device
    place = replace(loop_config["place"], rank=ray.train.get_context().get_world_rank(), device=device)
    data = ray.get(loop_config["data"])
    prune_trial(loop_config["params"], loop_config["base"], loop_config["context"], data, place, ray.train.report)
