"""Command-line mistakes (misspelt keys, group options and flags, ignored ``+key``s, overrides the grid would
overwrite, bad grid values) exit with status 2 and one paragraph, in seconds, before Ray starts."""

import sys
import time

import pytest

from sweeps.cli import CONFIG_DIR, main
from sweeps.config import ConfigError
from sweeps.overrides import check_command_line
from sweeps.runner import validate

from .sweep_helpers import prune_sweep

PREFIX = "prune-sweep: invalid configuration: "


def _app(cfg) -> None:
    """Stands in for the Hydra task function (the config path is absolute, so its module does not matter)."""


def _validate_only(cfg: dict) -> None:
    """Stands in for run_sweep: its checks before Ray (``validate``), never the sweep."""
    validate(cfg)
    raise AssertionError("the config was accepted: the sweep would start")


def _check(*argv: str) -> None:
    check_command_line(list(argv), _app, CONFIG_DIR)


def _exit_2(monkeypatch, capsys, *argv: str) -> str:
    """``prune-sweep argv`` in this process: it must exit with status 2 before Hydra runs; returns stderr."""
    monkeypatch.setattr(sys, "argv", ["prune-sweep", *argv])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr("sweeps.runner.run_sweep", _validate_only)
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    assert stop.value.code == 2, err
    assert err.startswith(PREFIX) and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["+prune.learnables_reduction_gaol=0.5"],
            ["+prune.learnables_reduction_gaol=0.5", "did you mean prune.learnables_reduction_goal"],
        ),
        (["model=resnet21"], ["model=resnet21", "did you mean resnet20", "digits_cnn, mnist1d_cnn, resnet20"]),
        (
            ["prune.learnables_reduction_increment=0.05"],
            [
                "the grid of sweep=default sets prune.learnables_reduction_increment in every trial",
                "sweep=single",
                "sweep.grid.prune.learnables_reduction_increment=[0.05]",
            ],
        ),
        (
            ["sweep.grid.prune.learnables_reduction_increment=[0.1,7]"],
            ["sweep.grid.prune.learnables_reduction_increment value 7 (grid axis)"],
        ),
    ],
)
def test_cli_exits_2_in_seconds_before_ray(argv, expected, tmp_path):
    start = time.monotonic()
    result = prune_sweep(*argv, f"output_dir={tmp_path}", cwd=tmp_path, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith(PREFIX) and result.stderr.count("\n") == 1, result.stderr
    assert all(text in result.stderr for text in expected), result.stderr
    assert "Traceback" not in result.stderr + result.stdout and "Ray" not in result.stderr + result.stdout
    assert list(tmp_path.iterdir()) == []  # no sweep folder, database or log
    print(f"{argv}: {time.monotonic() - start:.1f} s")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["+prune.learnables_reduction_gaol=0.5"],
            ["would be ignored", "prune.learnables_reduction_goal", "keys under prune:"],
        ),
        (
            ["prune.learnables_reduction_gaol=0.5"],
            ["prune.learnables_reduction_gaol=0.5", "did you mean prune.learnables_reduction_goal"],
        ),
        (["+prune.learnables_reduction_goal=0.5"], ["already exists", "prune.learnables_reduction_goal=0.5"]),
        (["++prun.criterion=l1"], ["prun.criterion", "did you mean prune.criterion"]),
        (["+data.root=/tmp"], ["data.root", "keys under data:"]),
        (["nme=x"], ["nme=x", "did you mean name"]),
        (["+nme=x"], ["+nme=x", "did you mean name"]),
        (["sweep.grid.prune.criterion=[taylor,l1]"], ["+sweep.grid.prune.criterion=[taylor,l1]"]),
        (["+sweep.grid.prune.nonexistent=[1,2]"], ["sweep.grid.prune.nonexistent", "keys under prune:"]),
        (["+sweep.grid.prune.critrion=[l1]"], ["sweep.grid.prune.critrion", "did you mean prune.criterion"]),
        (["model=resnet21"], ["model=resnet21", "did you mean resnet20", "torchvision"]),
        (["sweep=incremnts"], ["sweep=incremnts", "did you mean increments"]),
        (["--bogus"], ["--bogus", "--help", "--multirun"]),
        (["--multirn"], ["--multirn", "did you mean --multirun"]),
        (["--cfg=jobs"], ["--cfg", "job"]),
        (["prune.layers=[a"], ["prune.layers=[a"]),
        (["prune.criterion=taylor,l1", "sweep=single"], ["prune.criterion=taylor,l1", "--multirun"]),
        (["--config-dir=/nonexistent/confs"], ["/nonexistent/confs"]),
        (
            ["sweep=single", "+sweep.grid.prune.layers=[all,late_convs]", "prune.layers=[no_such_layer]"],
            ["sweep.grid.prune.layers=[all,late_convs]", "sweep.grid.prune.layers=[[no_such_layer]]"],
        ),
        (["sweep=criteria", "prune.criterion=l1"], ["sweep=criteria", "sweep.grid.prune.criterion=[l1]"]),
        (
            ["-m", "sweep=increments", "prune.learnables_reduction_increment=0.05,0.1"],
            ["prune.learnables_reduction_increment=[0.05,0.1]"],
        ),
        # search, budgets and early stopping (issue 20)
        (
            ["sweep=search", "prune.learnables_reduction_goal=0.5"],
            ["samples prune.learnables_reduction_goal in every trial", "~sweep.space.prune.learnables_reduction_goal"],
        ),
        (
            ["sweep=search", "sweep.space.prune.learnables_reduction_goal.type=normal"],
            ["sweep.space.prune.learnables_reduction_goal=", "uniform, loguniform, int, choice"],
        ),
        (
            ["sweep=search", "sweep.space.prune.learnables_reduction_goal.low=0.99"],
            ["sweep.space.prune.learnables_reduction_goal: low=0.99, high=0.99", "low < high"],
        ),
        (
            ["sweep=search", "sweep.space.prune.learnables_reduction_goal.high=1.5"],
            ["sweep.space.prune.learnables_reduction_goal bound 1.5"],
        ),
        (
            ["sweep=search", "+sweep.space.prune.learnables_reduction_increment.low=0.1"],
            ["sweep.space.prune.learnables_reduction_increment: a choice entry takes values", "has low, type, values"],
        ),
        (
            ["sweep=search", "+sweep.space.prune.nonexistent={type:uniform,low:0,high:1}"],
            ["sweep.space.prune.nonexistent", "keys under prune:"],
        ),
        (
            ["sweep=search", "+sweep.space.prune.layers={type:choice,values:[all,middle_convs]}"],
            ["prune.layers", "middle_convs"],
        ),
        (["+sweep.objectives.top5_accuracy=max"], ["sweep.objectives.top5_accuracy is not a metric", "latency_ms"]),
        (["sweep.objectives.learnables=smallest"], ["sweep.objectives.learnables='smallest'", "max or min"]),
        (["+sweep.constraints.max_flops=1e6"], ["sweep.constraints.max_flops is not a budget", "max_macs"]),
        (["+sweep.constraints.max_macs=-1"], ["sweep.constraints.max_macs=-1", "number >= 0"]),
        (["sweep.scheduler=asha", "sweep.scheduler_metric=final_val_accuracy"], ["sweep.scheduler_metric", "val_loss"]),
        (["sweep.scheduler_mode=min"], ["sweep.scheduler_mode", "did you mean sweep.scheduler_metric"]),
        (["sweep.scheduler=hyperband"], ["sweep.scheduler", "none, asha"]),
        (["sweep.reduction_factor=1"], ["sweep.reduction_factor=1", ">= 2"]),
        (["sweep.sampler=cmaes"], ["sweep.sampler", "tpe, nsga2"]),
        (
            ["+sweep.space.prune.criterion={type:choice,values:[l1]}"],
            ["sweep.search=grid does not search", "sweep.search=optuna"],
        ),
        (["sweep.search=optuna"], ["sweep.search=optuna needs a search space", "sweep.space.prune."]),
        (["sweep=search", "sweep.seeds=[0,1]"], ["sweep.seeds=[0, 1]", "single seed"]),
        (["sweep=search", "+sweep.grid.prune.criterion=[l1]"], ["sweep.grid.prune.criterion", "not in sweep.space"]),
        (
            ["sweep=search", "+sweep.grid.prune.learnables_reduction_goal=[0.3]"],
            ["sweep.grid.prune.learnables_reduction_goal value 0.3 is outside sweep.space"],
        ),
        (
            ["sweep=search", "sweep.num_samples=2", "+sweep.grid.prune.learnables_reduction_increment=[0.1,0.2,0.3]"],
            ["sweep.num_samples=2 is fewer than the 3 grid points"],
        ),
        (
            ["sweep=search", "+sweep.grid.prune.learnables_reduction_goal=[0.6]"],
            ["sweep.grid sets no value of prune.learnables_reduction_increment", "every space key"],
        ),
        (["tracking.system_metrics=sometimes"], ["tracking.system_metrics"]),
        (
            ["tracking.register_best=best", "tracking.log_models=false"],
            ["tracking.register_best='best'", "tracking.log_models=true"],
        ),
        (["tracking.register_best=a/b"], ["tracking.register_best='a/b'", "letters, digits"]),
        (
            ["sweep=search", "+sweep.space.finetune.max_epochs={type:uniform,low:1,high:3}"],
            ["sweep.space.finetune.max_epochs: a uniform entry samples floats", "type: int"],
        ),
        (
            ["sweep=search", "+sweep.space.finetune.max_epochs={low:1,high:3}"],
            ["sweep.space.finetune.max_epochs has no type"],
        ),
        (
            [
                "sweep=search",
                "+sweep.space.prune.num_importance_score_iterations={type:int,low:1,high:3}",
                "+sweep.grid.prune.num_importance_score_iterations=[auto]",
            ],
            ["sweep.grid.prune.num_importance_score_iterations value 'auto' is outside"],
        ),
        (["ray.workers_per_trial=0"], ["ray.workers_per_trial=0 is not allowed"]),
        (
            ["ray.workers_per_trial=3", "ray.num_cpus=2"],
            ["ray.workers_per_trial=3 x ray.cpus_per_worker=1 CPUs but the Ray started here would have 2"],
        ),
        (["ray.workers_per_trial=two"], ["ray.workers_per_trial='two' is not allowed"]),
        (["ray.cpus_per_worker=0"], ["ray.cpus_per_worker=0 is not allowed"]),
        (["ray.gpus_per_worker=1.5"], ["ray.gpus_per_worker=1.5 is not allowed", "fraction <= 1"]),
        (
            ["ray.workers_per_trial=2", "ray.gpus_per_trial=1"],
            ["ray.gpus_per_trial=1 with ray.workers_per_trial=2", "ray.gpus_per_worker=0.5"],
        ),
    ],
)
def test_command_line_mistakes_are_one_paragraph(argv, expected, monkeypatch, capsys):
    err = _exit_2(monkeypatch, capsys, *argv)
    assert all(text in err for text in expected), err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        [
            "sweep=increments",
            "+sweep.grid.prune.criterion=[taylor,l1]",
            "sweep.grid.prune.learnables_reduction_increment=[0.05]",
        ],
        ["sweep=single", "prune.learnables_reduction_increment=0.05", "prune.layers=[features.0]"],
        ["sweep=increments", "prune.layers=late_convs", "+model.layer_subsets.mine=[features.0]"],
        ["sweep=single", "model.layer_subsets.late_convs=[features.7]", "++prune.learnables_reduction_goal=0.5"],
        ["+data.cache_dir=/tmp/c", "data=imagefolder", "data.root=/tmp", "model=torchvision"],
        ["--multirun", "sweep=single", "prune.criterion=taylor,l1"],
        ["--cfg", "job", "hydra.job.chdir=false", "hydra.verbose=true"],
        ["--help", "no_such_key=1"],
        ["--hydra-help"],
        ["model=resnet20", "data=cifar10", "name=r20"],
    ],
)
def test_valid_command_lines_pass(argv):
    _check(*argv)


