"""The sweep's report: trial order and Pareto front, whatever order MLflow returns the runs in."""

import pandas as pd
import pytest

from sweeps.report import pareto_front, sort_trials

ACCURACY = 98.88579390507222  # 355 of 359 validation images
NOISY = 98.88579388846927  # the same accuracy computed in float32 by another trial


def _table() -> pd.DataFrame:
    """Trials as MLflow returns them: several tied in accuracy, some also in learnables."""
    return pd.DataFrame(
        {
            "trial": [f"run_trial_6201f_{i:05d}" for i in range(8)],
            "prune.learnables_reduction_goal": ["0.6", "0.6", "0.97", "0.97", "0.99", "0.99", "0.6", "0.97"],
            "learnables": [26006, 26406, 1777, 1861, 508, 605, 26006, 1777],
            "reduction": [0.6069, 0.6008, 0.9731, 0.9719, 0.9923, 0.9909, 0.6069, 0.9731],
            "val_accuracy": [ACCURACY, ACCURACY, 97.2145, 96.1003, 87.7437, 84.6797, ACCURACY, 97.2145],
        }
    )


def _shuffles(table: pd.DataFrame, n: int = 20):
    for seed in range(n):
        yield table.sample(frac=1, random_state=seed).reset_index(drop=True)


def test_tied_trials_come_out_in_one_order():
    orders = {tuple(sort_trials(shuffled, "val_accuracy", "max")["trial"]) for shuffled in _shuffles(_table())}
    assert orders == {
        tuple(f"run_trial_6201f_{i:05d}" for i in (0, 6, 1, 2, 7, 3, 4, 5))  # accuracy, learnables, trial name
    }
    by_size = {tuple(sort_trials(shuffled, "learnables", "min")["trial"]) for shuffled in _shuffles(_table())}
    assert by_size == {tuple(f"run_trial_6201f_{i:05d}" for i in (4, 5, 2, 7, 3, 0, 6, 1))}
    assert sort_trials(_table().iloc[:0], "val_accuracy", "max").empty


def test_pareto_front_of_tied_trials_is_one_set_in_one_order():
    fronts = {tuple(pareto_front(shuffled)["trial"]) for shuffled in _shuffles(_table())}
    assert fronts == {("run_trial_6201f_00004", "run_trial_6201f_00002", "run_trial_6201f_00000")}


def test_pareto_front_treats_float_noise_as_a_tie():
    # b has more learnables than a and the same accuracy, 2e-8 higher: b is dominated
    table = pd.DataFrame(
        {"trial": ["a", "b", "c"], "learnables": [3106, 26006, 26134], "val_accuracy": [NOISY, ACCURACY, 99.1643]}
    )
    assert pareto_front(table)["trial"].tolist() == ["a", "c"]
    assert sort_trials(table.iloc[:2], "val_accuracy", "max")["trial"].tolist() == ["a", "b"]  # fewer learnables


def test_best_trial_and_front_agree_on_tied_trials_whatever_their_measured_latency():
    """Two runs of one network tie in every result but the latency each measured: the table's best
    and the front's member are the same trial, the first by name, whatever the default objectives."""
    table = pd.DataFrame(
        {
            "trial": ["t_00000", "t_00003", "t_00001"],
            "learnables": [26006, 26006, 1777],
            "reduction": [0.6069, 0.6069, 0.9731],
            "val_accuracy": [ACCURACY, NOISY, 97.2],
            "macs": [1.0e6, 1.0e6, 2.0e5],
            "latency_ms": [0.31, 0.27, 0.2],
        }
    )
    for shuffled in _shuffles(table):
        best = sort_trials(shuffled, "val_accuracy", "max")["trial"].iloc[0]
        assert best == "t_00000" and best in pareto_front(shuffled)["trial"].tolist()
    by_latency = {"val_accuracy": "max", "latency_ms": "min"}
    best = sort_trials(table, "val_accuracy", "max", by_latency)["trial"].iloc[0]
    assert best == "t_00003" and best in pareto_front(table, by_latency)["trial"].tolist()


@pytest.mark.parametrize("metric, mode", [("val_accuracy", "min"), ("reduction", "max")])
def test_every_metric_orders_all_rows(metric, mode):
    orders = {tuple(sort_trials(shuffled, metric, mode)["trial"]) for shuffled in _shuffles(_table())}
    assert len(orders) == 1
