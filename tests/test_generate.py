"""generate.py: pose-augmented data sets and frames from poses, written so that they read back as
training data, do not depend on the batch size, survive being killed, and refuse what would
overwrite or mix up someone else's files.

Generators are tiny (ngf 2, 64 px) with random weights: the frames are noise, and the tests check
what is written, not how it looks.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from common.posedata.augment import arm_augment
from common.training.checkpoints import save_network
from common.posedata.dataset import PoseDataset
from common.models.factory import build_discriminator, build_generator, discriminator_config, generator_config
from common.models.init import init_weights
from common.posedata.pose import ARMS, LEFT_HIP, LEFT_SHOULDER, NECK, RIGHT_HIP, RIGHT_SHOULDER
from conftest import SINGLE_THREAD_ENV
from gan.generation import commands
from gan.generation.frames import MADE_PRESENT_VISIBILITY, generated_keypoint_values
from gan.generation.output import PROGRESS_DIR, PROGRESS_FILE

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
TORSO = (RIGHT_SHOULDER, NECK, LEFT_SHOULDER, RIGHT_HIP, LEFT_HIP)
ARM_JOINTS = tuple(joint for _, elbow, wrist in ARMS for joint in (elbow, wrist))
IDS = ["frame_000", "cam1\\frame_001", "frame_002"]  # a subfolder, written the seed's Windows way


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture
def generator_file(tmp_path) -> Path:
    torch.manual_seed(0)
    config = generator_config(2, SIZE)
    generator = build_generator(config)
    init_weights(generator, gain=0.02)
    return save_network(generator, tmp_path / "generator" / "latest_net_G.pth", config)


@pytest.fixture
def source(tiny_dataset_dir):
    """3 frames of 200 x 100, the second with two people, one id in a subfolder."""
    return tiny_dataset_dir(width=200, height=100, people_per_image=[1, 2, 1], image_ids=IDS)


def dataset_argv(generator: Path, data, out: Path, *extra: str) -> list[str]:
    return ["dataset", "--generator", str(generator), "--annotations", str(data.annotation_file),
            "--images-dir", str(data.images_dir), "--masks-dir", str(data.masks_dir), "--out", str(out), *extra]


def output_files(out: Path) -> dict[str, bytes]:
    """Every file of OUT but the progress record, by relative path."""
    return {path.relative_to(out).as_posix(): path.read_bytes() for path in sorted(out.rglob("*"))
            if path.is_file() and PROGRESS_DIR not in path.relative_to(out).parts}


def annotations_of(out: Path, name: str = "annotations.json") -> list[dict]:
    return json.loads((out / name).read_text())["annotations"]


def by_id(annotations: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for annotation in annotations:
        grouped.setdefault(annotation["image_id"].replace("\\", "/"), []).append(annotation)
    return grouped


# --------------------------------------------------------------------------- the data set


def test_exported_data_set_reads_back_as_training_data(generator_file, source, tmp_path):
    out = tmp_path / "out"
    argv = dataset_argv(generator_file, source, out, "--arm-augment", "highly", "--copies", "2", "--seed", "5",
                        "--include-source", "--batch-size", "3")
    assert commands.main(argv) == 0
    assert [path.name for path in out.glob("*.json")] == ["annotations.json"]

    original = PoseDataset(*source.dataset_args(), image_size=SIZE)
    exported = PoseDataset(out / "annotations.json", out / "Raw_Images", out / "Seatbelt_Mask", image_size=SIZE)
    assert len(exported) == 3 * 2 + 3
    written = by_id(annotations_of(out))
    source_records = by_id([a for a in source.annotations if a["label"] == "Person"])
    every_source_record = by_id(source.annotations)  # --include-source copies other labels too
    for index, source_id in enumerate(original.image_ids):
        width, height = original.source_sizes[index]
        assert sorted(map(json.dumps, written[source_id])) == sorted(
            json.dumps(dict(a, image_id=source_id, source_image_id=source_id)) for a in every_source_record[source_id])
        assert (out / "Raw_Images" / f"{source_id}.png").read_bytes() == original.image_paths[index].read_bytes()
        for copy in range(2):
            copy_id = f"{source_id}_gen{copy}"
            row = exported.image_ids.index(copy_id)
            assert tuple(exported.source_sizes[row]) == (width, height)  # frames at the source's size
            assert exported.mask_paths[row].read_bytes() == original.mask_paths[index].read_bytes()
            assert len(written[copy_id]) == len(source_records[source_id])  # every person, in order
            for generated, record in zip(written[copy_id], source_records[source_id]):
                assert generated["source_image_id"] == source_id and generated["label"] == "Person"
                values = np.reshape(generated["keypoints"], (9, 3))
                assert (values[:, :2] >= 0).all()
                assert values[list(TORSO)].tolist() == np.reshape(record["keypoints"], (9, 3))[list(TORSO)].tolist()
                assert (values[list(ARM_JOINTS), :2] != np.reshape(record["keypoints"], (9, 3))[list(ARM_JOINTS), :2]).any()
            # read back at S, the pose is the one the frame was rendered in (to the 0.01 px written)
            expected = arm_augment(original.keypoints[index], "highly", np.random.default_rng([5, index, copy]), SIZE)
            np.testing.assert_allclose(exported.keypoints[row], expected, atol=0.01 * SIZE / min(width, height))
    page = (out / "index.html").read_text()
    assert page.count("<h3>") == 6 and all((out / src).is_file() for src in _sources(page))


def _sources(page: str) -> list[str]:
    return [part.split('"')[0] for part in page.split('src="')[1:]]


def test_unchanged_keypoints_keep_their_numbers_and_left_or_top_overflow_is_missing():
    source_values = [10, 20, 2] * 9
    source_values[3 * 5: 3 * 5 + 3] = [0, 0, 0]  # left elbow not labelled
    original = np.tile(np.float32([3.2, 12.8]), (9, 1))  # 200 x 100 frame at S = 64
    original[5] = np.nan
    augmented = original.copy()
    augmented[0] = (-1.0, 30.0)  # the right wrist pushed beyond the left edge
    augmented[1] = (32.0, -0.5)  # the right elbow beyond the top edge
    augmented[5] = (16.0, 32.0)  # the missing left elbow made present
    augmented[6] = (64.0, 64.0)  # the left wrist at the far corner
    values = generated_keypoint_values(source_values, original, augmented, 200, 100, SIZE)
    triples = [values[3 * k: 3 * k + 3] for k in range(9)]
    assert triples[0] == [0, 0, 0] and triples[1] == [0, 0, 0]
    assert triples[5] == [50.0, 50.0, MADE_PRESENT_VISIBILITY]
    assert triples[6] == [200.0, 100.0, 2]
    assert all(triples[k] == [10, 20, 2] and type(triples[k][0]) is int for k in (2, 3, 4, 7, 8))


# --------------------------------------------------------------------------- determinism


def test_files_do_not_depend_on_the_batch_size_and_a_finished_rerun_changes_nothing(generator_file, source, tmp_path):
    first, second = tmp_path / "batch1", tmp_path / "batch3"
    argv = dataset_argv(generator_file, source, first, "--arm-augment", "slightly", "--copies", "2", "--batch-size", "1")
    assert commands.main(argv) == 0
    assert commands.main(dataset_argv(generator_file, source, second, "--arm-augment", "slightly", "--copies", "2",
                                      "--batch-size", "3")) == 0
    files = output_files(first)
    assert files == output_files(second) and len([name for name in files if name.startswith("Raw_Images/")]) == 6

    stamps = {path: path.stat().st_mtime_ns for path in first.rglob("*") if path.is_file()}
    assert commands.main(argv) == 0
    assert {path: path.stat().st_mtime_ns for path in first.rglob("*") if path.is_file()} == stamps


def test_batch_statistics_frames_depend_on_their_batch(generator_file, source, tmp_path):
    """--batch-statistics normalises each batch with its own statistics, as the generator trained."""
    outputs = []
    for batch_size in (1, 3):
        out = tmp_path / f"batch{batch_size}"
        assert commands.main(dataset_argv(generator_file, source, out, "--batch-statistics",
                                          "--batch-size", str(batch_size))) == 0
        outputs.append(output_files(out)["Raw_Images/frame_000_gen0.png"])
    assert outputs[0] != outputs[1]


# --------------------------------------------------------------------------- refusals


def test_annotations_without_a_person_are_refused(generator_file, source, tmp_path, capsys):
    out = tmp_path / "out"
    source.write_annotations({"annotations": [{"image_id": "frame_000", "label": "Seatbelt", "bbox": [0, 0, 1, 1]}]})
    assert commands.main(dataset_argv(generator_file, source, out)) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(source.annotation_file) in error and 'no annotation has label "Person"' in error
    assert not out.exists()


def test_not_a_generator_is_named(source, tmp_path, capsys):
    discriminator_file = save_network(build_discriminator(discriminator_config(4)), tmp_path / "net_D.pth",
                                      discriminator_config(4))
    assert commands.main(dataset_argv(discriminator_file, source, tmp_path / "out")) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(discriminator_file) in error and "generator" in error
    assert not (tmp_path / "out").exists()


def test_a_foreign_folder_is_refused_unless_overwrite(generator_file, source, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "mine.txt").write_text("keep me")
    assert commands.main(dataset_argv(generator_file, source, out)) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "not empty" in error and "--overwrite" in error
    assert sorted(path.relative_to(out).as_posix() for path in out.rglob("*")) == ["notes", "notes/mine.txt"]

    assert commands.main(dataset_argv(generator_file, source, out, "--overwrite")) == 0
    assert not (out / "notes").exists() and len(PoseDataset(out / "annotations.json", out / "Raw_Images",
                                                            out / "Seatbelt_Mask", image_size=SIZE)) == 3


def test_options_that_cannot_work_are_refused(generator_file, source, tmp_path, capsys):
    out = tmp_path / "out"
    for argv in (dataset_argv(generator_file, source, out, "--copies", "0"),
                 dataset_argv(generator_file, source, source.root),  # OUT holds the inputs
                 dataset_argv(generator_file, source, source.root, "--overwrite"),
                 ["poses", "--generator", str(generator_file), "--annotations", str(source.annotation_file),
                  "--images-dir", str(source.images_dir), "--frame-size", "64x64", "--out", str(out)],
                 ["poses", "--generator", str(generator_file), "--annotations", str(source.annotation_file),
                  "--masks-dir", str(source.masks_dir), "--belt", "from-keypoints", "--out", str(out)]):
        assert commands.main(argv) == 2, argv
        assert capsys.readouterr().err.count("\n") == 1
    small = tmp_path / "small" / "net_G.pth"
    save_network(build_generator(generator_config(2, 32)), small, generator_config(2, 32))  # 1 x 1 maps at 32 px
    assert commands.main(dataset_argv(small, source, out, "--batch-statistics", "--batch-size", "2")) == 2
    assert "--batch-statistics" in capsys.readouterr().err
    assert not out.exists() and (source.images_dir / "frame_000.png").is_file()


# --------------------------------------------------------------------------- resuming


def test_a_failed_run_continues_to_the_same_bytes(generator_file, source, tmp_path, monkeypatch, capsys):
    extra = ("--arm-augment", "highly", "--copies", "3", "--batch-size", "2", "--include-source")
    reference = tmp_path / "reference"
    assert commands.main(dataset_argv(generator_file, source, reference, *extra)) == 0

    out = tmp_path / "out"
    real_save_png, calls = commands.save_png, [0]

    def failing_save_png(path, image):
        calls[0] += 1
        if calls[0] == 4:  # the second frame of the second batch
            raise OSError(28, "No space left on device", str(path))
        return real_save_png(path, image)

    monkeypatch.setattr(commands, "save_png", failing_save_png)
    assert commands.main(dataset_argv(generator_file, source, out, *extra)) == 1
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.setattr(commands, "save_png", real_save_png)
    assert json.loads((out / PROGRESS_DIR / PROGRESS_FILE).read_text())["frames_done"] == 2
    assert not (out / "annotations.json").exists()  # written at the end only

    assert commands.main(dataset_argv(generator_file, source, out, "--copies", "2")) == 1  # another command
    assert "--copies 2 (OUT was started with 3)" in capsys.readouterr().err
    first_batch = {path: path.stat().st_mtime_ns for path in (out / "Raw_Images").glob("frame_000_gen[01].png")}
    assert len(first_batch) == 2
    # in eval mode the files do not depend on the batch size, so a rerun may change it
    resumed = list(extra)
    resumed[resumed.index("--batch-size") + 1] = "3"
    assert commands.main(dataset_argv(generator_file, source, out, *resumed)) == 0
    assert output_files(out) == output_files(reference)
    assert {path: path.stat().st_mtime_ns for path in first_batch} == first_batch  # done frames were skipped
    for source_id in ("frame_000", "cam1/frame_001", "frame_002"):  # --include-source copies the masks too
        assert (out / "Seatbelt_Mask" / f"{source_id}.png").read_bytes() == \
            (source.masks_dir / f"{source_id}.png").read_bytes()


CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from gan.generation import commands
    real, calls = commands.save_png, [0]
    def dying_save_png(*args):
        calls[0] += 1
        if calls[0] == {call}:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args)
    commands.save_png = dying_save_png
    sys.exit(commands.main({argv!r}))
""")


