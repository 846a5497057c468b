"""The main job and the benchmark scripts run (tiny settings) so they cannot rot."""

import json

import pytest
import torch

from bench import pruning, scoring_overhead
from prune_core.examples import digits


@pytest.fixture(autouse=True)
def baseline_cache_in_tmp(tmp_path, monkeypatch):
    """Benchmark baselines are cached in the test's folder, not the user's cache (also in the
    worker processes of ``--jobs``)."""
    monkeypatch.setattr(pruning, "BASELINE_CACHE", tmp_path / "baselines")
    monkeypatch.setenv("TAYLOR_PRUNE_BENCH_CACHE", str(tmp_path / "baselines"))
    pruning.baseline.cache_clear()


def test_digits_example_prunes_and_reports(capsys):
    digits.main(["--goal", "0.3", "--increment", "0.15", "--baseline-epochs", "2"])
    out = capsys.readouterr().out
    assert "Pruning iteration 2:" in out and "Final fine-tuning (2 epochs): val loss" in out
    assert "fewer learnable parameters." in out and "Stop reason: Learnables reduction goal reached." in out


def test_scoring_overhead_benchmark_smoke():
    report = scoring_overhead.main(["--smoke"])
    row = report["results"]["digits_cnn"]
    assert row["plain_ms"] > 0 and row["scoring_ms"] > 0


@pytest.mark.parametrize("deployed", [[], ["--deployed"]], ids=["eager", "deployed"])
def test_speedup_benchmark_smoke(deployed):
    from bench import speedup

    report = speedup.main(["--smoke", *deployed])
    for name in speedup.MODELS:
        row = report["results"][name]
        assert 0 < row["learnables_ratio"] < 1
        assert 0 < row["batch_1"]["macs_ratio"] < 1 and row["batch_1"]["latency_ratio"] > 0
        for multiple in (8, 16):
            rounded = row[f"channel_multiple_{multiple}"]
            assert rounded["learnables_ratio"] <= row["learnables_ratio"] and rounded["batch_1"]["macs_ratio"] < 1


