"""Peaks -> people (nadsnet_pvt.inference), the predict command and the ONNX export.

Grouping runs on ground-truth maps rendered by common.posedata.maps, at 128 px: at 64 px sigma is
1.17 px, under half a 4 px cell, so a keypoint near a cell corner heats no cell above the
0.1 peak threshold and is legitimately not found; at 128 px every keypoint gives a peak.

The end-to-end predict test uses a stand-in network that returns the ground-truth maps of the
frame it is given (matched by pixels against the frames it was built with): a tiny NADS-Net
trained briefly inside the test does not find people reliably at 64 px, and
the test is about predict (batching, grouping, scaling back to source pixels, the files),
not about training.

The ONNX test exports once (the torch.export-based exporter is slow);
the forced-mismatch test reuses those bytes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from common.posedata.dataset import PoseDataset
from common.posedata.maps import nadsnet_targets
from common.models.factory import SEED_NADSNET_CONFIG, build_nadsnet
from common.posedata.pose import LEFT_ELBOW, LEFT_WRIST, NECK, NUM_KEYPOINTS
from nadsnet_pvt import export as export_cli
from nadsnet_pvt import predict as predict_cli
from nadsnet_pvt.inference import group_people, match_limb, predict_people

DATA = Path(__file__).resolve().parents[1] / "data_sample"
SAMPLE_JSON = DATA / "Train_keypoint_Annotation_sample.json"
SAMPLE_FRAMES = ("frame_000000", "frame_000001", "frame_000002", "frame_000006")  # 1, 2, 3, 2 people
SIZE = 64
nan = np.nan


def person(neck_x: float, neck_y: float, scale: float) -> np.ndarray:
    """A seated person (9, 2) in input pixels: neck at (neck_x, neck_y), `scale` px tall-ish."""
    layout = np.array(
        [(-0.20, 0.32), (-0.18, 0.18), (-0.12, 0.02), (0, 0), (0.12, 0.02), (0.18, 0.18), (0.20, 0.32), (-0.06, 0.46), (0.06, 0.46)]
    )
    return np.array([neck_x, neck_y]) + layout * scale


def ground_truth_maps(people: np.ndarray, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    heatmaps, pafs = nadsnet_targets(torch.tensor(people, dtype=torch.float32)[None], image_size)
    return heatmaps[0], pafs[0]


def match_to_truth(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """For each found person (P, 9, >=2), the index of the true person (Q, 9, 2) with the nearest neck."""
    distances = np.linalg.norm(found[:, None, NECK, :2] - truth[None, :, NECK], axis=-1)
    return np.nanargmin(distances, axis=1)


# ------------------------------------------------------------------------------ grouping


def test_group_people_recovers_hand_made_people_with_missing_keypoints():
    people = np.stack([person(32, 28, 80), person(92, 24, 88), person(60, 80, 60), person(110, 90, 40)])
    people[1, 0] = nan  # right wrist missing
    people[2, [LEFT_ELBOW, LEFT_WRIST]] = nan  # left forearm missing
    people[3, NECK] = nan  # no neck: its limbs have no root and must not form people
    found = group_people(*ground_truth_maps(people, 128), image_size=128)

    assert found.keypoints.shape == (3, NUM_KEYPOINTS, 3) and found.scores.shape == (3,)
    assert np.all(np.diff(found.scores) <= 0), "people come best first"
    truth_index = match_to_truth(found.keypoints, people)
    assert sorted(truth_index.tolist()) == [0, 1, 2]
    for predicted, index in zip(found.keypoints, truth_index):
        truth = people[index]
        assert np.array_equal(np.isnan(predicted[:, 0]), np.isnan(truth[:, 0])), f"person {index}: wrong keypoints missing"
        present = ~np.isnan(truth[:, 0])
        errors = np.linalg.norm(predicted[present, :2] - truth[present], axis=1)
        assert errors.max() < 1.0, f"person {index}: keypoints {errors.round(2)} px off"
        assert np.all(predicted[present, 2] > 0.1) and np.all(predicted[~present, 2] == 0)
    complete = found.scores[truth_index == 0][0]
    assert found.scores[truth_index == 2][0] < complete, "a person missing two keypoints scores lower"


def test_group_people_follows_pafs_where_nearest_keypoint_would_swap_people():
    # Both people's left forearms cross; A's left elbow is nearer to B's left wrist than to its own.
    a = np.array([(30, 80), (22, 58), (28, 34), (40, 30), (52, 34), (60, 60), (96, 80), (34, 70), (46, 70)], dtype=float)
    b = np.array([(80, 82), (72, 58), (76, 34), (88, 30), (100, 34), (100, 60), (70, 84), (82, 70), (94, 70)], dtype=float)
    assert np.linalg.norm(a[LEFT_ELBOW] - b[LEFT_WRIST]) < np.linalg.norm(a[LEFT_ELBOW] - a[LEFT_WRIST])
    people = np.stack([a, b])
    found = group_people(*ground_truth_maps(people, 128), image_size=128)
    assert len(found.scores) == 2
    for predicted, index in zip(found.keypoints, match_to_truth(found.keypoints, people)):
        np.testing.assert_allclose(predicted[:, :2], people[index], atol=1.0)


def test_match_limb_is_greedy_by_score_and_uses_each_peak_once():
    mean = np.array([[0.6, 0.9, 0.1], [0.8, 0.2, 0.95], [0.7, 0.5, 0.4]])
    fraction = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.5], [1.0, 1.0, 1.0]])  # (1, 2) fails the 0.8 rule
    # Best first: (0, 1) 0.9; (1, 0) 0.8; start 2 is left with end 2 (0.4), ends 0 and 1 being taken.
    assert [(start, end) for start, end, _ in match_limb(mean, fraction)] == [(0, 1), (1, 0), (2, 2)]
    assert match_limb(-mean, fraction) == [], "pairs pointing against the field are never limbs"


def test_subcell_peaks_beat_cell_centres():
    people = np.stack([person(41.3, 37.8, 70)])
    heatmaps, pafs = ground_truth_maps(people, 128)
    refined = group_people(heatmaps, pafs, 128).keypoints[0, :, :2]
    centres = group_people(heatmaps, pafs, 128, subcell=False).keypoints[0, :, :2]
    refined_error = np.linalg.norm(refined - people[0], axis=1).max()
    centre_error = np.linalg.norm(centres - people[0], axis=1).max()
    assert refined_error < 0.2 < centre_error


def test_group_people_on_empty_maps_and_predict_people_restores_mode():
    empty = group_people(torch.zeros(10, 16, 16), torch.zeros(16, 16, 16), 64)  # 10 = with a background channel
    assert empty.keypoints.shape == (0, NUM_KEYPOINTS, 3)

    class Fixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, images):
            maps = ground_truth_maps(np.stack([person(32, 24, 40)]), 64)
            return maps[0][None].repeat(len(images), 1, 1, 1), maps[1][None].repeat(len(images), 1, 1, 1)

    net = Fixed().train()
    people, seatbelt = predict_people(net, torch.zeros(2, 3, 64, 64), 64)
    assert net.training and seatbelt is None and [len(p.scores) for p in people] == [1, 1]


# ------------------------------------------------------------------------------ predict


class GroundTruthNet(nn.Module):
    """Stand-in NADS-Net: for each input frame, the ground-truth heatmaps, PAFs and seatbelt
    of the reference frame with the nearest pixels (B, 9, S/4, S/4), (B, 16, S/4, S/4), (B, 1, S, S)."""

    def __init__(self, dataset: PoseDataset, indices: list[int]):
        super().__init__()
        samples = [dataset[i] for i in indices]
        self.register_buffer("frames", torch.stack([s["image"] for s in samples]).flatten(1))
        people = max(len(s["keypoints"]) for s in samples)
        keypoints = torch.full((len(samples), people, NUM_KEYPOINTS, 2), nan)
        for row, sample in enumerate(samples):
            keypoints[row, : len(sample["keypoints"])] = sample["keypoints"]
        self.register_buffer("keypoints", keypoints)
        self.register_buffer("seatbelts", torch.stack([s["seatbelt"] for s in samples]))
        self.image_size = dataset.image_size

    def forward(self, images: torch.Tensor):
        which = torch.cdist(images.flatten(1), self.frames).argmin(dim=1)
        heatmaps, pafs = nadsnet_targets(self.keypoints[which], self.image_size)
        return heatmaps, pafs, self.seatbelts[which]


@pytest.fixture
def sample_frames(tmp_path):
    """The SAMPLE_FRAMES copied to tmp/frames/cam/ and a stand-in network that knows them."""
    frames_dir = tmp_path / "frames"
    (frames_dir / "cam").mkdir(parents=True)
    for name in SAMPLE_FRAMES:
        shutil.copy(DATA / "Raw_Images" / "train" / f"{name}.png", frames_dir / "cam" / f"{name}.png")
    truth = PoseDataset(SAMPLE_JSON, DATA / "Raw_Images", DATA / "Seatbelt_Mask", image_size=SIZE)
    indices = [truth.image_ids.index(f"train/{name}") for name in SAMPLE_FRAMES]
    return frames_dir, truth, indices


def run_predict(monkeypatch, net: nn.Module | None, *args: str) -> int:
    if net is not None:
        monkeypatch.setattr(predict_cli, "load_network", lambda weights, device, image_size: (net, SIZE))
    return predict_cli.main(list(args))


def test_predict_end_to_end_finds_people_and_writes_seed_format(tmp_path, monkeypatch, sample_frames, one_thread):
    frames_dir, truth, indices = sample_frames
    out = tmp_path / "out"
    code = run_predict(monkeypatch, GroundTruthNet(truth, indices), "--weights", "unused.pth", "--images", str(frames_dir),
                       "--out", str(out), "--batch-size", "3")  # 4 frames: a full batch and a partial one
    assert code == 0

    document = json.loads((out / "predictions.json").read_text())
    assert {record["image_id"] for record in document["images"]} == {f"cam/{name}" for name in SAMPLE_FRAMES}
    for record in document["annotations"]:
        assert record["label"] == "Person" and len(record["keypoints"]) == 27 and 0 < record["score"] <= 1
        assert set(record["keypoints"][2::3]) <= {0, 2}
    read_back = PoseDataset(out / "predictions.json", frames_dir, out / "Seatbelt_Mask", image_size=SIZE)
    for name, truth_index in zip(SAMPLE_FRAMES, indices):
        sample = read_back.image_ids.index(f"cam/{name}")
        found, expected = read_back.keypoints[sample], truth.keypoints[truth_index]
        assert len(found) == len(expected), f"{name}: {len(found)} people found, {len(expected)} annotated"
        width, height = read_back.source_sizes[sample]
        # Within half a 4 px cell (+ slack) of the annotation, in source pixels.
        tolerance = 2.5 * np.array([width, height]) / SIZE
        for predicted, index in zip(found, match_to_truth(found, expected)):
            offset = np.abs(predicted - expected[index]) * np.array([width, height]) / SIZE
            assert np.all(np.isnan(offset) | (offset <= tolerance)), f"{name}: person {index} off by {np.nanmax(offset, 0)}"
            assert np.isfinite(predicted).all(), f"{name}: person {index} is missing keypoints"
        check_mask_and_overlay(out, name, frames_dir)


def check_mask_and_overlay(out: Path, name: str, frames_dir: Path) -> None:
    source = cv2.imread(str(frames_dir / "cam" / f"{name}.png"), cv2.IMREAD_COLOR)
    mask = cv2.imread(str(out / "Seatbelt_Mask" / "cam" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == source.shape[:2] and set(np.unique(mask).tolist()) <= {0, 255}
    truth = cv2.resize(cv2.imread(str(DATA / "Seatbelt_Mask" / "train" / f"{name}.png"))[..., 0], mask.shape[::-1]) > 127
    belt = mask > 0
    if truth.any():
        assert (belt & truth).sum() / (belt | truth).sum() > 0.6, f"{name}: seatbelt mask far from the annotation"
    overlay = cv2.imread(str(out / "overlays" / "cam" / f"{name}.png"), cv2.IMREAD_COLOR)
    assert overlay.shape == source.shape
    changed = np.abs(overlay.astype(int) - source).max(axis=2) > 0
    assert changed.mean() > 0.002 and changed.mean() < 0.6, f"{name}: overlay does not show skeletons and belt"


def test_predict_refuses_no_images_a_bad_image_and_weights_that_are_not_nadsnet(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_predict(monkeypatch, None, "--weights", "w.pth", "--images", str(empty), "--out", str(tmp_path / "o1")) == 2
    error = capsys.readouterr().err.strip()
    assert "no images found" in error and str(empty) in error and "\n" not in error

    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(DATA / "Raw_Images" / "train" / "frame_000000.png", frames / "good.png")
    (frames / "broken.png").write_bytes(b"not a png at all")
    weights = tmp_path / "linear.pth"
    torch.save(nn.Linear(3, 2).state_dict(), weights)
    assert run_predict(monkeypatch, None, "--weights", str(weights), "--images", str(frames), "--out", str(tmp_path / "o2")) == 1
    error = capsys.readouterr().err.strip()
    assert "broken.png" in error and "\n" not in error

    (frames / "broken.png").unlink()
    assert run_predict(monkeypatch, None, "--weights", str(weights), "--images", str(frames), "--out", str(tmp_path / "o3")) == 1
    error = capsys.readouterr().err.strip()
    assert "linear.pth is not a NADS-Net" in error and "\n" not in error
    assert not (tmp_path / "o2").exists() and not (tmp_path / "o3").exists()


def test_predict_stopped_part_way_leaves_out_as_it_was(tmp_path, monkeypatch, sample_frames, capsys, one_thread):
    """A frame whose header reads but whose pixels do not decode, met after earlier frames were
    predicted: no mask, overlay or predictions.json of this run is left behind."""
    frames_dir, truth, indices = sample_frames
    last = sorted((frames_dir / "cam").iterdir())[-1]
    (frames_dir / "cam" / "zz_truncated.png").write_bytes(last.read_bytes()[:200])  # IHDR intact, pixels cut off
    net = GroundTruthNet(truth, indices)
    fresh = tmp_path / "fresh"
    assert run_predict(monkeypatch, net, "--weights", "w.pth", "--images", str(frames_dir), "--out", str(fresh),
                       "--batch-size", "1") == 1
    assert "zz_truncated.png" in capsys.readouterr().err and not fresh.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert run_predict(monkeypatch, net, "--weights", "w.pth", "--images", str(frames_dir), "--out", str(kept),
                       "--batch-size", "1") == 1
    assert [path.name for path in kept.rglob("*")] == ["notes.txt"]


def test_predict_output_inside_the_input_folder_is_not_read_back(tmp_path, monkeypatch, sample_frames, one_thread):
    frames_dir, truth, indices = sample_frames
    out = frames_dir / "predictions"
    net = GroundTruthNet(truth, indices)
    for _ in range(2):
        assert run_predict(monkeypatch, net, "--weights", "w.pth", "--images", str(frames_dir), "--out", str(out)) == 0
        document = json.loads((out / "predictions.json").read_text())
        assert sorted(record["image_id"] for record in document["images"]) == sorted(f"cam/{n}" for n in SAMPLE_FRAMES)


def test_weights_holding_nan_are_refused_before_anything_is_written(tmp_path, capsys, one_thread):
    net = build_nadsnet(dict(SEED_NADSNET_CONFIG, image_size=SIZE))
    state = net.state_dict()
    name = next(key for key, value in state.items() if value.is_floating_point())
    state[name] = state[name].clone().fill_(float("nan"))
    weights = tmp_path / "diverged.pth"
    torch.save(state, weights)
    out = tmp_path / "out"
    assert predict_cli.main(["--weights", str(weights), "--images", str(DATA / "Raw_Images"), "--out", str(out)]) == 1
    error = capsys.readouterr().err.strip()
    assert f"diverged.pth: tensor {name!r} holds NaN or infinite values" in error and "\n" not in error
    assert not out.exists()
    assert export_cli.main(["--weights", str(weights), "--out", str(tmp_path / "n.onnx")]) == 1
    assert "holds NaN or infinite values" in capsys.readouterr().err and not (tmp_path / "n.onnx").exists()


# ------------------------------------------------------------------------------ ONNX export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A seed-format NADS-Net state dict at 64 px (random weights) exported once by the CLI:
    (weights path, onnx path, network, exit code, onnx bytes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = tmp_path_factory.mktemp("onnx")
        torch.manual_seed(0)
        net = build_nadsnet(dict(SEED_NADSNET_CONFIG, image_size=SIZE)).eval()
        weights = folder / "seed_nadsnet.pth"
        torch.save(net.state_dict(), weights)  # no JSON beside it: read as a seed file
        onnx_path = folder / "nadsnet.onnx"
        code = export_cli.main(["--weights", str(weights), "--out", str(onnx_path)])
        yield weights, onnx_path, net, code, onnx_path.read_bytes() if onnx_path.exists() else b""
    finally:
        torch.set_num_threads(threads)


def test_export_matches_pytorch_with_a_dynamic_batch_axis(exported, one_thread):
    import onnxruntime

    _, onnx_path, net, code, _ = exported
    assert code == 0 and onnx_path.is_file()
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["heatmaps", "pafs", "seatbelt"]
    assert isinstance(session.get_inputs()[0].shape[0], str), "batch axis must be symbolic"
    for batch in (1, 4):  # neither is the export's example batch (2)
        images = torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            reference = [t.numpy() for t in net(images)]
        for expected, got in zip(reference, session.run(None, {"image": images.numpy()})):
            assert got.shape == expected.shape
            assert np.abs(got - expected).max() / np.abs(expected).max() <= 1e-4


def test_export_mismatch_exits_1_and_writes_no_file(exported, tmp_path, monkeypatch, capsys):
    weights, _, _, _, model = exported
    monkeypatch.setattr(export_cli, "export_onnx_bytes", lambda net, image_size, opset: model)  # skip the slow export
    real_run = export_cli.onnx_runtime_outputs

    def off_by_a_little(model_bytes, images):
        outputs = real_run(model_bytes, images)
        outputs[2] = outputs[2] + 1e-3  # seatbelt off by ~2e-3 relative
        return outputs

    monkeypatch.setattr(export_cli, "onnx_runtime_outputs", off_by_a_little)
    out = tmp_path / "bad.onnx"
    assert export_cli.main(["--weights", str(weights), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "seatbelt" in captured.err and "not written" in captured.err and "\n" not in captured.err.strip()
    assert "ABOVE" in captured.out
    assert not out.exists() and not list(tmp_path.glob(".bad.onnx*"))


def test_export_refuses_weights_that_are_not_nadsnet(tmp_path, capsys):
    weights = tmp_path / "linear.pth"
    torch.save(nn.Linear(3, 2).state_dict(), weights)
    assert export_cli.main(["--weights", str(weights), "--out", str(tmp_path / "x.onnx")]) == 1
    error = capsys.readouterr().err.strip()
    assert "is not a NADS-Net" in error and "\n" not in error and not (tmp_path / "x.onnx").exists()
    assert export_cli.main(["--weights", str(weights), "--out", str(tmp_path / "x.onnx"), "--image-size", "65"]) == 2
