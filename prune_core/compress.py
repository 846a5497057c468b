"""compress_network: the iterative prune / fine-tune loop (MATLAB's compressNetworkUsingTaylorPruning)."""

from __future__ import annotations

import io
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from prune_core import importance
from prune_core.checks import fraction, one_of, positive_int, writable_folder
from prune_core.options import HIGHER_IS_BETTER, TrainingOptions
from prune_core.prunable import TaylorPrunableNetwork
from prune_core.train import (
    as_loader,
    batch_metrics,
    check_data,
    evaluate,
    make_optimizer,
    make_scheduler,
    resolve_loss,
)

VERBOSITY = ("summary", "pruning", "training", "off")
PLOTS = ("none", "pruning-progress")
GOAL_REACHED = "Learnables reduction goal reached."
MAX_COMPRESSION = "Maximum compression reached."
THRESHOLD_EXCEEDED = "Validation threshold exceeded."
DIVERGED = "Training diverged."


@dataclass
class PruningInfo:
    """Histories and outcome of a :func:`compress_network` run (MATLAB's ``info``)."""

    pruning_history: pd.DataFrame
    training_history: pd.DataFrame
    validation_history: pd.DataFrame
    pruned_layers: list[str]
    stop_reason: str
    original_learnables: int
    learnables: int
    figure: Any = None

    @property
    def reduction(self) -> float:
        """Achieved share of the original learnables removed."""
        return 1.0 - self.learnables / self.original_learnables


@dataclass(frozen=True)
class IterationResult:
    """What :func:`compress_network` passes to its callbacks after each pruning iteration."""

    row: dict
    """This iteration's pruning-history row."""
    training_rows: list[dict]
    """This iteration's fine-tuning mini-batch rows (training-history rows)."""
    validation_rows: list[dict]
    """This iteration's validation rows."""
    checkpoint: Path | None
    """The checkpoint written after this iteration, if one was."""


@dataclass
class _State:
    """Everything a checkpoint needs to continue a run."""

    iteration: int = 0
    global_step: int = 0
    pruning_rows: list[dict] = field(default_factory=list)
    training_rows: list[dict] = field(default_factory=list)
    validation_rows: list[dict] = field(default_factory=list)
    stop_reason: str | None = None


