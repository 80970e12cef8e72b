"""Bad data through the real entry points, train_gan.py and train_nadsnet.py (issue 7, item 5).

Every case either trains, or fails before training starts with ONE line on stderr naming the
file, the record (annotation) and the field -- no traceback -- and leaves no output behind
(the checkpoints folder is never created). The dataset-level details of each check are in
tests/test_dataset.py; here the point is what a user of the scripts sees.

Most cases run in-process through the scripts' `main` (stderr captured); one per script runs
as a real subprocess (the data loader's worker process included). Tiny configurations, random
weights on purpose, nothing downloaded.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
import torch

from common.training.checkpoints import load_file
from common.posedata.dataset import PoseDataset
from common.posedata.sampling import ResumableSampler

from conftest import SINGLE_THREAD_ENV

ROOT = Path(__file__).resolve().parents[1]
PROGRESS_BAR = re.compile(r"\|\s*\d+/\d+ \[")


# Subprocess and in-process runs on one thread: faster and steadier on a loaded 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def gan_args(data, checkpoints: Path, *extra: str, max_iterations: int | None = 1) -> list[str]:
    limit = ["--max-iterations", str(max_iterations)] if max_iterations else []
    return limit + [
        "--train-annotations", str(data.annotation_file),
        "--images-dir", str(data.images_dir),
        "--masks-dir", str(data.masks_dir),
        "--checkpoints-dir", str(checkpoints),
        "--preset", "cpu", "--amp", "off", "--image-size", "32", "--ngf", "4", "--ndf", "4", "--batch-size", "2",
        "--niter", "1", "--niter-decay", "0", "--num-workers", "0",
        "--print-freq", "1", "--display-freq", "1000", "--save-latest-freq", "1000", "--save-epoch-freq", "100",
        "--no-vgg-loss", "--nadsnet-weights", "none", "--no-html",
        *extra,
    ]


def run_gan(argv: list[str]) -> int:
    from gan.train import main

    return main(argv)


def add_validation_file(data) -> None:
    """train_nadsnet.py also needs a validation JSON: the first image, written aside (so the
    changes below, made to the training JSON, do not touch it)."""
    data.valid_file = data.root / "valid.json"
    data.valid_file.write_text(json.dumps({"annotations": [data.annotations[0]]}))


def nadsnet_args(data, checkpoints: Path, *extra: str) -> list[str]:
    return [
        "--train-annotations", str(data.annotation_file), "--valid-annotations", str(data.valid_file),
        "--images-dir", str(data.images_dir), "--masks-dir", str(data.masks_dir),
        "--checkpoints-dir", str(checkpoints),
        "--preset", "cpu", "--amp", "off", "--image-size", "32", "--batch-size", "2", "--epochs", "1", "--num-workers", "0",
        "--gan-fraction", "0", "--arm-augment", "none", "--display-samples", "1", "--no-html",
        *extra,
    ]


def run_nadsnet(argv: list[str]) -> int:
    from nadsnet_pvt.train import main

    return main(argv)


def run_script(script: str, data, checkpoints: Path, *extra: str) -> int:
    """Run train_gan.py's or train_nadsnet.py's main in-process on `data` (1 iteration / 1 epoch)."""
    if script == "gan":
        return run_gan(gan_args(data, checkpoints, *extra))
    return run_nadsnet(nadsnet_args(data, checkpoints, *extra))


def stderr_lines(stderr: str) -> list[str]:
    """What stays on the terminal: non-empty lines, without tqdm's redraws (cleared on close)
    and without libpng's own complaint about a corrupt file (printed by the C library)."""
    pieces = [piece for line in stderr.splitlines() for piece in line.split("\r")]
    return [p for p in pieces if p.strip() and not PROGRESS_BAR.search(p) and not p.startswith("libpng error")]


