"""Save and load pruned networks as self-contained torch.export programs (no pickled code).

A file holds two programs over one set of weights, the network traced in eval mode (torch's
default program, so ``torch.export.load`` alone runs it) and in training mode, so that the loaded
network (:class:`~prune_core.loaded.LoadedNetwork`) can be put back into training and fine-tuned.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn
from torch.export import ExportedProgram
from torch.export.pt2_archive._package import load_pt2, package_pt2

from prune_core.checks import as_input_tuple
from prune_core.loaded import TRAINING_PROGRAM, LoadedNetwork

INFERENCE_PROGRAM = "model"
MLFLOW_FILE = "pruned.pt2"
"""The name of prune_core's file among an MLflow model's extra files (``sweeps`` logs it there)."""

_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def batch_dynamic(inputs: tuple[torch.Tensor, ...]) -> torch.export.ShapesCollection:
    """Dimension 0 of every input dynamic (keyed by tensor, so any ``forward`` signature works)."""
    shapes = torch.export.ShapesCollection()
    for tensor in inputs:
        shapes[tensor] = {0: torch.export.Dim.AUTO}
    return shapes


def _export(model: nn.Module, inputs: tuple[torch.Tensor, ...], training: bool) -> ExportedProgram:
    model.train(training)
    return torch.export.export(model, inputs, dynamic_shapes=batch_dynamic(inputs))


def save_pruned(model: nn.Module, path: str | Path, example_inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> Path:
    """Export ``model`` on ``example_inputs`` in eval and in training mode, and write both to
    ``path`` (``.pt2``).

    The batch dimension stays dynamic. The file loads with torch alone, without the code that
    defined the model. ``model`` is left as it was (mode, weights, BatchNorm statistics).
    """
    inputs = as_input_tuple(example_inputs)
    was_training = model.training
    try:
        programs = {INFERENCE_PROGRAM: _export(model, inputs, False), TRAINING_PROGRAM: _export(model, inputs, True)}
    finally:
        model.train(was_training)
    path = Path(path)
    package_pt2(path, exported_programs=programs)
    return path


def pruned_file(source: str | Path, tracking_uri: str | None = None) -> Path:
    """The ``.pt2`` file behind ``source``: a file, an MLflow model folder, or an MLflow model URI
    (looked up in the store ``tracking_uri``, by default MLflow's current one)."""
    path = Path(source).expanduser()
    if not path.exists() and _URI_SCHEME.match(str(source)):
        path = _downloaded(str(source), tracking_uri)
    if path.is_dir():
        candidates = [path / "extra_files" / MLFLOW_FILE, path / "data" / "model.pt2"]
        found = next((candidate for candidate in candidates if candidate.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"{source} holds no pruned network (looked for {', '.join(map(str, candidates))})")
        return found
    if not path.is_file():
        raise FileNotFoundError(f"no pruned network at {source}: not a file, a folder, nor an MLflow model URI")
    return path


def load_pruned(source: str | Path, tracking_uri: str | None = None) -> LoadedNetwork:
    """Load a network written by :func:`save_pruned`, in eval mode.

    ``source`` is the file, or an MLflow model (URI such as ``runs:/<run_id>/pruned_model`` or
    ``models:/<name>/<version>``, or its downloaded folder). An MLflow URI is looked up in the
    store ``tracking_uri`` (a sweep prints it, e.g. ``sqlite:///outputs/mlflow.db``; by default
    MLflow's current one). The result is an ordinary module: ``train()`` / ``eval()`` switch
    BatchNorm and dropout, and it can be fine-tuned further.
    """
    programs = load_pt2(pruned_file(source, tracking_uri)).exported_programs
    training = programs.get(TRAINING_PROGRAM)
    return LoadedNetwork(
        programs[INFERENCE_PROGRAM].module(check_guards=False),
        training.module(check_guards=False) if training is not None else None,
    )


def _downloaded(uri: str, tracking_uri: str | None) -> Path:
    """The local copy of the MLflow artifact ``uri``, or a clear error naming the store searched.

    MLflow resolves a run's logged model through its current store whatever store
    ``download_artifacts`` is given, so ``tracking_uri`` is made current for the download only.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    current = mlflow.get_tracking_uri()
    store = tracking_uri or current
    mlflow.set_tracking_uri(store)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except MlflowException as error:
        if error.get_http_status_code() != 404:  # the store failed, rather than not holding the model
            raise
        raise FileNotFoundError(
            f"no pruned network at {uri} in the MLflow store {store} ({error.message.splitlines()[0]}). "
            "A sweep's models live in its own store: pass it as load_pruned(uri, tracking_uri=...) "
            "(the sweep prints the call, e.g. tracking_uri='sqlite:///outputs/mlflow.db'), or call "
            "mlflow.set_tracking_uri first."
        ) from None
    finally:
        mlflow.set_tracking_uri(current)
