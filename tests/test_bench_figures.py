"""The benchmark figures: the curves they plot, and one PNG for every report the suite writes."""

import json
import math

import pytest
import torch

from bench import figures
from bench.common import write_report
from bench.reports import RESULTS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(seed: int, goal: float, criterion: str, baseline: float, accuracy: float) -> dict:
    return {
        "seed": seed,
        "goal": goal,
        "criterion": criterion,
        "baseline_test_accuracy": baseline,
        "pruned_test_accuracy": accuracy,
        "reduction": goal + 0.01,
    }


# two seeds whose baselines differ by 10 points; Taylor is 1 and 3 points ahead of random
RUNS = [
    run(0, 0.5, "taylor", 90.0, 88.0),
    run(1, 0.5, "taylor", 80.0, 79.0),
    run(0, 0.5, "random", 90.0, 87.0),
    run(1, 0.5, "random", 80.0, 76.0),
    run(0, 0.3, "taylor", 90.0, 89.0),
]


def test_criterion_curves_average_each_goal_over_seeds():
    curves = figures.criterion_curves(RUNS)
    assert list(curves) == ["taylor", "random"]
    assert [goal for goal, _, _ in curves["taylor"]] == [0.3, 0.5]
    goal, mean, std = curves["taylor"][1]
    assert mean == pytest.approx(83.5) and std == pytest.approx(math.sqrt(2 * 4.5**2))
    assert curves["taylor"][0] == (0.3, 89.0, 0.0)


def test_paired_differences_pair_the_seeds_and_skip_unpaired_goals():
    [(goal, mean, std)] = figures.paired_differences(RUNS, "taylor", "random")
    assert goal == 0.5
    assert mean == pytest.approx(2.0) and std == pytest.approx(math.sqrt(2.0))  # diffs 1 and 3
    assert figures.paired_differences(RUNS, "taylor", "l1") == []


def test_criteria_figure_has_the_lead_panel_only_with_a_criterion_to_lead():
    def axes(runs):
        return len(figures.criteria_figure({"benchmark": "x_ablation", "results": {"runs": runs}}).axes)

    assert axes(RUNS) == 2
    assert axes([r for r in RUNS if r["criterion"] == "taylor"]) == 1


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.stem)
def test_every_committed_report_draws_its_figure(path, tmp_path):
    report = json.loads(path.read_text())
    png = figures.save_figure(report, tmp_path / f"{path.stem}.png")
    assert png is not None, f"no figure for benchmark {report['benchmark']!r}"
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_write_report_writes_the_figure_next_to_the_json(tmp_path):
    results = {"tiny": {"batch_shape": [2, 1, 8, 8], "plain_ms": 1.0, "scoring_ms": 1.05, "ratio": 1.05}}
    write_report("scoring_overhead", torch.device("cpu"), results, tmp_path / "scoring_overhead.json")
    assert json.loads((tmp_path / "scoring_overhead.json").read_text())["results"] == results
    assert (tmp_path / "scoring_overhead.png").read_bytes().startswith(PNG_MAGIC)


def test_a_benchmark_without_a_figure_is_reported_as_such(tmp_path):
    assert figures.save_figure({"benchmark": "something_else", "results": {}}, tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def _anchor(name: str, accuracies: list[float], baselines=(90.0, 80.0), **budget) -> dict:
    runs = [
        {**run(seed, 0.5, "taylor", base, acc), "pruning_iterations": 3, "seconds": 1.0}
        for seed, (base, acc) in enumerate(zip(baselines, accuracies, strict=True))
    ]
    return {"benchmark": name, "results": {"runs": runs, "budget": {"finetune_epochs": 2, **budget}}}


def test_recipe_arms_are_paired_by_seed_against_the_reference():
    from bench import recipes

    reference = _anchor("x_anchor", [88.0, 76.0])
    arm = recipes.arm(_anchor("x_cos_final4_anchor", [88.5, 79.0], final_epochs=4), reference)
    assert arm["paired_gain_mean"] == pytest.approx(1.75) and arm["seeds_ahead"] == 2
    assert arm["paired_gain_se"] == pytest.approx(math.sqrt(2 * 1.25**2) / math.sqrt(2))
    assert arm["fine_tuning_epochs"] == 2 * 3 + 4 and arm["drop_mean"] == pytest.approx((1.5 + 1.0) / 2)
    assert figures.recipes_figure({"benchmark": "x_recipes", "results": {"reference": "x_anchor", "arms": [arm]}})
    with pytest.raises(SystemExit, match="not the same seeds and baselines"):
        recipes.arm(_anchor("y_anchor", [88.0, 76.0], baselines=(90.0, 81.0)), reference)
