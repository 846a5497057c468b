"""Data-parallel compress_network: two gloo ranks (processes on this machine) against one process."""

import os
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import BatchSampler

from prune_core import TrainingOptions, compress_network
from prune_core.data import load_digits_tensors
from prune_core.data_parallel import RankSlices
from prune_core.importance import Criterion
from prune_core.models import DigitsCNN

from .sweep_helpers import free_port


class PlainCNN(nn.Module):
    """Convolutions without BatchNorm: its data-parallel training is the single-process one up to rounding."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.classifier = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class RankNoise(Criterion):
    """Scores that differ from rank to rank: the ranks then prune different filters."""

    name = "rank-noise"

    def filter_scores(self, layer, accumulated):
        generator = torch.Generator().manual_seed(dist.get_rank() if dist.is_initialized() else 0)
        return torch.rand(layer.weight.shape[0], generator=generator)


def _prune(model_name: str, criterion="taylor", checkpoints: Path | None = None):
    torch.manual_seed(0)
    model = PlainCNN() if model_name == "plain" else DigitsCNN(width=8)
    x_train, y_train, x_val, y_val = load_digits_tensors(seed=0)
    options = TrainingOptions(
        solver="sgdm", initial_learn_rate=0.05, mini_batch_size=64, max_epochs=2, seed=3, validation_data=(x_val, y_val)
    )
    return compress_network(
        model,
        (x_train[:640], y_train[:640]),
        "crossentropy",
        options,
        learnables_reduction_goal=0.5,
        learnables_reduction_increment=0.2,
        num_importance_score_iterations=4,
        criterion=criterion,
        pruning_checkpoint_path=checkpoints,
        verbosity_level="off",
    )


def _rank_main(rank: int, world_size: int, port: int, folder: str, model_name: str, criterion) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        checkpoints = Path(folder) / f"checkpoints_{rank}"
        checkpoints.mkdir()
        pruned, info = _prune(model_name, criterion, checkpoints)
        torch.save({"state": pruned.state_dict(), "history": info.pruning_history}, Path(folder) / f"rank{rank}.pt")
    except Exception:
        (Path(folder) / f"rank{rank}.error").write_text(traceback.format_exc())
    finally:
        dist.destroy_process_group()


def _two_ranks(tmp_path: Path, model_name: str, criterion="taylor") -> list[dict]:
    mp.spawn(_rank_main, args=(2, free_port(), str(tmp_path), model_name, criterion), nprocs=2)
    errors = sorted(tmp_path.glob("*.error"))
    if errors:
        raise AssertionError("\n".join(path.read_text() for path in errors))
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_rank_slices_split_every_global_batch_and_skip_batches_smaller_than_the_ranks():
    batches = [[0, 1, 2, 3, 4], [5, 6, 7, 8], [9]]
    assert list(RankSlices(batches, 0, 2)) == [[0, 1, 2], [5, 6]]
    assert list(RankSlices(batches, 1, 2)) == [[3, 4], [7, 8]]
    assert len(RankSlices(batches, 1, 2)) == 2
    for size, drop_last in [(8, False), (8, True), (5, False), (1, False)]:
        sampler = BatchSampler(range(21), size, drop_last)
        assert len(RankSlices(sampler, 0, 2)) == len(list(RankSlices(sampler, 0, 2)))


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank
    yield
    torch.set_num_threads(threads)


def test_two_ranks_prune_the_filters_one_process_prunes_and_train_to_the_same_weights(tmp_path, one_thread):
    single, single_info = _prune("plain")
    ranks = _two_ranks(tmp_path, "plain")
    for rank in ranks:  # both ranks: the single process's architecture (filters kept per layer) and weights
        assert list(rank["history"]["learnables"]) == list(single_info.pruning_history["learnables"])
        assert list(rank["history"]["filters_removed"]) == list(single_info.pruning_history["filters_removed"])
        for name, value in single.state_dict().items():
            torch.testing.assert_close(rank["state"][name], value, atol=1e-5, rtol=1e-4)
    accuracy = [torch.tensor(h["val_accuracy"].values) for h in (ranks[0]["history"], single_info.pruning_history)]
    torch.testing.assert_close(*accuracy, atol=0.6, rtol=0)  # 0.6 points: two of the 360 validation images
    assert sorted(p.name for p in (tmp_path / "checkpoints_0").iterdir())  # rank 0 writes the checkpoints
    assert not list((tmp_path / "checkpoints_1").iterdir())  # the other ranks none


def test_ranks_that_would_prune_different_filters_stop_with_an_error(tmp_path):
    with pytest.raises(AssertionError, match="ranks \\[1\\] differ from rank 0"):
        _two_ranks(tmp_path, "plain", RankNoise())
