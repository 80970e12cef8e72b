"""Tests of common.posedata.dataset on tiny datasets written by the `tiny_dataset_dir` fixture
(random-noise frames, drawn masks; nothing is downloaded)."""

from __future__ import annotations

import importlib.util
import warnings

import cv2
import numpy as np
import pytest
import torch

from common.posedata.dataset import DataError, PoseDataset, collate_poses
from common.posedata.imaging import IMAGENET_MEAN, IMAGENET_STD

HAVE_AUGMENT = importlib.util.find_spec("common.posedata.augment") is not None
needs_augment = pytest.mark.skipif(not HAVE_AUGMENT, reason="common.posedata.augment not written yet")


def normalised(rgb_pixel) -> np.ndarray:
    """ImageNet-normalised value (3,) of an RGB pixel in 0..255."""
    return (np.asarray(rgb_pixel, dtype=np.float64) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def expected_scaled(flat_keypoints, width, height, size) -> np.ndarray:
    """(9, 2) float64 input pixels from a flat 27-list, NaN for v = 0 or negative coordinates."""
    values = np.asarray(flat_keypoints, dtype=np.float64).reshape(9, 3)
    xy = values[:, :2] * size / np.array([width, height], dtype=np.float64)
    missing = (values[:, 2] < 1) | (values[:, :2] < 0).any(axis=1)
    xy[missing] = np.nan
    return xy


# --------------------------------------------------------------------------- samples


@pytest.mark.parametrize("size", [64, 128])
def test_sample_shapes_dtypes_and_ranges(tiny_dataset_dir, size):
    data = tiny_dataset_dir(num_images=2)
    dataset = PoseDataset(*data.dataset_args(), image_size=size)
    assert len(dataset) == 2
    sample = dataset[1]
    assert sample["image"].shape == (3, size, size) and sample["image"].dtype == torch.float32
    assert sample["seatbelt"].shape == (1, size, size) and sample["seatbelt"].dtype == torch.float32
    assert sample["keypoints"].shape == (1, 9, 2) and sample["keypoints"].dtype == torch.float32
    assert sample["augmented_keypoints"].shape == (1, 9, 2)
    assert torch.equal(sample["augmented_keypoints"], sample["keypoints"])  # mode 'none'
    assert sample["image_id"] == "frame_001" and sample["index"] == 1
    assert set(torch.unique(sample["seatbelt"]).tolist()) == {0.0, 1.0}
    # Uniform noise frames: channel means near pixel 127.5 once normalised, and the bulk of the
    # values inside the normalised 0..255 range (float bicubic may overshoot it at the edges).
    image = sample["image"].numpy().reshape(3, -1)
    np.testing.assert_allclose(image.mean(axis=1), normalised([127.5] * 3), atol=0.15)
    low, high = normalised([0] * 3), normalised([255] * 3)
    assert (np.percentile(image, 2, axis=1) > low).all() and (np.percentile(image, 98, axis=1) < high).all()
    assert (np.percentile(image, 2, axis=1) < low + 0.3).all() and (np.percentile(image, 98, axis=1) > high - 0.3).all()
    assert torch.isfinite(sample["keypoints"]).all()
    assert (sample["keypoints"] >= 0).all() and (sample["keypoints"] < size).all()


def test_image_matches_float_bicubic_pipeline(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=1, width=200, height=100)
    dataset = PoseDataset(*data.dataset_args(), image_size=64)
    bgr = cv2.imread(str(data.images_dir / "frame_000.png")).astype(np.float32)
    resized = cv2.resize(bgr, (64, 64), interpolation=cv2.INTER_CUBIC)[:, :, ::-1]  # RGB
    # No saturation: float bicubic of noise overshoots 0..255, and the loader keeps that.
    assert resized.min() < 0 or resized.max() > 255
    expected = ((resized / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(dataset[0]["image"].numpy(), expected, atol=1e-5)


def test_flat_colour_is_rgb_and_imagenet_normalised(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=1)
    bgr = (10, 128, 250)
    cv2.imwrite(str(data.images_dir / "frame_000.png"), np.full((data.height, data.width, 3), bgr, np.uint8))
    image = PoseDataset(*data.dataset_args(), image_size=64)[0]["image"].numpy()
    np.testing.assert_allclose(image[:, 10, 20], normalised(bgr[::-1]), atol=1e-5)
    np.testing.assert_allclose(image.std(axis=(1, 2)), 0, atol=1e-5)


def test_keypoints_scaled_from_real_size_with_subpixel_precision(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=2, width=200, height=100)
    dataset = PoseDataset(*data.dataset_args(), image_size=128)
    assert dataset.source_sizes.tolist() == [[200, 100], [200, 100]]
    flat = data.annotations[0]["keypoints"]
    expected = expected_scaled(flat, 200, 100, 128)
    got = dataset[0]["keypoints"][0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # x and y scale differently (stretch, aspect not kept) and keep their fractions (no floor).
    assert got[3, 0] == pytest.approx(flat[9] * 128 / 200, abs=1e-4)
    assert got[3, 1] == pytest.approx(flat[10] * 128 / 100, abs=1e-4)
    assert np.any(np.abs(got - np.floor(got)) > 0.01)


def test_backslash_image_ids_in_subfolders(tiny_dataset_dir):
    data = tiny_dataset_dir(image_ids=["cam1\\seq2\\frame_a", "cam2\\frame_b"])
    dataset = PoseDataset(*data.dataset_args(), image_size=64)
    assert dataset.image_ids == ["cam1/seq2/frame_a", "cam2/frame_b"]
    assert dataset.image_paths[0] == data.images_dir / "cam1" / "seq2" / "frame_a.png"
    assert dataset.mask_paths[1] == data.masks_dir / "cam2" / "frame_b.png"
    assert dataset[0]["image_id"] == "cam1/seq2/frame_a"


def test_several_people_per_image_grouped_in_order(tiny_dataset_dir):
    data = tiny_dataset_dir(people_per_image=[2, 1, 3])
    annotations = list(data.annotations)
    # Interleave: a person of frame_000 placed last must still join frame_000, after its others.
    moved = annotations.pop(1)
    annotations.append(moved)
    data.write_annotations({"annotations": annotations})
    dataset = PoseDataset(*data.dataset_args(), image_size=64)
    assert len(dataset) == 3
    assert [len(people) for people in dataset.keypoints] == [2, 1, 3]
    people = dataset[0]["keypoints"].numpy()
    for person, annotation in zip(people, [annotations[0], moved]):
        np.testing.assert_allclose(person, expected_scaled(annotation["keypoints"], 200, 100, 64), atol=1e-4)
    assert not np.allclose(people[0], people[1])


def test_missing_and_out_of_frame_keypoints(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=2, width=200, height=100)
    first, second = (list(a["keypoints"]) for a in data.annotations[:2])
    first[0 * 3 + 2] = 0  # keypoint 0 not labelled
    first[1 * 3 + 0] = -1.0  # keypoint 1 negative x
    first[2 * 3 + 1] = -0.5  # keypoint 2 negative y
    first[3 * 3 + 0] = 200.0  # keypoint 3 at x == width: beyond the frame, kept as the seed did
    first[4 * 3 + 0] = 199.5  # keypoint 4 just inside
    second[5 * 3 + 1] = 130.0  # keypoint 5 below the frame: beyond, kept
    second[6 * 3 + 2] = 1  # occluded counts as present
    annotations = [dict(data.annotations[0], keypoints=first), dict(data.annotations[1], keypoints=second)]
    data.write_annotations({"annotations": annotations})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = PoseDataset(*data.dataset_args(), image_size=64)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "2 labelled keypoints" in messages[0] and "2 annotations" in messages[0]
    assert str(data.annotation_file) in messages[0]
    assert "beyond the right or bottom edge" in messages[0] and "kept in the label maps" in messages[0]
    people = dataset[0]["keypoints"][0].numpy()
    assert np.isnan(people[[0, 1, 2]]).all()
    assert people[3, 0] == pytest.approx(64.0, abs=1e-4)  # scaled like any keypoint, beyond the 64 px input
    assert people[4, 0] == pytest.approx(199.5 * 64 / 200, abs=1e-4)
    other = dataset[1]["keypoints"][0].numpy()
    assert other[5, 1] == pytest.approx(130.0 * 64 / 100, abs=1e-4)
    assert np.isfinite(other).all()
    # the occluded flag travels with the sample (what --occluded-joints omitted leaves out), padded with False
    assert dataset[1]["occluded"][0].nonzero().flatten().tolist() == [6] and not dataset[0]["occluded"].any()
    batch = collate_poses([dataset[0], dataset[1]])
    assert batch["occluded"].dtype == torch.bool and batch["occluded"][1, 0].nonzero().flatten().tolist() == [6]


def test_no_warning_when_all_keypoints_in_frame(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PoseDataset(*data.dataset_args(), image_size=64)


def test_grey_16bit_and_jpeg_sources(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=3, width=160, height=96)
    # frame_000: grey 8-bit image.
    cv2.imwrite(str(data.images_dir / "frame_000.png"), np.full((96, 160), 100, np.uint8))
    # frame_001: 16-bit colour image and 16-bit grey mask with a belt at 65535.
    bgr8 = np.array([10, 128, 250], np.uint16)
    cv2.imwrite(str(data.images_dir / "frame_001.png"), np.broadcast_to(bgr8 * 257, (96, 160, 3)).copy())
    mask16 = np.zeros((96, 160), np.uint16)
    mask16[40:60] = 65535
    cv2.imwrite(str(data.masks_dir / "frame_001.png"), mask16)
    # frame_002: JPEG image and mask instead of PNG.
    for folder in (data.images_dir, data.masks_dir):
        pixels = cv2.imread(str(folder / "frame_002.png"), cv2.IMREAD_UNCHANGED)
        (folder / "frame_002.png").unlink()
        cv2.imwrite(str(folder / "frame_002.jpg"), pixels)

    dataset = PoseDataset(*data.dataset_args(), image_size=64)
    grey = dataset[0]["image"].numpy()
    np.testing.assert_allclose(grey[:, 5, 5], normalised([100, 100, 100]), atol=1e-5)
    colour16 = dataset[1]
    np.testing.assert_allclose(colour16["image"][:, 30, 30].numpy(), normalised(bgr8[::-1]), atol=1e-5)
    # Rows 40..59 of 96 cover 26.7..40 of 64: rows whose centre lies inside are belt (65535 = 1.0).
    assert torch.nonzero(colour16["seatbelt"][0, :, 0]).ravel().tolist() == list(range(27, 40))
    assert torch.equal(colour16["seatbelt"][0, :, 0:1].expand(64, 64), colour16["seatbelt"][0])
    assert dataset.image_paths[2].suffix == ".jpg" and dataset.mask_paths[2].suffix == ".jpg"
    jpeg = dataset[2]
    assert set(torch.unique(jpeg["seatbelt"]).tolist()) == {0.0, 1.0}
    assert jpeg["image"].shape == (3, 64, 64)


def test_thin_belt_survives_moderate_downscaling(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=1, width=160, height=160)
    mask = np.zeros((160, 160), np.uint8)
    mask[79:81] = 255  # a 2 px horizontal belt
    mask[:, 100:102] = 255  # and a 2 px vertical one
    cv2.imwrite(str(data.masks_dir / "frame_000.png"), mask)
    belt = PoseDataset(*data.dataset_args(), image_size=128)[0]["seatbelt"][0].numpy()
    columns = np.delete(np.arange(128), np.arange(78, 84))  # away from the vertical belt
    assert belt[:, columns].sum(axis=0).min() >= 1  # every column keeps the horizontal belt
    assert belt[:, columns].sum(axis=0).max() <= 2
    rows = np.delete(np.arange(128), np.arange(61, 67))
    assert belt[rows].sum(axis=1).min() >= 1 and belt[rows].sum(axis=1).max() <= 2
    assert belt[:55].sum() == belt[:55, 78:84].sum()  # nothing far from the belts


# --------------------------------------------------------------------------- validation


def _single_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "text, fragments",
    [
        ('{"annotations": [{"image_id": "a", "label": "Person", "keypoints": [1, 2', ["not valid JSON", "line 1, column"]),
        ('{"annotations": [] ', None),  # fine JSON, empty list: handled below
        ("[1, 2, 3]", ["top level must be a JSON object"]),
        ('{"images": []}', ["no 'annotations' field"]),
        ('{"annotations": {"a": 1}}', ["'annotations' must be a list", "dict"]),
        ("", ["not valid JSON", "column 1"]),
    ],
)
def test_malformed_json_files(tiny_dataset_dir, text, fragments):
    data = tiny_dataset_dir(num_images=1)
    if fragments is None:
        text, fragments = '{"annotations": []}', ["empty list"]
    data.write_annotations(text)
    with pytest.raises(DataError) as excinfo:
        PoseDataset(*data.dataset_args(), image_size=64)
    message = _single_line_error(excinfo)
    assert str(data.annotation_file) in message
    for fragment in fragments:
        assert fragment in message


def test_truncated_json_names_position(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=2)
    text = data.annotation_file.read_text()
    data.write_annotations(text[: len(text) // 2])
    with pytest.raises(DataError, match=r"not valid JSON .* at line 1, column \d+ \(character \d+\)") as excinfo:
        PoseDataset(*data.dataset_args(), image_size=64)
    assert str(data.annotation_file) in _single_line_error(excinfo)


def _set(index, key, value):
    def edit(annotations):
        annotations[index] = dict(annotations[index], **{key: value})

    return edit


def _drop(index, key):
    def edit(annotations):
        annotations[index] = {k: v for k, v in annotations[index].items() if k != key}

    return edit


def _set_keypoint_value(index, position, value):
    def edit(annotations):
        keypoints = list(annotations[index]["keypoints"])
        keypoints[position] = value
        annotations[index] = dict(annotations[index], keypoints=keypoints)

    return edit


def _replace(index, value):
    def edit(annotations):
        annotations[index] = value

    return edit


@pytest.mark.parametrize(
    "edit, index, fragments",
    [
        (_replace(1, "oops"), 1, ["expected an object", "str"]),
        (_drop(2, "label"), 2, ["field 'label' is missing"]),
        (_drop(1, "image_id"), 1, ["field 'image_id' is missing"]),
        (_drop(0, "keypoints"), 0, ["field 'keypoints' is missing"]),
        (_set(1, "image_id", 7), 1, ["field 'image_id'", "non-empty"]),
        (_set(2, "keypoints", [1.0] * 26), 2, ["field 'keypoints'", "27 numbers", "got 26 items"]),
        (_set(2, "keypoints", {"x": 1}), 2, ["field 'keypoints'", "27 numbers", "dict"]),
        (_set_keypoint_value(1, 4, "12"), 1, ["field 'keypoints'[4]", "y of keypoint 1 (right_elbow)", "number", "'12'"]),
        (_set_keypoint_value(1, 5, None), 1, ["field 'keypoints'[5]", "v of keypoint 1", "number"]),
        (_set_keypoint_value(0, 3, True), 0, ["field 'keypoints'[3]", "number", "True"]),
        (_set_keypoint_value(2, 9, float("nan")), 2, ["field 'keypoints'[9]", "x of keypoint 3 (neck)", "finite", "nan"]),
        (_set_keypoint_value(1, 1, float("inf")), 1, ["field 'keypoints'[1]", "finite", "inf"]),
        (_set_keypoint_value(2, 26, 3), 2, ["field 'keypoints'[26]", "v of keypoint 8 (left_hip)", "0, 1 or 2", "got 3"]),
        (_set_keypoint_value(0, 2, 1.5), 0, ["field 'keypoints'[2]", "0, 1 or 2", "got 1.5"]),
        (_set_keypoint_value(0, 2, -1), 0, ["field 'keypoints'[2]", "0, 1 or 2", "got -1"]),
    ],
)
def test_invalid_annotation_fields(tiny_dataset_dir, edit, index, fragments):
    data = tiny_dataset_dir(num_images=3)
    annotations = [dict(a) for a in data.annotations]
    edit(annotations)
    data.write_annotations({"annotations": annotations})
    with pytest.raises(DataError) as excinfo:
        PoseDataset(*data.dataset_args(), image_size=64)
    message = _single_line_error(excinfo)
    assert message.startswith(f"{data.annotation_file}: annotation {index}:")
    for fragment in fragments:
        assert fragment in message


def test_no_person_annotation_lists_labels_found(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=2)
    annotations = [dict(a, label="person") for a in data.annotations[:2]] + [data.annotations[-1]]
    data.write_annotations({"annotations": annotations})
    with pytest.raises(DataError) as excinfo:
        PoseDataset(*data.dataset_args(), image_size=64)
    message = _single_line_error(excinfo)
    assert str(data.annotation_file) in message and 'no annotation has label "Person"' in message
    assert "'person' x2" in message and "'Seatbelt' x1" in message


def test_missing_files_are_all_counted(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=8)
    for i in range(6):
        (data.images_dir / f"frame_{i:03d}.png").unlink()
    (data.masks_dir / "frame_007.png").unlink()
    with pytest.raises(DataError) as excinfo:
        PoseDataset(*data.dataset_args(), image_size=64)
    message = _single_line_error(excinfo)
    assert "7 files missing (6 images, 1 masks" in message
    assert "annotation 0 field 'image_id' -> image " + str(data.images_dir / "frame_000.png") in message
    assert "and 2 more" in message
    assert "frame_005" not in message  # only the first few are listed


def test_missing_mask_names_annotation(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=3)
    (data.masks_dir / "frame_002.png").unlink()
    with pytest.raises(DataError) as excinfo:
        PoseDataset(*data.dataset_args(), image_size=64)
    message = _single_line_error(excinfo)
    assert "1 files missing (0 images, 1 masks" in message
    assert f"annotation 2 field 'image_id' -> mask {data.masks_dir / 'frame_002.png'}" in message


def test_missing_folder(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=1)
    with pytest.raises(DataError, match="masks folder not found"):
        PoseDataset(data.annotation_file, data.images_dir, data.root / "nowhere", image_size=64)
    with pytest.raises(DataError, match="annotation file not found"):
        PoseDataset(data.root / "none.json", data.images_dir, data.masks_dir, image_size=64)


def test_mask_size_mismatch(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=3, width=200, height=100)
    cv2.imwrite(str(data.masks_dir / "frame_001.png"), np.zeros((50, 100), np.uint8))
    with pytest.raises(DataError) as excinfo:
        PoseDataset(*data.dataset_args(), image_size=64)
    message = _single_line_error(excinfo)
    assert message.startswith(str(data.masks_dir / "frame_001.png"))
    assert "mask is 100x50" in message and "200x100" in message and str(data.images_dir / "frame_001.png") in message
    assert "annotation 1, field 'image_id'" in message


def test_undecodable_image_found_at_construction(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=2)
    (data.images_dir / "frame_001.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError) as excinfo:
        PoseDataset(*data.dataset_args(), image_size=64)
    message = _single_line_error(excinfo)
    assert message.startswith(str(data.images_dir / "frame_001.png")) and "cannot be decoded" in message


def test_corrupt_image_raises_at_getitem(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=2)
    path = data.images_dir / "frame_001.png"
    path.write_bytes(path.read_bytes()[:200])  # header intact, pixel data truncated
    dataset = PoseDataset(*data.dataset_args(), image_size=64)  # the header check passes
    dataset[0]
    with pytest.raises(DataError) as excinfo:
        dataset[1]
    assert str(path) in _single_line_error(excinfo)


def test_image_size_and_mode_checked(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=1)
    with pytest.raises(ValueError, match="multiple of 32"):
        PoseDataset(*data.dataset_args(), image_size=100)
    with pytest.raises(ValueError, match="arm_augment"):
        PoseDataset(*data.dataset_args(), image_size=64, arm_augment="wild")


# --------------------------------------------------------------------------- batching, augmentation


def test_collate_pads_people_with_nan(tiny_dataset_dir):
    data = tiny_dataset_dir(people_per_image=[2, 1])
    dataset = PoseDataset(*data.dataset_args(), image_size=64)
    nobody = dict(dataset[1], keypoints=torch.zeros(0, 9, 2), augmented_keypoints=torch.zeros(0, 9, 2), index=7)
    batch = collate_poses([dataset[0], dataset[1], nobody])
    assert batch["image"].shape == (3, 3, 64, 64) and batch["seatbelt"].shape == (3, 1, 64, 64)
    for key in ("keypoints", "augmented_keypoints"):
        assert batch[key].shape == (3, 2, 9, 2) and batch[key].dtype == torch.float32
        assert torch.equal(batch[key][0], dataset[0][key])
        assert torch.equal(batch[key][1, :1], dataset[1][key])
        assert torch.isnan(batch[key][1, 1]).all() and torch.isnan(batch[key][2]).all()
    assert batch["image_id"] == ["frame_000", "frame_001", "frame_001"]
    assert batch["index"].dtype == torch.long and batch["index"].tolist() == [0, 1, 7]
    empty = collate_poses([nobody, nobody])
    assert empty["keypoints"].shape == (2, 0, 9, 2)


def test_dataloader_with_workers(tiny_dataset_dir):
    data = tiny_dataset_dir(people_per_image=[1, 3, 2, 1])
    dataset = PoseDataset(*data.dataset_args(), image_size=64)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_poses)
    batches = list(loader)
    assert [b["keypoints"].shape[1] for b in batches] == [3, 2]
    assert torch.equal(batches[1]["keypoints"][0], dataset[2]["keypoints"])


@needs_augment
def test_set_epoch_determinism_and_keypoints_never_changed(tiny_dataset_dir):
    data = tiny_dataset_dir(people_per_image=[2, 1, 1])
    dataset = PoseDataset(*data.dataset_args(), image_size=64, arm_augment="highly", seed=3)
    original = [people.copy() for people in dataset.keypoints]
    dataset.set_epoch(0)
    epoch0 = [dataset[i]["augmented_keypoints"] for i in (2, 1, 0)][::-1]
    assert not torch.equal(epoch0[0], torch.from_numpy(original[0]))  # 'highly' moves the arms
    dataset.set_epoch(1)
    epoch1 = [dataset[i]["augmented_keypoints"] for i in range(3)]
    dataset.set_epoch(0)
    again = [dataset[i]["augmented_keypoints"] for i in range(3)]  # other order, same draws
    for first, second in zip(epoch0, again):
        assert torch.equal(first, second)
    assert not all(torch.equal(a, b) for a, b in zip(epoch0, epoch1))
    for i in range(3):
        np.testing.assert_array_equal(dataset.keypoints[i], original[i])
        np.testing.assert_array_equal(dataset[i]["keypoints"].numpy(), original[i])
    # The unaugmented joints (shoulders, neck, hips) are shared with the original pose.
    torso = [2, 3, 4, 7, 8]
    np.testing.assert_array_equal(epoch0[0][:, torso].numpy(), original[0][:, torso])
    # Worker count does not change the draws.
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate_poses)
    (batch,) = list(loader)
    np.testing.assert_array_equal(batch["augmented_keypoints"][0].numpy(), epoch0[0].numpy())
    np.testing.assert_array_equal(batch["augmented_keypoints"][2, :1].numpy(), epoch0[2].numpy())
    other_seed = PoseDataset(*data.dataset_args(), image_size=64, arm_augment="highly", seed=4)
    assert not torch.equal(other_seed[0]["augmented_keypoints"], epoch0[0])


@needs_augment
def test_returned_keypoints_are_copies(tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=1)
    dataset = PoseDataset(*data.dataset_args(), image_size=64, arm_augment="slightly")
    sample = dataset[0]
    sample["keypoints"] += 5
    sample["augmented_keypoints"] += 5
    assert torch.allclose(dataset[0]["keypoints"], sample["keypoints"] - 5)
