"""Run a trained NADS-Net on frames: keypoints grouped into people, and the seatbelt mask.

    python -m nadsnet_pvt.predict --weights checkpoints/nadsnet_best.pth \
        --images data_sample/Raw_Images --out predictions/

Every frame (any size; .png, .jpg, .jpeg found in folders, any file named directly) is read
and stretched to S x S like the training data (`common.posedata.dataset.load_image`), run through the
network in batches, and its heatmap peaks are grouped into people by the PAFs
(`nadsnet_pvt.inference`). Written to --out:

- `predictions.json`: the seed's annotation format (docs/data-format.md), one "Person" per
  person found, keypoints (x, y, v) in SOURCE pixels (x * width / S, y * height / S, the
  inverse of the data loader's scaling), v = 2 where found and x = y = v = 0 where not, plus
  "score" (person score, about 0..1) and "keypoint_scores" (peak heat per keypoint, 0 where not
  found). `image_id` is the path relative to the folder given, without extension (the file
  name without extension for files named directly), so `PoseDataset(predictions.json,
  <that folder>, <out>/Seatbelt_Mask)` reads the predictions back as training data.
  A top-level "images" list names every frame processed, with its size and people count.
- `Seatbelt_Mask/<image_id>.png`: the belt (0 / 255) at the source size (network probability
  resized bilinearly, then > 0.5); only for networks with a seatbelt head.
- `overlays/<image_id>.png`: the frame with the belt tinted green and the skeletons drawn.

Nothing is half-written: the masks and overlays are written into a hidden folder inside --out
and moved into place, and predictions.json written, only once every frame succeeded; a run
that stops (an image that does not decode, Ctrl-C) leaves --out as it was. Files under --out
are never read as input, so --out may lie inside an --images folder.

Exit codes: 0 done; 2 bad options (no images found, a missing path, an image size the weights
cannot take); 1 a bad file (weights that are not a NADS-Net, an unreadable image), reported in
one line naming it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
from tqdm import tqdm

from common.training.cli import OneLineParser, run_script
from common.posedata.dataset import IMAGE_EXTENSIONS, PERSON_LABEL, DataError, annotation_file_text, image_header_size, load_image
from common.parallel.devices import parse_device
from common.errors import OptionError
from common.training.files import write_text_atomic
from common.models.factory import load_nadsnet
from common.training.options import image_size_value, positive_int
from common.posedata.visualize import draw_skeleton, overlay_mask, save_png
from nadsnet_pvt.run_files import RUN_HELP, fill_from_run
from nadsnet_pvt.inference import People, predict_people

PREDICTIONS_FILE = "predictions.json"
MASKS_DIR = "Seatbelt_Mask"
OVERLAYS_DIR = "overlays"
SEATBELT_THRESHOLD = 0.5
FOUND, NOT_FOUND = 2, 0  # the seed's visibility flags: 2 visible, 0 not labelled

PROG = "python -m nadsnet_pvt.predict"


def parse_options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=None, help="NADS-Net weights (this project's .pth with its .json, a training state, or the seed's)")
    parser.add_argument("--run", type=Path, default=None, help=RUN_HELP)
    parser.add_argument("--images", type=Path, nargs="+", required=True, help="folders (searched recursively) and/or image files")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--image-size", type=image_size_value, default=None, help="network input size S (default: the network's)")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="frames per forward pass (default 8)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    return fill_from_run(parser.parse_args(argv))


@dataclass(frozen=True)
class Frame:
    """One input frame: its annotation id, file and source size in pixels."""

    image_id: str
    path: Path
    width: int
    height: int


def collect_images(sources: Sequence[Path], out: Path | None = None) -> list[tuple[str, Path]]:
    """(image_id, path) of every image: files in folders (recursively, .png/.jpg/.jpeg, id =
    relative path without extension, '/'-separated; files under `out`, the outputs of this
    command, left out) and files named directly (id = name without extension). Raises
    OptionError for a missing path, no images, or two files with one id."""
    found: dict[str, Path] = {}
    outputs = None if out is None else out.resolve()
    for source in sources:
        if source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and (outputs is None or not p.resolve().is_relative_to(outputs)))
            pairs = [(p.relative_to(source).with_suffix("").as_posix(), p) for p in files]
        elif source.is_file():
            pairs = [(source.stem, source)]
        else:
            raise OptionError(f"--images: {source} does not exist (expected image files or folders holding them)")
        for image_id, path in pairs:
            other = found.setdefault(image_id, path)
            if other.resolve() != path.resolve():
                raise OptionError(f"--images: {other} and {path} would both be image_id {image_id!r}; name their folders instead (ids keep subfolders) or predict them in separate runs")
    if not found:
        listed = ", ".join(str(source) for source in sources)
        raise OptionError(f"--images: no images found in {listed} (expected {'/'.join(IMAGE_EXTENSIONS)} files)")
    return list(found.items())


def read_frames(pairs: Sequence[tuple[str, Path]]) -> list[Frame]:
    """Source sizes from the file headers (as PoseDataset reads them), so an unreadable image
    stops the run before anything is written. Raises DataError naming the file."""
    frames = []
    for image_id, path in pairs:
        width, height = image_header_size(path)  # as PoseDataset reads it, so predictions scale back exactly
        frames.append(Frame(image_id, path, width, height))
    return frames


def load_network(weights: Path, device: torch.device, image_size: int | None) -> tuple[torch.nn.Module, int]:
    """NADS-Net from `weights` and the input size to run it at (the network's unless given).

    Raises CheckpointError for a file that is not a NADS-Net, OptionError for a size it cannot take.
    """
    net, config = load_nadsnet(weights, device)
    network_size = int(config["image_size"])
    if image_size is None or image_size == network_size:
        return net, network_size
    if config.get("backbone", "pvt_tiny") == "pvt_tiny":
        raise OptionError(
            f"--image-size {image_size}: {weights} holds a NADS-Net for {network_size} px input (its PVT position "
            f"embeddings are learned for that size); leave --image-size out or give {network_size}"
        )
    return net, image_size  # PVT-v2 backbones run at any multiple of 32


def people_in_source_pixels(people: People, frame: Frame, image_size: int) -> np.ndarray:
    """People's (x, y) from S x S input pixels to source pixels: float64 (P, 9, 2), NaN where
    not found. The inverse of the data loader's x * S / width; clipped into the frame so that
    PoseDataset counts every found keypoint."""
    scale = np.array([frame.width / image_size, frame.height / image_size])
    xy = people.keypoints[..., :2].astype(np.float64) * scale
    return np.clip(xy, 0.0, [frame.width - 1, frame.height - 1])  # NaN stays NaN


def annotation_records(people: People, frame: Frame, image_size: int) -> list[dict]:
    """Seed-format Person annotations of one frame (one per person, best first)."""
    records = []
    for xy, keypoints, score in zip(people_in_source_pixels(people, frame, image_size), people.keypoints, people.scores):
        flat: list[float] = []
        for (x, y), found in zip(xy.tolist(), np.isfinite(xy).all(axis=1).tolist()):
            flat += [round(x, 2), round(y, 2), FOUND] if found else [0.0, 0.0, NOT_FOUND]
        records.append(
            {
                "image_id": frame.image_id,
                "label": PERSON_LABEL,
                "keypoints": flat,
                "score": round(float(score), 4),
                "keypoint_scores": [round(float(s), 4) for s in keypoints[:, 2]],
            }
        )
    return records


def source_mask(seatbelt: torch.Tensor, frame: Frame) -> np.ndarray:
    """(1, S, S) belt probability -> uint8 (height, width) 0 / 255 at the source size."""
    probability = cv2.resize(seatbelt[0].numpy(), (frame.width, frame.height), interpolation=cv2.INTER_LINEAR)
    return np.where(probability > SEATBELT_THRESHOLD, 255, 0).astype(np.uint8)


def overlay_picture(frame: Frame, people_xy: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The source frame (uint8 RGB, height x width) with the belt tinted and the skeletons drawn."""
    pixels = cv2.imread(str(frame.path), cv2.IMREAD_COLOR)
    if pixels is None:
        raise DataError(f"{frame.path}: image cannot be read or decoded (corrupt or not an image)")
    picture = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    if picture.shape[:2] != (frame.height, frame.width):  # e.g. a JPEG rotated by its EXIF tag
        picture = cv2.resize(picture, (frame.width, frame.height), interpolation=cv2.INTER_AREA)
    if mask is not None:
        picture = overlay_mask(picture, mask.astype(np.float32) / 255.0)
    thickness = max(2, round(max(frame.width, frame.height) / 320))
    return draw_skeleton(picture, people_xy, thickness=thickness)


def write_frame_outputs(out: Path, frame: Frame, people: People, seatbelt: torch.Tensor | None, image_size: int) -> None:
    """Seatbelt_Mask/<id>.png (when the network has a belt head) and overlays/<id>.png."""
    mask = source_mask(seatbelt, frame) if seatbelt is not None else None
    if mask is not None:
        save_png(out / MASKS_DIR / f"{frame.image_id}.png", mask)
    people_xy = people_in_source_pixels(people, frame, image_size)
    save_png(out / OVERLAYS_DIR / f"{frame.image_id}.png", overlay_picture(frame, people_xy, mask))


def format_predictions(annotations: Sequence[dict], images: Sequence[dict], info: dict) -> str:
    """The predictions file's text: the seed's layout, one annotation (and one image) per line."""
    return annotation_file_text(annotations, images=list(images), info=info)


def _predict_batch(
    net: torch.nn.Module, batch: Sequence[Frame], image_size: int, out: Path
) -> tuple[list[dict], list[dict], bool]:
    """Run one batch and write its masks and overlays; returns (its annotations, its image
    records, whether the network has a seatbelt head)."""
    images = torch.from_numpy(np.stack([load_image(frame.path, image_size) for frame in batch]))
    people, seatbelt = predict_people(net, images, image_size)
    annotations, image_records = [], []
    for index, frame in enumerate(batch):
        write_frame_outputs(out, frame, people[index], None if seatbelt is None else seatbelt[index], image_size)
        annotations += annotation_records(people[index], frame, image_size)
        image_records.append({"image_id": frame.image_id, "file": str(frame.path), "width": frame.width,
                              "height": frame.height, "people": len(people[index].scores)})
    return annotations, image_records, seatbelt is not None


STAGING_PREFIX = ".predict."


@contextmanager
def staged_outputs(out: Path) -> Iterator[Path]:
    """A hidden folder inside `out` to write into; on a normal exit its files are moved into
    place (each rename atomic), on any exception it is deleted, with `out` itself if this call
    created it. Staging folders that killed runs left behind are deleted first."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(f"{STAGING_PREFIX}*.tmp"):
        pid = stale.name[len(STAGING_PREFIX):].split(".")[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}.", suffix=".tmp", dir=out))
    try:
        yield staging
        for file in sorted(path for path in staging.rglob("*") if path.is_file()):
            target = out / file.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def predict(options: argparse.Namespace) -> dict:
    """Run the whole command; returns a summary (images, people, seconds, seatbelt). Raises
    OptionError, DataError, CheckpointError or OSError with one-line messages."""
    try:
        device = parse_device(options.device) if options.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    except ValueError as error:
        raise OptionError(f"--device: {error}") from None
    frames = read_frames(collect_images(options.images, options.out))
    net, image_size = load_network(options.weights, device, options.image_size)
    started = time.perf_counter()
    annotations, image_records, has_seatbelt = [], [], False
    with staged_outputs(options.out) as staging, \
            tqdm(total=len(frames), unit="image", desc="predict", dynamic_ncols=True) as bar:
        for first in range(0, len(frames), options.batch_size):
            batch = frames[first : first + options.batch_size]
            batch_annotations, batch_records, has_seatbelt = _predict_batch(net, batch, image_size, staging)
            annotations += batch_annotations
            image_records += batch_records
            bar.update(len(batch))
    info = {"weights": str(options.weights), "image_size": image_size, "seatbelt": has_seatbelt}
    write_text_atomic(format_predictions(annotations, image_records, info), options.out / PREDICTIONS_FILE)
    return {"images": len(frames), "people": len(annotations), "seconds": time.perf_counter() - started,
            "seatbelt": has_seatbelt}


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0 done, 2 bad options, 1 a bad file (one line on stderr, no traceback)."""
    return run_script(PROG, lambda args: (parse_options(args), []), run, argv)


def run(options: argparse.Namespace, messages: list[str] = ()) -> dict:
    """Predict, then say what was written in one line."""
    summary = predict(options)
    per_image = 1000.0 * summary["seconds"] / summary["images"]
    belt = f", seatbelt masks in {options.out / MASKS_DIR}" if summary["seatbelt"] else " (no seatbelt head: no masks)"
    print(
        f"{summary['images']} images, {summary['people']} people found in {summary['seconds']:.1f} s "
        f"({per_image:.0f} ms per image); wrote {options.out / PREDICTIONS_FILE}{belt}, overlays in {options.out / OVERLAYS_DIR}"
    )
    return summary


if __name__ == "__main__":
    sys.exit(main())