def test_a_killed_run_leaves_complete_files_and_continues_to_the_same_bytes(generator_file, source, tmp_path):
    extra = ("--arm-augment", "slightly", "--copies", "3", "--batch-size", "2")
    reference = tmp_path / "reference"
    assert commands.main(dataset_argv(generator_file, source, reference, *extra)) == 0

    out = tmp_path / "out"
    code = CHILD.format(root=str(ROOT), call=6, argv=dataset_argv(generator_file, source, out, *extra))
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=SINGLE_THREAD_ENV, capture_output=True,
                           text=True, timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert json.loads((out / PROGRESS_DIR / PROGRESS_FILE).read_text())["frames_done"] == 4
    frames = [path for path in (out / "Raw_Images").rglob("*.png") if not path.name.startswith(".")]
    assert len(frames) == 5 and all(cv2.imread(str(path)) is not None for path in frames)

    assert commands.main(dataset_argv(generator_file, source, out, *extra)) == 0
    assert output_files(out) == output_files(reference)
    assert not [path for path in out.rglob("*.tmp")]


# --------------------------------------------------------------------------- poses


def test_poses_with_a_belt_from_keypoints_at_a_frame_size(generator_file, source, tmp_path):
    out = tmp_path / "poses"
    argv = ["poses", "--generator", str(generator_file), "--annotations", str(source.annotation_file),
            "--belt", "from-keypoints", "--frame-size", "200x100", "--out", str(out)]
    assert commands.main(argv) == 0
    original = PoseDataset(*source.dataset_args(), image_size=SIZE)
    rendered = PoseDataset(out / "annotations.json", out / "Raw_Images", out / "Seatbelt_Mask", image_size=SIZE)
    assert rendered.image_ids == original.image_ids
    assert (rendered.source_sizes == [200, 100]).all()
    for index in range(len(original)):
        np.testing.assert_array_equal(rendered.keypoints[index], original.keypoints[index])  # the poses as they are
        belt = rendered[index]["seatbelt"][0].numpy()
        ends = [(person[RIGHT_SHOULDER], person[LEFT_HIP]) for person in original.keypoints[index]]
        for shoulder, hip in ends:
            x, y = np.round((shoulder + hip) / 2).astype(int)
            assert belt[y - 1: y + 2, x - 1: x + 2].any()  # on the band from the right shoulder to the left hip
        ys, xs = np.nonzero(belt)
        distances = np.stack([_distance_to_segment(np.stack([xs, ys], 1), *end) for end in ends])
        assert len(xs) and distances.min(axis=0).max() <= 3  # and nowhere else
    assert all(record["source_image_id"] == record["image_id"] for record in annotations_of(out))


