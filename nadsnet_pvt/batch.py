"""One NADS-Net training batch with generated samples in it (SPEC 10, with the seed's defects fixed).

For a collated batch of B samples:
1. the first `n` samples (n from `generated_count`, about B * gan_fraction) are re-rendered:
   their GAN input (9 heatmaps + 16 PAFs + seatbelt, full resolution) is drawn from the
   AUGMENTED pose on the generator's device, the generator runs without autograd, and its
   [-1, 1] output is converted to ImageNet normalisation (unless --image-range seed asks for
   the seed's unconverted frames) and moved to NADS-Net's device;
2. the labels: generated samples get the maps of their augmented pose, real samples the
   maps of their real pose (every real sample, the last one included: the seed's slice
   `B/2:-1` gave the last one augmented labels on a real image);
3. the targets are rendered on NADS-Net's device; then the geometric augmentation (SPEC 6)
   shrinks and places every sample, with random choices from a CPU generator seeded by
   (seed, epoch, batch index), so a resumed run draws the same.

The generator normalises with the batch statistics of the samples it renders (as the seed
did and as it normalised while training) without changing its stored running statistics or
spectral-norm vectors (`common.models.normalization.frozen_norm_statistics`), or, with
`eval_mode`, in eval mode with its running statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from common.augment import CANVAS_GREY_PIXEL, geometric_augment
from common.imaging import imagenet_value_of
from common.maps import nadsnet_targets
from common.rendering import GeneratedSamples
from common.sampling import epoch_generator

# Stream 0 of common.sampling.epoch_generator is the data order; geometric draws use 1 + batch index.
GEOMETRIC_STREAM_OFFSET = 1


def generated_count(batch_size: int, gan_fraction: float, batch_index: int) -> int:
    """How many samples of batch `batch_index` (0-based within the epoch) are generated.

    B * gan_fraction when that is a whole number. Otherwise the count alternates between its
    floor and ceiling so that, over the batches, the share of generated samples is
    gan_fraction (error diffusion: floor((k + 1) x) - floor(k x), x = B * gan_fraction). With
    B = 1 and 0.5 every other batch is generated. Deterministic, so a resumed run agrees.
    """
    per_batch = batch_size * gan_fraction
    # A tiny tolerance: 3 * 0.1 * 10 must count as 3, not 2.9999.
    def cumulative(k: int) -> int:
        return math.floor(k * per_batch + 1e-9)

    return min(batch_size, cumulative(batch_index + 1) - cumulative(batch_index))


def geometric_generator(seed: int, epoch: int, batch_index: int) -> torch.Generator:
    """The CPU generator of the geometric augmentation of one batch (depends on nothing else)."""
    return epoch_generator(seed, epoch, stream=GEOMETRIC_STREAM_OFFSET + batch_index)


@dataclass
class TrainingBatch:
    """What NADS-Net trains on, all on NADS-Net's device.

    images: (B, 3, S, S) ImageNet-normalised, after the geometric augmentation.
    seatbelt: (B, 1, S, S) in {0, 1}; heatmaps: (B, 9|10, S/4, S/4); pafs: (B, 16, S/4, S/4).
    label_keypoints: (B, P, 9, 2) the poses the labels were rendered from, in input pixels
        BEFORE the geometric augmentation (augmented pose for generated samples).
    generated: bool (B,) True for generated samples.
    """

    images: torch.Tensor
    seatbelt: torch.Tensor
    heatmaps: torch.Tensor
    pafs: torch.Tensor
    label_keypoints: torch.Tensor
    generated: torch.Tensor


def build_training_batch(
    batch: dict[str, Any],
    num_generated: int,
    generated_samples: GeneratedSamples | None,
    device: torch.device | str,
    include_background: bool,
    augment_generator: torch.Generator | None,
    first_sample: int = 0,
    global_batch: int | None = None,
    generator_runs: bool | None = None,
    smallest_tenths: int = 3,
) -> TrainingBatch:
    """Turn a collated PoseDataset batch into what NADS-Net trains on (see the module docstring).

    batch: collate_poses output ("image", "seatbelt", "keypoints", "augmented_keypoints").
    num_generated: the first `num_generated` samples are rendered by `generated_samples`
        (None is allowed only when num_generated is 0).
    device: NADS-Net's device.
    augment_generator: CPU generator of the geometric augmentation (`geometric_generator`),
        or None to skip it (validation pictures, tests).
    first_sample, global_batch: this batch is samples first_sample.. of a global batch of
        `global_batch` (one process's share in a distributed job; common.sampling).
    smallest_tenths: the geometric augmentation's smallest scale in tenths (the seed's 0.3).
    generator_runs: whether the generator runs for this batch (default: num_generated > 0). In a
        distributed job it runs on every process whenever the global batch has generated samples,
        on an empty share too, since its batch norms gather statistics over all processes.
    """
    device = torch.device(device)
    non_blocking = device.type == "cuda"
    images = batch["image"].to(device, non_blocking=non_blocking)
    seatbelt = batch["seatbelt"].to(device, non_blocking=non_blocking)
    keypoints = batch["keypoints"]
    size = images.shape[-1]
    batch_size = images.shape[0]
    if not 0 <= num_generated <= batch_size:
        raise ValueError(f"num_generated must be in [0, {batch_size}], got {num_generated}")
    generated = torch.zeros(batch_size, dtype=torch.bool)
    generated[:num_generated] = True
    label_keypoints = keypoints
    if num_generated > 0 if generator_runs is None else generator_runs:
        if generated_samples is None:
            raise ValueError("generated samples were asked for, but no generator is loaded")
        augmented = batch["augmented_keypoints"]
        fake = generated_samples.render(augmented[:num_generated], batch["seatbelt"][:num_generated], size)
        images = torch.cat([fake.to(device, non_blocking=non_blocking), images[num_generated:]])
        # Generated samples: the augmented pose they were drawn in; real samples: the real pose.
        label_keypoints = torch.cat([augmented[:num_generated], keypoints[num_generated:]])
    heatmaps, pafs = nadsnet_targets(label_keypoints.to(device, non_blocking=non_blocking), size, include_background)
    if augment_generator is not None:
        fill = imagenet_value_of(CANVAS_GREY_PIXEL)
        images, seatbelt, heatmaps, pafs = geometric_augment(images, seatbelt, heatmaps, pafs, augment_generator, fill,
                                                             first_sample, global_batch, smallest_tenths)
    return TrainingBatch(images, seatbelt, heatmaps, pafs, label_keypoints, generated)


class BatchRecipe:
    """SPEC 10 for one run: which samples of a batch are generated, and with which draws.

    Args:
        batch_size, gan_fraction: how many samples of each global batch are generated
            (`generated_count`: the first ones of the global batch).
        generated_samples: the generator, or None with gan_fraction 0.
        device: NADS-Net's device.
        include_background: a 10th heatmap channel in the targets.
        seed: the run's seed (the geometric augmentation's draws depend on it, the epoch and the batch).
        rank, world_size: this process's share of each global batch (common.sampling).
        smallest_scale: the geometric augmentation's smallest scale (SPEC 6: 0.3).
    """

    def __init__(self, batch_size: int, gan_fraction: float, generated_samples: GeneratedSamples | None,
                 device: torch.device, include_background: bool, seed: int, rank: int = 0, world_size: int = 1,
                 smallest_scale: float = 0.3):
        self.batch_size, self.gan_fraction = batch_size, gan_fraction
        self.generated_samples = generated_samples
        self.device = device
        self.include_background = include_background
        self.seed = seed
        self.share = batch_size // world_size
        self.first_sample = rank * self.share
        self.smallest_tenths = round(smallest_scale * 10)

    def geometric(self, epoch: int, batch_index: int) -> torch.Generator:
        return geometric_generator(self.seed, epoch, batch_index)

    def build(self, batch: dict[str, Any], epoch: int, batch_index: int) -> TrainingBatch:
        """The TrainingBatch of (this process's share of) batch `batch_index` (0-based) of `epoch`."""
        generated = generated_count(self.batch_size, self.gan_fraction, batch_index)
        local = min(max(generated - self.first_sample, 0), batch["image"].shape[0])
        return build_training_batch(batch, local, self.generated_samples, self.device, self.include_background,
                                    self.geometric(epoch, batch_index), self.first_sample, self.batch_size,
                                    generator_runs=generated > 0, smallest_tenths=self.smallest_tenths)
