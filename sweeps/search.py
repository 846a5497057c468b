"""Beyond grids: Optuna's multi-objective search with hard budgets, and ASHA early stopping, for Ray Tune.

The search optimises the finished trials' ``final_<objective>`` metrics; a trial that breaks a budget
(``sweep.constraints``) is infeasible for Optuna's sampler (its constraint values are > 0), not merely
scored low. ASHA compares the trials' per-iteration ``scheduler_metric`` at pruning iterations
``grace_period * reduction_factor**k``; a trial it stops keeps its MLflow run, tagged with
:data:`STOPPED_EARLY`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from sweeps import tracking
from sweeps.report import ITERATION_METRICS, violations
from sweeps.schema import SweepContext, SweepSection
from sweeps.space import search_start_points

LOGGER = logging.getLogger(__name__)
SEARCH_STATE_FILES = "search_gen_state-*.json"
"""Tune's files of the search's state (a cloudpickled dict, despite the suffix); it restores the newest by name."""
STOPPED_EARLY = "stopped early by ASHA"
"""The ``stop_reason`` tag of a trial run that the scheduler stopped."""
ASHA_MAX_ITERATIONS = 1000
"""ASHA's ``max_t``: above any pruning run's iteration count, so only the rungs stop trials."""


class BudgetedOptunaSearch(OptunaSearch):
    """OptunaSearch that sets each finished trial's budget violations, as shares of the budget, as its Optuna
    constraints (> 0: broken) before the sampler learns of it; a trial without final metrics (stopped, failed)
    counts as twice over every budget."""

    def __init__(self, constraints: dict[str, float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.constraints = dict(constraints)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        finished = result is not None and all(result.get(metric) is not None for metric in metrics)
        if self.constraints and trial_id in self._ot_trials and trial_id not in self._completed_trials:
            for key, share in _budget_shares(result if finished else None, self.constraints).items():
                self._ot_trials[trial_id].set_constraint(key, share)
        if trial_id not in self._ot_trials:  # restored from a state older than the trial list: see align_trial_count
            LOGGER.warning("trial %s is unknown to the restored sampler, which will not learn from it", trial_id)
            return
        # without its final metrics (stopped early, failed) the trial is PRUNED (FAIL) for Optuna; OptunaSearch
        # would tell a multi-objective study [None, ...] as COMPLETE, which Optuna refuses, leaving it RUNNING
        super().on_trial_complete(trial_id, result if finished else None, error)


def _budget_shares(result: dict | None, constraints: dict[str, float]) -> dict[str, float]:
    """Each budget's violation as a share of the budget (so budgets in different units add up); 1.0 (twice over)
    for a trial without final metrics; the plain violation for a budget of 0."""
    if result is None:
        return dict.fromkeys(constraints, 1.0)
    amounts = violations(result, constraints)
    return {key: amounts[key] / bound if bound > 0 else amounts[key] for key, bound in constraints.items()}


def align_trial_count(tune_path: Path, trial_count: int) -> bool:
    """Set a restored search's count of suggested trials to ``trial_count`` before Tune restores it: the trials
    Tune restores plus those whose runs finished unknown to its state.

    Tune snapshots its trial list and the search's count (which stops the search at ``num_samples``) every 10 s
    or more, the list first. A driver killed between snapshots loses the trials started since; one that already
    finished keeps its MLflow run, and without this the resumed search would run ``num_samples`` trials besides
    it. A count left out of step with the list by a kill between the two writes is set right too. Returns whether
    the saved count was changed."""
    import ray.cloudpickle as cloudpickle

    files = sorted(Path(tune_path).glob(SEARCH_STATE_FILES))
    if not files:
        return False
    state = cloudpickle.loads(files[-1].read_bytes())
    if state.get("counter", trial_count) == trial_count:
        return False
    LOGGER.warning("saved count of suggested trials %s, restored trials %s", state["counter"], trial_count)
    state["counter"] = trial_count
    partial = files[-1].with_name(f".{files[-1].name}.partial")
    partial.write_bytes(cloudpickle.dumps(state))
    os.replace(partial, files[-1])
    return True


def search_algorithm(sweep: SweepSection) -> BudgetedOptunaSearch | None:
    """The Optuna searcher of ``sweep.search=optuna`` (None for a grid): ``sweep.objectives`` as Tune metrics,
    TPE or NSGA-II seeded with the sweep's seed, the grid's points evaluated first."""
    if sweep.search != "optuna":
        return None
    import optuna

    startup = max(2, sweep.num_samples // 4)  # Optuna's defaults (10 TPE startup trials, a population of 50) would
    if sweep.sampler == "tpe":  # leave a search of 16 trials or fewer random
        sampler = optuna.samplers.TPESampler(seed=sweep.seeds[0], n_startup_trials=startup)
    else:
        sampler = optuna.samplers.NSGAIISampler(seed=sweep.seeds[0], population_size=startup)
    return BudgetedOptunaSearch(
        sweep.constraints,
        metric=[f"final_{name}" for name in sweep.objectives],
        mode=list(sweep.objectives.values()),
        sampler=sampler,
        points_to_evaluate=search_start_points(sweep) or None,
    )


def trial_scheduler(sweep: SweepSection) -> Any:
    """ASHA over pruning iterations (``sweep.scheduler=asha``), else None (Tune's FIFO)."""
    if sweep.scheduler != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr="pruning_iteration",
        metric=sweep.scheduler_metric,
        mode=ITERATION_METRICS[sweep.scheduler_metric],
        grace_period=sweep.grace_period,
        reduction_factor=sweep.reduction_factor,
        max_t=ASHA_MAX_ITERATIONS,
    )


def early_stop_recorder(context: SweepContext) -> Any:
    """A Tune callback (on the driver) that tags the MLflow run of each trial the scheduler stopped."""
    from ray import tune

    class _EarlyStopRecorder(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if "final_learnables" in (trial.last_result or {}):
                return  # finished its pruning run
            run_id = tracking.find_run(
                context.tracking_uri,
                context.experiment_id,
                {tracking.SWEEP_TAG: context.sweep_id, tracking.TRIAL_TAG: trial.trial_id},
            )
            if run_id is not None:
                tracking.close_run(context.tracking_uri, run_id, STOPPED_EARLY)

    return _EarlyStopRecorder()
