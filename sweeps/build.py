"""Build what a trial needs from its config: data, model, training options, layer names."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prune_core import TrainingOptions
from prune_core.data import DataBundle
from prune_core.models import BUILTIN_MODELS, build_model
from sweeps.config import ConfigError
from sweeps.schema import FinetuneSection, SweepConfig


def make_model(config: SweepConfig, data: DataBundle) -> nn.Module:
    """A fresh model for ``config.model`` shaped for ``data`` (classes, input channels)."""
    name = config.model.name
    in_channels = data.input_shape[0] if name in BUILTIN_MODELS else None
    if in_channels is None and data.input_shape[0] != 3:
        raise ConfigError(
            f"model.name={name!r} (torchvision) takes 3-channel images but data.name={config.data['name']!r} "
            f"gives inputs of shape {tuple(data.input_shape)}; use 3-channel data (e.g. data.grayscale_to_rgb=true) "
            "or a built-in model."
        )
    return build_model(name, num_classes=data.num_classes, in_channels=in_channels, width=config.model.width)


def example_batch(data: DataBundle, size: int = 2) -> torch.Tensor:
    return torch.stack([data.train[i][0] for i in range(min(size, len(data.train)))])


def check_fit(config: SweepConfig, model: nn.Module, data: DataBundle) -> None:
    """The data's inputs run through the model and give one logit per class."""
    try:
        with torch.no_grad():
            out = model.eval()(example_batch(data))
    except RuntimeError as err:
        raise ConfigError(
            f"data.name={config.data['name']!r} gives inputs of shape {tuple(data.input_shape)}, which "
            f"model.name={config.model.name!r} cannot take ({str(err).splitlines()[0]}); choose matching "
            "model and data."
        ) from None
    if out.dim() != 2 or out.shape[1] != data.num_classes:
        raise ConfigError(
            f"model.name={config.model.name!r} gives outputs of shape {tuple(out.shape)} but "
            f"data.name={config.data['name']!r} has {data.num_classes} classes."
        )


def training_options(
    finetune: FinetuneSection, data: DataBundle, device: str, seed: int, baseline: bool = False
) -> TrainingOptions:
    """compress_network's (or the baseline's) TrainingOptions: the ``finetune`` keys, by their names."""
    return TrainingOptions(
        **finetune.training_fields(baseline),
        validation_data=data.val,
        validation_frequency=10**9,  # validate once per pruning iteration
        device=device,
        seed=seed,
    )


def load_weights(model: nn.Module, source: str) -> None:
    """Load a state_dict file or an MLflow model URI into ``model``; ConfigError on any mismatch."""
    try:
        if "://" in source or source.startswith(("runs:", "models:")):
            import mlflow.pytorch

            state: Any = mlflow.pytorch.load_model(source, map_location="cpu").state_dict()
        else:
            state = torch.load(source, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
        model.load_state_dict(state)
    except FileNotFoundError:
        raise ConfigError(
            f"model.checkpoint={source!r} does not exist; give a state_dict file or MLflow model URI."
        ) from None
    except Exception as err:  # corrupt files and wrong architectures raise many exception types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"model.checkpoint={source!r} cannot be loaded into model {type(model).__name__} ({first}); give a "
            "state_dict saved from this architecture (torch.save(model.state_dict(), path)) or an MLflow model URI."
        ) from None
