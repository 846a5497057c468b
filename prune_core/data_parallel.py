"""Data-parallel pruning: the ranks of a ``torch.distributed`` process group run one compress_network together.

Every rank holds the same network and masks. Each global mini-batch is split across the ranks, each rank's loss
is weighted by its share of the batch, and one all-reduce per step sums the gradients and the loss, so the
update equals one process's on the whole batch (up to summation order; BatchNorm still normalises each rank's
share by its own statistics, and running statistics are averaged over the ranks after each fine-tuning run).
Taylor score sums are averaged over the ranks before every pruning step, and the masks it gives are compared
across ranks: ranks that disagree stop the run with an error. The network changes shape at every pruning step,
so the reduction is explicit instead of a ``DistributedDataParallel`` wrapper that would be rebuilt each time.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Sampler

from prune_core.options import TrainingOptions


class RankSlices(Sampler[list[int]]):
    """This rank's contiguous share of each batch of ``batches`` (shares differ by at most one example).
    A batch smaller than the number of ranks is skipped by every rank alike."""

    def __init__(self, batches: Sampler[list[int]] | Sequence[list[int]], rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            if len(batch) >= self.world_size:
                yield [int(i) for i in torch.tensor_split(torch.as_tensor(batch), self.world_size)[self.rank]]

    def __len__(self) -> int:
        if not isinstance(self.batches, BatchSampler):
            return sum(1 for batch in self.batches if len(batch) >= self.world_size)
        # counted, not iterated: iterating a shuffling sampler would draw from its generator
        size, world_size = self.batches.batch_size, self.world_size
        full, rest = divmod(len(self.batches.sampler), size)
        return (full if size >= world_size else 0) + int(not self.batches.drop_last and rest >= world_size)


class DataParallel:
    """The process group compress_network runs in: one rank (no group, or a group of one) makes every
    method a no-op; rank 0 is the one that writes checkpoints, figures and progress."""

    def __init__(self) -> None:
        grouped = dist.is_available() and dist.is_initialized()
        self.world_size = dist.get_world_size() if grouped else 1
        self.rank = dist.get_rank() if grouped else 0
        nccl = grouped and dist.get_backend() == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        """Where the collectives' own small tensors live (NCCL: the rank's GPU)."""

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def same_seed(self, options: TrainingOptions) -> TrainingOptions:
        """``options`` with one seed for all ranks (rank 0's draw when none is set): the same shuffles."""
        if not self.active or options.seed is not None:
            return options
        seed = torch.tensor([torch.seed() % 2**31], device=self.device)
        dist.broadcast(seed, src=0)
        return dataclasses.replace(options, seed=int(seed.item()))

    def shard(self, loader: DataLoader, built_here: bool) -> DataLoader:
        """This rank's share of each mini-batch of a loader compress_network built; a loader the user gave is
        taken as already sharded, and must have as many mini-batches on every rank."""
        if not self.active:
            return loader
        if not built_here:
            counts = self._gather(torch.tensor([len(loader)], device=self.device))
            if len(set(counts.tolist())) > 1:
                raise ValueError(
                    f"the DataLoader given to compress_network has {counts.tolist()} mini-batches on ranks "
                    f"0..{self.world_size - 1}; data-parallel pruning needs the same number on every rank (use a "
                    "DistributedSampler with drop_last=True, or pass a Dataset and let compress_network split it)."
                )
            return loader
        sampler = RankSlices(loader.batch_sampler, self.rank, self.world_size)
        # the same generator: each pass draws from it as the global loader's pass would (its base seed, then the order)
        return DataLoader(
            loader.dataset, batch_sampler=sampler, num_workers=loader.num_workers, generator=loader.generator
        )

    def batch_weight(self, examples: int) -> float:
        """This rank's share of the global mini-batch: its loss is scaled by it before the backward pass."""
        if not self.active:
            return 1.0
        total = torch.tensor([float(examples)], device=self.device)
        dist.all_reduce(total)
        return examples / total.item()

    def reduce_gradients(self, network: nn.Module, weighted_loss: torch.Tensor) -> torch.Tensor:
        """Sum the weighted gradients and losses of all ranks in one all-reduce; returns the global loss."""
        if not self.active:
            return weighted_loss.detach()
        params = [p for p in network.parameters() if p.requires_grad]
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        flat = torch.cat([weighted_loss.detach().reshape(1), *(g.reshape(-1) for g in grads)])
        dist.all_reduce(flat)
        offset = 1
        for param, grad in zip(params, grads, strict=True):
            param.grad = flat[offset : offset + grad.numel()].view_as(grad).clone()
            offset += grad.numel()
        return flat[0]

    def average_scores(self, pnet) -> None:
        """Average the Taylor score sums of all ranks (each covers as many mini-batches)."""
        sums, batches = pnet.score_state()
        if not self.active or sums is None:
            return
        counts = self._gather(torch.tensor([batches], device=self.device))
        if len(set(counts.tolist())) > 1:
            raise RuntimeError(f"ranks scored different numbers of mini-batches: {counts.tolist()}.")
        for total in sums:
            dist.all_reduce(total)
            total /= self.world_size

    def check_same_masks(self, pnet, iteration: int) -> None:
        """RuntimeError, on every rank, unless all ranks kept the same filters."""
        if not self.active:
            return
        masks = torch.cat([m.to(torch.uint8).flatten().cpu() for m in pnet.unit_masks()])
        digest = int.from_bytes(hashlib.sha256(masks.numpy().tobytes()).digest()[:7], "big")
        digests = self._gather(torch.tensor([digest], dtype=torch.int64, device=self.device))
        if len(set(digests.tolist())) > 1:
            differing = [r for r, d in enumerate(digests.tolist()) if d != digests[0].item()]
            raise RuntimeError(
                f"data-parallel ranks disagree on the filters pruned at pruning iteration {iteration}: ranks "
                f"{differing} differ from rank 0. Every rank must see the same network, scores and seed."
            )

    def broadcast_state(self, network: nn.Module) -> None:
        """Rank 0's parameters and buffers on every rank."""
        if self.active:
            for tensor in network.state_dict().values():
                dist.broadcast(tensor, src=0)

    def average_buffers(self, network: nn.Module) -> None:
        """Average the floating-point buffers (BatchNorm running statistics) over the ranks."""
        if not self.active:
            return
        for buffer in network.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer /= self.world_size

    def _gather(self, value: torch.Tensor) -> torch.Tensor:
        gathered = [torch.zeros_like(value) for _ in range(self.world_size)]
        dist.all_gather(gathered, value)
        return torch.cat(gathered).cpu()
