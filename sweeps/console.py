"""What ``prune-sweep`` shows in the terminal: progress for the baseline and the trials (rich), and
the libraries' own chatter turned down unless ``verbose=true``."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from prune_core.results import DIVERGED, GOAL_REACHED, MAX_COMPRESSION, THRESHOLD_EXCEEDED
from sweeps.report import RESULT_COLUMNS
from sweeps.schema import SweepSection

console = Console(highlight=False, soft_wrap=True)
"""The sweep's own output (stdout): plain lines when not a terminal, live bars when it is."""

QUIET_ENVIRONMENT = {
    "MLFLOW_LOGGING_LEVEL": "ERROR",  # read when mlflow is imported, which resets its loggers' levels
    "RAY_AIR_NEW_OUTPUT": "0",  # Tune's newer output prints its experiment box whatever the verbosity
    "RAY_DEDUP_LOGS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # tqdm bars on every download (tqdm comes with timm)
}
QUIET_LOGGERS = ("ray", "ray.tune", "ray.train", "mlflow", "alembic", "optuna")


def quiet_libraries(verbose: bool) -> None:
    """Ray's and MLflow's info logs and status tables off (errors still show), unless ``verbose``.

    Called on the driver before Ray starts and in every trial process.
    """
    if verbose:
        return
    for key, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _progress(*columns: Any) -> Progress:
    """A live bar on a terminal; nothing (but the lines printed through it) in a log or a pipe."""
    return Progress(
        TextColumn("{task.description}"), *columns, console=console, transient=True, disable=not console.is_terminal
    )


class BaselineProgress:
    """Epochs of the baseline's training, with the last epoch's mean loss."""

    def __init__(self, epochs: int) -> None:
        self._bar = _progress(
            BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn()
        )
        self._task = self._bar.add_task("Baseline epochs", total=epochs, loss="-")

    def __enter__(self) -> BaselineProgress:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def epoch_done(self, epoch: int, loss: float) -> None:
        self._bar.update(self._task, completed=epoch + 1, loss=f"{loss:.4f}")


def _grid_values(config: dict[str, Any]) -> str:
    """``key=value`` per grid axis, escaped: a value such as ``[conv1]`` is text, not rich markup."""
    return escape(" ".join(f"{key.split('.')[-1]}={_short(value)}" for key, value in config.items()))


