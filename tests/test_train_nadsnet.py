"""train_nadsnet.py: the half-batch recipe, the generator left untouched, tiny end-to-end runs,
the best checkpoint, exact resume and the error messages.

Everything runs at 64 px on a handful of random-noise frames (tests/conftest.py) with random
weights on purpose: NADS-Net learns nothing here; the tests check what is trained on, what is
written and that a continued run equals an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal

import pytest
import torch
from torch import nn

from common.training.checkpoints import load_file, load_state_dict_file, save_network
from common.posedata.imaging import gan_to_imagenet
from common.errors import CheckpointError, NonFiniteLossError
from common.training.runlog import RunLog
from common.training.stopping import TrainingInterrupted
from common.posedata.maps import gan_input, nadsnet_targets
from common.models.factory import build_generator, generator_config, load_nadsnet
from common.models.init import init_weights
from common.posedata.pose import NUM_KEYPOINTS
from nadsnet_pvt import train as train_module
from common.models.rendering import GeneratedSamples
from nadsnet_pvt.batch import TrainingBatch, build_training_batch, generated_count, geometric_generator
from nadsnet_pvt.checkpoint import NADSNetCheckpoint
from nadsnet_pvt.options import parse_options
from nadsnet_pvt.trainer import NADSNetTrainer
from nadsnet_pvt.visualizer import geometric_placements, place_keypoints

SIZE = 64


# --------------------------------------------------------------------------- helpers


def tiny_generator(ngf: int = 2, image_range: str = "converted", seed: int = 0) -> tuple[nn.Module, dict]:
    """A SPADE generator at 64 px with random weights (ngf 2: a few hundred thousand values)."""
    torch.manual_seed(seed)
    config = dict(generator_config(ngf, SIZE), image_range=image_range)
    generator = build_generator(config)
    init_weights(generator, gain=0.02)
    return generator, config


def make_data(tiny_dataset_dir, train: int, valid: int):
    """Train and validation sets (separate JSON files over the same image folders)."""
    data = tiny_dataset_dir(num_images=train + valid, width=160, height=96)
    persons = [a for a in data.annotations if a["label"] == "Person"]
    train_file = data.root / "train.json"
    valid_file = data.root / "valid.json"
    train_file.write_text(json.dumps({"annotations": persons[:train]}))
    valid_file.write_text(json.dumps({"annotations": persons[train:]}))
    return data, train_file, valid_file


def run_options(data, train_file, valid_file, checkpoints, *extra: str):
    argv = [
        "--preset", "cpu", "--image-size", str(SIZE), "--batch-size", "2", "--epochs", "1", "--num-workers", "0",
        "--train-annotations", str(train_file), "--valid-annotations", str(valid_file),
        "--images-dir", str(data.images_dir), "--masks-dir", str(data.masks_dir),
        "--checkpoints-dir", str(checkpoints), "--display-samples", "1", "--gan-fraction", "0.5", *extra,
    ]
    options, messages = parse_options(argv, gpu_available=False)
    return options, messages


@pytest.fixture
def generator_file(tmp_path):
    generator, config = tiny_generator()
    path = tmp_path / "generator" / "latest_net_G.pth"
    save_network(generator, path, config)
    return path


def state_dicts_close(first: dict, second: dict, atol: float = 1e-6) -> bool:
    return list(first) == list(second) and all(
        torch.allclose(first[key].float(), second[key].float(), atol=atol, rtol=0) for key in first
    )


# --------------------------------------------------------------------------- the batch recipe


def test_generated_count_keeps_the_fraction_over_batches():
    assert [generated_count(4, 0.5, k) for k in range(3)] == [2, 2, 2]
    assert [generated_count(4, 0.0, k) for k in range(3)] == [0, 0, 0]
    assert [generated_count(4, 1.0, k) for k in range(3)] == [4, 4, 4]
    # Batch of 1 with 0.5: every other batch is generated.
    assert [generated_count(1, 0.5, k) for k in range(4)] == [0, 1, 0, 1]
    # 3 * 0.5 = 1.5: alternating 1 and 2, three per two batches.
    assert sum(generated_count(3, 0.5, k) for k in range(10)) == 15


class StubGenerator(nn.Module):
    """Records its input and returns a constant-per-sample image in [-1, 1]."""

    crop_size = SIZE  # renders at the training size (GeneratedSamples resizes otherwise)

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))
        self.inputs: list[torch.Tensor] = []

    def forward(self, semantics: torch.Tensor) -> torch.Tensor:
        self.inputs.append(semantics.clone())
        batch, _, height, width = semantics.shape
        return torch.full((batch, 3, height, width), 0.25) + self.bias


def recipe_batch(batch_size: int = 4) -> dict:
    """A collated batch whose real and augmented poses differ for every sample."""
    torch.manual_seed(3)
    keypoints = torch.rand(batch_size, 2, NUM_KEYPOINTS, 2) * 40 + 12
    keypoints[:, 1] = math.nan  # padding person
    keypoints[0, 0, 5] = math.nan  # a missing keypoint
    augmented = keypoints.clone()
    augmented[:, 0, :2] += 6.0  # the right arm moved
    return {
        "image": torch.randn(batch_size, 3, SIZE, SIZE),
        "seatbelt": (torch.rand(batch_size, 1, SIZE, SIZE) > 0.8).float(),
        "keypoints": keypoints,
        "augmented_keypoints": augmented,
        "image_id": [f"frame{i}" for i in range(batch_size)],
        "index": torch.arange(batch_size),
    }


@pytest.mark.parametrize("image_range", ["converted", "seed"])
def test_half_batch_labels_follow_the_pose_each_image_shows(image_range):
    batch = recipe_batch(4)
    stub = StubGenerator()
    samples = GeneratedSamples(stub, "cpu", image_range=image_range, eval_mode=True)
    result = build_training_batch(batch, 2, samples, "cpu", include_background=False, augment_generator=None)

    # The generator saw the AUGMENTED pose (and the samples' seatbelts) of the first two samples only.
    assert len(stub.inputs) == 1
    expected_input = gan_input(batch["augmented_keypoints"][:2], batch["seatbelt"][:2], SIZE)
    assert torch.equal(stub.inputs[0], expected_input)
    # Generated images replace the first two; the real images (the last included) are kept.
    fake = torch.full((2, 3, SIZE, SIZE), 0.25)
    expected_fake = gan_to_imagenet(fake) if image_range == "converted" else fake
    assert torch.allclose(result.images[:2], expected_fake)
    assert torch.equal(result.images[2:], batch["image"][2:])
    assert result.generated.tolist() == [True, True, False, False]
    # Labels: augmented pose for generated samples, real pose for every real sample.
    augmented_maps = nadsnet_targets(batch["augmented_keypoints"], SIZE)
    real_maps = nadsnet_targets(batch["keypoints"], SIZE)
    for sample in range(4):
        source = augmented_maps if sample < 2 else real_maps
        other = real_maps if sample < 2 else augmented_maps
        assert torch.equal(result.heatmaps[sample], source[0][sample])
        assert torch.equal(result.pafs[sample], source[1][sample])
        assert not torch.equal(result.heatmaps[sample], other[0][sample])  # the poses do differ
    assert torch.equal(result.heatmaps[3], real_maps[0][3])  # the last sample: real labels (seed defect fixed)


def test_without_generated_samples_no_generator_is_needed():
    batch = recipe_batch(2)
    result = build_training_batch(batch, 0, None, "cpu", include_background=True, augment_generator=None)
    assert torch.equal(result.images, batch["image"])
    assert result.heatmaps.shape[1] == NUM_KEYPOINTS + 1
    assert torch.equal(result.heatmaps, nadsnet_targets(batch["keypoints"], SIZE, background=True)[0])


def test_geometric_augmentation_draws_depend_on_seed_epoch_and_batch():
    batch = recipe_batch(2)

    def augmented(seed, epoch, index):
        return build_training_batch(batch, 0, None, "cpu", False, geometric_generator(seed, epoch, index)).images

    assert torch.equal(augmented(0, 1, 0), augmented(0, 1, 0))
    assert not torch.equal(augmented(0, 1, 0), augmented(0, 1, 1))
    assert not torch.equal(augmented(0, 1, 0), augmented(0, 2, 0))


def test_label_skeleton_picture_follows_the_geometric_augmentation():
    """The page's skeletons are moved by the batch's own geometric draws: every moved keypoint
    lies on the maximum of its augmented label heatmap (within the map's rounding)."""
    size = 128
    batch = recipe_batch(3)
    batch["image"] = torch.zeros(3, 3, size, size)
    batch["seatbelt"] = torch.zeros(3, 1, size, size)
    batch["keypoints"] = batch["keypoints"] * 2
    result = build_training_batch(batch, 0, None, "cpu", False, geometric_generator(5, 1, 0))
    placements = geometric_placements(3, size, tuple(result.heatmaps.shape[1:]), 16, geometric_generator(5, 1, 0))
    assert (placements[:, 2:] < size).any()  # something was shrunk
    moved = place_keypoints(result.label_keypoints, placements, size)
    checked = 0
    for sample in range(3):
        for channel in range(NUM_KEYPOINTS):
            if torch.isnan(moved[sample, 0, channel]).any():
                continue
            heat = result.heatmaps[sample, channel]
            gy, gx = divmod(int(heat.argmax()), heat.shape[1])
            peak = torch.tensor([gx * 4 + 1.5, gy * 4 + 1.5])
            assert torch.dist(peak, moved[sample, 0, channel]) < 4.5, (sample, channel)
            checked += 1
    assert checked == 3 * NUM_KEYPOINTS - 1


def test_generator_running_statistics_stay_unchanged():
    generator, _ = tiny_generator(seed=1)
    # Give the stored statistics values that differ from any batch's.
    for module in generator.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    before = copy.deepcopy(generator.state_dict())
    batch = recipe_batch(2)
    samples = GeneratedSamples(generator, "cpu", eval_mode=False)
    batch_statistics = samples.render(batch["augmented_keypoints"], batch["seatbelt"], SIZE)
    after = generator.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)  # running stats and spectral vectors

    eval_samples = GeneratedSamples(copy.deepcopy(generator), "cpu", eval_mode=True)
    running_statistics = eval_samples.render(batch["augmented_keypoints"], batch["seatbelt"], SIZE)
    assert not torch.allclose(batch_statistics, running_statistics, atol=1e-3)
    # No autograd graph: nothing to backpropagate into the generator.
    assert not batch_statistics.requires_grad
    assert all(not p.requires_grad for p in generator.parameters())