def compress_network(
    model: nn.Module,
    train_data: Any,
    loss_fn: str | Callable = "crossentropy",
    options: TrainingOptions | None = None,
    *,
    learnables_reduction_goal: float | None = None,
    learnables_reduction_increment: float = 0.05,
    num_importance_score_iterations: int | str = "auto",
    layer_names: Sequence[str] | None = None,
    criterion: str = "taylor",
    channel_multiple: int = 1,
    group_reduction: str = "sum",
    validation_threshold: float | None = None,
    pruning_checkpoint_path: str | Path | None = None,
    pruning_checkpoint_frequency: int = 1,
    verbosity_level: str = "summary",
    plots: str = "none",
    callbacks: Sequence[Callable[[IterationResult], None]] = (),
    resume_from: str | Path | None = None,
) -> tuple[nn.Module, PruningInfo]:
    """Prune ``model``'s conv filters iteratively by Taylor importance, fine-tuning in between.

    Each pruning iteration removes the lowest-ranked filters until at least
    ``learnables_reduction_increment`` x the original learnables are gone (or the goal is
    reached), fine-tunes for ``options.max_epochs`` and validates. Importance scores are
    accumulated on the last ``num_importance_score_iterations`` fine-tuning mini-batches of the
    previous iteration, but never on the first half of its fine-tuning, while the network
    recovers from the pruning step (and before the first iteration, on a scoring pass without
    weight updates).
    Fine-tuning runs on the physically smaller network: the pruned filters are cut out after
    every pruning step.
    Returns the physically smaller network and a :class:`PruningInfo`. ``callbacks`` are called
    after every pruning iteration (and after its checkpoint is written) with an
    :class:`IterationResult`. ``resume_from`` continues from a checkpoint file written to
    ``pruning_checkpoint_path``. ``channel_multiple`` makes every pruned group keep a multiple of
    that many filters, and ``group_reduction`` combines a coupled group's layer scores by
    ``"sum"`` or ``"mean"`` (see TaylorPrunableNetwork).
    """
    options = options or TrainingOptions()
    loss = resolve_loss(loss_fn)
    _check_arguments(
        train_data,
        options,
        learnables_reduction_goal,
        learnables_reduction_increment,
        num_importance_score_iterations,
        validation_threshold,
        pruning_checkpoint_path,
        pruning_checkpoint_frequency,
        verbosity_level,
        plots,
        criterion,
        group_reduction,
        resume_from,
    )
    device = options.resolved_device()
    if options.seed is not None:
        torch.manual_seed(options.seed)
    train_loader = as_loader(train_data, options, train=True)
    val_loader = None if options.validation_data is None else as_loader(options.validation_data, options, train=False)
    example = next(iter(train_loader))[0][:1]
    device_example = example.to(device)  # for tracing the compacted networks
    record = TaylorPrunableNetwork(
        model,
        example,
        layer_names=layer_names,
        criterion=criterion,
        channel_multiple=channel_multiple,
        group_reduction=group_reduction,
    )
    original = record.learnables
    max_reduction = 1.0 - record.minimum_learnables() / original
    goal = min(learnables_reduction_goal or max_reduction, max_reduction)
    score_batches = (
        min(100, len(train_loader))
        if num_importance_score_iterations == "auto"
        else min(num_importance_score_iterations, len(train_loader))
    )
    log = _Printer(verbosity_level, options.verbose_frequency)
    state = _State()
    if resume_from is not None:
        pnet, state = _load_checkpoint(Path(resume_from), record, device_example, train_loader)
        log.line(f"Resumed from {resume_from} at pruning iteration {state.iteration}.")
    else:
        pnet = record.to(device)  # the first pruning step masks the record itself, then compacts
        state.pruning_rows.append(
            _pruning_row(0, pnet, original, {}, _validate(pnet, val_loader, loss, options, device))
        )
        log.line(f"Original network: {original} learnables, {pnet.num_prunables} prunable filters.")
    good = _Snapshot.of(pnet, record)

    objective = options.objective_metric_name
    while state.stop_reason is None:
        reduction = 1.0 - pnet.learnables / original
        if reduction >= goal - 1e-12 and learnables_reduction_goal is not None and goal < max_reduction:
            state.stop_reason = GOAL_REACHED
            break
        if pnet.num_prunables == 0 or reduction >= max_reduction - 1e-12:
            state.stop_reason = MAX_COMPRESSION
            break
        start = time.perf_counter()
        state.iteration += 1
        if criterion == "taylor" and not pnet.has_scores:
            _score_pass(pnet, train_loader, loss, score_batches, device)
        widths = _widths(pnet)
        target = max(pnet.learnables - learnables_reduction_increment * original, original * (1.0 - goal))
        pnet.prune_to_learnables(math.floor(target))
        removed = {name: widths[name] - w for name, w in _widths(pnet).items() if widths[name] != w}
        if pnet is not record:
            record.record_pruning_of(pnet)
        pnet = pnet.compacted(device_example)  # fine-tune the physically smaller network
        diverged = _fine_tune(pnet, train_loader, val_loader, loss, options, device, state, score_batches, log)
        if diverged:
            pnet = good.restore(record)
            state.stop_reason = DIVERGED
            break
        val = _validate(pnet, val_loader, loss, options, device)
        row = _pruning_row(state.iteration, pnet, original, removed, val, time.perf_counter() - start)
        state.pruning_rows.append(row)
        log.line(
            f"Pruning iteration {state.iteration}: {row['learnables']} learnables "
            f"({100 * row['reduction']:.1f}% fewer)" + "".join(f", val {k} {v:.4g}" for k, v in val.items()),
            level="pruning",
        )
        log.progress(row["reduction"], goal, state.iteration)
        if validation_threshold is not None and _exceeds(val[objective], validation_threshold, objective):
            pnet = good.restore(record)
            state.stop_reason = THRESHOLD_EXCEEDED
        else:
            good = _Snapshot.of(pnet, record)
        checkpoint = None
        if pruning_checkpoint_path and state.iteration % pruning_checkpoint_frequency == 0:
            checkpoint = _save_checkpoint(Path(pruning_checkpoint_path), pnet, record, state, train_loader)
        result = IterationResult(
            row=dict(row),
            training_rows=[r for r in state.training_rows if r["pruning_iteration"] == state.iteration],
            validation_rows=[r for r in state.validation_rows if r["pruning_iteration"] == state.iteration],
            checkpoint=checkpoint,
        )
        for callback in callbacks:
            callback(result)

    pruned = pnet.to_module()
    info = _info(pnet, pruned, model, state, original)
    if plots == "pruning-progress":
        from prune_core.plots import pruning_progress_figure

        info.figure = pruning_progress_figure(info)
        if pruning_checkpoint_path:
            info.figure.savefig(Path(pruning_checkpoint_path) / "pruning_progress.png", dpi=120)
    log.summary(info)
    return pruned, info


