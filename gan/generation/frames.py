"""The source side of generate.py: which frames, at which size, in which poses, with which belt.

Frames come from an annotation file in the seed's format (docs/data-format.md). With image or
mask files they are read and validated by `common.posedata.dataset.PoseDataset` (every file present,
headers readable, masks the size of their images, file ends intact); `poses` without files reads
the annotations alone and gives every frame the size `--frame-size`.

Two coordinate systems meet here:
- `Frames.keypoints`: (x, y) in pixels of the generator's S x S input, NaN = missing, exactly as
  PoseDataset scales them (x * S / width, y * S / height; present when v >= 1, x >= 0, y >= 0);
- annotation records: the file's own numbers, in source pixels, never recomputed unless a
  keypoint changed (`generated_keypoint_values`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from common.posedata.augment import torso_height
from common.posedata.dataset import (
    PERSON_LABEL,
    parse_person_annotations,
    read_annotation_list,
    load_seatbelt_mask,
    validated_dataset,
)
from common.errors import DataError
from common.training.files import write_atomic
from common.posedata.pose import LEFT_HIP, NUM_KEYPOINTS, RIGHT_SHOULDER
from common.posedata.visualize import overlay_mask, save_png

# --belt from-keypoints: the shoulder belt is 8.5 % of the torso height wide (as the synthetic
# frames of common/synthetic/people.py draw it), measured in input pixels at S, at least 2 px.
BELT_WIDTH_PER_TORSO = 0.085
MIN_BELT_WIDTH = 2
# A keypoint that 'highly' makes present (it was missing in the source) is written as visible.
MADE_PRESENT_VISIBILITY = 2
MISSING_VALUES = (0, 0, 0)  # the seed's "not labelled" triple (x, y, v)


@dataclass
class Frames:
    """The source frames, in the order their image ids first appear in the annotation file.

    image_ids: N normalised ids (forward slashes), paths relative to the image and mask folders.
    sizes: int64 (N, 2) (width, height) in pixels: the files' sizes, or --frame-size.
    keypoints: per frame float32 (P, 9, 2) in input pixels of S x S, NaN = missing (read-only).
    person_records: per frame its P Person annotations as in the file (same order as keypoints).
    other_records: per frame its annotations with other labels, as in the file.
    image_paths, mask_paths: the source files, or None where not given.
    belt: what the belt channel is: 'mask' (the mask files), 'empty' or 'from-keypoints'.
    describe_record: index -> "annotation 12, field 'image_id' ..." for messages (PoseDataset's).
    occluded: per frame bool (P, 9), the keypoints labelled occluded (v = 1; PoseDataset's rule);
        a changed pose keeps them, as its annotation keeps their flags.
    """

    annotation_file: Path
    image_size: int
    image_ids: list[str]
    sizes: np.ndarray
    keypoints: list[np.ndarray]
    person_records: list[list[dict]]
    other_records: list[list[dict]]
    image_paths: list[Path] | None = None
    mask_paths: list[Path] | None = None
    belt: str = "mask"
    describe_record: Callable[[int], str] | None = None
    occluded: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.image_ids)

    def size_of(self, index: int) -> tuple[int, int]:
        width, height = self.sizes[index]
        return int(width), int(height)

    def to_source_pixels(self, index: int, people: np.ndarray) -> np.ndarray:
        """(P, 9, 2) input pixels -> float64 (P, 9, 2) source pixels of frame `index` (NaN stays)."""
        width, height = self.size_of(index)
        return people.astype(np.float64) * np.array([width, height]) / self.image_size

    def belt_at_input(self, index: int) -> np.ndarray:
        """float32 (1, S, S) in {0, 1}: the generator's belt channel for frame `index`."""
        size = self.image_size
        if self.belt == "mask":
            try:
                return load_seatbelt_mask(self.mask_paths[index], size)
            except DataError as error:
                where = f" ({self.describe_record(index)})" if self.describe_record else ""
                raise DataError(f"{error}{where}") from None
        if self.belt == "from-keypoints":
            return belt_from_keypoints(self.keypoints[index], size)[None]
        return np.zeros((1, size, size), dtype=np.float32)

    def write_mask(self, index: int, stem: Path) -> Path:
        """The seatbelt mask of an output frame made from frame `index`, at `stem` + extension:
        the source mask file copied byte for byte, or the belt channel at the frame's size (0 / 255 PNG)."""
        if self.mask_paths is not None:
            source = self.mask_paths[index]
            return copy_file(source, stem.with_name(stem.name + source.suffix))
        width, height = self.size_of(index)
        belt = cv2.resize(self.belt_at_input(index)[0], (width, height), interpolation=cv2.INTER_NEAREST)
        return save_png(stem.with_name(stem.name + ".png"), (belt * 255).astype(np.uint8))

    def copy_source(self, index: int, images_dir: Path, masks_dir: Path) -> None:
        """Copy frame `index`'s image and mask files as they are, under their own id."""
        image_id = self.image_ids[index]
        for source, folder in ((self.image_paths[index], images_dir), (self.mask_paths[index], masks_dir)):
            copy_file(source, folder / (image_id + source.suffix))

    def picture(self, index: int) -> np.ndarray:
        """uint8 (height, width, 3) RGB: the source frame, or without one the belt on black."""
        width, height = self.size_of(index)
        if self.image_paths is None:
            belt = cv2.resize(self.belt_at_input(index)[0], (width, height), interpolation=cv2.INTER_NEAREST)
            return overlay_mask(np.zeros((height, width, 3), np.uint8), belt)
        pixels = cv2.imread(str(self.image_paths[index]), cv2.IMREAD_COLOR)
        if pixels is None:
            raise DataError(f"{self.image_paths[index]}: image cannot be read or decoded (corrupt or not an image)")
        picture = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
        if picture.shape[:2] != (height, width):  # e.g. a JPEG rotated by its EXIF tag
            picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)
        return picture


def copy_file(source: Path, target: Path) -> Path:
    """Copy `source` to `target` byte for byte, atomically."""
    def copy(handle) -> None:
        with open(source, "rb") as original:
            shutil.copyfileobj(original, handle)

    return write_atomic(target, copy)


def belt_from_keypoints(people: np.ndarray, image_size: int) -> np.ndarray:
    """float32 (S, S) in {0, 1}: a straight shoulder belt per person, from the right shoulder to
    the left hip, BELT_WIDTH_PER_TORSO x torso height wide (at least MIN_BELT_WIDTH px).

    people: (P, 9, 2) input pixels, NaN = missing; a person without both ends gets no belt. The
    torso height is common.posedata.augment.torso_height, or the belt's length without a neck.
    """
    canvas = np.zeros((image_size, image_size), dtype=np.uint8)
    for person in np.asarray(people, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 2):
        shoulder, hip = person[RIGHT_SHOULDER], person[LEFT_HIP]
        if not (np.isfinite(shoulder).all() and np.isfinite(hip).all()):
            continue
        torso = torso_height(person) or float(np.hypot(*(hip - shoulder)))
        width = max(MIN_BELT_WIDTH, round(BELT_WIDTH_PER_TORSO * torso))
        ends = [tuple(int(round(value)) for value in point) for point in (shoulder, hip)]
        cv2.line(canvas, ends[0], ends[1], 1, width, cv2.LINE_8)
    return canvas.astype(np.float32)


# --------------------------------------------------------------------------- reading


def read_annotated_frames(annotation_file: Path, images_dir: Path | None, masks_dir: Path | None, image_size: int,
                          log: Any, belt: str = "mask") -> Frames:
    """Frames with files: PoseDataset reads and validates the annotations, the files and their
    sizes (DataError: one line naming the file, the annotation and the field). With only one of
    the folders, that folder's files give the sizes (and the pictures, for images)."""
    images = images_dir if images_dir is not None else masks_dir
    masks = masks_dir if masks_dir is not None else images_dir
    dataset = validated_dataset(log, annotation_file, images, masks, image_size=image_size)
    person_records, other_records = records_by_frame(read_annotation_list(Path(annotation_file)), dataset.image_ids)
    return Frames(
        annotation_file=Path(annotation_file), image_size=image_size, image_ids=list(dataset.image_ids),
        sizes=dataset.source_sizes.copy(), keypoints=list(dataset.keypoints), person_records=person_records,
        other_records=other_records, image_paths=dataset.image_paths if images_dir is not None else None,
        mask_paths=dataset.mask_paths if masks_dir is not None else None,
        belt=belt if masks_dir is None else "mask", describe_record=dataset.describe_record,
        occluded=list(dataset.occluded),
    )


def read_pose_frames(annotation_file: Path, frame_size: tuple[int, int], image_size: int, belt: str) -> Frames:
    """Frames without files: every frame is `frame_size` (width, height); keypoints scaled to S
    by PoseDataset's rule (a keypoint is present when v >= 1, x >= 0 and y >= 0)."""
    annotations = read_annotation_list(Path(annotation_file))
    _, image_ids, values = parse_person_annotations(Path(annotation_file), annotations)
    rows_of_image: dict[str, list[int]] = {}
    for row, image_id in enumerate(image_ids):
        rows_of_image.setdefault(image_id, []).append(row)
    size = np.array(frame_size, dtype=np.float64)
    xy, visibility = values[:, :, :2], values[:, :, 2]
    present = (visibility >= 1) & (xy >= 0).all(axis=2)
    scaled = np.where(present[:, :, None], xy * image_size / size, np.nan).astype(np.float32)
    scaled.flags.writeable = False  # as PoseDataset's: poses are changed on copies only
    occluded = present & (visibility == 1)
    ids = list(rows_of_image)
    person_records, other_records = records_by_frame(annotations, ids)
    return Frames(
        annotation_file=Path(annotation_file), image_size=image_size, image_ids=ids,
        sizes=np.tile(np.asarray(frame_size, dtype=np.int64), (len(ids), 1)),
        keypoints=[scaled[rows] for rows in rows_of_image.values()], person_records=person_records,
        other_records=other_records, belt=belt, occluded=[occluded[rows] for rows in rows_of_image.values()],
    )


def _normalised_id(annotation: Any) -> str | None:
    image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
    return image_id.replace("\\", "/").strip("/") if isinstance(image_id, str) else None


def records_by_frame(annotations: list, image_ids: list[str]) -> tuple[list[list[dict]], list[list[dict]]]:
    """Per frame of `image_ids`: its Person annotations (file order, as PoseDataset orders its
    people) and its annotations with other labels, as the file's `annotations` list holds them."""
    position = {image_id: index for index, image_id in enumerate(image_ids)}
    persons: list[list[dict]] = [[] for _ in image_ids]
    others: list[list[dict]] = [[] for _ in image_ids]
    for annotation in annotations:
        frame = position.get(_normalised_id(annotation))
        if frame is not None:
            is_person = annotation.get("label") == PERSON_LABEL
            (persons if is_person else others)[frame].append(annotation)
    return persons, others


# --------------------------------------------------------------------------- writing poses back


def generated_keypoint_values(source_values: list, original: np.ndarray, augmented: np.ndarray,
                              width: int, height: int, image_size: int) -> list:
    """The 27 numbers (x, y, v per keypoint, source pixels) of one person in a changed pose.

    source_values: the person's `keypoints` list as in the source file.
    original, augmented: (9, 2) input pixels (NaN = missing) before and after the augmentation.
    Keypoints the augmentation left alone keep the file's three numbers exactly. A changed one is
    written at (x * width / S, y * height / S), rounded to 0.01 px, with the source's visibility
    flag, or MADE_PRESENT_VISIBILITY (2, visible) where it was missing; one pushed beyond the left
    or top edge (x < 0 or y < 0) is written as missing, (0, 0, 0).
    """
    same = (original == augmented) | (np.isnan(original) & np.isnan(augmented))
    changed = np.flatnonzero(~same.all(axis=1))
    xy = augmented.astype(np.float64) * np.array([width, height]) / image_size
    values = list(source_values)
    for keypoint in changed:
        x, y = xy[keypoint]
        visibility = values[3 * keypoint + 2]
        if not (x >= 0 and y >= 0):  # also NaN, which the augmentation never produces
            values[3 * keypoint: 3 * keypoint + 3] = list(MISSING_VALUES)
        else:
            flag = visibility if visibility >= 1 else MADE_PRESENT_VISIBILITY
            values[3 * keypoint: 3 * keypoint + 3] = [round(float(x), 2), round(float(y), 2), flag]
    return values
