"""The sweep's baseline: trained (or loaded) once, cached by a hash of its config, shared by every trial."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from prune_core.data import DataBundle
from prune_core.metrics import learnable_parameters
from prune_core.train import as_loader, evaluate, resolve_loss, train_network
from sweeps.build import load_weights, make_model, training_fields, training_options
from sweeps.config import ConfigError

BASELINE_SEED = 0


@dataclass(frozen=True)
class Baseline:
    """The cached baseline weights and their validation metrics."""

    path: Path
    metrics: dict[str, float]
    learnables: int
    cached: bool
    """True when an earlier sweep had already trained it."""


def baseline_key(cfg: dict) -> str:
    """Hash of everything that determines the baseline weights: model, data and how it is trained."""
    model = {k: v for k, v in cfg["model"].items() if k != "layer_subsets"}
    training = training_fields(cfg["finetune"], baseline=True)
    blob = json.dumps({"model": model, "data": cfg["data"], "training": training}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_baseline(
    cfg: dict, data: DataBundle, folder: Path, device: str, on_epoch_end: Callable[[int, float], None] | None = None
) -> Baseline:
    """Load the cached baseline for ``cfg``, or train (or load ``model.checkpoint``) and cache it.

    ``on_epoch_end(epoch, mean_loss)`` follows the training (see ``train_network``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    key = baseline_key(cfg)
    weights, meta = folder / f"{key}.pt", folder / f"{key}.json"
    if weights.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        return Baseline(weights, info["metrics"], info["learnables"], cached=True)
    torch.manual_seed(BASELINE_SEED)  # the same weights whatever ran before in this process
    model = make_model(cfg, data)
    options = training_options(cfg, data, device, BASELINE_SEED, baseline=True)
    if cfg["model"]["checkpoint"]:
        load_weights(model, str(Path(cfg["model"]["checkpoint"]).expanduser()))
    else:
        try:
            train_network(model, data.train, "crossentropy", options, on_epoch_end)
        except FloatingPointError as err:
            raise ConfigError(
                f"the baseline's training diverged ({err}) at finetune.baseline_learn_rate="
                f"{cfg['finetune']['baseline_learn_rate']}; lower it, or give trained weights in model.checkpoint."
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
    meta.write_text(json.dumps({"metrics": metrics, "learnables": learnables, "config": cfg["model"]}, indent=1))
    return Baseline(weights, metrics, learnables, cached=False)
