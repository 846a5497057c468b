"""run_sweep: validate, start (or join) Ray, train the baseline once, run the trials, report.

The sweep folder ``<output_dir>/<name>/<sweep id>`` holds the resolved config, the Ray Tune
results and trial checkpoints; ``resume=<folder or name>`` finishes its unfinished trials.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from prune_core.analysis import analyze_network
from prune_core.data import DataBundle, build_data
from prune_core.options import resolve_device
from sweeps import tracking
from sweeps.baseline import prepare_baseline
from sweeps.build import check_fit, example_batch, load_weights, make_model
from sweeps.cluster import connect_ray, trial_resources
from sweeps.config import ConfigError, check_output_folders, flatten, layer_names_for, validate_values
from sweeps.console import BaselineProgress, TrialProgress, console, quiet_libraries, tune_callback
from sweeps.names import current_name, renamed_config
from sweeps.report import RESULT_COLUMNS, accuracy_vs_learnables_figure, pareto_front, sort_trials
from sweeps.space import grid_points, param_space, trial_config
from sweeps.trial import TRIAL_CHECKPOINTS, run_trial

CONFIG_FILE, TUNE_FOLDER, BEST_MODEL_FILE = "sweep_config.json", "tune", "best_pruned.pt2"


@dataclass(frozen=True)
class SweepOutcome:
    """What a finished sweep produced."""

    folder: Path
    parent_run_id: str
    tracking_uri: str
    experiment_id: str
    metric: str
    table: pd.DataFrame
    front: pd.DataFrame
    failed_trials: int
    best_model_uri: str | None
    """The pruned model of the table's first row, when models are logged."""
    best_model_file: Path | None
    """Its prune_core file, copied into the sweep folder (``prune_core.load_pruned`` reads either)."""


def validate(cfg: dict) -> DataBundle:
    """Everything checkable before Ray starts: values, every grid point, model/data fit, layer names.

    Returns the data set, built once here for the driver's own use (the baseline).
    """
    validate_values(cfg)
    check_output_folders(cfg)
    tracking.tracking_uri(cfg, Path(cfg["output_dir"]))
    points = [trial_config(cfg, params) for params in grid_points(cfg)]
    for point in points:
        validate_values(point)
    try:
        data = build_data(cfg["data"])
        model = make_model(cfg, data)
    except ConfigError:
        raise
    except ValueError as err:  # the data and model builders name the key in their messages
        raise ConfigError(str(err)) from None
    if cfg["model"]["checkpoint"]:
        load_weights(model, str(Path(cfg["model"]["checkpoint"]).expanduser()))
    check_fit(cfg, model, data)
    prunable = analyze_network(model, example_batch(data)).prunable_layer_names
    for point in points:
        layer_names_for(point, prunable)
    return data


def find_sweep(cfg: dict) -> Path:
    """The folder named by ``resume``: a sweep folder, or a sweep name (its latest run)."""
    target = Path(str(cfg["resume"])).expanduser()
    if (target / CONFIG_FILE).is_file():
        return target.resolve()
    by_name = Path(cfg["output_dir"]).expanduser() / str(cfg["resume"])
    runs = sorted(p for p in by_name.glob("*") if (p / CONFIG_FILE).is_file()) if by_name.is_dir() else []
    if not runs:
        raise ConfigError(
            f"resume={cfg['resume']!r} is neither a sweep folder (with {CONFIG_FILE}) nor the name of a sweep "
            f"under output_dir={cfg['output_dir']!r}."
        )
    return runs[-1].resolve()


