"""compress_network: the iterative prune / fine-tune loop (MATLAB's compressNetworkUsingTaylorPruning)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from prune_core import importance
from prune_core.checkpoints import RunState
from prune_core.data_parallel import DataParallel
from prune_core.finetune import FineTuner
from prune_core.loop import PruningLoop
from prune_core.options import TrainingOptions
from prune_core.progress import Printer
from prune_core.prunable import TaylorPrunableNetwork
from prune_core.pruning_settings import PruningSettings
from prune_core.results import DIVERGED, IterationResult, PruningInfo
from prune_core.train import as_loader, resolve_loss


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
    """Prune ``model``'s filters iteratively by Taylor importance, fine-tuning in between; returns
    the physically smaller network and a :class:`PruningInfo` (``model`` itself is not changed).

    Each pruning iteration removes the lowest-ranked filters until at least
    ``learnables_reduction_increment`` x the original learnables are gone (or the goal is
    reached), then fine-tunes the compacted network for ``options.max_epochs`` and validates.
    Scores come from the last ``num_importance_score_iterations`` mini-batches of the previous
    iteration's fine-tuning, never its first half (before the first iteration: a scoring pass).
    Unless the loop stops by divergence, ``final_fine_tuning_epochs`` more epochs fine-tune the
    final network on a cosine from ``options.initial_learn_rate`` to ``options.learn_rate_floor``.
    ``callbacks`` get an :class:`IterationResult` after every iteration's checkpoint and after the
    final fine-tuning; ``resume_from`` continues from a checkpoint of ``pruning_checkpoint_path``.
    Called on every rank of a ``torch.distributed`` process group, the ranks prune as one data-parallel
    run (:mod:`prune_core.data_parallel`). The README describes every argument.
    """
    arguments = dict(locals())
    settings = PruningSettings(**{name: arguments[name] for name in PruningSettings.__dataclass_fields__})
    options = options or TrainingOptions()
    settings.check(train_data, options)
    parallel = DataParallel()  # the ranks of a torch.distributed process group, if there is one
    options = parallel.same_seed(options)
    if options.seed is not None:
        torch.manual_seed(options.seed)
    train_loader = as_loader(train_data, options, train=True)
    train_loader = parallel.shard(train_loader, built_here=train_loader is not train_data)
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
    log = Printer(verbosity_level if parallel.is_writer else "off", options.verbose_frequency)
    device = options.resolved_device()
    tuner = FineTuner(train_loader, val_loader, resolve_loss(loss_fn), options, device, RunState(), log, parallel)
    loop = PruningLoop(record, example, tuner, settings)
    pnet = loop.prune(loop.start(resume_from))
    if final_fine_tuning_epochs and loop.state.stop_reason != DIVERGED:
        pnet = loop.final_fine_tuning(pnet, final_fine_tuning_epochs)
    pruned = pnet.to_module()
    info = _info(pruned, model, loop.state, loop.original)
    if plots == "pruning-progress" and parallel.is_writer:
        _add_figure(info, pruning_checkpoint_path)
    log.summary(info)
    return pruned, info


def _add_figure(info: PruningInfo, folder: str | Path | None) -> None:
    """The pruning-progress figure on ``info``, also saved in the checkpoint folder if there is one."""
    from prune_core.plots import pruning_progress_figure

    info.figure = pruning_progress_figure(info)
    if folder:
        info.figure.savefig(Path(folder) / "pruning_progress.png", dpi=120)


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