# --------------------------------------------------------------------------- end-to-end runs


def check_run_outputs(checkpoints, net, background: bool = False, html: bool = False, generated: bool = False) -> None:
    """What every finished run leaves behind: the best checkpoint (here: the only epoch's, so the
    final weights) with its configuration, the training state, TensorBoard events, the log with
    the metrics, and (with `html`) a page listing exactly the pictures that exist."""
    best = checkpoints / "nadsnet_best.pth"
    config = json.loads(best.with_suffix(".json").read_text())
    assert config["num_heatmaps"] == NUM_KEYPOINTS + int(background) and config["image_size"] == SIZE
    assert state_dicts_close(load_state_dict_file(best), net.state_dict(), atol=0)
    assert (checkpoints / "nadsnet_train_state.pth").is_file()
    assert list((checkpoints / "tensorboard" / "nadsnet").glob("events.out.tfevents.*"))
    log = (checkpoints / "nadsnet_log.txt").read_text()
    assert "PCK@5" in log and "right_wrist" in log and "new best" in log and "seatbelt: IoU" in log
    if html:
        page = (checkpoints / "web" / "nadsnet.html").read_text()
        images = sorted(p.name for p in (checkpoints / "web" / "images").glob("nadsnet_epoch*.png"))
        assert "nadsnet_epoch001_train0.png" in images and "nadsnet_epoch001_valid0_pred.png" in images
        assert all(name in page for name in images)
        for plot in ("nadsnet_total.png", "nadsnet_maps.png", "nadsnet_seatbelt.png", "nadsnet_metrics.png"):
            assert plot in page and (checkpoints / "web" / plot).is_file()
        assert ("generated (augmented pose)" in page) == generated and "real: labels" in page


