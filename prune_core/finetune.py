"""The fine-tuning of compress_network: mini-batch steps that also score, record and validate."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from prune_core.checkpoints import RunState
from prune_core.data_parallel import DataParallel
from prune_core.options import TrainingOptions
from prune_core.progress import Printer
from prune_core.prunable import TaylorPrunableNetwork
from prune_core.schedules import make_scheduler
from prune_core.train import LossFn, batch_metrics, evaluate


def scored_fine_tuning_steps(total_steps: int, score_batches: int) -> int:
    """How many of the last fine-tuning steps accumulate Taylor scores: ``score_batches``, but
    no more than the second half of the ``total_steps`` (none when fine-tuning is a single step:
    the next pruning iteration then scores the fine-tuned network in a separate pass)."""
    return min(score_batches, total_steps // 2)


@dataclass
class FineTuner:
    """Runs fine-tuning epochs on a working network and appends their rows to ``state`` (on each rank of a
    data-parallel run: its share of every mini-batch, the gradients and losses of all ranks summed)."""

    loader: DataLoader
    val_loader: DataLoader | None
    loss: LossFn
    options: TrainingOptions
    device: torch.device
    state: RunState
    log: Printer
    parallel: DataParallel = field(default_factory=DataParallel)

    def run(
        self,
        pnet: TaylorPrunableNetwork,
        optimizer: torch.optim.Optimizer,
        epochs: Sequence[int],
        schedule: Callable[[int], float],
        pruning_iteration: int,
        phase: str,
        scored_steps: int = 0,
    ) -> bool:
        """Train ``pnet`` for ``epochs`` (1-based, consecutive, of a run whose learn rate factor at
        mini-batch ``k`` is ``schedule(k)``), scoring its last ``scored_steps`` mini-batches.

        Rows are recorded under ``pruning_iteration`` and ``phase``. Returns True when the loss
        became non-finite (training diverged). Data-parallel ranks average their BatchNorm running
        statistics and the Taylor scores of the run at its end.
        """
        steps_per_epoch = len(self.loader)
        step = (epochs[0] - 1) * steps_per_epoch
        last = epochs[-1] * steps_per_epoch
        scheduler = make_scheduler(optimizer, schedule, first_step=step)
        pnet.train()
        for epoch in epochs:
            for inputs, targets in self.loader:
                inputs, targets = inputs.to(self.device), targets.to(self.device)
                step += 1
                self.state.global_step += 1
                score = pnet.criterion.uses_gradients and step > last - scored_steps
                weight = self.parallel.batch_weight(len(inputs))
                optimizer.zero_grad(set_to_none=True)
                out, acts = pnet.forward_with_activations(inputs) if score else (pnet(inputs), [])
                weighted = self.loss(out, targets) * weight
                if score:
                    pnet.score_on_backward(acts)
                weighted.backward()
                value = self.parallel.reduce_gradients(pnet, weighted)  # the loss of the whole mini-batch
                if not torch.isfinite(value):
                    return True
                optimizer.step()
                row = {
                    "iteration": self.state.global_step,
                    "pruning_iteration": pruning_iteration,
                    "phase": phase,
                    "epoch": epoch,
                    "loss": value.item(),
                    **batch_metrics(out.detach(), targets, self.options.metrics),
                    "learn_rate": optimizer.param_groups[0]["lr"],
                }
                scheduler.step()
                self.state.training_rows.append(row)
                self.log.training(row)
                self._validate_every(pnet, pruning_iteration, phase)
        self.parallel.average_buffers(pnet)
        self.parallel.average_scores(pnet)
        return False

    def _validate_every(self, pnet: TaylorPrunableNetwork, pruning_iteration: int, phase: str) -> None:
        """A validation row every ``options.validation_frequency`` mini-batches."""
        if self.val_loader is None or self.state.global_step % self.options.validation_frequency:
            return
        val = self.validate(pnet)
        self.state.validation_rows.append(
            {
                "iteration": self.state.global_step,
                "pruning_iteration": pruning_iteration,
                "phase": phase,
                **{f"val_{k}": v for k, v in val.items()},
            }
        )
        pnet.train()

    def validate(self, pnet: TaylorPrunableNetwork) -> dict[str, float]:
        """Loss and metrics of ``pnet`` on the validation data (empty without it)."""
        if self.val_loader is None:
            return {}
        return evaluate(pnet, self.val_loader, self.loss, self.options.metrics, self.device)
