"""run_sweep: validate, start (or join) Ray, train the baseline once, run the trials, report.

The sweep folder ``<output_dir>/<name>/<sweep id>`` holds the resolved config, the Ray Tune
results and trial checkpoints; ``resume=<folder or name>`` finishes its unfinished trials.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch

from prune_core.analysis import analyze_network
from prune_core.data import DataBundle, build_data
from prune_core.options import resolve_device
from sweeps import tracking
from sweeps.baseline import prepare_baseline
from sweeps.build import check_fit, example_batch, load_weights, make_model
from sweeps.cluster import connect_ray, trial_resources
from sweeps.config import ConfigError, check_output_folders, flatten, layer_names_for
from sweeps.console import BaselineProgress, TrialProgress, console, quiet_libraries, tune_callback
from sweeps.names import renamed_config, with_added_keys
from sweeps.schema import SweepConfig, SweepContext, check_keys
from sweeps.search import align_trial_count, early_stop_recorder, search_algorithm, trial_scheduler
from sweeps.space import checked_points, param_space, trial_config, trial_count
from sweeps.summary import SweepOutcome, summarize
from sweeps.sweep_checks import validate_values
from sweeps.trial import TRIAL_CHECKPOINTS, run_trial

CONFIG_FILE, TUNE_FOLDER = "sweep_config.json", "tune"


def validate(cfg: dict) -> DataBundle:
    """Everything checkable before Ray starts: values, every grid point, model/data fit, layer names.

    Returns the data set, built once here for the driver's own use (the baseline).
    """
    check_keys(cfg)
    validate_values(cfg)
    check_output_folders(cfg)
    config = SweepConfig.from_dict(cfg)
    tracking.tracking_uri(config.tracking.uri, Path(config.output_dir))
    points = [trial_config(cfg, params) for params in checked_points(config.sweep)]
    for point in points:
        validate_values(point)
    trials = [SweepConfig.from_dict(point) for point in points]
    try:
        data = build_data(config.data)
        model = make_model(config, data)
    except ConfigError:
        raise
    except ValueError as err:  # the data and model builders name the key in their messages
        raise ConfigError(str(err)) from None
    if config.model.checkpoint:
        load_weights(model, str(Path(config.model.checkpoint).expanduser()))
    check_fit(config, model, data)
    prunable = analyze_network(model, example_batch(data)).prunable_layer_names
    for trial in trials:
        layer_names_for(trial, prunable)
    return data


def find_sweep(resume: str, output_dir: str) -> Path:
    """The folder named by ``resume``: a sweep folder, or a sweep name under ``output_dir`` (its latest run)."""
    target = Path(str(resume)).expanduser()
    if (target / CONFIG_FILE).is_file():
        return target.resolve()
    by_name = Path(output_dir).expanduser() / str(resume)
    runs = sorted(p for p in by_name.glob("*") if (p / CONFIG_FILE).is_file()) if by_name.is_dir() else []
    if not runs:
        raise ConfigError(
            f"resume={resume!r} is neither a sweep folder (with {CONFIG_FILE}) nor the name of a sweep "
            f"under output_dir={output_dir!r}."
        )
    return runs[-1].resolve()


def load_sweep(folder: Path) -> tuple[dict, SweepContext]:
    """The plain config and the context saved in a sweep folder (``{"config", "context"}``; an earlier
    release saved the config with its context under ``_sweep``, and perhaps keys by their old names)."""
    saved = json.loads((folder / CONFIG_FILE).read_text())
    if "_sweep" in saved:
        saved = {"context": saved.pop("_sweep"), "config": saved}
    return with_added_keys(renamed_config(saved["config"])), SweepContext(**saved["context"])


def run_sweep(cfg: dict) -> SweepOutcome:
    """Run (or, with ``cfg["resume"]``, finish) a sweep; returns its table and Pareto front."""
    quiet_libraries(cfg["verbose"])
    cfg = with_added_keys(renamed_config(cfg))
    if cfg.get("resume"):
        folder = find_sweep(cfg["resume"], cfg["output_dir"])
        saved, context = load_sweep(folder)
        base = {**saved, "verbose": cfg["verbose"]}  # this run's choice
        config = SweepConfig.from_dict(base)
        tracking.configure_retries(config.tracking.retry_seconds)
        tracking.check_reachable(context.tracking_uri)
        console.print(f"Resuming sweep {folder}")
        resources = connect_ray(config.ray, config.verbose)
        data = build_data(config.data)
    else:
        data = validate(cfg)
        base, config = cfg, SweepConfig.from_dict(cfg)
        output_dir = Path(config.output_dir).expanduser().resolve()
        uri = tracking.tracking_uri(config.tracking.uri, output_dir)
        tracking.configure_retries(config.tracking.retry_seconds)
        tracking.check_reachable(uri)
        resources = connect_ray(config.ray, config.verbose)
        context = _start(config, data, output_dir, uri)
    return _run_trials(base, config, context, resources, data)


def _start(config: SweepConfig, data: DataBundle, output_dir: Path, uri: str) -> SweepContext:
    """Baseline, experiment, parent run and sweep folder of a new sweep."""
    sweep_id = time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
    folder = output_dir / config.name / sweep_id
    folder.mkdir(parents=True)
    device = str(resolve_device(config.finetune.device))
    console.print(f"Baseline: {config.model.name} on {config.data['name']}, {device}")
    with BaselineProgress(config.finetune.baseline_epochs) as progress:
        baseline = prepare_baseline(config, data, output_dir / "baselines", device, progress.epoch_done)
    console.print(
        f"Baseline: {baseline.learnables} learnables, val accuracy {baseline.metrics['accuracy']:.2f}%"
        + (" (cached)" if baseline.cached else "")
    )
    experiment = tracking.experiment_id(uri, config.tracking.experiment, output_dir / "mlartifacts")
    context = SweepContext(
        sweep_id=sweep_id,
        folder=str(folder),
        tracking_uri=uri,
        experiment_id=experiment,
        parent_run_id=_parent_run(config, uri, experiment, sweep_id, baseline, data),
        baseline_path=str(baseline.path),
        baseline_metrics=baseline.metrics,
        baseline_learnables=baseline.learnables,
    )
    saved = {"config": config.to_dict(), "context": asdict(context)}
    (folder / CONFIG_FILE).write_text(json.dumps(saved, indent=1))
    return context


def _parent_run(config: SweepConfig, uri: str, experiment: str, sweep_id: str, baseline, data: DataBundle) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)
    tags = {tracking.SWEEP_TAG: sweep_id, "prune_sweep.role": "sweep"}
    plain = {key: value for key, value in config.to_dict().items() if key != "seed"}  # trials have seeds
    with mlflow.start_run(experiment_id=experiment, run_name=f"{config.name}-{sweep_id}", tags=tags) as run:
        mlflow.log_dict(plain, "config.json")
        mlflow.log_dict({"grid": config.sweep.grid, "seeds": config.sweep.seeds}, "grid.json")
        params = {k: v for k, v in flatten(plain).items() if not k.startswith(("sweep.grid", "sweep.space"))}
        tracking.log_params(uri, run.info.run_id, params)
        mlflow.log_metrics(
            {
                "baseline_learnables": baseline.learnables,
                "baseline_val_accuracy": baseline.metrics["accuracy"],
                "baseline_val_loss": baseline.metrics["loss"],
            }
        )
        if config.tracking.log_models:
            model = make_model(config, data)
            model.load_state_dict(torch.load(baseline.path, map_location="cpu", weights_only=True))
            tracking.log_model(model, example_batch(data), "baseline_model")
        run_id = run.info.run_id
    mlflow.MlflowClient(uri).set_terminated(run_id, "RUNNING")
    return run_id


@contextmanager
def _strict_metric_checking(strict: bool) -> Iterator[None]:
    """Tune's check that every result has the searcher's metrics, off for a search (its objectives are final
    metrics, absent from the per-iteration results ASHA reads), restored afterwards."""
    name = "TUNE_DISABLE_STRICT_METRIC_CHECKING"
    before = os.environ.get(name)
    if not strict:
        os.environ[name] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _run_trials(
    base: dict, config: SweepConfig, context: SweepContext, resources: dict[str, float], data: DataBundle
) -> SweepOutcome:
    """Tune runs the trials, each on ``base`` (the plain config ``config`` was made from) with its grid
    values; ``data`` (built from ``config.data``) reaches them through Ray's object store."""
    from ray import tune

    folder = Path(context.folder)
    storage = Path(config.ray.storage_path or folder / "ray").expanduser().resolve()
    progress = TrialProgress(trial_count(config.sweep))
    trainable = tune.with_parameters(run_trial, base=base, context=context, data=data)
    trainable = tune.with_resources(trainable, trial_resources(config.ray, resources))
    tune_path = storage / TUNE_FOLDER
    if tune.Tuner.can_restore(str(tune_path)):  # the searcher's and scheduler's state included
        known = {trial.trial_id for trial in tune.ExperimentAnalysis(str(tune_path)).trials}
        tracking.mark_orphans(context.tracking_uri, context.experiment_id, context.sweep_id, known)
        if config.sweep.search == "optuna":  # a trial that finished unknown to Tune counts towards num_samples
            lost = tracking.finished_unknown(context.tracking_uri, context.experiment_id, context.sweep_id, known)
            align_trial_count(tune_path, len(known) + lost)
        tuner = tune.Tuner.restore(str(tune_path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        search = config.sweep.search == "optuna"
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(config.sweep),
            tune_config=tune.TuneConfig(
                search_alg=search_algorithm(config.sweep),
                scheduler=trial_scheduler(config.sweep),
                num_samples=config.sweep.num_samples if search else 1,
                max_concurrent_trials=config.ray.max_concurrent_trials,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=TUNE_FOLDER,
                storage_path=str(storage),
                failure_config=tune.FailureConfig(max_failures=config.ray.max_failures),
                verbose=2 if config.verbose else 0,
                callbacks=[tune_callback(progress), early_stop_recorder(context)],
            ),
        )
    progress.start()
    try:
        with _strict_metric_checking(config.sweep.search != "optuna"):
            results = tuner.fit()
    finally:
        progress.stop()
    failed = sum(1 for result in results if result.error is not None)
    if not failed:  # every trial finished: no resume will need their pruning checkpoints
        shutil.rmtree(folder / TRIAL_CHECKPOINTS, ignore_errors=True)
    try:
        return summarize(config, context, failed)
    except tracking.TrackingUnavailable as err:
        raise tracking.TrackingUnavailable(
            f"{err}. The trials' Ray checkpoints are kept in {folder}; when the tracking store answers again, "
            f"finish the sweep with `prune-sweep resume={folder}`."
        ) from err
