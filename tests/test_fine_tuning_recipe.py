"""The fine-tuning recipe: cosine schedule, final fine-tuning, optimizer state carried across compaction."""

import math

import pytest
import torch
import torch.nn.functional as F

from prune_core import TaylorPrunableNetwork, TrainingOptions, compress_network
from prune_core.models import DigitsCNN, resnet20
from prune_core.optimizer_state import carried_optimizer
from prune_core.results import DIVERGED, GOAL_REACHED, MAX_COMPRESSION, THRESHOLD_EXCEEDED
from prune_core.spaces import element_mask

INIT, FLOOR = 0.02, 0.002


def _options(digits, **kw) -> TrainingOptions:
    _, _, x_val, y_val = digits
    base = dict(
        mini_batch_size=64,
        initial_learn_rate=INIT,
        learn_rate_schedule="cosine",
        learn_rate_floor=FLOOR,
        validation_data=(x_val, y_val),
        validation_frequency=10**9,
    )
    return TrainingOptions(**{**base, **kw})


def _compress(trained, digits, samples=512, options=None, **kw):
    x_train, y_train, _, _ = digits
    kw = {"learnables_reduction_goal": 0.3, "learnables_reduction_increment": 0.15, "verbosity_level": "off", **kw}
    return compress_network(trained, (x_train[:samples], y_train[:samples]), "crossentropy", options, **kw)


def _cosine(step: int, total: int, init: float = INIT, floor: float = FLOOR) -> float:
    return floor + (init - floor) * 0.5 * (1 + math.cos(math.pi * step / total))


def test_cosine_schedule_per_mini_batch_restarts_every_iteration(digits, trained):
    _, info = _compress(trained, digits, options=_options(digits, max_epochs=2))
    history = info.training_history
    steps = 2 * 512 // 64  # 16 mini-batches per pruning iteration
    assert history["pruning_iteration"].max() == 2
    for _, rates in history.groupby("pruning_iteration")["learn_rate"]:
        rates = rates.tolist()
        assert len(rates) == steps
        assert rates[0] == pytest.approx(INIT)  # first step
        assert rates[steps // 2] == pytest.approx((INIT + FLOOR) / 2)  # middle step
        assert rates[-1] == pytest.approx(_cosine(steps - 1, steps))  # last step, one short of the floor
        assert rates == pytest.approx([_cosine(k, steps) for k in range(steps)])


def test_warm_up_is_linear_then_cosine(digits, trained):
    _, info = _compress(trained, digits, options=_options(digits, max_epochs=2, warmup_fraction=0.25))
    rates = info.training_history.query("pruning_iteration == 1")["learn_rate"].tolist()
    warmup, steps = 4, 16
    assert rates[:warmup] == pytest.approx([INIT * (k + 1) / (warmup + 1) for k in range(warmup)])
    assert rates[warmup:] == pytest.approx([_cosine(k, steps - warmup) for k in range(steps - warmup)])


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({}, GOAL_REACHED),
        ({"learnables_reduction_goal": None, "learnables_reduction_increment": 0.45}, MAX_COMPRESSION),
        ({"validation_threshold": 100.1, "learnables_reduction_increment": 0.5}, THRESHOLD_EXCEEDED),
    ],
)
def test_final_fine_tuning_runs_after_every_stop_reason_but_divergence(digits, trained, kwargs, reason):
    options = _options(digits, learn_rate_schedule="none", objective_metric_name="accuracy")
    results = []
    pruned, info = _compress(
        trained, digits, options=options, final_fine_tuning_epochs=2, callbacks=[results.append], **kwargs
    )
    assert info.stop_reason == reason
    history, training = info.pruning_history, info.training_history
    final = training[training["phase"] == "final"]
    steps = 512 // 64
    assert final["epoch"].tolist() == [1] * steps + [2] * steps
    # its own cosine from the initial rate to the floor over both epochs, whatever the loop's schedule
    assert final["learn_rate"].tolist() == pytest.approx([_cosine(k, 2 * steps) for k in range(2 * steps)])
    assert set(training.loc[training["phase"] == "prune", "learn_rate"]) == {INIT}
    last = history.iloc[-1]
    assert last["phase"] == "final" and (history["phase"] == "final").sum() == 1
    assert last["iteration"] == info.pruning_iterations + 1 == final["pruning_iteration"].iloc[0]
    assert last["learnables"] == info.learnables == sum(p.numel() for p in pruned.parameters())
    x_val, y_val = digits[2:]
    with torch.no_grad():
        accuracy = 100 * (pruned.eval()(x_val).argmax(1) == y_val).float().mean().item()
    assert accuracy == pytest.approx(last["val_accuracy"], abs=1e-4)  # the row validates the returned network
    assert results[-1].row["phase"] == "final" and len(results[-1].training_rows) == 2 * steps


def test_no_final_fine_tuning_after_divergence(digits, trained):
    calls = {"n": 0}

    def flaky_loss(out, target):
        calls["n"] += 1
        loss = F.cross_entropy(out, target)
        return loss * float("nan") if calls["n"] > 30 else loss

    x_train, y_train, _, _ = digits
    _, info = compress_network(
        trained,
        (x_train[:512], y_train[:512]),
        flaky_loss,
        _options(digits, validation_data=None),
        learnables_reduction_increment=0.1,
        num_importance_score_iterations=2,
        final_fine_tuning_epochs=2,
        verbosity_level="off",
    )
    assert info.stop_reason == DIVERGED
    assert set(info.training_history["phase"]) == {"prune"} and set(info.pruning_history["phase"]) == {"prune"}