@pytest.mark.parametrize(
    "arm_augment, fraction, background",
    [("none", 0.5, False), ("slightly", 0.5, True), ("slightly", 0.0, False)],
)
def test_tiny_run_writes_best_checkpoint(tiny_dataset_dir, tmp_path, generator_file, arm_augment, fraction, background):
    """(The 'highly' run is test_interrupted_run_continues_exactly's uninterrupted run.)"""
    data, train_file, valid_file = make_data(tiny_dataset_dir, train=2, valid=1)
    checkpoints = tmp_path / "run"
    extra = ["--arm-augment", arm_augment, "--gan-fraction", str(fraction), "--generator-weights", str(generator_file)]
    if background:
        extra.append("--include-background")  # 10 heatmap channels end to end (the seed cut targets to 9)
    else:
        extra.append("--no-html")
    options, messages = run_options(data, train_file, valid_file, checkpoints, *extra)
    net = train_module.train(options, messages)
    check_run_outputs(checkpoints, net, background=background, html=background, generated=fraction > 0)
    if background:
        loaded, _ = load_nadsnet(checkpoints / "nadsnet_best.pth", "cpu", image_size=SIZE)
        with torch.no_grad():
            assert loaded.eval()(torch.zeros(1, 3, SIZE, SIZE))[0].shape[1] == NUM_KEYPOINTS + 1


