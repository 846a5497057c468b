"""compress_network: the iterative prune / fine-tune loop (MATLAB's compressNetworkUsingTaylorPruning)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from prune_core import importance
from prune_core.checkpoints import RunState, load_checkpoint, save_checkpoint
from prune_core.checks import fraction, non_negative_int, one_of, positive_int, positive_int_or_auto, writable_folder
from prune_core.finetune import FineTuner, scored_fine_tuning_steps
from prune_core.optimizer_state import carried_optimizer, load_state_by_name, state_by_name
from prune_core.options import HIGHER_IS_BETTER, TrainingOptions
from prune_core.progress import VERBOSITY, Printer
from prune_core.prunable import TaylorPrunableNetwork
from prune_core.results import FINAL_PHASE, PRUNE_PHASE, IterationResult, PruningInfo
from prune_core.schedules import final_factor, run_factor
from prune_core.train import as_loader, check_data, make_optimizer, resolve_loss

PLOTS = ("none", "pruning-progress")
GOAL_REACHED = "Learnables reduction goal reached."
MAX_COMPRESSION = "Maximum compression reached."
THRESHOLD_EXCEEDED = "Validation threshold exceeded."
DIVERGED = "Training diverged."


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
    criterion: str | importance.Criterion = "taylor",
    channel_multiple: int = 1,
    group_reduction: str = "sum",
    validation_threshold: float | None = None,
    final_fine_tuning_epochs: int = 0,
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
    every pruning step (with ``options.carry_optimizer_state``, the optimizer's state of the kept
    channels goes along).
    When the loop stops for any reason but divergence, ``final_fine_tuning_epochs`` more epochs
    fine-tune the final network, the learn rate annealed by a cosine from
    ``options.initial_learn_rate`` to ``options.learn_rate_floor`` (MATLAB's example retrains the
    pruned network so); its rows have ``phase == "final"`` in the histories.
    Returns the physically smaller network and a :class:`PruningInfo`. ``callbacks`` are called
    after every pruning iteration (and after its checkpoint is written), and once after the final
    fine-tuning, with an :class:`IterationResult`. ``resume_from`` continues from a checkpoint file
    written to ``pruning_checkpoint_path`` (also one written during the final fine-tuning).
    ``channel_multiple`` makes every pruned group keep a multiple of that many filters, and
    ``group_reduction`` combines a coupled group's layer scores by ``"sum"`` or ``"mean"`` (see
    TaylorPrunableNetwork).
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
        final_fine_tuning_epochs,
        pruning_checkpoint_path,
        pruning_checkpoint_frequency,
        verbosity_level,
        plots,
        criterion,
        group_reduction,
        resume_from,
    )
    if options.seed is not None:
        torch.manual_seed(options.seed)
    train_loader = as_loader(train_data, options, train=True)
    val_loader = None if options.validation_data is None else as_loader(options.validation_data, options, train=False)
    example = next(iter(train_loader))[0][:1]
    record = TaylorPrunableNetwork(
        model,
        example,
        layer_names=layer_names,
        criterion=criterion,
        channel_multiple=channel_multiple,
        group_reduction=group_reduction,
    )
    log = Printer(verbosity_level, options.verbose_frequency)
    loop = _Loop(
        record=record,
        example=example,
        tuner=FineTuner(train_loader, val_loader, loss, options, options.resolved_device(), RunState(), log),
        goal=learnables_reduction_goal,
        increment=learnables_reduction_increment,
        score_iterations=num_importance_score_iterations,
        validation_threshold=validation_threshold,
        checkpoint_folder=None if pruning_checkpoint_path is None else Path(pruning_checkpoint_path),
        checkpoint_frequency=pruning_checkpoint_frequency,
        callbacks=callbacks,
    )
    pnet = loop.prune(loop.start(resume_from))
    if final_fine_tuning_epochs and loop.state.stop_reason != DIVERGED:
        pnet = loop.final_fine_tuning(pnet, final_fine_tuning_epochs)
    pruned = pnet.to_module()
    info = _info(pruned, model, loop.state, loop.original)
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
    final_epochs,
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
    positive_int_or_auto("num_importance_score_iterations", score_iterations)
    if threshold is not None and options.validation_data is None:
        raise ValueError(
            "validation_threshold needs options.validation_data: set TrainingOptions(validation_data=...)."
        )
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        raise ValueError(f"validation_threshold={threshold!r} is not allowed; use a number or None.")
    non_negative_int("final_fine_tuning_epochs", final_epochs)
    if checkpoint_path is not None:
        writable_folder("pruning_checkpoint_path", Path(checkpoint_path))
    positive_int("pruning_checkpoint_frequency", checkpoint_frequency)
    one_of("verbosity_level", verbosity, VERBOSITY)
    one_of("plots", plots, PLOTS)
    importance.check_criterion(criterion)
    importance.check_group_reduction(group_reduction)
    if resume_from is not None and not Path(resume_from).is_file():
        raise ValueError(f"resume_from={str(resume_from)!r} is not an existing checkpoint file.")


# -- the loop --------------------------------------------------------------------------------


class _Loop:
    """The pruning loop's state and steps: the record of all pruning, the working network's
    optimizer, the last good network, checkpoints and callbacks."""

    def __init__(
        self,
        record: TaylorPrunableNetwork,
        example: torch.Tensor,
        tuner: FineTuner,
        goal: float | None,
        increment: float,
        score_iterations: int | str,
        validation_threshold: float | None,
        checkpoint_folder: Path | None,
        checkpoint_frequency: int,
        callbacks: Sequence[Callable[[IterationResult], None]],
    ) -> None:
        self.record, self.tuner, self.state, self.log = record, tuner, tuner.state, tuner.log
        self.options, self.device = tuner.options, tuner.device
        self.device_example = example.to(self.device)  # traces the compacted networks
        self.original = record.learnables
        self.max_reduction = 1.0 - record.minimum_learnables() / self.original
        self.explicit_goal = goal is not None
        self.goal = min(goal or self.max_reduction, self.max_reduction)
        self.increment = increment
        batches = len(tuner.loader)
        self.score_batches = min(100 if score_iterations == "auto" else score_iterations, batches)
        self.threshold = validation_threshold
        self.checkpoint_folder, self.checkpoint_frequency = checkpoint_folder, checkpoint_frequency
        self.callbacks = callbacks
        self.optimizer: torch.optim.Optimizer | None = None
        self.good: _Snapshot | None = None

    def start(self, resume_from: str | Path | None) -> TaylorPrunableNetwork:
        """The working network: the record itself, or the one of the checkpoint resumed from."""
        if resume_from is None:
            pnet = self.record.to(self.device)  # the first pruning step masks the record itself, then compacts
            self.state.pruning_rows.append(self._row(0, pnet, {}, self.tuner.validate(pnet)))
            self.log.line(f"Original network: {self.original} learnables, {pnet.num_prunables} prunable filters.")
        else:
            checkpoint = load_checkpoint(Path(resume_from), self.record, self.device_example, self.tuner.loader)
            pnet, self.tuner.state = checkpoint.pnet, checkpoint.state
            self.state = checkpoint.state
            if checkpoint.optimizer_state is not None:
                self.optimizer = make_optimizer(pnet.parameters(), self.options)
                load_state_by_name(self.optimizer, pnet, checkpoint.optimizer_state)
            self.log.line(f"Resumed from {resume_from} at pruning iteration {self.state.iteration}.")
        self.good = _Snapshot.of(pnet, self.record)
        return pnet

    def prune(self, pnet: TaylorPrunableNetwork) -> TaylorPrunableNetwork:
        """Pruning iterations until a stop reason; returns the network the run ends with."""
        while self.state.stop_reason is None:
            reduction = 1.0 - pnet.learnables / self.original
            if self.explicit_goal and reduction >= self.goal - 1e-12 and self.goal < self.max_reduction:
                self.state.stop_reason = GOAL_REACHED
            elif pnet.num_prunables == 0 or reduction >= self.max_reduction - 1e-12:
                self.state.stop_reason = MAX_COMPRESSION
            else:
                pnet = self.iteration(pnet)
        return pnet

    def iteration(self, pnet: TaylorPrunableNetwork) -> TaylorPrunableNetwork:
        """One pruning step, the fine-tuning of the compacted network, validation and reporting."""
        start = time.perf_counter()
        self.state.iteration += 1
        if pnet.criterion.uses_gradients and not pnet.has_scores:
            self._score_pass(pnet)
        widths = _widths(pnet)
        target = max(pnet.learnables - self.increment * self.original, self.original * (1.0 - self.goal))
        pnet.prune_to_learnables(math.floor(target))
        removed = {name: widths[name] - w for name, w in _widths(pnet).items() if widths[name] != w}
        if pnet is not self.record:
            self.record.record_pruning_of(pnet)
        compact = pnet.compacted(self.device_example)  # fine-tune the physically smaller network
        self.optimizer = self._optimizer_for(compact, pnet)
        steps = self.options.max_epochs * len(self.tuner.loader)
        if self.tuner.run(
            compact,
            self.optimizer,
            range(1, self.options.max_epochs + 1),
            run_factor(self.options, len(self.tuner.loader)),
            pruning_iteration=self.state.iteration,
            phase=PRUNE_PHASE,
            scored_steps=scored_fine_tuning_steps(steps, self.score_batches),
        ):
            self.state.stop_reason = DIVERGED
            return self._restore()
        pnet = compact
        if not self.options.carry_optimizer_state:
            self.optimizer = None
        val = self.tuner.validate(pnet)
        row = self._row(self.state.iteration, pnet, removed, val, time.perf_counter() - start)
        self.state.pruning_rows.append(row)
        self.log.line(
            f"Pruning iteration {self.state.iteration}: {row['learnables']} learnables "
            f"({100 * row['reduction']:.1f}% fewer)" + "".join(f", val {k} {v:.4g}" for k, v in val.items()),
        )
        self.log.progress(row["reduction"], self.goal, self.state.iteration)
        objective = self.options.objective_metric_name
        if self.threshold is not None and _exceeds(val[objective], self.threshold, objective):
            self.state.stop_reason = THRESHOLD_EXCEEDED
            pnet = self._restore()
        else:
            self.good = _Snapshot.of(pnet, self.record)
        checkpoint = None
        if self.checkpoint_folder and self.state.iteration % self.checkpoint_frequency == 0:
            checkpoint = self._checkpoint(pnet, f"pruning_iteration_{self.state.iteration:03d}.pt")
        self._report(row, checkpoint)
        return pnet

    def final_fine_tuning(self, pnet: TaylorPrunableNetwork, epochs: int) -> TaylorPrunableNetwork:
        """``epochs`` of fine-tuning of the final network on its own cosine schedule, then a
        validated row; resumes part-way from a checkpoint written after one of its epochs."""
        done = self.state.final_epochs_done
        final_iteration = self.state.iteration + 1
        if done >= epochs and self.state.pruning_rows[-1]["phase"] == FINAL_PHASE:
            return pnet  # resumed from the checkpoint written after it
        start = time.perf_counter()
        self.optimizer = self.optimizer or make_optimizer(pnet.parameters(), self.options)
        schedule = final_factor(self.options, epochs, len(self.tuner.loader))
        checkpoint = None
        for epoch in range(done + 1, epochs + 1):
            if self.tuner.run(pnet, self.optimizer, [epoch], schedule, final_iteration, FINAL_PHASE):
                self.state.stop_reason = DIVERGED  # the network before the final fine-tuning is returned
                return self._restore()
            self.state.final_epochs_done = epoch
            if epoch == epochs:
                val = self.tuner.validate(pnet)
                row = self._row(final_iteration, pnet, {}, val, time.perf_counter() - start, FINAL_PHASE)
                self.state.pruning_rows.append(row)
                self.log.line(
                    f"Final fine-tuning ({epochs} epochs): " + ", ".join(f"val {k} {v:.4g}" for k, v in val.items())
                )
            if self.checkpoint_folder:
                checkpoint = self._checkpoint(pnet, f"final_epoch_{epoch:03d}.pt")
        self._report(self.state.pruning_rows[-1], checkpoint)
        return pnet

    # -- the steps' parts ---------------------------------------------------------------------

    def _score_pass(self, pnet: TaylorPrunableNetwork) -> None:
        """Accumulate Taylor scores over ``score_batches`` mini-batches without updating the weights."""
        pnet.train()
        for i, (inputs, targets) in enumerate(self.tuner.loader):
            if i >= self.score_batches:
                break
            out, acts = pnet.forward_with_activations(inputs.to(self.device))
            grads = torch.autograd.grad(self.tuner.loss(out, targets.to(self.device)), acts)
            pnet.update_score(acts, grads)

    def _optimizer_for(self, compact: TaylorPrunableNetwork, pruned: TaylorPrunableNetwork) -> torch.optim.Optimizer:
        """The optimizer for the compacted network: the running one's state carried over, or a fresh one."""
        if self.optimizer is not None and self.options.carry_optimizer_state:
            return carried_optimizer(self.optimizer, pruned, compact, self.options)
        return make_optimizer(compact.parameters(), self.options)

    def _restore(self) -> TaylorPrunableNetwork:
        """The last good network (its optimizer state is not kept)."""
        self.optimizer = None
        return self.good.restore(self.record)

    def _row(self, iteration, pnet, removed, val, seconds: float = 0.0, phase: str = PRUNE_PHASE) -> dict:
        return {
            "iteration": iteration,
            "phase": phase,
            "learnables": pnet.learnables,
            "reduction": 1.0 - pnet.learnables / self.original,
            "filters_removed": dict(removed),
            **{f"val_{k}": v for k, v in val.items()},
            "wall_time_s": seconds,
        }

    def _checkpoint(self, pnet: TaylorPrunableNetwork, name: str) -> Path:
        optimizer_state = None if self.optimizer is None else state_by_name(self.optimizer, pnet)
        return save_checkpoint(
            self.checkpoint_folder / name, pnet, self.record, self.state, self.tuner.loader, optimizer_state
        )

    def _report(self, row: dict, checkpoint: Path | None) -> None:
        rows = [r for r in self.state.training_rows if r["pruning_iteration"] == row["iteration"]]
        val_rows = [r for r in self.state.validation_rows if r["pruning_iteration"] == row["iteration"]]
        result = IterationResult(row=dict(row), training_rows=rows, validation_rows=val_rows, checkpoint=checkpoint)
        for callback in self.callbacks:
            callback(result)


