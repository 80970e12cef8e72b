"""Data order that a resumed run, and every process of a distributed job, can reproduce exactly.

Each epoch's order is a permutation drawn from a torch.Generator seeded with (seed, epoch), so
it depends on nothing but those two numbers. The order is cut into global batches of
`--batch-size`; process r of a job of N trains on its share of each global batch (the same
samples one process would train on, in the same batches). A run continued mid-epoch skips
the batches it already trained on, without loading them.
"""

from __future__ import annotations

from typing import Iterator

import torch


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU torch.Generator whose state depends only on (seed, epoch, stream)."""
    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**63 - 1))
    return generator


class ResumableSampler:
    """A DataLoader `batch_sampler`: this process's indices of each global batch of one epoch,
    starting after `skip_batches` batches.

    Args:
        length: dataset size.
        batch_size: the global batch size B (all processes together).
        seed: run seed.
        shuffle: draw a permutation per epoch (training) or keep 0..length-1 (validation).
        drop_last: leave out the last incomplete batch (the seed's NADS-Net loader did; its GAN
            loader kept it).
        smallest_batch: a last batch with fewer samples is left out even without `drop_last`
            (a batch norm cannot normalise a batch that is too small).
        rank, world_size: this process and the number of processes. Training (`even`): each
            process takes B / N consecutive samples of every batch (B must divide by N), and a
            last incomplete batch that does not divide by N is left out (docs/multi-gpu.md's rule).
            Validation (`even` False): the last batch is split as evenly as it goes, and a
            process whose share is empty gets no batch.
    """

    def __init__(self, length: int, batch_size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = True,
                 smallest_batch: int = 1, rank: int = 0, world_size: int = 1, even: bool = True):
        if even and batch_size % world_size:
            raise ValueError(f"a batch of {batch_size} cannot be split evenly over {world_size} processes")
        self.length, self.batch_size, self.seed, self.shuffle = length, batch_size, seed, shuffle
        self.rank, self.world_size, self.even = rank, world_size, even
        remainder = length % batch_size
        self.keeps_last = bool(remainder) and not drop_last and remainder >= smallest_batch and \
            (not even or remainder % world_size == 0)
        self.drop_last = bool(remainder) and not self.keeps_last
        self.epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch = epoch
        self.skip_batches = skip_batches

    def batches_per_epoch(self) -> int:
        return self.length // self.batch_size + int(self.keeps_last)

    def _order(self) -> list[int]:
        if self.shuffle:
            return torch.randperm(self.length, generator=epoch_generator(self.seed, self.epoch)).tolist()
        return list(range(self.length))

    def _share(self, batch: list[int]) -> list[int]:
        """This process's part of a global batch: contiguous, as even as the batch allows."""
        base, extra = divmod(len(batch), self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return batch[start:start + base + int(self.rank < extra)]

    def __iter__(self) -> Iterator[list[int]]:
        order = self._order()
        for index in range(self.skip_batches, self.batches_per_epoch()):
            share = self._share(order[index * self.batch_size:(index + 1) * self.batch_size])
            if share:
                yield share

    def __len__(self) -> int:
        return sum(1 for _ in self)
