"""Data order that a resumed run can reproduce exactly.

Each epoch's order is a permutation drawn from a torch.Generator seeded with (seed, epoch), so
it depends on nothing but those two numbers; a run continued mid-epoch skips the batches it
already trained on, without loading them.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU torch.Generator whose state depends only on (seed, epoch, stream)."""
    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % (2**63 - 1))
    return generator


class ResumableSampler(Sampler[int]):
    """Shuffled (or sequential) indices for one epoch, starting after `skip_batches` batches.

    Args:
        length: dataset size.
        batch_size: batch size, for `skip_batches` and `drop_last`.
        seed: run seed.
        shuffle: draw a permutation per epoch (training) or keep 0..length-1 (validation).
        drop_last: leave out the last incomplete batch (the seed's NADS-Net loader did; its GAN
            loader kept it).
        smallest_batch: a last batch with fewer samples is left out even without `drop_last`
            (a batch norm cannot normalise a batch that is too small).
    """

    def __init__(self, length: int, batch_size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = True,
                 smallest_batch: int = 1):
        self.length = length
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last or 0 < length % batch_size < smallest_batch
        self.epoch = 0
        self.skip_batches = 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch = epoch
        self.skip_batches = skip_batches

    def batches_per_epoch(self) -> int:
        if self.drop_last:
            return self.length // self.batch_size
        return -(-self.length // self.batch_size)

    def _order(self) -> list[int]:
        if self.shuffle:
            order = torch.randperm(self.length, generator=epoch_generator(self.seed, self.epoch)).tolist()
        else:
            order = list(range(self.length))
        usable = self.batches_per_epoch() * self.batch_size
        return order[: min(usable, self.length)]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.skip_batches * self.batch_size :])

    def __len__(self) -> int:
        return max(0, len(self._order()) - self.skip_batches * self.batch_size)
