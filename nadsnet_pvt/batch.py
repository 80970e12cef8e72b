"""One NADS-Net training batch with generated samples in it.

For a collated batch of B real samples and n generated ones (n from `generated_count`, about
B x gan_fraction, the first n samples of each global batch):
1. the generated samples: frames in the changed poses of the first n real samples, either
   rendered now by the pretrained SPADE generator (their GAN input, 9 heatmaps + 16 PAFs +
   seatbelt at full resolution, drawn from the AUGMENTED pose on the generator's device,
   without autograd, its [-1, 1] output converted to ImageNet normalisation unless
   --image-range seed asks for the seed's unconverted frames), or frames rendered ahead of
   training (common.posedata.dataset.WithGeneratedFrames: a GAN's or the synthetic renderer's, with
   their own poses and belt masks);
2. `mode` 'replace' (the seed's recipe): they take the place of the first n real samples, so
   the batch keeps B samples, B - n of them real; 'add': they join the B real samples, B + n
   in all, so every real sample is still trained on;
3. the labels: generated samples get the maps of their changed pose, real samples those of
   their real pose (every real sample, the last one included: the seed's slice `B/2:-1` gave
   the last one augmented labels on a real image);
4. the targets are rendered on NADS-Net's device; then the geometric augmentation shrinks and
   places every sample, with random choices from a CPU generator seeded by (seed, epoch, batch
   index), so a resumed run draws the same.

The generator normalises with the batch statistics of the samples it renders (as the seed
did and as it normalised while training) without changing its stored running statistics or
spectral-norm vectors (`common.models.normalization.frozen_norm_statistics`), or, with
`eval_mode`, in eval mode with its running statistics, so that a pose renders to the same
frame whatever else is in its batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from common.posedata.augment import CANVAS_GREY_PIXEL, geometric_augment
from common.posedata.imaging import imagenet_value_of
from common.posedata.maps import nadsnet_targets
from common.models.rendering import GeneratedSamples
from common.posedata.sampling import epoch_generator

# Stream 0 of common.posedata.sampling.epoch_generator is the data order; geometric draws use 1 + batch index.
GEOMETRIC_STREAM_OFFSET = 1
GENERATED_MODES = ("replace", "add")
ADDED_STREAM_KEY = 0x5DEECE66D  # mixed into a batch's geometric seed for its added samples


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
    mode: str = "replace",
    global_generated: int | None = None,
) -> TrainingBatch:
    """Turn a collated PoseDataset batch into what NADS-Net trains on (see the module docstring).

    batch: collate_poses output ("image", "seatbelt", "keypoints", "augmented_keypoints"; with
        frames rendered ahead also "variant_image", "variant_seatbelt", "variant_keypoints").
    num_generated: generated samples made from the first `num_generated` real samples: from the
        batch's "variant_*" frames when it has them, else rendered by `generated_samples` (None
        is allowed only then, or when num_generated is 0).
    device: NADS-Net's device.
    augment_generator: CPU generator of the geometric augmentation (`geometric_generator`),
        or None to skip it (validation pictures, tests).
    first_sample, global_batch: this batch is samples first_sample.. of a global batch of
        `global_batch` real samples (one process's share in a distributed job; common.posedata.sampling).
    smallest_tenths: the geometric augmentation's smallest scale in tenths (the seed's 0.3).
    generator_runs: whether the generator runs for this batch (default: num_generated > 0). In a
        distributed job it runs on every process whenever the global batch has generated samples,
        on an empty share too, since its batch norms gather statistics over all processes.
    mode: 'replace' or 'add' (module docstring). global_generated: with 'add', the generated
        samples of the whole global batch (default num_generated): their geometric draws are made
        for that many samples from a stream of their own (`_added_generator`), the real samples'
        exactly as without them.
    """
    _check_mode(mode)
    device = torch.device(device)
    non_blocking = device.type == "cuda"
    images = batch["image"].to(device, non_blocking=non_blocking)
    seatbelt = batch["seatbelt"].to(device, non_blocking=non_blocking)
    keypoints = batch["keypoints"]
    size = images.shape[-1]
    batch_size = images.shape[0]
    if not 0 <= num_generated <= batch_size:
        raise ValueError(f"num_generated must be in [0, {batch_size}], got {num_generated}")
    runs = num_generated > 0 if generator_runs is None else generator_runs
    fake, fake_seatbelt, fake_keypoints = _generated_part(batch, num_generated, generated_samples, device, runs)
    if fake is None:
        num_generated = 0
        label_keypoints = keypoints
    elif mode == "replace":
        images = torch.cat([fake, images[num_generated:]])
        seatbelt = torch.cat([fake_seatbelt, seatbelt[num_generated:]])
        label_keypoints = torch.cat([fake_keypoints, keypoints[num_generated:]])
    else:
        images = torch.cat([images, fake])
        seatbelt = torch.cat([seatbelt, fake_seatbelt])
        label_keypoints = torch.cat([keypoints, fake_keypoints])
    generated = torch.zeros(images.shape[0], dtype=torch.bool)
    if mode == "replace":
        generated[:num_generated] = True
    else:
        generated[batch_size:] = True
    heatmaps, pafs = nadsnet_targets(label_keypoints.to(device, non_blocking=non_blocking), size, include_background)
    maps = (images, seatbelt, heatmaps, pafs)
    if augment_generator is not None:
        added = num_generated if mode == "add" else 0
        maps = _place(maps, batch_size, added, augment_generator, first_sample, global_batch,
                      added if global_generated is None else global_generated, smallest_tenths)
    return TrainingBatch(*maps, label_keypoints, generated)


def _place(maps: tuple, real_count: int, added: int, generator: torch.Generator, first_sample: int,
           global_batch: int | None, global_added: int, smallest_tenths: int) -> tuple:
    """The geometric augmentation of (images, seatbelt, heatmaps, pafs): the first `real_count`
    samples with `generator`; `added` samples after them from a stream of their own, so that the
    real samples are placed exactly as in a run without them."""
    fill = imagenet_value_of(CANVAS_GREY_PIXEL)
    placed = geometric_augment(*(m[:real_count] for m in maps), generator, fill, first_sample, global_batch,
                               smallest_tenths)
    if added:
        extra = geometric_augment(*(m[real_count:] for m in maps), _added_generator(generator), fill, first_sample,
                                  global_added, smallest_tenths)
        placed = tuple(torch.cat(pair) for pair in zip(placed, extra))
    return placed


def _check_mode(mode: str) -> None:
    if mode not in GENERATED_MODES:
        raise ValueError(f"mode must be one of {GENERATED_MODES}, got {mode!r}")


def _generated_part(batch: dict[str, Any], count: int, generated_samples: GeneratedSamples | None,
                    device: torch.device, runs: bool) -> tuple:
    """(images (n, 3, S, S), seatbelt (n, 1, S, S), keypoints (n, P, 9, 2)) of the generated
    samples made from the first `count` real ones, on `device`; (None, None, None) when none."""
    non_blocking = device.type == "cuda"
    if "variant_image" in batch:
        if count == 0:
            return None, None, None
        return (batch["variant_image"][:count].to(device, non_blocking=non_blocking),
                batch["variant_seatbelt"][:count].to(device, non_blocking=non_blocking),
                batch["variant_keypoints"][:count])
    if not runs:
        return None, None, None
    if generated_samples is None:
        raise ValueError("generated samples were asked for, but no generator is loaded")
    keypoints = batch["augmented_keypoints"][:count]
    occluded = batch["occluded"][:count] if "occluded" in batch else None
    fake = generated_samples.render(keypoints, batch["seatbelt"][:count], batch["image"].shape[-1], occluded)
    # the generator drew the real frame's belt
    return (fake.to(device, non_blocking=non_blocking), batch["seatbelt"][:count].to(device, non_blocking=non_blocking),
            keypoints)


def _added_generator(generator: torch.Generator) -> torch.Generator:
    """The geometric draws of a batch's added samples: a stream fixed by the batch's own."""
    added = torch.Generator()
    added.manual_seed(generator.initial_seed() ^ ADDED_STREAM_KEY)
    return added


class BatchRecipe:
    """Which samples of a batch are generated, how they join it, and with which draws.

    Args:
        batch_size, gan_fraction: how many samples of each global batch are generated
            (`generated_count`: from the first real samples of the global batch).
        generated_samples: the generator, or None with gan_fraction 0 or frames rendered ahead.
        device: NADS-Net's device.
        include_background: a 10th heatmap channel in the targets.
        seed: the run's seed (the geometric augmentation's draws depend on it, the epoch and the batch).
        rank, world_size: this process's share of each global batch (common.posedata.sampling).
        smallest_scale: the geometric augmentation's smallest scale (the seed's 0.3).
        mode: 'replace' (the seed's) or 'add' (see the module docstring).
    """

    def __init__(self, batch_size: int, gan_fraction: float, generated_samples: GeneratedSamples | None,
                 device: torch.device, include_background: bool, seed: int, rank: int = 0, world_size: int = 1,
                 smallest_scale: float = 0.3, mode: str = "replace"):
        _check_mode(mode)
        self.batch_size, self.gan_fraction = batch_size, gan_fraction
        self.generated_samples = generated_samples
        self.device = device
        self.include_background = include_background
        self.seed = seed
        self.share = batch_size // world_size
        self.first_sample = rank * self.share
        self.smallest_tenths = round(smallest_scale * 10)
        self.mode = mode

    def geometric(self, epoch: int, batch_index: int) -> torch.Generator:
        return geometric_generator(self.seed, epoch, batch_index)

    def build(self, batch: dict[str, Any], epoch: int, batch_index: int) -> TrainingBatch:
        """The TrainingBatch of (this process's share of) batch `batch_index` (0-based) of `epoch`."""
        generated = generated_count(self.batch_size, self.gan_fraction, batch_index)
        local = min(max(generated - self.first_sample, 0), batch["image"].shape[0])
        return build_training_batch(batch, local, self.generated_samples, self.device, self.include_background,
                                    self.geometric(epoch, batch_index), self.first_sample, self.batch_size,
                                    generator_runs=generated > 0, smallest_tenths=self.smallest_tenths,
                                    mode=self.mode, global_generated=generated)
