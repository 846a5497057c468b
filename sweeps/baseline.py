"""The sweep's baseline: trained (or loaded) once, cached by a hash of its config, shared by every trial."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prune_core.data import DataBundle
from prune_core.metrics import learnable_parameters
from prune_core.models.registry import default_width
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
    if config.model.width not in (None, default_width(config.model.name)):  # at its own width: the key as before
        model["width"] = config.model.width
    training = config.finetune.training_fields(baseline=True)
    blob = json.dumps({"model": model, "data": config.data, "training": training}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def trained_once(
    folder: Path, key: str, train: Callable[[], tuple[nn.Module, dict[str, Any]]]
) -> tuple[Path, dict[str, Any], bool]:
    """The weights file and record of the training named ``key`` in ``folder``: ``train()`` gives the trained
    model and its record (JSON values) the first time, and both are cached as ``<key>.pt`` (state_dict) and
    ``<key>.json``; later calls, in any process, read them back. Returns (weights file, record, read from cache).
    Each file is written whole and then renamed, so processes training the same key at once leave valid files."""
    weights, meta = folder / f"{key}.pt", folder / f"{key}.json"
    if weights.is_file() and meta.is_file():
        return weights, json.loads(meta.read_text()), True
    model, record = train()
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: value.cpu() for name, value in model.state_dict().items()}
    _write_whole(weights, lambda file: torch.save(state, file))
    _write_whole(meta, lambda file: file.write(json.dumps(record, indent=1).encode()))
    return weights, record, False


def _write_whole(path: Path, write: Callable[[Any], None]) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        write(tmp)
    os.replace(tmp.name, path)


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

    def train() -> tuple[nn.Module, dict[str, Any]]:
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
        val = as_loader(data.val, options, train=False)
        metrics = evaluate(model, val, resolve_loss("crossentropy"), ["accuracy"], options.resolved_device())
        return model, {"metrics": metrics, "learnables": learnable_parameters(model), "config": asdict(config.model)}

    weights, record, cached = trained_once(folder, baseline_key(config), train)
    return Baseline(weights, record["metrics"], record["learnables"], cached=cached)