def test_deployed_network_computes_what_the_pruned_one_does():
    import torchvision

    from bench import speedup

    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    pruned = speedup.prune_half(torchvision.models.resnet18(num_classes=10).eval(), x[:1])
    served = speedup.deploy(pruned)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in served.modules())
    with torch.no_grad():
        served_out = served(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(served_out, pruned(x), rtol=1e-4, atol=1e-4)


def test_mnist1d_benchmark_smoke():
    from bench import mnist1d

    results = mnist1d.main(["anchor", "--smoke"])
    run = results["runs"][0]
    assert run["reduction"] >= 0.8 - 1e-9 and 0 <= run["pruned_test_accuracy"] <= 100
    assert results["summary"]["runs"] == 1


def test_recipe_flags_reach_the_engine_and_name_the_report():
    from bench import mnist1d

    results = mnist1d.main(["anchor", "--smoke", "--schedule", "cosine", "--final-epochs", "2", "--carry"])
    budget, run = results["budget"], results["runs"][0]
    assert budget["name"] == "mnist1d_cos_final2_carry"
    assert (budget["finetune_schedule"], budget["final_epochs"], budget["carry_optimizer_state"]) == ("cosine", 2, True)
    assert {"val_accuracy_after_loop", "val_accuracy_final"} <= set(run)


def test_ablation_runs_only_the_criteria_asked_for():
    from bench import mnist1d

    results = mnist1d.main(["oneshot", "--smoke", "--criteria", "l1", "random"])
    assert {run["criterion"] for run in results["runs"]} == {"l1", "random"}
    assert set(results["summary"]) == {f"{c}@{g}" for c in ("l1", "random") for g in pruning.GOALS}


def test_cifar10_benchmark_smoke():
    from bench import cifar10

    results = cifar10.main(["anchor", "--smoke"])
    assert results["runs"][0]["reduction"] >= 0.55 - 1e-9
    assert results["budget"]["anchor_goal"] == 0.55


@pytest.mark.parametrize(
    ("experiment", "task_name", "samples_key"),
    [
        ("cifar10_resnet20", "cifar10.task", "max_train_samples"),
        ("cifar10_subset", "cifar10.subset_task", "max_train_samples"),
        ("mnist1d_anchor", "mnist1d.task", "num_samples"),
    ],
)
def test_benchmark_tasks_run_the_setup_of_the_sweeps_experiment_config(experiment, task_name, samples_key):
    """bench's anchor and subset tasks are conf/experiment's setups, what `prune-sweep +experiment=...` runs."""
    import importlib

    from prune_core.models import build_model
    from tests.sweep_helpers import compose_config

    module, builder = task_name.split(".")
    task = getattr(importlib.import_module(f"bench.{module}"), builder)()
    cfg = compose_config(f"+experiment={experiment}")
    data, finetune, prune = cfg["data"], cfg["finetune"], cfg["prune"]
    swept = build_model(cfg["model"]["name"], width=cfg["model"]["width"])
    assert {k: v.shape for k, v in task.model().state_dict().items()} == {
        k: v.shape for k, v in swept.state_dict().items()
    }
    assert task.splits.args == (data[samples_key],)
    assert data.get("augment", "none") == ("crop_flip" if module == "cifar10" else "none")  # the bench's own
    assert (task.anchor_goal, task.increment) == (
        prune["learnables_reduction_goal"],
        prune["learnables_reduction_increment"],
    )
    assert (task.solver, task.l2_regularization, task.batch, task.finetune_learn_rate, task.finetune_epochs) == (
        finetune["solver"],
        finetune["l2_regularization"],
        finetune["mini_batch_size"],
        finetune["initial_learn_rate"],
        finetune["max_epochs"],
    )
    assert sum(epochs for _, epochs in task.baseline_stages) == finetune["baseline_epochs"]
    assert task.baseline_stages[0][0] == finetune["baseline_learn_rate"]


def test_analysis_time_benchmark_times_every_run_in_a_fresh_process():
    from bench import analysis_time

    times = analysis_time.main(["torchvision:resnet18", "--runs", "1"])
    assert list(times) == ["torchvision:resnet18"] and len(times["torchvision:resnet18"]) == 1
    assert all(0 < t < 120 for t in times["torchvision:resnet18"])


def test_baseline_is_cached_on_disk_per_budget():
    from dataclasses import replace

    from bench import mnist1d

    task = mnist1d.smoke_task()
    weights, accuracy, _ = pruning.baseline(task, 0)
    pruning.baseline.cache_clear()
    again, accuracy_again, _ = pruning.baseline(task, 0)
    assert accuracy_again == accuracy and all(torch.equal(weights[k], again[k]) for k in weights)
    assert replace(task, baseline_stages=((1e-3, 1),)).key() != task.key()
    assert replace(task, finetune_learn_rate=1e-3, name="other").key() == task.key()  # same baseline
    (cached,) = pruning.BASELINE_CACHE.glob("baseline-seed0-*.pt")
    # the sweep's train-once cache: the state_dict, and its record beside it
    assert json.loads(cached.with_suffix(".json").read_text())["test_accuracy"] == accuracy
    assert torch.load(cached, weights_only=True).keys() == weights.keys()


def test_parallel_runs_give_the_serial_results_in_order():
    from bench import mnist1d

    task = mnist1d.smoke_task()
    cases = [(0, 0.5, "l1"), (0, 0.3, "l1")]
    serial = pruning.run_all(pruning.oneshot_run, task, cases)
    parallel = pruning.run_all(pruning.oneshot_run, task, cases, jobs=2)
    assert [r["goal"] for r in parallel] == [0.5, 0.3]
    assert parallel == serial
    assert len(list(pruning.BASELINE_CACHE.glob("baseline-seed0-*.pt"))) == 1  # the workers used the test's cache


@pytest.mark.parametrize("task", ["mnist1d", "cifar10"])
def test_torch_pruning_peer_benchmark_smoke(task):
    from bench import peer_torch_pruning

    args = ["--smoke", "--goal", "0.5", "--task", task, "--probe-batches", "2"]
    results = peer_torch_pruning.main([*args, "--final-epochs", "1"] if task == "mnist1d" else args)
    run = results["runs"][0]
    ours, peer = run["ours"], run["torch_pruning"]
    assert ours["reduction"] >= 0.5 - 1e-9
    assert abs(peer["learnables"] - ours["learnables"]) <= 0.1 * ours["learnables"]  # matched by bisection


def test_sweep_overhead_benchmark_smoke():
    from bench import sweep_overhead

    results = sweep_overhead.main(["--smoke"])
    for key in ("two_concurrent", "one_at_a_time"):
        run = results[key]
        assert run["trials"] == 2 and run["failed"] == 0
        assert 0 < run["compress_s_mean"] < run["trial_s_mean"] < run["wall_s"]
        assert 0 < run["startup_s"] < run["wall_s"] and 0 < run["wrapup_s"] < run["wall_s"]
        floor = results["ray_floor"][key]
        assert 0 < floor["ray_init_s"] < floor["wall_s"]
    assert results["throughput_gain"] > 0


@pytest.mark.parametrize("main", ["__main__", "__mp_main__"])  # `python -m`, and its --jobs workers
def test_baseline_key_is_the_same_when_the_task_module_runs_as_main(monkeypatch, main):
    import sys
    import types

    from bench import cifar10

    def splits():  # what `python -m bench.cifar10` defines: the same function, in module __main__
        return None

    splits.__module__, splits.__qualname__ = main, "splits"
    spec = types.SimpleNamespace(name="bench.cifar10")
    monkeypatch.setitem(sys.modules, main, types.SimpleNamespace(__spec__=spec))
    assert pruning._builder_key(splits) == pruning._builder_key(cifar10.splits)


def test_search_vs_grid_benchmark_smoke(monkeypatch):
    from bench import common, search_vs_grid

    monkeypatch.setattr(common, "write_report", lambda *args: pytest.fail("a smoke run wrote a report"))
    results = search_vs_grid.main(["--smoke"])
    arms = {run["arm"]: run for run in results["runs"]}
    assert set(arms) == {"grid", "search", "search_asha", "search_seeded"}
    for run in arms.values():
        assert run["failed"] == 0 and run["finished"] + run["stopped"] == 4, run
        assert 0 <= run["hypervolume"] <= 1 and len(run["front"]) <= run["finished"]
    assert arms["grid"]["stopped"] == 0 and arms["search"]["stopped"] == 0


def test_search_vs_grid_learn_rate_axis_gives_valid_sweeps_of_equal_trials():
    from bench.search_vs_grid import TASK, grid_overrides, search_overrides
    from sweeps.runner import validate
    from sweeps.schema import SweepConfig
    from sweeps.space import grid_points
    from tests.sweep_helpers import compose_config

    grid = compose_config(*TASK, *grid_overrides(16, (0.003, 0.03)))
    validate(grid)
    assert len(grid_points(SweepConfig.from_dict(grid).sweep)) == 16
    assert grid["sweep"]["grid"]["finetune"]["initial_learn_rate"] == [0.003, 0.03]
    for arm in ("search", "search_seeded"):
        search = compose_config(*TASK, *search_overrides(16, arm, (0.003, 0.03)))
        validate(search)
        entry = search["sweep"]["space"]["finetune"]["initial_learn_rate"]
        assert entry == {"type": "loguniform", "low": 0.003, "high": 0.03} and search["sweep"]["num_samples"] == 16


def test_search_vs_grid_goal_range_reaches_both_arms():
    from bench.search_vs_grid import TASK, grid_overrides, search_overrides
    from sweeps.runner import validate
    from tests.sweep_helpers import compose_config

    grid = compose_config(*TASK, *grid_overrides(16, None, (0.5, 0.99)))
    validate(grid)
    assert grid["sweep"]["grid"]["prune"]["learnables_reduction_goal"] == [0.5, 0.6633, 0.8267, 0.99]
    seeded = compose_config(*TASK, *search_overrides(16, "search_seeded", None, (0.5, 0.99)))
    validate(seeded)
    goal = seeded["sweep"]["space"]["prune"]["learnables_reduction_goal"]
    assert (goal["low"], goal["high"]) == (0.5, 0.99)
    assert seeded["sweep"]["grid"]["prune"]["learnables_reduction_goal"] == [0.5, 0.99]