def test_best_checkpoint_saved_only_on_improvement(tiny_dataset_dir, tmp_path, monkeypatch):
    data, train_file, valid_file = make_data(tiny_dataset_dir, train=2, valid=1)
    checkpoints = tmp_path / "run"
    options, messages = run_options(data, train_file, valid_file, checkpoints, "--gan-fraction", "0", "--epochs", "3", "--no-html")
    validation_losses = iter([10.0, 20.0, 5.0])
    real_evaluate = train_module.evaluate

    def scripted_evaluate(*args, **kwargs):  # the real evaluation with a scripted total loss
        evaluation = real_evaluate(*args, **kwargs)
        evaluation.losses["total"] = next(validation_losses)
        return evaluation

    monkeypatch.setattr(train_module, "evaluate", scripted_evaluate)
    saved_weights = []
    real_save = NADSNetCheckpoint.save_best

    def recording_save(self, directory):
        saved_weights.append(copy.deepcopy(self.net.state_dict()))
        return real_save(self, directory)

    monkeypatch.setattr(NADSNetCheckpoint, "save_best", recording_save)
    net = train_module.train(options, messages)
    assert len(saved_weights) == 2  # epoch 1 (first) and epoch 3 (better); not epoch 2 (worse)
    assert not state_dicts_close(saved_weights[0], saved_weights[1])
    assert state_dicts_close(saved_weights[1], net.state_dict(), atol=0)
    state = load_file(checkpoints / "nadsnet_train_state.pth")["parts"]
    assert state["best_loss"] == 5.0 and state["best_epoch"] == 3


def test_interrupted_run_continues_exactly(tiny_dataset_dir, tmp_path, generator_file, monkeypatch):
    """Ctrl-C during the first of two batches: the batch is finished, the state saved, the run
    stopped; continued, it ends with the same weights as an uninterrupted run (generated half,
    'highly' arm poses and geometric draws included)."""
    data, train_file, valid_file = make_data(tiny_dataset_dir, train=4, valid=1)
    extra = ("--arm-augment", "highly", "--generator-weights", str(generator_file))

    options, messages = run_options(data, train_file, valid_file, tmp_path / "straight", *extra)
    net = train_module.train(options, messages)
    check_run_outputs(tmp_path / "straight", net, html=True, generated=True)
    uninterrupted = copy.deepcopy(net.state_dict())
    extra = extra + ("--no-html",)

    stopped_dir = tmp_path / "stopped"
    options, messages = run_options(data, train_file, valid_file, stopped_dir, *extra)
    real_step = NADSNetTrainer.train_step
    calls = []

    def interrupt_first_step(self, *args):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # as a Ctrl-C would, in the middle of the step
        return real_step(self, *args)

    monkeypatch.setattr(NADSNetTrainer, "train_step", interrupt_first_step)
    with pytest.raises(TrainingInterrupted) as stopped:
        train_module.train(options, messages)
    assert stopped.value.exit_code == 130 and len(calls) == 1
    monkeypatch.setattr(NADSNetTrainer, "train_step", real_step)
    state = load_file(stopped_dir / "nadsnet_train_state.pth")
    assert (state["progress"]["epoch"], state["progress"]["epoch_batches"]) == (1, 1)
    assert not (stopped_dir / "nadsnet_best.pth").exists()

    options, messages = run_options(data, train_file, valid_file, stopped_dir, *extra, "--continue-train")
    continued = train_module.train(options, messages).state_dict()
    assert state_dicts_close(continued, uninterrupted, atol=1e-6)
    assert not state_dicts_close(continued, state["parts"]["nadsnet"], atol=1e-6)  # it did train on


