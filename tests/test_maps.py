"""Label maps (common.posedata.maps): heatmaps and PAFs, numpy and torch.

tests/data/seed_map_vectors.npz holds label maps computed by the seed's own code (copied from
the project's reference data): poses of a 384 x 384 input rendered at 96 x 96 (stride 4) and
384 x 384 (stride 1), heatmaps with the background channel (sigma 7), PAFs (threshold 1 cell).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from common.posedata.maps import (
    HEATMAP_EXPONENT_CUTOFF,
    gan_input,
    nadsnet_targets,
    render_heatmaps,
    render_heatmaps_torch,
    render_pafs,
    render_pafs_torch,
    sample_label_maps,
)
from common.posedata.pose import (LEFT_ELBOW, LIMBS, NECK, NUM_KEYPOINTS, NUM_PAF_CHANNELS, RIGHT_SHOULDER,
                                  SEMANTIC_CHANNELS)

with np.load(Path(__file__).parent / "data" / "seed_map_vectors.npz") as _archive:
    SEED_MAPS = dict(_archive)  # read once: every access to an npz archive decompresses again
NUM_CASES = len([name for name in SEED_MAPS if name.endswith("_people")])
TOLERANCE = 1e-5


def seed_case(index: int) -> tuple[np.ndarray, int, int, np.ndarray, np.ndarray]:
    """(people (P, 9, 2), grid size, stride, heatmaps (10, n, n), pafs (16, n, n)) of one oracle case."""
    size, stride = (int(value) for value in SEED_MAPS[f"case{index}_size_stride"])
    return (
        SEED_MAPS[f"case{index}_people"],
        size,
        stride,
        SEED_MAPS[f"case{index}_heatmaps"],
        SEED_MAPS[f"case{index}_pafs"],
    )


def pad_people(poses: list[np.ndarray]) -> torch.Tensor:
    """Several samples' (P_i, 9, 2) poses -> (B, max P, 9, 2) NaN padded, float32 as the data loader gives."""
    most = max(len(pose) for pose in poses)
    batch = np.full((len(poses), most, NUM_KEYPOINTS, 2), np.nan)
    for sample, pose in enumerate(poses):
        batch[sample, : len(pose)] = pose
    return torch.from_numpy(batch).float()