def one_error_line(stderr: str) -> str:
    lines = stderr_lines(stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


# --------------------------------------------------------------------------- the cases

def _edit_annotations(edit: Callable[[list[dict]], None]):
    def apply(data) -> None:
        annotations = [dict(a) for a in data.annotations]
        edit(annotations)
        data.write_annotations({"annotations": annotations})
    return apply


def _set_keypoint(index: int, position: int, value):
    def edit(annotations):
        keypoints = list(annotations[index]["keypoints"])
        keypoints[position] = value
        annotations[index]["keypoints"] = keypoints
    return _edit_annotations(edit)


def _raw_json(text_of: Callable[[str], str]):
    def apply(data) -> None:
        data.write_annotations(text_of(data.annotation_file.read_text()))
    return apply


def _file(kind: str, name: str) -> Callable:
    return lambda data: (data.images_dir if kind == "image" else data.masks_dir) / f"{name}.png"


def _replace_bytes(kind: str, make: Callable[[bytes], bytes]):
    def apply(data) -> None:
        path = _file(kind, "frame_001")(data)
        path.write_bytes(make(path.read_bytes()))
    return apply


def _delete(kind: str):
    return lambda data: _file(kind, "frame_001")(data).unlink()


def _small_mask(data) -> None:
    cv2.imwrite(str(data.masks_dir / "frame_001.png"), np.zeros((data.height // 2, data.width // 2), np.uint8))


def _truncated_jpeg(data) -> None:
    path = data.images_dir / "frame_001.png"
    pixels = cv2.imread(str(path))
    path.unlink()
    ok, encoded = cv2.imencode(".jpg", pixels)
    (data.images_dir / "frame_001.jpg").write_bytes(encoded.tobytes()[: len(encoded) // 2])


# (case id, change to the tiny dataset, fragments the one error line must contain; "{file}",
# "{images}" and "{masks}" are filled in)
FAILING_CASES = [
    ("truncated-json", _raw_json(lambda text: text[: len(text) // 2]), ["{json}", "not valid JSON", "line 1, column"]),
    ("malformed-json", _raw_json(lambda text: text.replace('"label"', "'label'", 1)), ["{json}", "not valid JSON"]),
    ("wrong-keypoint-count", _edit_annotations(lambda a: a[1].update(keypoints=a[1]["keypoints"][:24])),
     ["{json}", "annotation 1", "field 'keypoints'", "got 24 items"]),
    ("nan-keypoint", _set_keypoint(2, 4, float("nan")), ["{json}", "annotation 2", "field 'keypoints'[4]", "finite", "nan"]),
    ("infinite-keypoint", _set_keypoint(0, 9, float("inf")), ["{json}", "annotation 0", "field 'keypoints'[9]", "inf"]),
    ("string-keypoint", _set_keypoint(1, 3, "101.5"), ["{json}", "annotation 1", "field 'keypoints'[3]", "'101.5'"]),
    ("missing-image", _delete("image"), ["{json}", "annotation 1 field 'image_id'", "{images}/frame_001.png"]),
    ("missing-mask", _delete("mask"), ["{json}", "annotation 1 field 'image_id'", "{masks}/frame_001.png"]),
    ("corrupt-image", _replace_bytes("image", lambda b: b"GIF89a not really"),
     ["{images}/frame_001.png", "cannot be decoded", "annotation 1, field 'image_id' 'frame_001'"]),
    ("corrupt-mask", _replace_bytes("mask", lambda b: b"\x00" * 64),
     ["{masks}/frame_001.png", "cannot be decoded", "annotation 1, field 'image_id' 'frame_001'"]),
    ("truncated-image", _replace_bytes("image", lambda b: b[: len(b) * 2 // 3]),
     ["{images}/frame_001.png", "truncated", "IEND", "annotation 1, field 'image_id' 'frame_001'"]),
    ("truncated-mask", _replace_bytes("mask", lambda b: b[:120]),
     ["{masks}/frame_001.png", "truncated", "annotation 1, field 'image_id' 'frame_001'"]),
    ("truncated-jpeg", _truncated_jpeg, ["{images}/frame_001.jpg", "truncated", "FFD9", "annotation 1"]),
    ("mask-size-differs", _small_mask, ["{masks}/frame_001.png", "mask is 48x40", "96x80", "annotation 1, field 'image_id'"]),
    ("empty-dataset", _raw_json(lambda text: '{"annotations": []}'), ["{json}", "'annotations' is an empty list"]),
    ("no-person-labels", _edit_annotations(lambda a: [x.update(label="Driver") for x in a]),
     ["{json}", 'no annotation has label "Person"', "'Driver' x"]),
]


def _fill(fragment: str, data) -> str:
    return fragment.format(json=data.annotation_file, images=data.images_dir, masks=data.masks_dir)


@pytest.mark.parametrize("script", ["gan", "nadsnet"])
@pytest.mark.parametrize("case, change, fragments", FAILING_CASES, ids=[case[0] for case in FAILING_CASES])
def test_bad_data_fails_fast_with_one_line_and_no_outputs(tiny_dataset_dir, tmp_path, capsys, script, case, change, fragments):
    data = tiny_dataset_dir(num_images=3, width=96, height=80)
    add_validation_file(data)
    change(data)
    checkpoints = tmp_path / "checkpoints"
    assert run_script(script, data, checkpoints) == 1
    line = one_error_line(capsys.readouterr().err)
    for fragment in fragments:
        assert _fill(fragment, data) in line, (fragment, line)
    assert not checkpoints.exists()


# --------------------------------------------------------------------------- cases that work


def test_bad_validation_file_fails_fast_too(tiny_dataset_dir, tmp_path, capsys):
    data = tiny_dataset_dir(num_images=3, width=96, height=80)
    add_validation_file(data)
    data.valid_file.write_text(json.dumps({"annotations": [dict(data.annotations[0], keypoints=[1.0] * 26)]}))
    assert run_nadsnet(nadsnet_args(data, tmp_path / "checkpoints")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"{data.valid_file}: annotation 0: field 'keypoints'" in line and "got 26 items" in line
    assert not (tmp_path / "checkpoints").exists()


def test_gan_missing_and_out_of_frame_keypoints_train_with_one_warning(tiny_dataset_dir, tmp_path, capsys):
    data = tiny_dataset_dir(num_images=2, width=96, height=80)
    annotations = [dict(a) for a in data.annotations]
    first, second = list(annotations[0]["keypoints"]), list(annotations[1]["keypoints"])
    first[0], first[4] = -3.0, -0.5  # negative: missing, silently
    second[6] = 96.0  # x == width: beyond the frame (kept in the maps, as the seed did)
    second[10] = 500.0  # y far below the frame
    annotations[0]["keypoints"], annotations[1]["keypoints"] = first, second
    data.write_annotations({"annotations": annotations})
    assert run_gan(gan_args(data, tmp_path / "run")) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.out.splitlines() if "WARNING" in line and "beyond the right or bottom edge" in line]
    assert len(warnings) == 1 and "2 labelled keypoints in 1 annotations" in warnings[0]
    assert "Traceback" not in captured.err and (tmp_path / "run" / "gan_train_state.pth").is_file()


def test_gan_grey_and_16bit_pngs_train(tiny_dataset_dir, tmp_path, capsys):
    data = tiny_dataset_dir(num_images=2, width=96, height=80)
    rng = np.random.default_rng(1)
    cv2.imwrite(str(data.images_dir / "frame_000.png"), rng.integers(0, 256, (80, 96), dtype=np.uint8))  # grey
    cv2.imwrite(str(data.images_dir / "frame_001.png"), rng.integers(0, 65536, (80, 96, 3), dtype=np.uint16))
    mask16 = np.zeros((80, 96), np.uint16)
    mask16[30:40] = 65535
    cv2.imwrite(str(data.masks_dir / "frame_001.png"), mask16)
    assert run_gan(gan_args(data, tmp_path / "run")) == 0
    lines = (tmp_path / "run" / "loss_log.txt").read_text().splitlines()
    assert len(lines) == 1 and "nan" not in lines[0]


def test_nadsnet_trains_on_out_of_frame_keypoints_grey_and_16bit_pngs(tiny_dataset_dir, tmp_path, capsys):
    """The cases that work, for train_nadsnet.py in one tiny run (2 training frames, 1 validation)."""
    data = tiny_dataset_dir(num_images=3, width=96, height=80)
    annotations = [dict(a) for a in data.annotations if a["label"] == "Person"]
    keypoints = list(annotations[1]["keypoints"])
    keypoints[0], keypoints[7] = -2.0, 80.0  # negative x (missing), y == height (outside: warned)
    annotations[1]["keypoints"] = keypoints
    data.write_annotations({"annotations": annotations[:2]})
    data.valid_file = data.root / "valid.json"
    data.valid_file.write_text(json.dumps({"annotations": annotations[2:]}))
    rng = np.random.default_rng(2)
    cv2.imwrite(str(data.images_dir / "frame_000.png"), rng.integers(0, 256, (80, 96), dtype=np.uint8))
    cv2.imwrite(str(data.images_dir / "frame_002.png"), rng.integers(0, 65536, (80, 96, 3), dtype=np.uint16))
    cv2.imwrite(str(data.masks_dir / "frame_002.png"), np.full((80, 96), 65535, np.uint16))
    assert run_nadsnet(nadsnet_args(data, tmp_path / "run")) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.out.splitlines() if "WARNING" in line and "beyond the right or bottom edge" in line]
    assert len(warnings) == 1 and "1 labelled keypoints in 1 annotations" in warnings[0]
    assert "Traceback" not in captured.err
    assert "valid: total" in (tmp_path / "run" / "nadsnet_log.txt").read_text()


def test_very_large_images_load(tiny_dataset_dir):
    """4000 x 3000 frames (a smooth gradient, so the PNG is quick to write): loaded, resized,
    keypoints scaled; the start-up checks read only headers and file ends."""
    data = tiny_dataset_dir(num_images=1, width=4000, height=3000)
    gradient = np.broadcast_to(np.linspace(0, 255, 4000, dtype=np.float32).astype(np.uint8), (3000, 4000))
    cv2.imwrite(str(data.images_dir / "frame_000.png"), cv2.merge([gradient, gradient, gradient]))
    dataset = PoseDataset(*data.dataset_args(), image_size=64)
    dataset.verify_file_ends()
    assert dataset.source_sizes.tolist() == [[4000, 3000]]
    sample = dataset[0]
    assert sample["image"].shape == (3, 64, 64) and torch.isfinite(sample["image"]).all()
    neck = np.asarray(data.annotations[0]["keypoints"][9:11]) * 64 / np.array([4000, 3000])
    np.testing.assert_allclose(sample["keypoints"][0, 3].numpy(), neck, atol=1e-3)


# --------------------------------------------------------------------------- failures during training


def test_gan_image_corrupt_inside_fails_during_training_with_one_line(tiny_dataset_dir, tmp_path):
    """Header and end intact, pixel data broken: passes the start-up checks, fails when a data
    loader worker decodes it. One line (the worker's traceback is not shown), exit 1, and the
    save made before it stays loadable."""
    data = tiny_dataset_dir(num_images=4, width=96, height=80)
    sampler = ResumableSampler(4, 2, seed=0)
    sampler.set_epoch(1)
    broken = [index for batch in sampler for index in batch][2]  # in the second batch: the first one trains and is saved
    path = data.images_dir / f"frame_{broken:03d}.png"
    content = bytearray(path.read_bytes())
    middle = len(content) // 3
    content[middle : middle + 200] = bytes(200)
    path.write_bytes(bytes(content))
    checkpoints = tmp_path / "run"
    argv = gan_args(data, checkpoints, "--num-workers", "1", "--save-latest-freq", "1", max_iterations=None)
    result = subprocess.run([sys.executable, "train_gan.py", *argv], cwd=ROOT, env=SINGLE_THREAD_ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    line = one_error_line(result.stderr)
    assert str(path) in line and "cannot be read or decoded" in line
    assert f"annotation {broken}, field 'image_id' 'frame_{broken:03d}'" in line
    assert "training stopped at epoch 1, iteration 2" in line and "--continue-train" in line
    assert load_file(checkpoints / "gan_train_state.pth")["progress"]["total_iterations"] == 1
    assert not list(checkpoints.rglob("*.tmp"))


def test_nadsnet_image_corrupt_inside_fails_in_the_loader_worker_with_one_line(tiny_dataset_dir, tmp_path, capsys):
    """The same for train_nadsnet.py, in-process (the loader's worker is still a separate process)."""
    data = tiny_dataset_dir(num_images=5, width=96, height=80)
    annotations = [a for a in data.annotations if a["label"] == "Person"]
    data.write_annotations({"annotations": annotations[:4]})
    data.valid_file = data.root / "valid.json"
    data.valid_file.write_text(json.dumps({"annotations": annotations[4:]}))
    sampler = ResumableSampler(4, 2, seed=0)
    sampler.set_epoch(1)
    broken = [index for batch in sampler for index in batch][2]  # in the second batch: the first one trains and is saved
    path = data.images_dir / f"frame_{broken:03d}.png"
    content = bytearray(path.read_bytes())
    content[len(content) // 3 : len(content) // 3 + 200] = bytes(200)
    path.write_bytes(bytes(content))
    checkpoints = tmp_path / "run"
    assert run_nadsnet(nadsnet_args(data, checkpoints, "--num-workers", "1", "--save-latest-freq", "1")) == 1
    line = one_error_line(capsys.readouterr().err)
    assert str(path) in line and "cannot be read or decoded" in line
    assert f"annotation {broken}, field 'image_id' 'frame_{broken:03d}'" in line
    assert "training stopped at epoch 1, iteration 2" in line
    assert load_file(checkpoints / "nadsnet_train_state.pth")["progress"]["total_iterations"] == 1