# --------------------------------------------------------------------------- messages


def test_dataset_smaller_than_one_batch_is_a_clear_error(tiny_dataset_dir, tmp_path, capsys):
    data, train_file, valid_file = make_data(tiny_dataset_dir, train=1, valid=1)
    argv = ["--preset", "cpu", "--batch-size", "4", "--gan-fraction", "0", "--train-annotations", str(train_file),
            "--valid-annotations", str(valid_file), "--images-dir", str(data.images_dir), "--masks-dir",
            str(data.masks_dir), "--checkpoints-dir", str(tmp_path / "run")]
    assert train_module.main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "fewer than one batch of 4" in error and "\n" not in error


def test_missing_generator_names_the_way_out(tiny_dataset_dir, tmp_path, capsys):
    data, train_file, valid_file = make_data(tiny_dataset_dir, train=2, valid=1)
    argv = ["--preset", "cpu", "--batch-size", "2", "--train-annotations", str(train_file),
            "--valid-annotations", str(valid_file), "--images-dir", str(data.images_dir), "--masks-dir",
            str(data.masks_dir), "--checkpoints-dir", str(tmp_path / "run")]
    assert train_module.main(argv) == 1
    error = capsys.readouterr().err
    assert "no generator at" in error and "--gan-fraction 0" in error and "train_gan.py" in error


# --------------------------------------------------------------------------- trainer details


class TinyMapNet(nn.Module):
    """Stands in for NADS-Net in trainer tests: heatmaps (B, 9, 4, 4), PAFs (B, 16, 4, 4), seatbelt."""

    def __init__(self, poison: bool = False):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.poison = poison

    def forward(self, images):
        batch = images.shape[0]
        heatmaps = torch.zeros(batch, NUM_KEYPOINTS, 4, 4) * self.scale
        if self.poison:
            heatmaps = heatmaps + math.nan
        pafs = torch.zeros(batch, 16, 4, 4) * self.scale
        seatbelt = torch.full((batch, 1, 16, 16), 0.5) * self.scale
        return heatmaps, pafs, seatbelt


def trainer_inputs():
    return torch.zeros(2, 3, 16, 16), torch.zeros(2, 1, 16, 16), torch.rand(2, NUM_KEYPOINTS, 4, 4), torch.zeros(2, 16, 4, 4)


def test_nonfinite_loss_raises_naming_the_term_before_any_update():
    net = TinyMapNet(poison=True)
    trainer = NADSNetTrainer(net, "cpu", lr=0.1)
    with pytest.raises(NonFiniteLossError, match="heatmap") as raised:
        trainer.train_step(TrainingBatch(*trainer_inputs(), label_keypoints=None, generated=None))
    assert "heatmap" in raised.value.terms and net.scale.item() == 1.0  # no update


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
@pytest.mark.parametrize("schedule", ["metric-based", "fixed"])
def test_learning_rate_schedules_follow_the_seed(schedule):
    trainer = NADSNetTrainer(TinyMapNet(), "cpu", lr=1.0, schedule=schedule)
    lrs = [trainer.end_epoch(10.0) for _ in range(21)]  # a validation loss that never improves
    if schedule == "metric-based":
        # The first epoch sets the best; 4 epochs of patience, then x0.8 (and 4 again after that).
        assert lrs[:5] == [1.0] * 5 and lrs[5] == pytest.approx(0.8) and lrs[10] == pytest.approx(0.64)
    else:
        assert lrs[18] == 1.0 and lrs[19] == pytest.approx(0.8)  # StepLR: x0.8 after 20 epochs


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")  # no training here
def test_cosine_schedule_ends_near_zero_on_the_last_epoch():
    trainer = NADSNetTrainer(TinyMapNet(), "cpu", lr=1.0, schedule="cosine", epochs=5)
    lrs = [trainer.lr] + [trainer.end_epoch(10.0) for _ in range(4)]  # the lr of epochs 1..5
    assert lrs == pytest.approx([1.0, 0.9045085, 0.6545085, 0.3454915, 0.0954915])
    assert trainer.end_epoch(10.0) == pytest.approx(0.0, abs=1e-12)  # after the last epoch


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")  # no training here
def test_a_cosine_run_continued_with_more_epochs_follows_the_longer_curve():
    short = NADSNetTrainer(TinyMapNet(), "cpu", lr=1.0, schedule="cosine", epochs=4)
    for _ in range(2):
        short.end_epoch(10.0)
    longer = NADSNetTrainer(TinyMapNet(), "cpu", lr=1.0, schedule="cosine", epochs=8)
    longer.load_state_dict(short.state_dict())
    lrs = [longer.end_epoch(10.0) for _ in range(6)]  # the lr of epochs 4..8, then after the last
    expected = [(1 + math.cos(math.pi * e / 8)) / 2 for e in range(3, 9)]
    assert lrs == pytest.approx(expected, abs=1e-12)  # never back up to the full lr, 0 at the end


