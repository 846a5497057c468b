"""compress_network: accuracy on real digits, stop reasons, checkpoints, determinism, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from prune_core import TaylorPrunableNetwork, TrainingOptions, compress_network
from prune_core.finetune import scored_fine_tuning_steps
from prune_core.models import DigitsCNN
from prune_core.results import (
    DIVERGED,
    GOAL_REACHED,
    MAX_COMPRESSION,
    THRESHOLD_EXCEEDED,
)
from prune_core.train import train_network


def _accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return 100 * (model(x).argmax(1) == y).float().mean().item()


def _options(digits, **kw):
    _, _, x_val, y_val = digits
    base = dict(mini_batch_size=64, initial_learn_rate=0.01, validation_data=(x_val, y_val), validation_frequency=10)
    return TrainingOptions(**{**base, **kw})


def test_goal_half_keeps_accuracy_and_fills_histories(digits, trained):
    x_train, y_train, x_val, y_val = digits
    pruned, info = compress_network(
        trained,
        (x_train, y_train),
        "crossentropy",
        _options(digits),
        learnables_reduction_goal=0.5,
        learnables_reduction_increment=0.1,
        verbosity_level="off",
    )
    original = sum(p.numel() for p in trained.parameters())
    assert sum(p.numel() for p in pruned.parameters()) <= 0.5 * original
    assert info.stop_reason == GOAL_REACHED and info.reduction >= 0.5
    assert _accuracy(pruned, x_val, y_val) >= _accuracy(trained, x_val, y_val) - 2.0
    history = info.pruning_history
    assert list(history["iteration"]) == list(range(len(history))) and history["learnables"].iloc[0] == original
    assert {"learnables", "reduction", "filters_removed", "val_loss", "val_accuracy", "wall_time_s"} <= set(history)
    assert {"iteration", "pruning_iteration", "epoch", "loss", "accuracy", "learn_rate"} <= set(info.training_history)
    assert len(info.training_history) == (len(history) - 1) * math.ceil(len(y_train) / 64)
    assert {"iteration", "pruning_iteration", "val_loss", "val_accuracy"} <= set(info.validation_history)
    assert "classifier" in info.pruned_layers and "features.0" in info.pruned_layers


def test_without_goal_prunes_to_maximum_compression(digits, trained):
    x_train, y_train, _, _ = digits
    pruned, info = compress_network(
        trained,
        (x_train[:256], y_train[:256]),
        "crossentropy",
        _options(digits, validation_data=None),
        learnables_reduction_increment=0.3,
        num_importance_score_iterations=2,
        verbosity_level="off",
    )
    assert info.stop_reason == MAX_COMPRESSION
    assert [pruned.features[i].out_channels for i in (0, 3, 7)] == [1, 1, 1]


def test_validation_threshold_returns_last_network_within_it(digits, trained):
    x_train, y_train, _, _ = digits
    pruned, info = compress_network(
        trained,
        (x_train, y_train),
        "crossentropy",
        _options(digits, objective_metric_name="accuracy"),
        learnables_reduction_increment=0.5,
        validation_threshold=100.1,
        verbosity_level="off",
    )
    assert info.stop_reason == THRESHOLD_EXCEEDED
    assert info.learnables == sum(p.numel() for p in trained.parameters())


def test_divergence_stops_with_the_last_good_network(digits, trained):
    x_train, y_train, _, _ = digits
    calls = {"n": 0}

    def flaky_loss(out, target):
        calls["n"] += 1
        loss = F.cross_entropy(out, target)
        return loss * float("nan") if calls["n"] > 60 else loss

    pruned, info = compress_network(
        trained,
        (x_train, y_train),
        flaky_loss,
        _options(digits, validation_data=None),
        learnables_reduction_increment=0.1,
        num_importance_score_iterations=2,
        verbosity_level="off",
    )
    assert info.stop_reason == DIVERGED
    history = info.pruning_history
    # the diverged iteration left no row; the result is the last completed iteration's network
    assert len(history) >= 2 and info.learnables == history["learnables"].iloc[-1]
    assert info.training_history["pruning_iteration"].max() == len(history)


def test_resume_from_checkpoint_ends_like_an_uninterrupted_run(digits, trained, tmp_path):
    x_train, y_train, _, _ = digits
    kwargs = dict(learnables_reduction_goal=0.4, learnables_reduction_increment=0.15, verbosity_level="off")
    data = (x_train[:512], y_train[:512])
    results = []
    full, full_info = compress_network(
        trained,
        data,
        "crossentropy",
        _options(digits),
        **kwargs,
        pruning_checkpoint_path=tmp_path,
        callbacks=[results.append],
    )
    # callbacks see each iteration's rows and its checkpoint, already written
    assert [r.row["iteration"] for r in results] == full_info.pruning_history["iteration"].tolist()[1:]
    for r in results:
        assert r.checkpoint.is_file() and r.checkpoint.name == f"pruning_iteration_{r.row['iteration']:03d}.pt"
        assert {t["pruning_iteration"] for t in r.training_rows} == {r.row["iteration"]}
        assert len(r.training_rows) == len(data[0]) // 64 + (len(data[0]) % 64 > 0)
    checkpoint = tmp_path / "pruning_iteration_001.pt"
    assert checkpoint.is_file() and (tmp_path / "latest.pt").is_file()
    resumed, resumed_info = compress_network(
        trained, data, "crossentropy", _options(digits), **kwargs, resume_from=checkpoint
    )
    assert full_info.pruning_history["learnables"].tolist() == resumed_info.pruning_history["learnables"].tolist()
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_same_seed_same_result(digits, trained):
    x_train, y_train, _, _ = digits
    runs = [
        compress_network(
            trained,
            (x_train[:512], y_train[:512]),
            "crossentropy",
            _options(digits),
            learnables_reduction_goal=0.3,
            verbosity_level="off",
        )
        for _ in range(2)
    ]
    (a, info_a), (b, info_b) = runs
    assert info_a.pruning_history.drop(columns="wall_time_s").equals(info_b.pruning_history.drop(columns="wall_time_s"))
    for ta, tb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(ta, tb)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"learnables_reduction_goal": 1.5}, "learnables_reduction_goal=1.5"),
        ({"learnables_reduction_goal": 0}, "learnables_reduction_goal=0"),
        ({"learnables_reduction_increment": -0.1}, "learnables_reduction_increment=-0.1"),
        ({"num_importance_score_iterations": 0}, "num_importance_score_iterations=0 .* positive integer or 'auto'"),
        ({"num_importance_score_iterations": "some"}, "num_importance_score_iterations='some'"),
        ({"loss_fn": "hinge"}, "loss_fn='hinge'"),
        ({"layer_names": ["features.99"]}, "Valid layer names"),
        ({"pruning_checkpoint_path": "/nonexistent/folder"}, "pruning_checkpoint_path"),
        ({"criterion": "fisher"}, "criterion='fisher'"),
        ({"group_reduction": "max"}, "group_reduction='max'"),
        ({"verbosity_level": "loud"}, "verbosity_level='loud'"),
    ],
)
def test_bad_arguments_fail_before_training(digits, kwargs, message):
    x_train, y_train, _, _ = digits
    model = DigitsCNN(width=4)
    loss = kwargs.pop("loss_fn", "crossentropy")
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        compress_network(model, (x_train, y_train), loss, _options(digits), **kwargs)


def test_threshold_without_validation_data_is_rejected(digits):
    x_train, y_train, _, _ = digits
    with pytest.raises(ValueError, match="validation_threshold needs options.validation_data"):
        compress_network(
            DigitsCNN(width=4), (x_train, y_train), "crossentropy", TrainingOptions(), validation_threshold=0.5
        )


def test_piecewise_schedule_restarts_with_every_pruning_iteration(digits, trained):
    x_train, y_train, _, _ = digits
    options = _options(
        digits, max_epochs=3, learn_rate_schedule="piecewise", learn_rate_drop_period=2, learn_rate_drop_factor=0.5
    )
    _, info = compress_network(
        trained,
        (x_train[:256], y_train[:256]),
        "crossentropy",
        options,
        learnables_reduction_goal=0.3,
        learnables_reduction_increment=0.15,
        verbosity_level="off",
    )
    rates = info.training_history.groupby(["pruning_iteration", "epoch"])["learn_rate"].unique()
    assert info.training_history["pruning_iteration"].max() == 2
    assert {key: list(value) for key, value in rates.items()} == {
        (i, epoch): [0.01 if epoch < 3 else 0.005] for i in (1, 2) for epoch in (1, 2, 3)
    }


def test_train_network_follows_the_schedule(digits):
    x_train, y_train, _, _ = digits
    model = DigitsCNN(width=4)
    options = TrainingOptions(
        mini_batch_size=512, max_epochs=4, learn_rate_schedule="piecewise", learn_rate_drop_period=1, device="cpu"
    )
    optimizer_rates = []
    original_step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        optimizer_rates.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.optim.SGD, "step", recording_step)
        train_network(model, (x_train, y_train), "crossentropy", options)
    per_epoch = math.ceil(len(y_train) / 512)
    expected = [0.01 * 0.1**epoch for epoch in range(4) for _ in range(per_epoch)]
    assert optimizer_rates == pytest.approx(expected)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("solver", "lbfgs"),
        ("mini_batch_size", -1),
        ("initial_learn_rate", -1),
        ("learn_rate_schedule", "linear"),
        ("learn_rate_drop_factor", 1.5),
        ("learn_rate_drop_period", 0),
    ],
)
def test_bad_training_options(field, value):
    with pytest.raises(ValueError, match=f"TrainingOptions.{field}"):
        TrainingOptions(**{field: value})


def test_channel_multiple_reaches_the_goal_with_conv_widths_in_multiples(digits, trained):
    pruned, info = compress_network(
        trained,
        digits[:2],
        "crossentropy",
        _options(digits),
        learnables_reduction_goal=0.5,
        learnables_reduction_increment=0.25,
        channel_multiple=8,
        verbosity_level="off",
    )
    assert info.stop_reason == GOAL_REACHED and info.reduction >= 0.5
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(w % 8 == 0 for w in widths) and sum(widths) < sum(
        m.out_channels for m in trained.modules() if isinstance(m, torch.nn.Conv2d)
    )


@pytest.mark.parametrize(
    ("total_steps", "score_batches", "scored"), [(8, 8, 4), (15, 8, 7), (16, 8, 8), (228, 57, 57), (1, 57, 0)]
)
def test_fine_tuning_scores_only_its_second_half(total_steps, score_batches, scored):
    assert scored_fine_tuning_steps(total_steps, score_batches) == scored


@pytest.mark.parametrize(("samples", "epochs", "scored"), [(512, 1, 4), (512, 2, 8), (64, 1, 0)])
def test_scores_never_come_from_the_steps_right_after_pruning(digits, trained, monkeypatch, samples, epochs, scored):
    """Batches of 64 and "auto" score windows (every batch of an epoch): 512 samples and 1 epoch
    score the last 4 of 8 steps, 2 epochs the whole second epoch; with a single fine-tuning step
    nothing is scored during it, and the fine-tuned network is scored in a separate pass with the
    weights it is pruned with."""
    x_train, y_train, _, _ = digits
    events = []

    def spy(cls, name, snapshot):
        method = getattr(cls, name)

        def wrapped(self, *args, **kwargs):
            events.append((name, [p.detach().clone() for p in self.parameters()] if snapshot else None))
            return method(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapped)

    for name in ("update_score", "score_on_backward", "prune_to_learnables"):
        spy(TaylorPrunableNetwork, name, snapshot=True)
    spy(torch.optim.SGD, "step", snapshot=False)
    _, info = compress_network(
        trained,
        (x_train[:samples], y_train[:samples]),
        "crossentropy",
        _options(digits, max_epochs=epochs),
        learnables_reduction_goal=0.4,
        learnables_reduction_increment=0.1,
        verbosity_level="off",
    )
    names = [name for name, _ in events]
    prunes = [i for i, name in enumerate(names) if name == "prune_to_learnables"]
    assert len(prunes) == len(info.pruning_history) - 1 >= 3
    steps = epochs * samples // 64
    for start, prune in zip(prunes[:-1], prunes[1:], strict=True):  # fine-tuning, then the next pruning step
        if scored:
            assert names[start + 1 : prune] == ["step"] * (steps - scored) + ["score_on_backward", "step"] * scored
        else:
            assert names[start + 1 : prune] == ["step"] * steps + ["update_score"] * min(samples // 64, 100)
            seen, pruned_with = events[prune - 1][1], events[prune][1]
            assert all(torch.equal(a, b) for a, b in zip(seen, pruned_with, strict=True))


def test_every_keyword_argument_of_compress_network_is_a_pruning_setting_with_its_default():
    import inspect
    from dataclasses import fields

    from prune_core.pruning_settings import PruningSettings

    keywords = {
        name: p.default
        for name, p in inspect.signature(compress_network).parameters.items()
        if p.kind == p.KEYWORD_ONLY
    }
    assert keywords == {f.name: f.default for f in fields(PruningSettings)}
