"""The default run, as a user sees it: a short, narrow report that ends with a runnable MLflow
command, and a Pareto front that shows a trade-off."""

import shlex
from pathlib import Path

import pandas as pd
import torch

from prune_core import TrainingOptions
from prune_core.models import DigitsCNN
from prune_core.train import train_network
from sweeps.report import pareto_front, sort_trials
from tests.sweep_helpers import prune_sweep

NOISE = ("Trial status", "Checkpoint successfully", "TensorBoard", "Failed to resolve", "INFO", "Configuration for")


def test_default_run_prints_at_most_40_narrow_lines_ending_with_the_mlflow_command(tmp_path):
    result = prune_sweep(f"output_dir={tmp_path / 'out'}", cwd=tmp_path, timeout=900)  # about 1.5 min
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (result.stdout + result.stderr).rstrip("\n").splitlines()
    assert len(lines) <= 40, "\n".join(lines)
    folder_line = next(i for i, line in enumerate(lines) if line.startswith("Sweep folder:"))
    tables = lines[lines.index("Trials (best val_accuracy first):") : folder_line]
    assert len(tables) >= 6 + 4 and max(map(len, tables)) <= 120, "\n".join(tables)  # paths may be longer
    assert not [line for line in lines if any(noise in line for noise in NOISE)], "\n".join(lines)
    assert sum(line.strip().startswith("done ") for line in lines) == 6  # one line per finished trial
    _best_model_works(lines)
    command, page = lines[-2], lines[-1]
    assert command.startswith("MLflow: ") and "--backend-store-uri sqlite:///" in command
    program = shlex.split(command.removeprefix("MLflow: "))[0]
    assert Path(program).is_file(), program  # this environment's own mlflow, not whatever is on PATH
    assert page.strip().startswith("then open http://127.0.0.1:5000/#/experiments/") and page.endswith("/runs")
    _front_spans_a_trade_off(tmp_path / "out")


def _best_model_works(lines: list[str]) -> None:
    """The printed calls that load the best model, from its file and from MLflow, run as pasted (with no
    MLflow store set): eval inference, a training step, on any batch."""
    import prune_core

    start = next(i for i, line in enumerate(lines) if line.startswith("Best pruned model: "))
    calls = [line.split(": ", 1)[-1].strip().removeprefix("load it with ") for line in lines[start + 1 : start + 3]]
    assert [call.split("(")[0] for call in calls] == ["prune_core.load_pruned"] * 2, calls
    assert "runs:/" in calls[1] and "tracking_uri=" in calls[1], calls
    x = torch.randn(5, 1, 8, 8)
    for call in calls:
        model = eval(call, {"prune_core": prune_core})
        assert not model.training and model(x).shape == (5, 10)
        model.train()
        torch.nn.functional.cross_entropy(model(x), torch.arange(5)).backward()
        assert all(p.grad is not None for p in model.parameters())


def _front_spans_a_trade_off(output_dir: Path) -> None:
    """At least 3 trials on the front, 2 points of accuracy and 15 of reduction apart (measured 2026-12-02: 4 trials,
    86.1 to 98.9% accuracy, 60.1 to 99.2% fewer learnables), rows in the report's order."""
    (trials,) = (output_dir / "digits_default").glob("*/trials.csv")
    table = pd.read_csv(trials)
    assert len(table) == 6 and table["trial"].tolist() == sort_trials(table, "val_accuracy", "max")["trial"].tolist()
    front = pareto_front(table)
    accuracy, reduction = front["val_accuracy"], front["reduction"]
    assert len(front) >= 3, front
    assert accuracy.max() - accuracy.min() >= 2 and reduction.max() - reduction.min() >= 0.15, front


def test_training_reports_each_epoch_mean_loss(digits):
    x_train, y_train, _, _ = digits
    seen: list[tuple[int, float]] = []
    options = TrainingOptions(max_epochs=3, mini_batch_size=128, initial_learn_rate=0.05)
    train_network(DigitsCNN(width=8), (x_train, y_train), "crossentropy", options, lambda *report: seen.append(report))
    assert [epoch for epoch, _ in seen] == [0, 1, 2]
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in seen) and seen[-1][1] < seen[0][1]


def test_trial_line_shows_grid_values_that_look_like_markup():
    from sweeps.console import TrialProgress, console

    progress = TrialProgress(1)
    progress.trial_started("t")
    with console.capture() as captured:
        result = {"final_val_accuracy": 99.0, "final_reduction": 0.5}
        progress.trial_finished("t", {"prune.layers": "[conv1]"}, result, error=False)
    assert "layers=[conv1]: 50.0% fewer learnables, val acc 99.00%" in captured.get()