def test_cpu_preset_uses_the_cosine_schedule_and_the_seed_its_plateau():
    from nadsnet_pvt.options import parse_options

    cpu, _ = parse_options(["--preset", "cpu"], gpu_available=False)
    seed, _ = parse_options(["--preset", "seed"], gpu_available=False)
    chosen, _ = parse_options(["--preset", "cpu", "--lr-schedule", "fixed"], gpu_available=False)
    assert (cpu.lr_schedule, seed.lr_schedule, chosen.lr_schedule) == ("cosine", "metric-based", "fixed")


def test_pretrained_partial_state_dict_reports_what_did_not_load(tmp_path):
    from common.models.factory import build_nadsnet

    torch.manual_seed(0)
    source = build_nadsnet({"image_size": SIZE})
    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("PAF_branch.")}
    path = tmp_path / "seed_nadsnet.pth"
    torch.save(partial, path)
    torch.manual_seed(1)
    target = build_nadsnet({"image_size": SIZE})
    log = RunLog(tmp_path / "nadsnet_log.txt")
    train_module.load_pretrained(target, path, log)
    text = (tmp_path / "nadsnet_log.txt").read_text()
    assert "missing" in text and "PAF_branch." in text and "WARNING" in text
    loaded = target.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in partial.items())

    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="nothing loaded"):
        train_module.load_pretrained(target, tmp_path / "other.pth", log)


def test_metrics_file_has_one_line_per_validation_and_is_cut_back_on_resume(tiny_dataset_dir, tmp_path):
    """nadsnet_metrics.jsonl: one JSON object per epoch with the issue's keys; a line a killed
    run wrote after its last save is gone once the run continues, so no epoch appears twice."""
    data, train_file, valid_file = make_data(tiny_dataset_dir, train=2, valid=1)
    checkpoints = tmp_path / "run"
    common_flags = ("--gan-fraction", "0", "--no-html")
    train_module.train(*run_options(data, train_file, valid_file, checkpoints, *common_flags, "--epochs", "1"))
    metrics_file = checkpoints / "nadsnet_metrics.jsonl"
    first = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    assert [record["epoch"] for record in first] == [1]
    required = {"epoch", "valid_loss", "pck5", "pck10", "pckt", "pckt_arms", "present", "skipped_people",
                "seatbelt_iou", "seatbelt_dice"}
    assert required <= set(first[0]) and first[0]["present"] > 0

    with metrics_file.open("a") as handle:  # what a run killed after validating epoch 2 leaves behind
        handle.write(json.dumps(dict(first[0], epoch=2, valid_loss=-1.0)) + "\n")
    train_module.train(*run_options(data, train_file, valid_file, checkpoints, *common_flags, "--epochs", "3",
                                    "--continue-train"))
    records = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    assert [record["epoch"] for record in records] == [1, 2, 3]
    assert all(record["valid_loss"] > 0 for record in records) and records[0] == first[0]