@pytest.mark.parametrize("carry", [False, True])
def test_resume_from_a_checkpoint_written_during_final_fine_tuning(digits, trained, tmp_path, carry):
    options = _options(
        digits, solver="adam", initial_learn_rate=1e-3, learn_rate_floor=0.0, carry_optimizer_state=carry
    )
    full, full_info = _compress(
        trained, digits, options=options, final_fine_tuning_epochs=3, pruning_checkpoint_path=tmp_path
    )
    checkpoint = tmp_path / "final_epoch_001.pt"
    assert checkpoint.is_file() and (tmp_path / "final_epoch_003.pt").is_file()
    resumed, resumed_info = _compress(
        trained, digits, options=options, final_fine_tuning_epochs=3, resume_from=checkpoint
    )
    assert resumed_info.training_history.drop(columns="loss").equals(full_info.training_history.drop(columns="loss"))
    assert resumed_info.pruning_history.drop(columns="wall_time_s").equals(
        full_info.pruning_history.drop(columns="wall_time_s")
    )
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_resume_with_carried_optimizer_state_ends_like_an_uninterrupted_run(digits, trained, tmp_path):
    options = _options(digits, solver="sgdm", carry_optimizer_state=True)
    kwargs = dict(learnables_reduction_goal=0.45, pruning_checkpoint_path=tmp_path)
    full, full_info = _compress(trained, digits, options=options, **kwargs)
    assert full_info.pruning_iterations == 3
    resumed, resumed_info = _compress(
        trained,
        digits,
        options=options,
        learnables_reduction_goal=0.45,
        resume_from=tmp_path / "pruning_iteration_001.pt",
    )
    assert full_info.pruning_history["learnables"].tolist() == resumed_info.pruning_history["learnables"].tolist()
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("solver", ["sgdm", "adam"])
def test_carried_optimizer_state_is_the_old_state_sliced_to_the_kept_channels(solver):
    torch.manual_seed(0)
    pnet = TaylorPrunableNetwork(resnet20().train(), torch.randn(1, 3, 16, 16), criterion="l1", group_reduction="mean")
    options = TrainingOptions(solver=solver, initial_learn_rate=1e-3)
    optimizer = torch.optim.SGD(pnet.parameters(), lr=1e-3, momentum=0.9)
    if solver == "adam":
        optimizer = torch.optim.Adam(pnet.parameters(), lr=1e-3)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    for _ in range(2):
        optimizer.zero_grad()
        F.cross_entropy(pnet(x), y).backward()
        optimizer.step()
    old_state = {name: {k: v.clone() for k, v in optimizer.state[p].items()} for name, p in pnet.named_parameters()}
    keep = pnet.unit_masks()
    for mask in keep:  # every third unit of every group, so a residual stage loses channels too
        mask[::3] = False
    pnet.set_unit_masks(keep)
    residual = max(pnet.layer_groups, key=len)  # a stage's coupled residual convs (and its shortcut)
    masks = pnet.filter_masks()
    assert len(residual) > 2 and not masks[residual[0]].all()
    compact = pnet.compacted(torch.randn(1, 3, 16, 16))
    carried = carried_optimizer(optimizer, pnet, compact, options)
    assert type(carried) is type(optimizer)
    new_params = dict(compact.named_parameters())
    assert len(carried.state) == len(new_params)
    # one sliced conv checked by hand: the kept output filters of a residual conv, and its kept input channels
    name = f"model.{residual[1]}.weight"
    conv_in = pnet.graph.layers[residual[1]].in_layout
    kept_out = masks[residual[1]].nonzero().flatten()
    kept_in = torch.nonzero(element_mask(conv_in, pnet.graph.spaces, pnet._unit_masks())).flatten()
    key = "momentum_buffer" if solver == "sgdm" else "exp_avg"
    expected = old_state[name][key][kept_out][:, kept_in]
    assert torch.equal(carried.state[new_params[name]][key], expected)
    # every kept parameter: each state tensor is the old one sliced exactly as the parameter was
    for pname, param in new_params.items():
        for key, value in carried.state[param].items():
            old = old_state[pname][key]
            if value.dim() == 0:
                assert torch.equal(value, old)  # Adam's step count
                continue
            assert value.shape == param.shape
            index = [torch.arange(n) for n in old.shape]
            for dim, kept in pnet.kept_slices().get(pname, []):
                index[dim] = kept
            assert torch.equal(value, old[torch.meshgrid(*index, indexing="ij")])


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"learn_rate_floor": 0.5}, "learn_rate_floor=0.5 is above initial_learn_rate"),
        ({"learn_rate_floor": -0.001}, "learn_rate_floor"),
        ({"warmup_fraction": 1.0}, "warmup_fraction"),
        ({"warmup_fraction": -0.1}, "warmup_fraction"),
        ({"learn_rate_schedule": "linear"}, "learn_rate_schedule"),
        ({"carry_optimizer_state": "yes"}, "carry_optimizer_state"),
    ],
)
def test_bad_recipe_options_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f"TrainingOptions.{key}"):
        TrainingOptions(initial_learn_rate=0.01, **kwargs)


def test_negative_final_fine_tuning_epochs_fail_before_training(digits):
    with pytest.raises(ValueError, match="final_fine_tuning_epochs=-1"):
        compress_network(DigitsCNN(width=4), digits[:2], final_fine_tuning_epochs=-1, verbosity_level="off")
