"""nadsnet_pvt.evaluate: `evaluate()` on a perfect stand-in predictor, and the command
`python -m nadsnet_pvt.evaluate` (in-process `main(argv)`) on a seed-format checkpoint (a
plain state dict, no JSON beside it) of a random 64 px NADS-Net."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from common.posedata.dataset import PoseDataset, collate_poses
from common.posedata.maps import nadsnet_targets
from common.models.factory import SEED_NADSNET_CONFIG, build_nadsnet
from common.posedata.pose import KEYPOINT_NAMES, LEFT_WRIST, NUM_KEYPOINTS
from nadsnet_pvt.evaluate import evaluate, main

SUMMARY_KEYS = {
    "pck5", "pck10", "pckt", "pckt_arms", "mean_error_px", "seatbelt_iou", "seatbelt_dice", "images", "people",
    "skipped_people", "pck_present", "matched", "present", "present_arms", "per_keypoint",
}


def loader_for(dataset, image_size: int, batch_size: int = 2):
    data = PoseDataset(*dataset.dataset_args(), image_size=image_size)
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_poses)


class GroundTruthNet(nn.Module):
    """A stand-in NADS-Net that answers each batch with that batch's ground-truth maps."""

    def __init__(self, batches: list[dict], image_size: int):
        super().__init__()
        self.answers = iter([(*nadsnet_targets(b["keypoints"], image_size), b["seatbelt"]) for b in batches])

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return next(self.answers)


def test_perfect_predictor_gets_full_marks_and_reduction_applies_before_the_summary(tiny_dataset_dir, one_thread):
    # 128 px: at 64 px the label heatmap (sigma 1.2 px) can peak below 0.1 between cells.
    batches = list(loader_for(tiny_dataset_dir(num_images=3, people_per_image=[1, 2, 1]), 128))
    seen = []
    net = GroundTruthNet(batches, 128).train()
    result = evaluate(net, batches, 128, False, "cpu", on_batch=lambda b, images, out: seen.append((images.shape, len(out))))
    assert net.training  # mode restored
    assert seen == [((2, 3, 128, 128), 3), ((1, 3, 128, 128), 3)]
    summary = result.summary
    assert result.samples == 3 and summary["people"] == 4 and summary["present"] == 4 * NUM_KEYPOINTS
    assert summary["pckt"] == 1.0 and summary["pckt_arms"] == 1.0 and summary["pck10"] == 1.0
    assert summary["seatbelt_iou"] == 1.0 and summary["seatbelt_dice"] == 1.0
    assert result.losses["heatmap"] == 0.0 and result.losses["paf"] == 0.0
    assert result.losses["total"] == pytest.approx(0.0, abs=1e-6)

    doubled = evaluate(GroundTruthNet(batches, 128), batches, 128, False, "cpu", reduce=lambda counts: counts * 2)
    assert doubled.samples == 6 and doubled.summary["present"] == 2 * summary["present"]
    assert doubled.summary["pckt"] == 1.0 and doubled.losses == pytest.approx(result.losses)
    assert doubled.metrics.counts().tolist() == (2 * result.metrics.counts()).tolist()
    with pytest.raises(ValueError, match="no batches"):
        evaluate(net, [], 128, False, "cpu")


@pytest.fixture(scope="module")
def seed_checkpoint(tmp_path_factory):
    """(path, net): a random 64 px NADS-Net saved as a plain state dict without a JSON."""
    torch.manual_seed(0)
    net = build_nadsnet(dict(SEED_NADSNET_CONFIG, image_size=64)).eval()
    path = tmp_path_factory.mktemp("weights") / "seed_nadsnet.pth"
    torch.save(net.state_dict(), path)
    assert not path.with_suffix(".json").exists()
    return path, net


def command(weights, dataset, *extra) -> list[str]:
    return ["--weights", str(weights), "--annotations", str(dataset.annotation_file), "--images-dir",
            str(dataset.images_dir), "--masks-dir", str(dataset.masks_dir), "--device", "cpu", *extra]


def same(a, b) -> bool:
    """Nested equality with floats to 1e-6 and None (JSON null) standing for NaN."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if a is None or b is None:
        return (a is None or math.isnan(a)) and (b is None or math.isnan(b))
    return a == pytest.approx(b, rel=1e-6, abs=1e-9)


def test_command_on_seed_checkpoint_writes_what_evaluate_gives(seed_checkpoint, tiny_dataset_dir, tmp_path, capsys, one_thread):
    weights, net = seed_checkpoint
    dataset = tiny_dataset_dir(num_images=3)
    for annotation in dataset.annotations[:-1]:  # nobody has a labelled left wrist: its ratios are NaN
        annotation["keypoints"][3 * LEFT_WRIST + 2] = 0
    dataset.write_annotations({"annotations": dataset.annotations})
    out = tmp_path / "results.json"
    assert main(command(weights, dataset, "--batch-size", "2", "--json", str(out))) == 0
    printed = capsys.readouterr().out
    assert "PCKt@0.2" in printed and all(name in printed for name in KEYPOINT_NAMES)

    text = out.read_text()
    assert "NaN" not in text
    record = json.loads(text)
    assert SUMMARY_KEYS | {"weights", "annotations", "image_size", "losses", "samples"} <= record.keys()
    assert record["weights"] == str(weights) and record["annotations"] == str(dataset.annotation_file)
    assert record["image_size"] == 64 and record["samples"] == 3 and record["images"] == 3  # read off the weights
    assert record["people"] == 3 and record["skipped_people"] == 0
    assert record["pck_present"] == record["present"] == 3 * (NUM_KEYPOINTS - 1)
    assert record["present_arms"] == 3 * 3
    assert record["per_keypoint"]["left_wrist"] == {"pck_present": 0, "pck5": None, "pck10": None, "present": 0, "pckt": None}
    assert set(record["losses"]) == {"total", "heatmap", "paf", "seatbelt", "dice"}

    expected = evaluate(net, loader_for(dataset, 64), 64, False, "cpu")
    assert same({k: record[k] for k in expected.summary}, expected.summary)
    assert same(record["losses"], expected.losses)


def test_command_refuses_bad_weights_and_data_in_one_line(seed_checkpoint, tiny_dataset_dir, tmp_path, capsys):
    weights, _ = seed_checkpoint
    dataset = tiny_dataset_dir(num_images=1)
    not_nadsnet = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(16, 26, 3, 3)}, not_nadsnet)
    text_file = tmp_path / "notes.pth"
    text_file.write_text("not weights")
    out = tmp_path / "results.json"
    cases = [
        (command(not_nadsnet, dataset), "is not a NADS-Net"),
        (command(text_file, dataset), "notes.pth"),
        (command(tmp_path / "missing.pth", dataset), "not found"),
        (command(weights, dataset, "--image-size", "96"), "64 px"),
    ]
    missing_annotations = command(weights, dataset)
    missing_annotations[3] = str(tmp_path / "nowhere.json")
    cases.append((missing_annotations, "nowhere.json"))
    for argv, message in cases:
        assert main([*argv, "--json", str(out)]) == 1, argv
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error and error.count("\n") == 1, error
    assert not out.exists()


@pytest.mark.parametrize("extra", [["--image-size", "50"], ["--batch-size", "0"], ["--device", "cuda:99"]])
def test_command_rejects_bad_options_with_exit_2(extra, tiny_dataset_dir, tmp_path, capsys):
    dataset = tiny_dataset_dir(num_images=1)
    assert main(command(tmp_path / "w.pth", dataset, *extra)) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "error:" in error and extra[0] in error