def _distance_to_segment(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distance (px) of each (x, y) point to the segment start-end."""
    direction = end - start
    along = np.clip(((points - start) @ direction) / (direction @ direction), 0, 1)
    return np.hypot(*(points - (start + along[:, None] * direction)).T)


def test_poses_without_files_default_to_the_generators_size_and_no_belt(generator_file, tmp_path, tiny_dataset_dir):
    data = tiny_dataset_dir(num_images=2, width=SIZE, height=SIZE)
    out = tmp_path / "poses"
    argv = ["poses", "--generator", str(generator_file), "--annotations", str(data.annotation_file), "--out", str(out)]
    assert commands.main(argv) == 0
    rendered = PoseDataset(out / "annotations.json", out / "Raw_Images", out / "Seatbelt_Mask", image_size=SIZE)
    assert (rendered.source_sizes == SIZE).all() and not rendered[0]["seatbelt"].any()
    assert 'figcaption>pose frame_000' in (out / "index.html").read_text()


# --------------------------------------------------------------------------- training on it


def test_train_nadsnet_trains_on_an_exported_set(generator_file, source, tmp_path):
    from nadsnet_pvt.train import main as train_main

    out = tmp_path / "augmented"
    assert commands.main(dataset_argv(generator_file, source, out, "--arm-augment", "highly", "--include-source")) == 0
    argv = ["--preset", "cpu", "--image-size", str(SIZE), "--batch-size", "2", "--epochs", "1", "--num-workers", "0",
            "--gan-fraction", "0", "--fpn-channels", "16", "--head-channels", "8", "--no-html",
            "--train-annotations", str(out / "annotations.json"), "--images-dir", str(out / "Raw_Images"),
            "--masks-dir", str(out / "Seatbelt_Mask"), "--valid-annotations", str(source.annotation_file),
            "--valid-images-dir", str(source.images_dir), "--valid-masks-dir", str(source.masks_dir),
            "--checkpoints-dir", str(tmp_path / "checkpoints")]
    assert train_main(argv) == 0
    assert (tmp_path / "checkpoints" / "nadsnet_best.pth").is_file()