def test_config_dir_and_searchpath_are_honoured(tmp_path, monkeypatch, capsys):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "my_grid.yaml").write_text("grid:\n  prune.criterion: [l1, random]\nseeds: [0]\n")
    _check("--config-dir", str(tmp_path), "sweep=my_grid", "prune.learnables_reduction_increment=0.05")
    _check(f"hydra.searchpath=[file://{tmp_path}]", "sweep=my_grid")
    err = _exit_2(monkeypatch, capsys, "-cd", str(tmp_path), "sweep=my_gird")
    assert "did you mean my_grid" in err, err
    err = _exit_2(monkeypatch, capsys, "--config-dir", str(tmp_path), "sweep=my_grid", "prune.criterion=l1")
    assert "sweep.grid.prune.criterion=[l1,random]" in err and "sweep=my_grid" in err, err


def test_hydra_full_error_shows_the_traceback(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["prune-sweep", "+prune.learnables_reduction_gaol=0.5"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError, match="prune.learnables_reduction_gaol"):
        main()


def test_cli_help_and_cfg_still_work(tmp_path):
    result = prune_sweep("--help", cwd=tmp_path, timeout=120)
    assert result.returncode == 0 and "resnet20" in result.stdout, result.stderr[-2000:]
    result = prune_sweep(
        "--cfg", "job", "sweep=increments", "+sweep.grid.prune.criterion=[taylor,l1]", cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0 and "criterion:\n      - taylor" in result.stdout, result.stderr[-2000:]