def _widths(pnet: TaylorPrunableNetwork) -> dict[str, int]:
    return {name: int(role_mask.sum()) for name, role_mask in pnet.filter_masks().items()}


def _exceeds(value: float, threshold: float, metric: str) -> bool:
    """Whether ``value`` is worse than ``threshold`` (below it for accuracy, above it otherwise)."""
    return value < threshold if metric in HIGHER_IS_BETTER else value > threshold


@dataclass
class _Snapshot:
    """The last good network: the working network, its weights and the record's masks."""

    pnet: TaylorPrunableNetwork
    weights: dict
    record_masks: list[torch.Tensor]

    @classmethod
    def of(cls, pnet: TaylorPrunableNetwork, record: TaylorPrunableNetwork) -> _Snapshot:
        weights = {k: v.detach().clone() for k, v in pnet.state_dict().items()}
        return cls(pnet, weights, record.unit_masks())

    def restore(self, record: TaylorPrunableNetwork) -> TaylorPrunableNetwork:
        """Put the snapshot back (the working network's weights and masks, the record's masks)."""
        record.set_unit_masks(self.record_masks)
        self.pnet.load_state_dict(self.weights)
        return self.pnet


def _info(pruned: nn.Module, model: nn.Module, state: RunState, original: int) -> PruningInfo:
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