# -- argument checks -------------------------------------------------------------------------


def _check_arguments(
    train_data,
    options,
    goal,
    increment,
    score_iterations,
    threshold,
    checkpoint_path,
    checkpoint_frequency,
    verbosity,
    plots,
    criterion,
    group_reduction,
    resume_from,
) -> None:
    check_data("train_data", train_data)
    if options.validation_data is not None:
        check_data("options.validation_data", options.validation_data)
    if goal is not None:
        fraction("learnables_reduction_goal", goal)
    fraction("learnables_reduction_increment", increment)
    if score_iterations != "auto":
        try:
            positive_int("num_importance_score_iterations", score_iterations)
        except ValueError as err:
            raise ValueError(f"{err.args[0][:-1]} or 'auto'.") from None
    if threshold is not None and options.validation_data is None:
        raise ValueError(
            "validation_threshold needs options.validation_data: set TrainingOptions(validation_data=...)."
        )
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        raise ValueError(f"validation_threshold={threshold!r} is not allowed; use a number or None.")
    if checkpoint_path is not None:
        writable_folder("pruning_checkpoint_path", Path(checkpoint_path))
    positive_int("pruning_checkpoint_frequency", checkpoint_frequency)
    one_of("verbosity_level", verbosity, VERBOSITY)
    one_of("plots", plots, PLOTS)
    importance.check_criterion(criterion)
    importance.check_group_reduction(group_reduction)
    if resume_from is not None and not Path(resume_from).is_file():
        raise ValueError(f"resume_from={str(resume_from)!r} is not an existing checkpoint file.")


# -- the loop's steps ------------------------------------------------------------------------


def _widths(pnet: TaylorPrunableNetwork) -> dict[str, int]:
    return {name: int(role_mask.sum()) for name, role_mask in pnet.filter_masks().items()}


def _score_pass(pnet, loader, loss, batches: int, device) -> None:
    """Accumulate Taylor scores over ``batches`` mini-batches without updating the weights."""
    pnet.train()
    for i, (inputs, targets) in enumerate(loader):
        if i >= batches:
            break
        out, acts = pnet.forward_with_activations(inputs.to(device))
        grads = torch.autograd.grad(loss(out, targets.to(device)), acts)
        pnet.update_score(acts, grads)


