"""The seed's annotated frames as a PyTorch dataset: image, seatbelt mask and people's poses.

Annotation format: a JSON object whose `annotations` list holds objects with
`"label"`, `"image_id"` and `"keypoints"`. Only `"label": "Person"` is used. `image_id` is a
path relative to the images and masks folders, without extension; backslashes mean `/`.
`keypoints` is a flat list of 27 numbers, (x, y, v) for each of the 9 keypoints of
common.posedata.pose, in pixels of the source image; v is 0 (not labelled), 1 (occluded) or
2 (visible). Several Person annotations with the same image_id are several people.

Everything the file could get wrong is checked when the dataset is built, so a bad file fails
before training starts, with one line naming the file, the annotation and the field
(`DataError`).

Sample geometry: the frame is stretched to `image_size` x `image_size` (aspect not kept) and
keypoints are scaled with it, x * S / width and y * S / height, with sub-pixel precision.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from common.posedata.augment import ARM_AUGMENT_MODES, arm_augment
from common.errors import DataError
from common.posedata.imaging import IMAGENET_MEAN, IMAGENET_STD
from common.posedata.pose import KEYPOINT_NAMES, NUM_KEYPOINTS, check_image_size
from common.training.stopping import ignore_stop_signals

PERSON_LABEL = "Person"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")  # tried in this order
MASK_THRESHOLD = 0.5  # resized mask values above this are belt (the seed's uint8 cast lost thin belts)
VALUES_PER_ANNOTATION = 3 * NUM_KEYPOINTS
_MAX_LISTED_FILES = 5

# ImageNet normalisation folded into one multiply-add on 0..255 values, RGB order, (3, 1, 1).
_PIXEL_SCALE = (1.0 / (255.0 * np.asarray(IMAGENET_STD, dtype=np.float32))).reshape(3, 1, 1)
_PIXEL_OFFSET = (-np.asarray(IMAGENET_MEAN, dtype=np.float32) / np.asarray(IMAGENET_STD, dtype=np.float32)).reshape(
    3, 1, 1
)


# --------------------------------------------------------------------------- image decoding


def _to_8bit_range(pixels: np.ndarray) -> np.ndarray:
    """Any integer image -> float32 in the 0..255 range (16-bit: * 255 / 65535)."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32)
    if np.issubdtype(pixels.dtype, np.integer):
        return pixels.astype(np.float32) * np.float32(255.0 / np.iinfo(pixels.dtype).max)
    return pixels.astype(np.float32) * np.float32(255.0)  # float images (e.g. EXR) are in [0, 1]


def load_image(path: str | os.PathLike, image_size: int) -> np.ndarray:
    """Read a frame and return the network input image.

    Decodes as colour (grey -> 3 channels, alpha dropped, 16-bit kept at full depth and mapped
    to the 8-bit range), resizes to image_size x image_size bicubically in float32 (no
    saturation, aspect ratio not kept), BGR -> RGB, / 255, ImageNet normalisation.

    Returns float32 (3, S, S), RGB, ImageNet-normalised (about [-2.1, 2.7]).
    Raises DataError naming the file when it cannot be decoded.
    """
    pixels = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if pixels is None:
        raise DataError(f"{path}: image cannot be read or decoded (corrupt or not an image)")
    resized = cv2.resize(_to_8bit_range(pixels), (image_size, image_size), interpolation=cv2.INTER_CUBIC)
    rgb = resized.transpose(2, 0, 1)[::-1]  # (3, S, S) view, BGR -> RGB
    return np.ascontiguousarray(rgb * _PIXEL_SCALE + _PIXEL_OFFSET, dtype=np.float32)


