"""compress_network's checkpoints: the working network, the record's masks and the run state."""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from prune_core.optimizer_state import NamedState
from prune_core.prunable import TaylorPrunableNetwork


@dataclass
class RunState:
    """Everything a checkpoint needs to continue a run, besides the networks."""

    iteration: int = 0
    global_step: int = 0
    pruning_rows: list[dict] = field(default_factory=list)
    training_rows: list[dict] = field(default_factory=list)
    validation_rows: list[dict] = field(default_factory=list)
    stop_reason: str | None = None
    final_epochs_done: int = 0


@dataclass
class Checkpoint:
    """A loaded checkpoint: the working network, the run state and the optimizer's state (if kept)."""

    pnet: TaylorPrunableNetwork
    state: RunState
    optimizer_state: NamedState | None


def save_checkpoint(
    path: Path,
    pnet: TaylorPrunableNetwork,
    record: TaylorPrunableNetwork,
    state: RunState,
    loader: DataLoader,
    optimizer_state: NamedState | None,
) -> Path:
    """Write the working network and the run state to ``path``; atomically replaces ``latest.pt``
    next to it.

    A failed write (disk full, folder gone or read-only) raises OSError naming the file and
    leaves the previous checkpoints as they were.
    """
    payload = {
        "pnet": pnet.state_dict(),
        "record_masks": record.unit_masks(),
        "compacted": pnet is not record,
        "state": dict(vars(state)),
        "scores": pnet.score_state(),
        "optimizer": optimizer_state,
        "torch_rng": torch.get_rng_state(),
        "loader_rng": loader.generator.get_state() if getattr(loader, "generator", None) is not None else None,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # serialised in memory: a failed write then surfaces as a plain OSError
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
        tmp.replace(path)
        copy_atomically(path, path.parent / "latest.pt")
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(
            err.errno,
            f"could not write the pruning checkpoint {path} ({err.strerror}); free disk space or choose a "
            "writable pruning_checkpoint_path, then resume from the last checkpoint there (latest.pt)",
        ) from err
    return path


def copy_atomically(source: Path, target: Path) -> None:
    """``target`` becomes a copy of ``source``: a reader sees the old file or the new one, never a part
    (the copy is written beside it, then renamed; a failed copy is removed)."""
    partial = target.with_suffix(".tmp")
    try:
        shutil.copyfile(source, partial)
        partial.replace(target)
    except OSError:
        partial.unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, record: TaylorPrunableNetwork, example: torch.Tensor, loader: DataLoader) -> Checkpoint:
    """The checkpoint at ``path``; ``record`` gets its masks, torch and ``loader`` their random state."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    record.to(example.device).set_unit_masks(payload["record_masks"])
    pnet = record.compacted(example) if payload["compacted"] else record
    pnet.load_state_dict(payload["pnet"])
    pnet.load_score_state(payload["scores"])
    torch.set_rng_state(payload["torch_rng"])
    if payload["loader_rng"] is not None and getattr(loader, "generator", None) is not None:
        loader.generator.set_state(payload["loader_rng"])
    return Checkpoint(pnet, RunState(**payload["state"]), payload.get("optimizer"))