def _short(value: Any) -> Any:
    """A sampled float to 4 significant digits (0.7075908516760633 -> 0.7076); anything else as it is."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


class TrialProgress:
    """Trials done / total, running, elapsed, ETA and the best accuracy so far; one line per finished
    trial. Used as a Ray Tune callback on the driver (built lazily: Tune imports come later)."""

    def __init__(self, total: int) -> None:
        self._bar = _progress(
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self._task = self._bar.add_task("Trials", total=total, status="")
        self.running, self.best, self._started = 0, None, {}

    def _refresh(self) -> None:
        best = f", best val acc {self.best:.2f}%" if self.best is not None else ""
        self._bar.update(self._task, status=f"{self.running} running{best}")

    def start(self) -> None:
        self._bar.start()
        self._refresh()

    def stop(self) -> None:
        self._bar.stop()

    def trial_started(self, name: str) -> None:
        self.running += 1
        self._started[name] = time.monotonic()
        self._refresh()

    def trial_finished(self, name: str, config: dict[str, Any], result: dict[str, Any], error: bool) -> None:
        self.running = max(0, self.running - 1)
        seconds = time.monotonic() - self._started.pop(name, time.monotonic())
        if error:
            line = f"[red]failed[/red]  {_grid_values(config)}"
        elif "final_val_accuracy" not in result:
            line = (
                f"[yellow]stopped early[/yellow]  {_grid_values(config)}: after pruning iteration "
                f"{result.get('pruning_iteration', 0)}, val acc {result.get('val_accuracy', float('nan')):.2f}%"
            )
        else:
            accuracy = result.get("final_val_accuracy")
            if accuracy is not None:
                self.best = accuracy if self.best is None else max(self.best, accuracy)
            line = (
                f"done  {_grid_values(config)}: {100 * result.get('final_reduction', 0):.1f}% fewer learnables, "
                f"val acc {accuracy if accuracy is not None else float('nan'):.2f}%"
            )
        self._bar.console.print(f"  {line} ({seconds:.0f} s)")
        self._bar.advance(self._task)
        self._refresh()


def tune_callback(progress: TrialProgress) -> Any:
    """A Ray Tune callback that feeds ``progress`` on the driver (Tune pickles its run config: the
    callback pickles without it)."""
    from ray import tune

    class _Progress(tune.Callback):
        def __init__(self, shown: TrialProgress) -> None:
            self.progress: TrialProgress | None = shown

        def __getstate__(self) -> dict[str, Any]:
            return {"progress": None}

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if self.progress is not None:
                self.progress.trial_started(trial.trial_id)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if self.progress is not None:
                self.progress.trial_finished(trial.trial_id, trial.config, trial.last_result or {}, error=False)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if self.progress is not None:
                self.progress.trial_finished(trial.trial_id, trial.config, trial.last_result or {}, error=True)

    return _Progress(progress)


STOP_LABELS = {
    GOAL_REACHED: "goal",
    MAX_COMPRESSION: "max compression",
    THRESHOLD_EXCEEDED: "threshold",
    DIVERGED: "diverged",
}
TABLE_WIDTH = 120


def trials_for_terminal(table: pd.DataFrame, sweep: SweepSection) -> pd.DataFrame:
    """The trial table, narrowed: trial number, swept values under their last key part (sampled ones to 4
    digits), results in %; MACs, latency and feasibility only when an objective or a budget uses them."""
    budgets = {key.partition("_")[2] for key in sweep.constraints}
    hidden = {"run_id"} | {m for m in ("macs", "latency_ms") if m not in sweep.objectives and m not in budgets}
    frame = table.drop(columns=[*hidden, *([] if sweep.constraints else ["feasible"])]).copy()
    frame["trial"] = frame["trial"].str.rsplit("_", n=1).str[-1]
    frame["reduction"] = (100 * frame["reduction"]).round(1)
    frame["val_accuracy"] = frame["val_accuracy"].round(2)
    frame["stop_reason"] = frame["stop_reason"].map(lambda reason: STOP_LABELS.get(reason, reason))
    for column in [c for c in table.columns if c not in RESULT_COLUMNS and c != "trial"]:  # the swept values
        frame[column] = frame[column].map(lambda text: _short(_number(text)))
    renamed = {column: column.rsplit(".", 1)[-1] for column in frame.columns}
    return frame.rename(columns={**renamed, "reduction": "fewer %", "val_accuracy": "val acc %", "stop_reason": "stop"})


def _number(text: Any) -> Any:
    """A swept value as MLflow returns it (text) back to a float where it is one."""
    try:
        return float(text) if isinstance(text, str) and "." in text else text
    except ValueError:
        return text


def mlflow_ui_command(uri: str) -> str:
    """The command that serves the local store ``uri``, runnable as printed (this environment's mlflow)."""
    script = Path(sys.executable).with_name("mlflow")
    program = shlex.quote(str(script)) if script.is_file() else f"{shlex.quote(sys.executable)} -m mlflow"
    return f"{program} ui --backend-store-uri {shlex.quote(uri)} --host 127.0.0.1 --port 5000"


def print_outcome(outcome: Any) -> None:
    """The trial table, the Pareto front, the best model's URI and how to open MLflow on the runs."""
    with pd.option_context("display.width", TABLE_WIDTH, "display.max_columns", 30, "display.max_colwidth", 30):
        trials = trials_for_terminal(outcome.table, outcome.sweep)
        console.print(f"\nTrials (best {outcome.sweep.metric} first):")
        console.print(trials.to_string(index=False), markup=False)
        objectives = ", ".join(f"{mode} {metric}" for metric, mode in outcome.sweep.objectives.items())
        console.print(f"\nPareto front ({objectives}; hypervolume {outcome.hypervolume:.4f}):")
        shown = {"val_accuracy": "val acc %", "reduction": "fewer %"}
        columns = ["trial", *dict.fromkeys(shown.get(metric, metric) for metric in outcome.sweep.objectives)]
        console.print(trials.loc[outcome.front.index, columns].to_string(index=False), markup=False)
    if outcome.stopped_trials:
        console.print(f"{outcome.stopped_trials} trial(s) stopped early by ASHA (in MLflow, tagged stop_reason)")
    if len(outcome.table) and not outcome.table["feasible"].any():
        console.print("No trial met the budgets (sweep.constraints): no best model, nothing registered.")
    console.print(f"\nSweep folder: {outcome.folder}", markup=False)
    if outcome.best_model_file:
        console.print(f"Best pruned model: {outcome.best_model_file}", markup=False)
        console.print(f'  load it with prune_core.load_pruned("{outcome.best_model_file}")', markup=False)
        console.print(
            f'  or from MLflow: prune_core.load_pruned("{outcome.best_model_uri}", '
            f'tracking_uri="{outcome.tracking_uri}")',
            markup=False,
        )
    uri, runs_page = outcome.tracking_uri, f"#/experiments/{outcome.experiment_id}/runs"
    if uri.startswith("http"):
        console.print(f"MLflow runs: {uri.rstrip('/')}/{runs_page}", markup=False)
    else:
        console.print(f"MLflow: {mlflow_ui_command(uri)}", markup=False)
        console.print(f"  then open http://127.0.0.1:5000/{runs_page}", markup=False)