def scored_fine_tuning_steps(total_steps: int, score_batches: int) -> int:
    """How many of the last fine-tuning steps accumulate Taylor scores: ``score_batches``, but
    no more than the second half of the ``total_steps`` (none when fine-tuning is a single step:
    the next pruning iteration then scores the fine-tuned network in a separate pass)."""
    return min(score_batches, total_steps // 2)


def _fine_tune(pnet, loader, val_loader, loss, options, device, state: _State, score_batches: int, log) -> bool:
    """Fine-tune for ``options.max_epochs``, scoring the last mini-batches per
    :func:`scored_fine_tuning_steps`.

    Returns True when the loss became non-finite (training diverged).
    """
    optimizer = make_optimizer(pnet.parameters(), options)
    scheduler = make_scheduler(optimizer, options)
    total = options.max_epochs * len(loader)
    scored = scored_fine_tuning_steps(total, score_batches)
    step = 0
    pnet.train()
    for epoch in range(1, options.max_epochs + 1):
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            step += 1
            state.global_step += 1
            score = pnet.criterion == "taylor" and step > total - scored
            optimizer.zero_grad(set_to_none=True)
            out, acts = pnet.forward_with_activations(inputs) if score else (pnet(inputs), [])
            value = loss(out, targets)
            if not torch.isfinite(value):
                return True
            if score:
                pnet.score_on_backward(acts)
            value.backward()
            optimizer.step()
            row = {
                "iteration": state.global_step,
                "pruning_iteration": state.iteration,
                "epoch": epoch,
                "loss": value.item(),
                **batch_metrics(out.detach(), targets, options.metrics),
                "learn_rate": optimizer.param_groups[0]["lr"],
            }
            state.training_rows.append(row)
            log.training(row)
            if val_loader is not None and state.global_step % options.validation_frequency == 0:
                val = evaluate(pnet, val_loader, loss, options.metrics, device)
                state.validation_rows.append(
                    {
                        "iteration": state.global_step,
                        "pruning_iteration": state.iteration,
                        **{f"val_{k}": v for k, v in val.items()},
                    }
                )
                pnet.train()
        scheduler.step()
    return False


def _validate(pnet, val_loader, loss, options, device) -> dict[str, float]:
    if val_loader is None:
        return {}
    return evaluate(pnet, val_loader, loss, options.metrics, device)


def _exceeds(value: float, threshold: float, metric: str) -> bool:
    """Whether ``value`` is worse than ``threshold`` (below it for accuracy, above it otherwise)."""
    return value < threshold if metric in HIGHER_IS_BETTER else value > threshold


def _pruning_row(iteration, pnet, original, removed, val, seconds: float = 0.0) -> dict:
    return {
        "iteration": iteration,
        "learnables": pnet.learnables,
        "reduction": 1.0 - pnet.learnables / original,
        "filters_removed": dict(removed),
        **{f"val_{k}": v for k, v in val.items()},
        "wall_time_s": seconds,
    }


def _copy_state(pnet: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in pnet.state_dict().items()}


# -- the last good network -------------------------------------------------------------------


@dataclass
class _Snapshot:
    """The last good network: the working network, its weights and the record's masks."""

    pnet: TaylorPrunableNetwork
    weights: dict
    record_masks: list[torch.Tensor]

    @classmethod
    def of(cls, pnet: TaylorPrunableNetwork, record: TaylorPrunableNetwork) -> _Snapshot:
        return cls(pnet, _copy_state(pnet), record.unit_masks())

    def restore(self, record: TaylorPrunableNetwork) -> TaylorPrunableNetwork:
        """Put the snapshot back (the working network's weights and masks, the record's masks)."""
        record.set_unit_masks(self.record_masks)
        self.pnet.load_state_dict(self.weights)
        return self.pnet


def _info(pnet, pruned: nn.Module, model: nn.Module, state: _State, original: int) -> PruningInfo:
    before = {name: tuple(p.shape) for name, p in model.named_parameters()}
    after = {name: tuple(p.shape) for name, p in pruned.named_parameters()}
    changed = list(dict.fromkeys(name.rsplit(".", 1)[0] for name in before if before[name] != after.get(name)))
    return PruningInfo(
        pruning_history=pd.DataFrame(state.pruning_rows),
        training_history=pd.DataFrame(state.training_rows),
        validation_history=pd.DataFrame(state.validation_rows),
        pruned_layers=changed,
        stop_reason=state.stop_reason,
        original_learnables=original,
        learnables=sum(p.numel() for p in pruned.parameters()),
    )


# -- checkpoints -----------------------------------------------------------------------------


def _save_checkpoint(folder: Path, pnet, record, state: _State, loader) -> Path:
    """Write the pruned network and the run state; atomically replaces ``latest.pt``.

    A failed write (disk full, folder gone or read-only) raises OSError naming the file and
    leaves the previous checkpoints as they were.
    """
    path = folder / f"pruning_iteration_{state.iteration:03d}.pt"
    payload = {
        "pnet": pnet.state_dict(),
        "record_masks": record.unit_masks(),
        "compacted": pnet is not record,
        "state": dict(vars(state)),
        "scores": (pnet._score_sum, pnet._score_batches),
        "torch_rng": torch.get_rng_state(),
        "loader_rng": loader.generator.get_state() if getattr(loader, "generator", None) is not None else None,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # serialised in memory: a failed write then surfaces as a plain OSError
    tmp, latest = path.with_suffix(".tmp"), folder / "latest.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
        tmp.replace(path)
        shutil.copyfile(path, latest)
        latest.replace(folder / "latest.pt")
    except OSError as err:
        tmp.unlink(missing_ok=True)
        latest.unlink(missing_ok=True)
        raise OSError(
            err.errno,
            f"could not write the pruning checkpoint of iteration {state.iteration} to {path} ({err.strerror}); "
            "free disk space or choose a writable pruning_checkpoint_path, then resume from the last "
            f"checkpoint there (latest.pt)",
        ) from err
    return path


def _load_checkpoint(path: Path, record, example: torch.Tensor, loader) -> tuple[TaylorPrunableNetwork, _State]:
    """The working network and run state of a checkpoint; ``record`` gets the checkpoint's masks."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    record.to(example.device).set_unit_masks(payload["record_masks"])
    pnet = record.compacted(example) if payload["compacted"] else record
    pnet.load_state_dict(payload["pnet"])
    state = _State(**payload["state"])
    pnet._score_sum, pnet._score_batches = payload["scores"]
    torch.set_rng_state(payload["torch_rng"])
    if payload["loader_rng"] is not None and getattr(loader, "generator", None) is not None:
        loader.generator.set_state(payload["loader_rng"])
    return pnet, state


# -- terminal output -------------------------------------------------------------------------


class _Printer:
    """Prints per verbosity level: summary < pruning < training."""

    _LEVELS = {"off": 0, "summary": 1, "pruning": 2, "training": 3}

    def __init__(self, verbosity: str, frequency: int) -> None:
        self.level, self.frequency = self._LEVELS[verbosity], frequency
        self._bar_open = False

    def line(self, text: str, level: str = "pruning") -> None:
        if self.level >= self._LEVELS[level]:
            print(text, flush=True)

    def training(self, row: dict) -> None:
        if self.level >= 3 and row["iteration"] % self.frequency == 0:
            extras = "".join(
                f", {k} {row[k]:.4g}"
                for k in row
                if k not in ("iteration", "pruning_iteration", "epoch", "loss", "learn_rate")
            )
            print(
                f"  fine-tuning iteration {row['iteration']} (pruning {row['pruning_iteration']}, "
                f"epoch {row['epoch']}): loss {row['loss']:.4g}{extras}",
                flush=True,
            )

    def progress(self, reduction: float, goal: float, iteration: int) -> None:
        """A one-line progress bar at "summary" level, on terminals only."""
        if self.level == 1 and sys.stdout.isatty():
            done = min(reduction / goal, 1.0) if goal > 0 else 1.0
            bar = "#" * round(30 * done) + "." * (30 - round(30 * done))
            print(
                f"\rPruning [{bar}] {100 * reduction:.1f}% of {100 * goal:.1f}% (iteration {iteration})",
                end="",
                flush=True,
            )
            self._bar_open = True

    def summary(self, info: PruningInfo) -> None:
        if self._bar_open:
            print()
        if self.level >= 1:
            names = ",".join(f'"{name}"' for name in info.pruned_layers)
            print(f"Compressed network has {100 * info.reduction:.1f}% fewer learnable parameters.")
            print(f"Pruning compressed {len(info.pruned_layers)} layers: {names}")
            print(f"Stop reason: {info.stop_reason}", flush=True)
