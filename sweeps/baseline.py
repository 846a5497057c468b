"""The sweep's baseline: trained (or loaded) once, cached by a hash of its config, shared by every trial."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from prune_core.data import DataBundle
from prune_core.metrics import learnable_parameters
from prune_core.train import as_loader, evaluate, resolve_loss, train_network
from sweeps.build import load_weights, make_model, training_options
from sweeps.config import ConfigError
from sweeps.schema import SweepConfig

BASELINE_SEED = 0


@dataclass(frozen=True)
class Baseline:
    """The cached baseline weights and their validation metrics."""

    path: Path
    metrics: dict[str, float]
    learnables: int
    cached: bool
    """True when an earlier sweep had already trained it."""


def baseline_key(config: SweepConfig) -> str:
    """Hash of everything that determines the baseline weights: model, data and how it is trained."""
    model = {"name": config.model.name, "checkpoint": config.model.checkpoint}
    if config.model.width is not None:  # the key of a model at its own width is the one it had before model.width
        model["width"] = config.model.width
    training = config.finetune.training_fields(baseline=True)
    blob = json.dumps({"model": model, "data": config.data, "training": training}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_baseline(
    config: SweepConfig,
    data: DataBundle,
    folder: Path,
    device: str,
    on_epoch_end: Callable[[int, float], None] | None = None,
) -> Baseline:
    """Load the cached baseline for ``config``, or train (or load ``model.checkpoint``) and cache it.

    ``on_epoch_end(epoch, mean_loss)`` follows the training (see ``train_network``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    key = baseline_key(config)
    weights, meta = folder / f"{key}.pt", folder / f"{key}.json"
    if weights.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        return Baseline(weights, info["metrics"], info["learnables"], cached=True)
    torch.manual_seed(BASELINE_SEED)  # the same weights whatever ran before in this process
    model = make_model(config, data)
    options = training_options(config.finetune, data, device, BASELINE_SEED, baseline=True)
    if config.model.checkpoint:
        load_weights(model, str(Path(config.model.checkpoint).expanduser()))
    else:
        try:
            train_network(model, data.train, "crossentropy", options, on_epoch_end)
        except FloatingPointError as err:
            raise ConfigError(
                f"the baseline's training diverged ({err}) at finetune.baseline_learn_rate="
                f"{config.finetune.baseline_learn_rate}; lower it, or give trained weights in model.checkpoint."
            ) from None
    metrics = evaluate(
        model,
        as_loader(data.val, options, train=False),
        resolve_loss("crossentropy"),
        ["accuracy"],
        options.resolved_device(),
    )
    model.cpu()
    tmp = weights.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(weights)
    learnables = learnable_parameters(model)
    record = {"metrics": metrics, "learnables": learnables, "config": asdict(config.model)}
    meta.write_text(json.dumps(record, indent=1))
    return Baseline(weights, metrics, learnables, cached=False)