def literal_maps(
    people: np.ndarray, height: int, width: int, stride: int, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """The seed's map rules evaluated on every cell of the grid, one person and one limb at a time (slow, obvious)."""
    start = stride / 2 - 0.5
    centre_x, centre_y = np.meshgrid(np.arange(width) * stride + start, np.arange(height) * stride + start)
    heatmaps = np.zeros((NUM_KEYPOINTS, height, width))
    for person in people:
        for channel, (x, y) in enumerate(person):
            if np.isnan(x) or np.isnan(y):
                continue
            exponent = ((centre_x - x) ** 2 + (centre_y - y) ** 2) / 2 / sigma / sigma
            heatmaps[channel] = np.minimum(heatmaps[channel] + np.exp(-exponent) * (exponent <= 4.6052), 1)
    cell_x, cell_y = np.meshgrid(np.arange(width), np.arange(height))
    pafs = np.zeros((NUM_PAF_CHANNELS, height, width))
    for limb, (joint_from, joint_to) in enumerate(LIMBS):
        total, count = np.zeros((2, height, width)), np.zeros((height, width))
        for person in people / stride:
            start_point, end_point = person[joint_from], person[joint_to]
            length = np.linalg.norm(end_point - start_point)
            if np.isnan(length) or length < 1e-8:
                continue
            unit = (end_point - start_point) / length
            low = np.round(np.minimum(start_point, end_point) - 1)
            high = np.round(np.maximum(start_point, end_point) + 1)
            on_limb = (
                (cell_x >= low[0]) & (cell_x < high[0]) & (cell_y >= low[1]) & (cell_y < high[1])
                & (np.abs((cell_x - start_point[0]) * unit[1] - (cell_y - start_point[1]) * unit[0]) <= 1)
            )
            total += on_limb * unit[:, None, None]
            count += on_limb
        pafs[2 * limb : 2 * limb + 2] = total / np.maximum(count, 1)
    return heatmaps, pafs


def random_people(rng: np.random.Generator, count: int, extent: float) -> np.ndarray:
    """Poses scattered over and beyond a square of `extent` input pixels, some keypoints missing."""
    centres = rng.uniform(-0.1 * extent, 1.1 * extent, size=(count, 1, 2))
    people = centres + rng.normal(0.0, 0.25 * extent, size=(count, NUM_KEYPOINTS, 2))
    people[rng.random((count, NUM_KEYPOINTS)) < 0.2] = np.nan
    return people


# ---------------------------------------------------------------- the seed's own numbers


@pytest.mark.parametrize("case", range(NUM_CASES))
def test_numpy_maps_match_the_seed(case):
    people, size, stride, seed_heatmaps, seed_pafs = seed_case(case)
    heatmaps = render_heatmaps(people, size, size, stride, sigma=7.0, background=True)
    pafs = render_pafs(people, size, size, stride, threshold=1.0)
    assert heatmaps.dtype == np.float32 and heatmaps.shape == seed_heatmaps.shape
    assert pafs.dtype == np.float32 and pafs.shape == seed_pafs.shape
    np.testing.assert_allclose(heatmaps, seed_heatmaps, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(pafs, seed_pafs, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("size", [96, 384])
def test_torch_maps_match_the_seed_in_one_padded_batch(size):
    cases = [case for case in map(seed_case, range(NUM_CASES)) if case[1] == size]
    assert len(cases) >= 2 and len({len(case[0]) for case in cases}) > 1  # padding is exercised
    keypoints = pad_people([case[0] for case in cases])
    stride = cases[0][2]
    heatmaps = render_heatmaps_torch(keypoints, size, size, stride, sigma=7.0, background=True)
    pafs = render_pafs_torch(keypoints, size, size, stride, threshold=1.0)
    assert heatmaps.dtype == torch.float32 and pafs.dtype == torch.float32
    for sample, (_, _, _, seed_heatmaps, seed_pafs) in enumerate(cases):
        np.testing.assert_allclose(heatmaps[sample].numpy(), seed_heatmaps, rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(pafs[sample].numpy(), seed_pafs, rtol=0, atol=TOLERANCE)


# ---------------------------------------------------------------- edge cases


def test_no_people_gives_empty_maps_and_full_background():
    for people in (np.zeros((0, NUM_KEYPOINTS, 2)), []):
        heatmaps = render_heatmaps(people, 24, 20, 4, background=True)
        assert heatmaps.shape == (NUM_KEYPOINTS + 1, 24, 20)
        assert not heatmaps[:NUM_KEYPOINTS].any() and (heatmaps[NUM_KEYPOINTS] == 1).all()
        pafs = render_pafs(people, 24, 20, 4)
        assert pafs.shape == (NUM_PAF_CHANNELS, 24, 20) and not pafs.any()
    empty = torch.zeros(3, 0, NUM_KEYPOINTS, 2)
    heatmaps = render_heatmaps_torch(empty, 24, 20, 4, background=True)
    pafs = render_pafs_torch(empty, 24, 20, 4)
    assert heatmaps.shape == (3, NUM_KEYPOINTS + 1, 24, 20) and pafs.shape == (3, NUM_PAF_CHANNELS, 24, 20)
    assert not heatmaps[:, :NUM_KEYPOINTS].any() and (heatmaps[:, NUM_KEYPOINTS] == 1).all() and not pafs.any()


def test_missing_keypoints_draw_nothing():
    people = np.full((2, NUM_KEYPOINTS, 2), np.nan)
    people[0, NECK] = (40.0, 30.0)  # only the neck of person 0; person 1 is all missing
    for heatmaps, pafs in (
        (render_heatmaps(people, 24, 24, 4), render_pafs(people, 24, 24, 4)),
        (
            render_heatmaps_torch(torch.from_numpy(people)[None], 24, 24, 4)[0].numpy(),
            render_pafs_torch(torch.from_numpy(people)[None], 24, 24, 4)[0].numpy(),
        ),
    ):
        others = [channel for channel in range(NUM_KEYPOINTS) if channel != NECK]
        assert not heatmaps[others].any()
        assert heatmaps[NECK].max() > 0.9
        assert not pafs.any()  # every limb has a missing endpoint


def test_zero_length_limb_draws_no_field_but_keeps_its_heatmaps():
    people = np.full((1, NUM_KEYPOINTS, 2), np.nan)
    people[0, NECK] = people[0, RIGHT_SHOULDER] = (50.0, 50.0)
    limb = LIMBS.index((NECK, RIGHT_SHOULDER))
    heatmaps, pafs = render_heatmaps(people, 32, 32, 4), render_pafs(people, 32, 32, 4)
    heatmaps_torch = render_heatmaps_torch(torch.from_numpy(people)[None], 32, 32, 4)[0].numpy()
    pafs_torch = render_pafs_torch(torch.from_numpy(people)[None], 32, 32, 4)[0].numpy()
    assert not pafs.any() and not pafs_torch.any()
    assert heatmaps[NECK].max() > 0.9 and heatmaps[RIGHT_SHOULDER].max() > 0.9
    np.testing.assert_allclose(heatmaps_torch, heatmaps, atol=TOLERANCE)
    # The same limb with a real length does draw (so the test above can fail).
    people[0, RIGHT_SHOULDER] = (80.0, 50.0)
    assert render_pafs(people, 32, 32, 4)[2 * limb].max() == pytest.approx(1.0)


def test_overlapping_people_clip_heat_and_average_fields():
    person = np.full((NUM_KEYPOINTS, 2), np.nan)
    person[NECK], person[RIGHT_SHOULDER] = (20.0, 20.0), (60.0, 20.0)
    mirrored = person.copy()
    mirrored[NECK], mirrored[RIGHT_SHOULDER] = person[RIGHT_SHOULDER], person[NECK]  # same cells, opposite way
    limb = LIMBS.index((NECK, RIGHT_SHOULDER))
    single = render_heatmaps(person[None], 64, 64, 1)
    double = render_heatmaps(np.stack([person, person]), 64, 64, 1)
    np.testing.assert_allclose(double, np.minimum(2 * single, 1.0), atol=TOLERANCE)
    assert double.max() == 1.0 and (double == 1.0).sum() > 1
    for people, expected_x in ((np.stack([person, person]), 1.0), (np.stack([person, mirrored]), 0.0)):
        on_limb = render_pafs(person[None], 64, 64, 1)[2 * limb] != 0
        assert on_limb.sum() > 40
        pafs_torch = render_pafs_torch(torch.from_numpy(people)[None], 64, 64, 1)[0].numpy()
        for pafs in (render_pafs(people, 64, 64, 1), pafs_torch):
            np.testing.assert_allclose(pafs[2 * limb][on_limb], expected_x, atol=TOLERANCE)


def test_heatmap_reach_ends_at_the_cutoff():
    people = np.full((1, NUM_KEYPOINTS, 2), np.nan)
    people[0, 0] = (30.0, 30.0)  # on the centre of cell (30, 30) at stride 1
    heatmap = render_heatmaps(people, 64, 64, 1, sigma=4.0)[0]
    cells_y, cells_x = np.nonzero(heatmap)
    squared = (cells_x - 30.0) ** 2 + (cells_y - 30.0) ** 2
    assert (squared / 2 / 16 <= HEATMAP_EXPONENT_CUTOFF).all()
    assert heatmap.min(where=heatmap > 0, initial=1.0) >= np.exp(-HEATMAP_EXPONENT_CUTOFF) - 1e-7
    # e = 144 / 32 = 4.5 at 12 cells still heats; e = 169 / 32 = 5.3 at 13 cells does not.
    assert heatmap[30, 42] > 0 and heatmap[30, 18] > 0 and heatmap[42, 30] > 0
    assert heatmap[30, 43] == 0 and heatmap[30, 17] == 0 and heatmap[43, 30] == 0


# ---------------------------------------------------------------- agreement on random poses


def test_numpy_and_torch_agree_with_the_literal_rule_on_random_poses():
    rng = np.random.default_rng(7)
    for trial in range(12):
        stride = (1, 4)[trial % 2]
        height, width = int(rng.integers(16, 40)), int(rng.integers(16, 40))
        sigma = float(rng.uniform(2.0, 9.0))
        poses = [random_people(rng, int(rng.integers(0, 4)), max(height, width) * stride) for _ in range(3)]
        poses[0] = np.round(poses[0])  # whole-pixel keypoints: rounding ties in the PAF boxes
        keypoints = pad_people(poses).double()
        heatmaps_torch = render_heatmaps_torch(keypoints, height, width, stride, sigma).numpy()
        pafs_torch = render_pafs_torch(keypoints, height, width, stride).numpy()
        for sample, people in enumerate(poses):
            expected_heatmaps, expected_pafs = literal_maps(people, height, width, stride, sigma)
            heatmaps = render_heatmaps(people, height, width, stride, sigma)
            pafs = render_pafs(people, height, width, stride)
            for got, expected in (
                (heatmaps, expected_heatmaps),
                (heatmaps_torch[sample], expected_heatmaps),
                (pafs, expected_pafs),
                (pafs_torch[sample], expected_pafs),
            ):
                np.testing.assert_allclose(got, expected, rtol=0, atol=TOLERANCE)


def test_torch_renderers_stay_on_the_keypoints_device():
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    people, size, stride, seed_heatmaps, seed_pafs = seed_case(0)
    for device in devices:
        keypoints = pad_people([people]).to(device)
        heatmaps = render_heatmaps_torch(keypoints, size, size, stride, background=True)
        pafs = render_pafs_torch(keypoints, size, size, stride)
        assert heatmaps.device == keypoints.device and pafs.device == keypoints.device
        np.testing.assert_allclose(heatmaps[0].cpu().numpy(), seed_heatmaps, rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(pafs[0].cpu().numpy(), seed_pafs, rtol=0, atol=TOLERANCE)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        render_heatmaps(np.zeros((2, 8, 2)), 16, 16, 4)
    with pytest.raises(ValueError):
        render_pafs_torch(torch.zeros(2, NUM_KEYPOINTS, 2), 16, 16, 4)
    with pytest.raises(ValueError):
        nadsnet_targets(torch.zeros(1, 1, NUM_KEYPOINTS, 2), 100)


# ---------------------------------------------------------------- what the networks see


def test_occluded_joints_omitted_leave_the_generator_input_and_drawn_keep_them():
    """--occluded-joints omitted: a joint labelled occluded has an empty heatmap channel and the
    limbs touching it no PAF; 'drawn' (the default, the seed's) draws it; nothing else changes."""
    seated = np.array([(0.30, 0.62), (0.32, 0.48), (0.38, 0.32), (0.50, 0.30), (0.62, 0.32), (0.68, 0.48),
                       (0.70, 0.62), (0.44, 0.76), (0.56, 0.76)]) * 64
    keypoints = pad_people([seated[None]])
    occluded = torch.zeros(1, 1, NUM_KEYPOINTS, dtype=torch.bool)
    occluded[0, 0, LEFT_ELBOW] = True
    seatbelt = torch.zeros(1, 1, 64, 64)
    drawn = gan_input(keypoints, seatbelt, 64, occluded, "drawn")
    omitted = gan_input(keypoints, seatbelt, 64, occluded, "omitted")
    assert torch.equal(drawn, gan_input(keypoints, seatbelt, 64))  # 'drawn' is today's input
    assert drawn[0, LEFT_ELBOW].max() > 0.5 and omitted[0, LEFT_ELBOW].max() == 0
    touching = [limb for limb, ends in enumerate(LIMBS) if LEFT_ELBOW in ends]
    paf_channels = [NUM_KEYPOINTS + 2 * limb + axis for limb in touching for axis in (0, 1)]
    assert drawn[0, paf_channels].abs().amax(dim=(1, 2)).min() > 0 and omitted[0, paf_channels].abs().max() == 0
    untouched = [channel for channel in range(SEMANTIC_CHANNELS) if channel not in (LEFT_ELBOW, *paf_channels)]
    assert torch.equal(drawn[0, untouched], omitted[0, untouched])
    with pytest.raises(ValueError, match="needs the occluded joints"):
        gan_input(keypoints, seatbelt, 64, None, "omitted")


def test_network_maps_at_image_size_128_scale_sigma():
    rng = np.random.default_rng(3)
    poses = [random_people(rng, 2, 128), random_people(rng, 1, 128)]
    keypoints = pad_people(poses)
    seatbelt = (torch.rand(2, 1, 128, 128, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    sigma = 7.0 * 128 / 384

    heatmaps, pafs = nadsnet_targets(keypoints, 128, background=True)
    assert heatmaps.shape == (2, NUM_KEYPOINTS + 1, 32, 32) and pafs.shape == (2, NUM_PAF_CHANNELS, 32, 32)
    assert nadsnet_targets(keypoints, 128)[0].shape == (2, NUM_KEYPOINTS, 32, 32)
    semantic = gan_input(keypoints, seatbelt, 128)
    assert semantic.shape == (2, SEMANTIC_CHANNELS, 128, 128) and semantic.dtype == torch.float32
    assert torch.equal(semantic[:, -1:], seatbelt)

    for sample, people in enumerate(poses):
        maps = sample_label_maps(people, 128, background=True)
        assert maps["heatmaps"].shape == (NUM_KEYPOINTS + 1, 32, 32) and maps["pafs"].shape == (16, 32, 32)
        assert maps["gan_heatmaps"].shape == (NUM_KEYPOINTS, 128, 128) and maps["gan_pafs"].shape == (16, 128, 128)
        np.testing.assert_allclose(maps["heatmaps"], render_heatmaps(people, 32, 32, 4, sigma, True), atol=TOLERANCE)
        np.testing.assert_allclose(maps["gan_heatmaps"], render_heatmaps(people, 128, 128, 1, sigma), atol=TOLERANCE)
        np.testing.assert_allclose(maps["gan_pafs"], render_pafs(people, 128, 128, 1), atol=TOLERANCE)
        # torch and numpy paths give the same maps
        np.testing.assert_allclose(heatmaps[sample].numpy(), maps["heatmaps"], atol=TOLERANCE)
        np.testing.assert_allclose(pafs[sample].numpy(), maps["pafs"], atol=TOLERANCE)
        np.testing.assert_allclose(semantic[sample, :NUM_KEYPOINTS].numpy(), maps["gan_heatmaps"], atol=TOLERANCE)
        np.testing.assert_allclose(semantic[sample, NUM_KEYPOINTS:-1].numpy(), maps["gan_pafs"], atol=TOLERANCE)
    # The unscaled sigma would give visibly wider blobs: the scaling is real.
    unscaled = render_heatmaps(poses[0], 128, 128, 1, sigma=7.0)
    assert (unscaled > 0).sum() > 4 * (semantic[0, :NUM_KEYPOINTS] > 0).sum().item()
