"""Beyond grids: Optuna's multi-objective search with hard budgets, and ASHA early stopping, for Ray Tune.

The search optimises the finished trials' ``final_<objective>`` metrics; a trial that breaks a budget
(``sweep.constraints``) is infeasible for Optuna's sampler (its constraint values are > 0), not merely
scored low. ASHA compares the trials' per-iteration ``scheduler_metric`` at pruning iterations
``grace_period * reduction_factor**k``; a trial it stops keeps its MLflow run, tagged with
:data:`STOPPED_EARLY`.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch

from sweeps import tracking
from sweeps.report import violations
from sweeps.schema import SweepContext, SweepSection
from sweeps.space import search_start_points

STOPPED_EARLY = "stopped early by ASHA"
"""The ``stop_reason`` tag of a trial run that the scheduler stopped."""
ASHA_MAX_ITERATIONS = 1000
"""ASHA's ``max_t``: above any pruning run's iteration count, so only the rungs stop trials."""


class BudgetedOptunaSearch(OptunaSearch):
    """OptunaSearch that sets each finished trial's budget violations as its Optuna constraints (> 0: broken)
    before the sampler learns of it; a trial without final metrics (stopped, failed) breaks every budget."""

    def __init__(self, constraints: dict[str, float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.constraints = dict(constraints)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        finished = result is not None and all(result.get(metric) is not None for metric in metrics)
        if self.constraints and trial_id in self._ot_trials and trial_id not in self._completed_trials:
            amounts = violations(result, self.constraints) if finished else dict.fromkeys(self.constraints, 1.0)
            for key, amount in amounts.items():
                self._ot_trials[trial_id].set_constraint(key, amount)
        # without its final metrics (stopped early, failed) the trial is PRUNED (FAIL) for Optuna; OptunaSearch
        # would tell a multi-objective study [None, ...] as COMPLETE, which Optuna refuses, leaving it RUNNING
        super().on_trial_complete(trial_id, result if finished else None, error)


def search_algorithm(sweep: SweepSection) -> BudgetedOptunaSearch | None:
    """The Optuna searcher of ``sweep.search=optuna`` (None for a grid): ``sweep.objectives`` as Tune metrics,
    TPE or NSGA-II seeded with the sweep's seed, the grid's points evaluated first."""
    if sweep.search != "optuna":
        return None
    import optuna

    samplers = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler}
    sampler = samplers[sweep.sampler](seed=sweep.seeds[0])
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
        mode=sweep.scheduler_mode,
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
                from mlflow import MlflowClient

                client = MlflowClient(context.tracking_uri)
                tracking.with_retries(client.set_tag, run_id, "stop_reason", STOPPED_EARLY)
                tracking.with_retries(client.set_terminated, run_id, "KILLED")

    return _EarlyStopRecorder()