def run_sweep(cfg: dict) -> SweepOutcome:
    """Run (or, with ``cfg["resume"]``, finish) a sweep; returns its table and Pareto front."""
    quiet_libraries(cfg["verbose"])
    cfg = renamed_config(cfg)
    if cfg.get("resume"):
        folder = find_sweep(cfg)
        saved = renamed_config(json.loads((folder / CONFIG_FILE).read_text()))  # perhaps by an earlier release
        base = {**saved, "verbose": cfg["verbose"]}  # this run's choice
        tracking.configure_retries(base["tracking"].get("retry_seconds", 120))
        tracking.check_reachable(base["_sweep"]["tracking_uri"])
        console.print(f"Resuming sweep {folder}")
        resources = connect_ray(base)
        data = build_data(base["data"])
    else:
        data = validate(cfg)
        output_dir = Path(cfg["output_dir"]).expanduser().resolve()
        uri = tracking.tracking_uri(cfg, output_dir)
        tracking.configure_retries(cfg["tracking"]["retry_seconds"])
        tracking.check_reachable(uri)
        resources = connect_ray(cfg)
        base, folder = _start(cfg, data, output_dir, uri)
    return _run_trials(base, folder, resources, data)


def _start(cfg: dict, data: DataBundle, output_dir: Path, uri: str) -> tuple[dict, Path]:
    """Baseline, experiment, parent run and sweep folder of a new sweep."""
    sweep_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    folder = output_dir / cfg["name"] / sweep_id
    folder.mkdir(parents=True)
    device = str(resolve_device(cfg["finetune"]["device"]))
    console.print(f"Baseline: {cfg['model']['name']} on {cfg['data']['name']}, {device}")
    with BaselineProgress(cfg["finetune"]["baseline_epochs"]) as progress:
        baseline = prepare_baseline(cfg, data, output_dir / "baselines", device, progress.epoch_done)
    console.print(
        f"Baseline: {baseline.learnables} learnables, val accuracy {baseline.metrics['accuracy']:.2f}%"
        + (" (cached)" if baseline.cached else "")
    )
    experiment = tracking.experiment_id(uri, cfg["tracking"]["experiment"], output_dir / "mlartifacts")
    parent = _parent_run(cfg, uri, experiment, sweep_id, baseline, data)
    base = {
        **cfg,
        "_sweep": {
            "sweep_id": sweep_id,
            "folder": str(folder),
            "tracking_uri": uri,
            "experiment_id": experiment,
            "parent_run_id": parent,
            "baseline_path": str(baseline.path),
            "baseline_metrics": baseline.metrics,
            "baseline_learnables": baseline.learnables,
        },
    }
    (folder / CONFIG_FILE).write_text(json.dumps(base, indent=1))
    return base, folder


def _parent_run(cfg: dict, uri: str, experiment: str, sweep_id: str, baseline, data: DataBundle) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)
    tags = {tracking.SWEEP_TAG: sweep_id, "prune_sweep.role": "sweep"}
    with mlflow.start_run(experiment_id=experiment, run_name=f"{cfg['name']}-{sweep_id}", tags=tags) as run:
        mlflow.log_dict(cfg, "config.json")
        mlflow.log_dict({"grid": cfg["sweep"]["grid"], "seeds": cfg["sweep"]["seeds"]}, "grid.json")
        params = {k: v for k, v in flatten(cfg).items() if not k.startswith("sweep.grid")}
        tracking.log_params(uri, run.info.run_id, params)
        mlflow.log_metrics(
            {
                "baseline_learnables": baseline.learnables,
                "baseline_val_accuracy": baseline.metrics["accuracy"],
                "baseline_val_loss": baseline.metrics["loss"],
            }
        )
        if cfg["tracking"]["log_models"]:
            model = make_model(cfg, data)
            model.load_state_dict(torch.load(baseline.path, map_location="cpu", weights_only=True))
            tracking.log_model(model, example_batch(data), "baseline_model")
        run_id = run.info.run_id
    mlflow.MlflowClient(uri).set_terminated(run_id, "RUNNING")
    return run_id


