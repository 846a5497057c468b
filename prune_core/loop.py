"""The pruning loop of compress_network: prune, compact, fine-tune, validate, checkpoint, report;
then the final fine-tuning."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from prune_core.checkpoints import load_checkpoint, save_checkpoint
from prune_core.finetune import FineTuner, scored_fine_tuning_steps
from prune_core.optimizer_state import carried_optimizer, load_state_by_name, state_by_name
from prune_core.options import HIGHER_IS_BETTER
from prune_core.prunable import TaylorPrunableNetwork
from prune_core.pruning_settings import PruningSettings
from prune_core.results import (
    DIVERGED,
    FINAL_PHASE,
    GOAL_REACHED,
    MAX_COMPRESSION,
    PRUNE_PHASE,
    THRESHOLD_EXCEEDED,
    IterationResult,
)
from prune_core.schedules import final_factor, run_factor
from prune_core.train import make_optimizer


class PruningLoop:
    """The pruning loop's state and steps: the record of all pruning, the working network's
    optimizer, the last good network, checkpoints and callbacks."""

    def __init__(
        self, record: TaylorPrunableNetwork, example: torch.Tensor, tuner: FineTuner, settings: PruningSettings
    ) -> None:
        self.record, self.tuner, self.state, self.log = record, tuner, tuner.state, tuner.log
        self.options, self.device = tuner.options, tuner.device
        self.device_example = example.to(self.device)  # traces the compacted networks
        self.original = record.learnables
        self.max_reduction = 1.0 - record.minimum_learnables() / self.original
        goal, score_iterations = settings.learnables_reduction_goal, settings.num_importance_score_iterations
        self.explicit_goal = goal is not None
        self.goal = min(goal or self.max_reduction, self.max_reduction)
        self.increment = settings.learnables_reduction_increment
        self.score_batches = min(100 if score_iterations == "auto" else score_iterations, len(tuner.loader))
        self.threshold = settings.validation_threshold
        folder = settings.pruning_checkpoint_path
        self.checkpoint_folder = None if folder is None else Path(folder)
        self.checkpoint_frequency = settings.pruning_checkpoint_frequency
        self.callbacks = settings.callbacks
        self.optimizer: torch.optim.Optimizer | None = None
        self.good: _Snapshot | None = None

    def start(self, resume_from: str | Path | None) -> TaylorPrunableNetwork:
        """The working network: the record itself, or the one of the checkpoint resumed from."""
        if resume_from is None:
            pnet = self.record.to(self.device)  # the first pruning step masks the record itself, then compacts
            self.tuner.parallel.broadcast_state(pnet)  # data-parallel ranks start from rank 0's weights
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
        self.tuner.parallel.check_same_masks(pnet, self.state.iteration)
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
            weight = self.tuner.parallel.batch_weight(len(inputs))  # gradients of the whole mini-batch's loss
            out, acts = pnet.forward_with_activations(inputs.to(self.device))
            grads = torch.autograd.grad(self.tuner.loss(out, targets.to(self.device)) * weight, acts)
            pnet.update_score(acts, grads)
        self.tuner.parallel.average_scores(pnet)

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

    def _checkpoint(self, pnet: TaylorPrunableNetwork, name: str) -> Path | None:
        if not self.tuner.parallel.is_writer:
            return None  # one file per data-parallel run: rank 0's
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