def load_seatbelt_mask(path: str | os.PathLike, image_size: int) -> np.ndarray:
    """Read a seatbelt mask and return the network's seatbelt target.

    Takes the first channel of the file as OpenCV decodes it (the grey value of a grey PNG),
    divides by the type's maximum (255, or 65535 for 16-bit), resizes bicubically to
    image_size x image_size and thresholds at 0.5. (The seed cast the resized mask to uint8,
    which kept only pixels that were exactly 1.0, so thin belts vanished.)

    Returns float32 (1, S, S) with values in {0, 1}.
    Raises DataError naming the file when it cannot be decoded.
    """
    pixels = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise DataError(f"{path}: seatbelt mask cannot be read or decoded (corrupt or not an image)")
    if pixels.ndim == 3:
        pixels = pixels[:, :, 0]
    fraction = _to_8bit_range(np.ascontiguousarray(pixels)) * np.float32(1.0 / 255.0)
    resized = cv2.resize(fraction, (image_size, image_size), interpolation=cv2.INTER_CUBIC)
    return (resized > MASK_THRESHOLD).astype(np.float32)[None]


_FILE_ENDS = (
    # (magic at the start, marker that must appear near the end, its name)
    (b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82", "the PNG end chunk (IEND)"),
    (b"\xff\xd8", b"\xff\xd9", "the JPEG end marker (FFD9)"),
)
_TAIL_BYTES = 4096


def _check_file_end(path: Path) -> None:
    """Raise DataError when a PNG or JPEG file is cut short (its end marker is missing).

    Reads the first 8 bytes and the last 4 KiB only. (A truncated PNG fails to decode later; a
    truncated JPEG decodes "successfully" with the missing part grey, a silently wrong sample.)
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read()
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error})") from None
    for magic, end, name in _FILE_ENDS:
        if head.startswith(magic) and end not in tail:
            raise DataError(f"{path}: file is truncated ({size} bytes, {name} is missing)")


def image_header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header only (no pixel decoding)."""
    try:
        with Image.open(path) as image:
            return image.size
    except Exception as error:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise DataError(f"{path}: cannot be decoded as an image ({type(error).__name__}: {error})") from None


# --------------------------------------------------------------------------- annotation parsing


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _describe_value(position: int) -> str:
    """'keypoints[7]' -> 'y of keypoint 2 (right_shoulder)'."""
    keypoint, component = divmod(position, 3)
    return f"{'xyv'[component]} of keypoint {keypoint} ({KEYPOINT_NAMES[keypoint]})"


def read_annotation_list(annotation_file: Path) -> list:
    try:
        with open(annotation_file, "rb") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{annotation_file}: annotation file not found") from None
    except json.JSONDecodeError as error:
        raise DataError(
            f"{annotation_file}: not valid JSON (truncated or malformed): {error.msg} "
            f"at line {error.lineno}, column {error.colno} (character {error.pos})"
        ) from None
    except (UnicodeDecodeError, OSError) as error:
        raise DataError(f"{annotation_file}: cannot be read as JSON text ({error})") from None
    if not isinstance(data, dict):
        raise DataError(f"{annotation_file}: top level must be a JSON object with an 'annotations' list, got {type(data).__name__}")
    if "annotations" not in data:
        raise DataError(f"{annotation_file}: top-level object has no 'annotations' field (keys: {sorted(data)[:10]})")
    annotations = data["annotations"]
    if not isinstance(annotations, list):
        raise DataError(f"{annotation_file}: field 'annotations' must be a list, got {type(annotations).__name__}")
    if not annotations:
        raise DataError(f"{annotation_file}: field 'annotations' is an empty list; expected at least one 'Person' annotation")
    return annotations


def parse_person_annotations(annotation_file: Path, annotations: list) -> tuple[list[int], list[str], np.ndarray]:
    """Validate every annotation; return the Person annotations' indices, normalised image_ids
    and keypoints (N, 9, 3) float64 in source pixels."""
    person_indices: list[int] = []
    image_ids: list[str] = []
    keypoint_rows: list[list] = []
    other_labels: dict[str, int] = {}
    for index, annotation in enumerate(annotations):
        where = f"{annotation_file}: annotation {index}"
        if not isinstance(annotation, dict):
            raise DataError(f"{where}: expected an object with 'label', 'image_id' and 'keypoints', got {type(annotation).__name__}")
        if "label" not in annotation:
            raise DataError(f"{where}: field 'label' is missing; expected a label such as \"Person\"")
        label = annotation["label"]
        if label != PERSON_LABEL:
            other_labels[repr(label)] = other_labels.get(repr(label), 0) + 1
            continue
        for field in ("image_id", "keypoints"):
            if field not in annotation:
                raise DataError(f"{where}: field '{field}' is missing from a Person annotation")
        image_id = annotation["image_id"]
        if not isinstance(image_id, str) or not image_id.strip():
            raise DataError(f"{where}: field 'image_id' must be a non-empty relative path string, got {image_id!r}")
        keypoints = annotation["keypoints"]
        if not isinstance(keypoints, list) or len(keypoints) != VALUES_PER_ANNOTATION:
            got = f"{len(keypoints)} items" if isinstance(keypoints, list) else type(keypoints).__name__
            raise DataError(f"{where}: field 'keypoints' must be a list of {VALUES_PER_ANNOTATION} numbers (x, y, v per keypoint), got {got}")
        if not all(_is_number(value) for value in keypoints):
            position = next(p for p, value in enumerate(keypoints) if not _is_number(value))
            raise DataError(
                f"{where}: field 'keypoints'[{position}] ({_describe_value(position)}) must be a number, "
                f"got {keypoints[position]!r}"
            )
        person_indices.append(index)
        image_ids.append(image_id.replace("\\", "/").strip("/"))
        keypoint_rows.append(keypoints)

    if not person_indices:
        found = ", ".join(f"{label} x{count}" for label, count in sorted(other_labels.items()))
        raise DataError(f"{annotation_file}: no annotation has label \"{PERSON_LABEL}\" (labels found: {found})")

    values = np.asarray(keypoint_rows, dtype=np.float64)  # (N, 27); numbers only, checked above
    not_finite = ~np.isfinite(values)
    if not_finite.any():
        row, position = np.argwhere(not_finite)[0]
        raise DataError(
            f"{annotation_file}: annotation {person_indices[row]}: field 'keypoints'[{position}] "
            f"({_describe_value(position)}) must be a finite number, got {values[row, position]}"
        )
    values = values.reshape(-1, NUM_KEYPOINTS, 3)
    bad_visibility = ~np.isin(values[:, :, 2], (0.0, 1.0, 2.0))
    if bad_visibility.any():
        row, keypoint = np.argwhere(bad_visibility)[0]
        position = 3 * keypoint + 2
        raise DataError(
            f"{annotation_file}: annotation {person_indices[row]}: field 'keypoints'[{position}] "
            f"({_describe_value(position)}) must be 0, 1 or 2, got {values[row, keypoint, 2]:g}"
        )
    return person_indices, image_ids, values


def _find_file(folder: Path, image_id: str) -> Path | None:
    for extension in IMAGE_EXTENSIONS:
        candidate = folder / (image_id + extension)
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------- dataset


class PoseDataset(torch.utils.data.Dataset):
    """Frames with their seatbelt masks and people's poses, one sample per distinct image_id.

    Args:
        annotation_file: the seed-format JSON (see the module docstring).
        images_dir: folder holding `<image_id>.png` (or .jpg / .jpeg when no .png exists).
        masks_dir: folder holding the seatbelt mask `<image_id>.png` (or .jpg / .jpeg).
        image_size: network input size S (a positive multiple of 32).
        arm_augment: one of common.posedata.augment.ARM_AUGMENT_MODES, applied to a copy of the
            keypoints to give `augmented_keypoints`.
        arm_pose_library: for 'library': the (N, 2, 2) arms it draws (common.posedata.pose_library).
        seed: seed of the augmentation; sample i of epoch e draws from
            np.random.default_rng([seed, e, i]), so results do not depend on the worker count.

    Attributes (read-only by convention):
        image_ids: list[str] of N normalised ids (forward slashes), in first-seen order.
        image_paths, mask_paths: list[Path] of N files.
        source_sizes: int64 (N, 2) (width, height) of each image in pixels.
        keypoints: list of N read-only float32 arrays (P, 9, 2), (x, y) in input pixels of the
            S x S input, NaN where missing (v = 0, or a negative coordinate).
        occluded: list of N read-only bool arrays (P, 9), True where a present keypoint is
            labelled occluded (v = 1): what the generator's `--occluded-joints omitted` leaves out.

    Labelled keypoints beyond the right or bottom edge (x >= width or y >= height) are kept,
    with coordinates >= S, as the seed kept them: their heatmap tails and limbs reach
    into the frame. The metrics skip them. One warning gives their count for the whole file.

    Note: `set_epoch` changes this object; DataLoader workers get a copy when an epoch's
    iteration starts, so call it before iterating and do not use `persistent_workers=True`
    with augmentation (the workers would keep the first epoch's value).
    """

    def __init__(
        self,
        annotation_file: str | os.PathLike,
        images_dir: str | os.PathLike,
        masks_dir: str | os.PathLike,
        image_size: int = 384,
        arm_augment: str = "none",
        seed: int = 0,
        arm_pose_library: np.ndarray | None = None,
    ) -> None:
        self.image_size = check_image_size(image_size)
        if arm_augment not in ARM_AUGMENT_MODES:
            raise ValueError(f"arm_augment must be one of {ARM_AUGMENT_MODES}, got {arm_augment!r}")
        if (arm_augment == "library") != (arm_pose_library is not None):
            raise ValueError("arm_pose_library goes with arm_augment 'library', and only with it")
        self.arm_augment = arm_augment
        self.arm_pose_library = arm_pose_library
        self.seed = int(seed)
        self.epoch = 0
        self.annotation_file = Path(annotation_file)
        self.images_dir = Path(images_dir)
        self.masks_dir = Path(masks_dir)
        for name, folder in (("images", self.images_dir), ("masks", self.masks_dir)):
            if not folder.is_dir():
                raise DataError(f"{folder}: {name} folder not found (given for {self.annotation_file})")

        annotations = read_annotation_list(self.annotation_file)
        person_indices, annotation_image_ids, values = parse_person_annotations(self.annotation_file, annotations)

        # Group people by image, keeping the order in which images first appear.
        people_of_image: dict[str, list[int]] = {}
        for row, image_id in enumerate(annotation_image_ids):
            people_of_image.setdefault(image_id, []).append(row)
        self.image_ids = list(people_of_image)
        first_annotation = [person_indices[rows[0]] for rows in people_of_image.values()]
        self.first_annotation = first_annotation  # per image: index of its first annotation (for messages)

        self.image_paths, self.mask_paths = self._resolve_files(first_annotation)
        self.source_sizes = self._read_source_sizes(first_annotation)
        self.keypoints, self.occluded = self._scale_keypoints(values, list(people_of_image.values()))

    # ---- construction helpers

    def _resolve_files(self, first_annotation: list[int]) -> tuple[list[Path], list[Path]]:
        image_paths, mask_paths, missing = [], [], []
        for image_id, annotation_index in zip(self.image_ids, first_annotation):
            for kind, folder, found in (("image", self.images_dir, image_paths), ("mask", self.masks_dir, mask_paths)):
                path = _find_file(folder, image_id)
                found.append(path)
                if path is None:
                    missing.append((kind, annotation_index, folder / (image_id + IMAGE_EXTENSIONS[0])))
        if missing:
            images = sum(kind == "image" for kind, _, _ in missing)
            listed = "; ".join(
                f"annotation {index} field 'image_id' -> {kind} {path}" for kind, index, path in missing[:_MAX_LISTED_FILES]
            )
            more = f"; and {len(missing) - _MAX_LISTED_FILES} more" if len(missing) > _MAX_LISTED_FILES else ""
            raise DataError(
                f"{self.annotation_file}: {len(missing)} files missing ({images} images, {len(missing) - images} masks; "
                f"tried {'/'.join(IMAGE_EXTENSIONS)}): {listed}{more}"
            )
        return image_paths, mask_paths

    def _read_source_sizes(self, first_annotation: list[int]) -> np.ndarray:
        sizes = np.empty((len(self.image_ids), 2), dtype=np.int64)
        for i, (image_path, mask_path) in enumerate(zip(self.image_paths, self.mask_paths)):
            try:
                image_size = image_header_size(image_path)
                mask_size = image_header_size(mask_path)
            except DataError as error:
                raise DataError(f"{error} ({self.describe_record(i)})") from None
            if image_size != mask_size:
                raise DataError(
                    f"{mask_path}: mask is {mask_size[0]}x{mask_size[1]} (width x height) but its image {image_path} is "
                    f"{image_size[0]}x{image_size[1]}; expected the same size "
                    f"(annotation {first_annotation[i]}, field 'image_id' {self.image_ids[i]!r})"
                )
            sizes[i] = image_size
        return sizes

    def _scale_keypoints(self, values: np.ndarray, rows_of_image: list[list[int]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(N_annotations, 9, 3) source pixels -> per image (P, 9, 2) float32 input pixels, NaN
        missing, and per image bool (P, 9): present and labelled occluded (v = 1)."""
        image_of_row = np.empty(len(values), dtype=np.int64)
        for image_index, rows in enumerate(rows_of_image):
            image_of_row[rows] = image_index
        size_of_row = self.source_sizes[image_of_row][:, None, :].astype(np.float64)  # (N, 1, 2) w, h
        xy, visibility = values[:, :, :2], values[:, :, 2]
        present = (visibility >= 1) & (xy >= 0).all(axis=2)
        beyond = present & (xy >= size_of_row).any(axis=2)
        if beyond.any():
            warnings.warn(
                f"{self.annotation_file}: {int(beyond.sum())} labelled keypoints in "
                f"{int(beyond.any(axis=1).sum())} annotations lie beyond the right or bottom edge of their image; "
                "kept in the label maps (their in-frame heatmap tails and limbs, as the seed drew them), "
                "skipped by the metrics",
                stacklevel=3,
            )
        scaled = np.where(present[:, :, None], xy * self.image_size / size_of_row, np.nan).astype(np.float32)
        occluded = present & (visibility == 1)
        keypoints, occluded_of_image = [], []
        for rows in rows_of_image:
            people, hidden = scaled[rows], occluded[rows]
            people.flags.writeable = False  # augmentation must work on copies (the seed's aliasing bug)
            hidden.flags.writeable = False
            keypoints.append(people)
            occluded_of_image.append(hidden)
        return keypoints, occluded_of_image

    def describe_record(self, index: int) -> str:
        """'annotation 12, field 'image_id' 'cam1/frame_7'': where sample `index` comes from."""
        return f"annotation {self.first_annotation[index]}, field 'image_id' {self.image_ids[index]!r}"

    def verify_file_ends(self) -> None:
        """Check that no image or mask file is cut short (reads 4 KiB at the end of each file).

        Raises DataError naming the file, its annotation and the field. Training scripts call
        this at start-up, so a truncated file fails before training rather than hours into it.
        """
        for index, (image_path, mask_path) in enumerate(zip(self.image_paths, self.mask_paths)):
            for path in (image_path, mask_path):
                try:
                    _check_file_end(path)
                except DataError as error:
                    raise DataError(f"{error} ({self.describe_record(index)})") from None

    # ---- Dataset API

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of `epoch` (call before iterating over the epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One sample:
        "image": float32 tensor (3, S, S), RGB, ImageNet-normalised;
        "seatbelt": float32 tensor (1, S, S) in {0, 1};
        "keypoints": float32 tensor (P, 9, 2), (x, y) input pixels, NaN missing (P may be 0 only
            for datasets built otherwise; here P >= 1);
        "augmented_keypoints": float32 tensor (P, 9, 2), arm augmentation of "keypoints" drawn
            from np.random.default_rng([seed, epoch, index]); equal to "keypoints" for 'none';
        "occluded": bool tensor (P, 9), the keypoints labelled occluded (v = 1); a moved joint
            keeps its flag, as generate.py writes it (so it holds for "augmented_keypoints" too);
        "image_id": str; "index": int.
        """
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} out of range for {len(self)} samples")
        keypoints = self.keypoints[index]  # read-only: augmentation cannot alias it
        rng = np.random.default_rng([self.seed, self.epoch, index])
        width, height = self.source_sizes[index]
        augmented = arm_augment(keypoints, self.arm_augment, rng, image_size=self.image_size,
                                pixel_aspect=float(width) / float(height),
                                library=self.arm_pose_library).astype(np.float32, copy=False)
        try:
            image = load_image(self.image_paths[index], self.image_size)
            seatbelt = load_seatbelt_mask(self.mask_paths[index], self.image_size)
        except DataError as error:
            raise DataError(f"{error} ({self.describe_record(index)})") from None
        return {
            "image": torch.from_numpy(image),
            "seatbelt": torch.from_numpy(seatbelt),
            "keypoints": torch.from_numpy(keypoints.copy()),
            "augmented_keypoints": torch.from_numpy(augmented),
            "occluded": torch.from_numpy(self.occluded[index].copy()),
            "image_id": self.image_ids[index],
            "index": int(index),
        }


# The variant a sample is paired with draws from np.random.default_rng([seed, epoch, index, VARIANT_STREAM]),
# a stream apart from the arm augmentation's [seed, epoch, index].
VARIANT_STREAM = 1


class WithGeneratedFrames(torch.utils.data.Dataset):
    """Real samples, each paired with one of its frames in changed poses rendered ahead of training.

    The generated frames are a data set in the seed's layout (`annotation_file` with the
    Raw_Images and Seatbelt_Mask folders beside it), as `generate.py dataset` and the synthetic
    renderer's oracle pool write them: each Person annotation names the real frame it varies in
    its `source_image_id` field. Every real frame needs at least one such frame (DataError).

    Sample `index` of epoch e is the real sample plus "variant_image" (3, S, S),
    "variant_seatbelt" (1, S, S) and "variant_keypoints" (P, 9, 2) of one of its frames, the k-th
    drawn uniformly from np.random.default_rng([seed, epoch, index, VARIANT_STREAM]): the run's
    seed picks which variant a sample gets, the frames themselves are fixed.
    """

    def __init__(self, real: PoseDataset, annotation_file: str | os.PathLike, seed: int = 0):
        annotation_file = Path(annotation_file)
        folder = annotation_file.parent
        self.real = real
        self.frames = PoseDataset(annotation_file, folder / "Raw_Images", folder / "Seatbelt_Mask",
                                  image_size=real.image_size)
        self.seed = int(seed)
        source_of: dict[str, str] = {}
        for index, annotation in enumerate(read_annotation_list(annotation_file)):
            if not isinstance(annotation, dict) or annotation.get("label") != PERSON_LABEL:
                continue
            source = annotation.get("source_image_id")
            if not isinstance(source, str):
                raise DataError(f"{annotation_file}: annotation {index}: field 'source_image_id' (the real frame this "
                                f"frame varies) is missing or not a string, got {source!r}")
            source_of[annotation["image_id"].replace("\\", "/").strip("/")] = source.replace("\\", "/").strip("/")
        variants: dict[str, list[int]] = {}
        for frame_index, image_id in enumerate(self.frames.image_ids):
            variants.setdefault(source_of[image_id], []).append(frame_index)
        missing = [image_id for image_id in real.image_ids if image_id not in variants]
        if missing:
            raise DataError(f"{annotation_file}: no frame has 'source_image_id' {missing[0]!r} (a frame of "
                            f"{real.annotation_file}), nor {len(missing) - 1} more of its {len(real)} frames; "
                            "render the generated frames from that training set")
        self.variants = [variants[image_id] for image_id in real.image_ids]
        for index, frames in enumerate(self.variants):
            people = {len(self.frames.keypoints[f]) for f in frames}
            if people != {len(real.keypoints[index])}:
                first = frames[0]
                raise DataError(f"{annotation_file}: {self.frames.describe_record(first)} has "
                                f"{len(self.frames.keypoints[first])} people, its real frame {real.image_ids[index]!r} "
                                f"{len(real.keypoints[index])}")
        self.epoch = 0

    def verify_file_ends(self) -> None:
        self.real.verify_file_ends()
        self.frames.verify_file_ends()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.real.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.real)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.real[index]
        choices = self.variants[index]
        pick = int(np.random.default_rng([self.seed, self.epoch, index, VARIANT_STREAM]).integers(len(choices)))
        variant = self.frames[choices[pick]]
        sample.update(variant_image=variant["image"], variant_seatbelt=variant["seatbelt"],
                      variant_keypoints=variant["keypoints"], variant_id=variant["image_id"])
        return sample


def annotation_file_text(annotations: Sequence[dict], sort_keys: bool = False, **extra: Any) -> str:
    """An annotation file in the seed's format, one record per line (stable bytes, readable diffs).
    `extra` adds top-level entries after "annotations" (lists written one record per line too)."""

    def block(records: Sequence[dict]) -> str:
        return "[\n" + ",\n".join(json.dumps(record, sort_keys=sort_keys) for record in records) + "\n]" if records else "[]"

    parts = [f'"annotations": {block(annotations)}']
    parts += [f'"{key}": {block(value) if isinstance(value, list) else json.dumps(value)}' for key, value in extra.items()]
    return "{" + ",\n".join(parts) + "}\n"


def collate_poses(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch PoseDataset samples (B of them); people counts may differ (and may be 0).

    Returns:
        "image": float32 (B, 3, S, S); "seatbelt": float32 (B, 1, S, S);
        "keypoints", "augmented_keypoints": float32 (B, Pmax, 9, 2), padded with NaN people
            (Pmax = largest P in the batch, 0 when no sample has a person);
        "occluded": bool (B, Pmax, 9), padded with False (when the samples have it);
        "image_id": list[str]; "index": int64 (B,);
        with WithGeneratedFrames samples also "variant_image", "variant_seatbelt",
        "variant_keypoints" (padded to the same Pmax) and "variant_id".
    """
    if not samples:
        raise ValueError("collate_poses needs at least one sample")
    variants = "variant_image" in samples[0]
    pose_keys = ("keypoints", "augmented_keypoints") + (("variant_keypoints",) if variants else ())
    max_people = max(len(sample[key]) for sample in samples for key in pose_keys)
    batch: dict[str, Any] = {
        "image": torch.stack([sample["image"] for sample in samples]),
        "seatbelt": torch.stack([sample["seatbelt"] for sample in samples]),
        "image_id": [sample["image_id"] for sample in samples],
        "index": torch.tensor([int(sample["index"]) for sample in samples], dtype=torch.long),
    }
    if variants:
        batch["variant_image"] = torch.stack([sample["variant_image"] for sample in samples])
        batch["variant_seatbelt"] = torch.stack([sample["variant_seatbelt"] for sample in samples])
        batch["variant_id"] = [sample["variant_id"] for sample in samples]
    for key in pose_keys:
        padded = torch.full((len(samples), max_people, NUM_KEYPOINTS, 2), math.nan, dtype=torch.float32)
        for row, sample in enumerate(samples):
            people = torch.as_tensor(sample[key], dtype=torch.float32)
            padded[row, : len(people)] = people
        batch[key] = padded
    if "occluded" in samples[0]:
        batch["occluded"] = torch.zeros((len(samples), max_people, NUM_KEYPOINTS), dtype=torch.bool)
        for row, sample in enumerate(samples):
            batch["occluded"][row, : len(sample["occluded"])] = torch.as_tensor(sample["occluded"], dtype=torch.bool)
    return batch


def make_loader(dataset: PoseDataset, sampler, num_workers: int, device: torch.device) -> torch.utils.data.DataLoader:
    """The training scripts' DataLoader: the batches of a common.posedata.sampling.ResumableSampler (this
    process's share of each global batch), collated with `collate_poses`, pinned for CUDA.

    Workers are not persistent: `PoseDataset.set_epoch` (the arm augmentation's draws) must
    reach them, and only workers started anew each epoch see it. Workers ignore SIGINT and
    SIGTERM sent to the whole process group (common.training.stopping): the main process stops them.
    """
    workers = max(0, num_workers)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate_poses,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=ignore_stop_signals if workers > 0 else None,
    )


def validated_dataset(log: Any, annotation_file: str | os.PathLike, images_dir: str | os.PathLike,
                      masks_dir: str | os.PathLike, **options: Any) -> PoseDataset:
    """A PoseDataset checked before anything is written: the annotations, every file's header
    and the end of every file (DataError: one line naming the file, the record and the field).
    Its warnings (e.g. keypoints beyond the frame) become lines of `log`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = PoseDataset(annotation_file, images_dir, masks_dir, **options)
    for warning in caught:
        log.info(f"WARNING: {warning.message}")
    dataset.verify_file_ends()
    return dataset