def _run_trials(base: dict, folder: Path, resources: dict[str, float], data: DataBundle) -> SweepOutcome:
    """Tune runs the trials; ``data`` (built from ``base["data"]``) reaches them through Ray's object store."""
    from ray import tune

    storage = Path(base["ray"]["storage_path"] or folder / "ray").expanduser().resolve()
    progress = TrialProgress(len(grid_points(base)))
    trainable = tune.with_parameters(run_trial, base=base, data=data)
    trainable = tune.with_resources(trainable, trial_resources(base, resources))
    tune_path = storage / TUNE_FOLDER
    if tune.Tuner.can_restore(str(tune_path)):
        tuner = tune.Tuner.restore(str(tune_path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(base),
            tune_config=tune.TuneConfig(max_concurrent_trials=base["ray"]["max_concurrent_trials"], reuse_actors=True),
            run_config=tune.RunConfig(
                name=TUNE_FOLDER,
                storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=base["ray"]["max_failures"]),
                verbose=2 if base["verbose"] else 0,
                callbacks=[tune_callback(progress)],
            ),
        )
    progress.start()
    try:
        results = tuner.fit()
    finally:
        progress.stop()
    failed = sum(1 for result in results if result.error is not None)
    if not failed:  # every trial finished: no resume will need their pruning checkpoints
        shutil.rmtree(Path(base["_sweep"]["folder"]) / TRIAL_CHECKPOINTS, ignore_errors=True)
    try:
        return _summarize(base, folder, failed)
    except tracking.TrackingUnavailable as err:
        raise tracking.TrackingUnavailable(
            f"{err}. The trials' Ray checkpoints are kept in {folder}; when the tracking store answers again, "
            f"finish the sweep with `prune-sweep resume={folder}`."
        ) from err


def _summarize(base: dict, folder: Path, failed: int) -> SweepOutcome:
    """Per-trial table and Pareto front from the trials' MLflow runs, logged to the parent run."""
    import mlflow

    sweep = base["_sweep"]
    uri, parent = sweep["tracking_uri"], sweep["parent_run_id"]
    runs = tracking.with_retries(
        mlflow.MlflowClient(uri).search_runs,
        [sweep["experiment_id"]],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
        max_results=10_000,
    )
    keys = [*flatten(base["sweep"]["grid"]), "seed"]
    rows = [_table_row(run, keys) for run in runs if "final_learnables" in run.data.metrics]
    table = pd.DataFrame(rows, columns=["trial", *keys, *RESULT_COLUMNS])
    table = sort_trials(table, base["sweep"]["metric"], base["sweep"]["mode"])
    front = pareto_front(table) if len(table) else table
    client = mlflow.MlflowClient(uri)
    if len(table):
        table.to_csv(folder / "trials.csv", index=False)
        tracking.log_table(uri, parent, table, "trials.json")
        tracking.log_table(uri, parent, front, "pareto_front.json")
        baseline = (sweep["baseline_learnables"], sweep["baseline_metrics"]["accuracy"])
        figure = accuracy_vs_learnables_figure(table, front, baseline)
        figure.savefig(folder / "accuracy_vs_learnables.png", dpi=120)
        tracking.with_retries(client.log_figure, parent, figure, "accuracy_vs_learnables.png")
    tracking.log_metrics(uri, parent, {"trials_finished": len(table), "trials_failed": failed})
    tracking.with_retries(client.set_terminated, parent, "FINISHED" if not failed else "FAILED")
    best, best_file = None, None
    if len(table) and base["tracking"]["log_models"]:
        best = f"runs:/{table['run_id'].iloc[0]}/pruned_model"
        best_file = tracking.download_pruned(uri, best, folder / BEST_MODEL_FILE)
    metric = base["sweep"]["metric"]
    return SweepOutcome(folder, parent, uri, sweep["experiment_id"], metric, table, front, failed, best, best_file)


def _table_row(run: Any, keys: list[str]) -> dict[str, Any]:
    metrics, tags = run.data.metrics, run.data.tags
    params = {current_name(key): value for key, value in run.data.params.items()}  # a trial of an earlier release
    return {
        "trial": run.info.run_name,
        **{key: params.get(key) for key in keys},
        "learnables": int(metrics["final_learnables"]),
        "reduction": metrics["final_reduction"],
        "val_accuracy": metrics["final_val_accuracy"],
        "stop_reason": tags.get("stop_reason"),
        "run_id": run.info.run_id,
    }
