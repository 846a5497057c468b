"""Data loaders, losses, optimizers and evaluation for fine-tuning."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from prune_core.options import TrainingOptions
from prune_core.schedules import make_scheduler, run_factor

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES: dict[str, LossFn] = {
    "crossentropy": F.cross_entropy,  # class indices or class probabilities (one-hot)
    "index-crossentropy": lambda out, t: F.cross_entropy(out, t.long()),
    "binary-crossentropy": lambda out, t: F.binary_cross_entropy_with_logits(out, t.to(out.dtype)),
    "mae": lambda out, t: F.l1_loss(out, t.to(out.dtype)),
    "mse": lambda out, t: F.mse_loss(out, t.to(out.dtype)),
    "huber": lambda out, t: F.huber_loss(out, t.to(out.dtype)),
}
LOSS_ALIASES = {"mean-absolute-error": "mae", "l1loss": "mae", "mean-squared-error": "mse", "l2loss": "mse"}


def resolve_loss(loss_fn: str | LossFn) -> LossFn:
    """A loss by MATLAB name (``binary-crossentropy`` takes logits), or the callable itself."""
    if callable(loss_fn):
        return loss_fn
    name = LOSS_ALIASES.get(loss_fn, loss_fn)
    if name not in LOSSES:
        allowed = ", ".join([*LOSSES, *LOSS_ALIASES])
        raise ValueError(
            f"loss_fn={loss_fn!r} is not supported; use one of {allowed}, or a callable(outputs, targets)."
        )
    return LOSSES[name]


def check_data(name: str, data: Any) -> None:
    """Raise a ValueError unless ``data`` is a Dataset, a DataLoader or a (predictors, targets) pair."""
    if isinstance(data, (Dataset, DataLoader)):
        return
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        if len(data[0]) != len(data[1]) or len(data[0]) == 0:
            raise ValueError(
                f"{name}: predictors and targets must be non-empty with equal lengths, "
                f"got {len(data[0])} and {len(data[1])}."
            )
        return
    raise ValueError(
        f"{name} must be a torch Dataset, a DataLoader or a (predictors, targets) pair of tensors, "
        f"got {type(data).__name__}."
    )


def as_loader(data: Any, options: TrainingOptions, train: bool) -> DataLoader:
    """A DataLoader over ``data``; DataLoaders are used as given."""
    if isinstance(data, DataLoader):
        return data
    dataset = data if isinstance(data, Dataset) else TensorDataset(*data)
    generator = torch.Generator().manual_seed(options.seed if options.seed is not None else torch.seed())
    shuffle = train and options.shuffle != "never"
    if shuffle and options.shuffle == "once":
        order = torch.randperm(len(dataset), generator=generator).tolist()
        dataset, shuffle = torch.utils.data.Subset(dataset, order), False
    return DataLoader(dataset, batch_size=options.mini_batch_size, shuffle=shuffle, generator=generator)


def make_optimizer(params, options: TrainingOptions) -> torch.optim.Optimizer:
    lr, wd = options.initial_learn_rate, options.l2_regularization
    if options.solver == "sgdm":
        return torch.optim.SGD(params, lr=lr, momentum=options.momentum, weight_decay=wd)
    if options.solver == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)


def batch_metrics(outputs: torch.Tensor, targets: torch.Tensor, metrics: list[str]) -> dict[str, float]:
    """Metric values of one mini-batch (accuracy in percent)."""
    result = {}
    for metric in metrics:
        if metric == "accuracy":
            labels = targets.argmax(1) if targets.dim() == outputs.dim() and targets.is_floating_point() else targets
            result[metric] = 100.0 * (outputs.argmax(1) == labels).float().mean().item()
        else:
            result[metric] = (outputs - targets.to(outputs.dtype)).pow(2).mean().sqrt().item()
    return result


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, loss: LossFn, metrics: list[str], device: torch.device) -> dict:
    """Loss and metrics over a whole loader, in eval mode (example-weighted means)."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {"loss": 0.0, **{m: 0.0 for m in metrics}}
    count = 0
    sq_error = 0.0
    for inputs, targets in loader:
        inputs, targets = inputs.to(device), targets.to(device)
        outputs = model(inputs)
        n = len(inputs)
        totals["loss"] += loss(outputs, targets).item() * n
        for metric, value in batch_metrics(outputs, targets, metrics).items():
            if metric == "rmse":
                sq_error += value**2 * n
            else:
                totals[metric] += value * n
        count += n
    model.train(was_training)
    result = {name: value / count for name, value in totals.items()}
    if "rmse" in metrics:
        result["rmse"] = (sq_error / count) ** 0.5
    return result


def train_network(
    model: nn.Module,
    train_data: Any,
    loss_fn: str | LossFn,
    options: TrainingOptions,
    on_epoch_end: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Plain supervised training of ``model`` in place for ``options.max_epochs`` (e.g. a baseline,
    or retraining the pruned network), with the options' learn-rate schedule.

    ``on_epoch_end(epoch, mean_loss)`` is called after each epoch (epochs count from 0). Non-finite
    loss raises ``FloatingPointError``. Returns the model, in eval mode.
    """
    device = options.resolved_device()
    if options.seed is not None:
        torch.manual_seed(options.seed)
    loader, loss = as_loader(train_data, options, train=True), resolve_loss(loss_fn)
    model.to(device).train()
    optimizer = make_optimizer(model.parameters(), options)
    scheduler = make_scheduler(optimizer, run_factor(options, len(loader)))
    for epoch in range(options.max_epochs):
        total = torch.zeros((), device=device)
        for inputs, targets in loader:
            optimizer.zero_grad()
            value = loss(model(inputs.to(device)), targets.to(device))
            if not torch.isfinite(value):
                raise FloatingPointError(f"training loss became {value.item()}; lower the learn rate.")
            value.backward()
            optimizer.step()
            scheduler.step()
            total += value.detach()
        if on_epoch_end is not None:
            on_epoch_end(epoch, total.item() / max(1, len(loader)))
    return model.eval()
