"""train_nadsnet.py --backbone / --fpn end to end: a tiny run with timm's PVT-v2 b0 (the smallest
variant) and the textbook FPN, started from timm-layout ImageNet-style weights (random here,
nothing is downloaded); its weights read back by evaluate, predict and the ONNX export, each
building that network from the configuration saved beside them; and the one-line errors for a
file of another backbone or FPN than the flags.

The run trains once per module (one step, batch 2, one validation frame of data_sample at
64 px, FPN and heads 8 wide); the export runs once, being the slowest part.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from common.models.factory import SEED_NADSNET_CONFIG, build_nadsnet, load_nadsnet
from common.posedata.pose import NUM_KEYPOINTS, NUM_PAF_CHANNELS
from nadsnet_pvt import evaluate as evaluate_cli
from nadsnet_pvt import export as export_cli
from nadsnet_pvt import predict as predict_cli
from nadsnet_pvt import train as train_module
from nadsnet_pvt.run_files import BEST_WEIGHTS, LOG_FILE, STATE_FILE

DATA = Path(__file__).resolve().parents[1] / "data_sample"
SIZE = 64
WIDTHS = ("--fpn-channels", "8", "--head-channels", "8")
CHOSEN = {"backbone": "pvt_v2_b0", "fpn": "standard"}
CHOICE_FLAGS = ("--backbone", CHOSEN["backbone"], "--fpn", CHOSEN["fpn"])


def write_split(folder: Path, name: str, frames: list[str]) -> Path:
    """The data_sample annotations of `frames` as their own annotation file."""
    annotations = json.loads((DATA / "Train_keypoint_Annotation_sample.json").read_text())["annotations"]
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"annotations": [a for a in annotations if a["image_id"] in frames]}))
    return path


def training_argv(folder: Path, checkpoints: Path, *extra: str) -> list[str]:
    return ["--preset", "cpu", "--image-size", str(SIZE), *WIDTHS, "--batch-size", "2", "--epochs", "1",
            "--num-workers", "0", "--gan-fraction", "0", "--no-html", "--display-samples", "0",
            "--train-annotations", str(folder / "train.json"), "--valid-annotations", str(folder / "valid.json"),
            "--images-dir", str(DATA / "Raw_Images"), "--masks-dir", str(DATA / "Seatbelt_Mask"),
            "--checkpoints-dir", str(checkpoints), *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(data folder, run folder) of one training step with the chosen backbone and FPN."""
    import timm

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = tmp_path_factory.mktemp("choices")
        write_split(folder, "train", ["train/frame_000000", "train/frame_000001"])
        write_split(folder, "valid", ["train/frame_000002"])
        imagenet = folder / "pvt_v2_b0_imagenet.pth"  # timm's classifier layout, as its ImageNet release
        torch.save(timm.create_model("pvt_v2_b0", pretrained=False).state_dict(), imagenet)
        checkpoints = folder / "run"
        assert train_module.main(training_argv(folder, checkpoints, *CHOICE_FLAGS, "--pretrained", str(imagenet))) == 0
        yield folder, checkpoints
    finally:
        torch.set_num_threads(threads)


def spy_on_loading(monkeypatch, module) -> list:
    """Record the (network, configuration) pairs `module` loads with load_nadsnet."""
    loaded = []

    def recording(*args, **kwargs):
        loaded.append(module_load(*args, **kwargs))
        return loaded[-1]

    module_load = module.load_nadsnet
    monkeypatch.setattr(module, "load_nadsnet", recording)
    return loaded


def check_chosen_network(loaded: list) -> None:
    """One network loaded, of the chosen backbone and FPN, with outputs of the right shapes."""
    (net, config), = loaded
    assert {key: config[key] for key in CHOSEN} == CHOSEN == {key: net.config()[key] for key in CHOSEN}
    assert type(net.PVT).__module__.startswith("timm.") and net.FPN.wiring == "standard"
    with torch.no_grad():
        heatmaps, pafs, seatbelt = net.eval()(torch.zeros(2, 3, SIZE, SIZE))
    assert heatmaps.shape == (2, NUM_KEYPOINTS, SIZE // 4, SIZE // 4) and pafs.shape == (2, NUM_PAF_CHANNELS, SIZE // 4, SIZE // 4)
    assert seatbelt.shape == (2, 1, SIZE, SIZE)


def test_the_run_records_its_choices_and_starts_from_timm_imagenet_weights(trained):
    _, checkpoints = trained
    saved = json.loads((checkpoints / BEST_WEIGHTS).with_suffix(".json").read_text())
    state = torch.load(checkpoints / STATE_FILE, weights_only=True)
    assert {key: saved[key] for key in CHOSEN} == CHOSEN == {key: state["parts"]["nadsnet_config"][key] for key in CHOSEN}
    # The loader every other reader shares (the GAN's guidance, --run of a run stopped before its
    # first validation) builds the same network from the training state.
    check_chosen_network([load_nadsnet(checkpoints / STATE_FILE)])
    log = (checkpoints / LOG_FILE).read_text()
    assert "into NADSNet.PVT from a checkpoint in timm PVT-v2 layout" in log and "WARNING: the tensors" not in log


def test_evaluate_builds_the_saved_network(trained, monkeypatch, tmp_path, one_thread):
    _, checkpoints = trained
    loaded = spy_on_loading(monkeypatch, evaluate_cli)
    out = tmp_path / "results.json"
    # --run: the weights and the validation set from the run folder (its options file records the choices too).
    assert evaluate_cli.main(["--run", str(checkpoints), "--device", "cpu", "--json", str(out)]) == 0
    check_chosen_network(loaded)
    assert json.loads(out.read_text())["samples"] == 1


def test_predict_builds_the_saved_network_and_runs_it_at_another_size(trained, monkeypatch, tmp_path, one_thread):
    _, checkpoints = trained
    loaded = spy_on_loading(monkeypatch, predict_cli)
    frame = DATA / "Raw_Images" / "train" / "frame_000002.png"
    out = tmp_path / "predicted"
    # 96 px: a PVT-v2 backbone has no position embeddings tied to the training size.
    assert predict_cli.main(["--weights", str(checkpoints / BEST_WEIGHTS), "--images", str(frame), "--out", str(out),
                             "--image-size", "96", "--device", "cpu"]) == 0
    check_chosen_network(loaded)
    assert [record["image_id"] for record in json.loads((out / "predictions.json").read_text())["images"]] == ["frame_000002"]
    assert (out / "Seatbelt_Mask" / "frame_000002.png").is_file()


def test_export_builds_the_saved_network_and_onnx_runtime_runs_it(trained, monkeypatch, tmp_path, one_thread):
    import onnxruntime

    _, checkpoints = trained
    loaded = spy_on_loading(monkeypatch, export_cli)
    onnx_path = tmp_path / "nadsnet.onnx"
    assert export_cli.main(["--weights", str(checkpoints / BEST_WEIGHTS), "--out", str(onnx_path)]) == 0
    check_chosen_network(loaded)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"image": torch.zeros(4, 3, SIZE, SIZE).numpy()})
    assert [output.shape for output in outputs] == [(4, NUM_KEYPOINTS, SIZE // 4, SIZE // 4),
                                                    (4, NUM_PAF_CHANNELS, SIZE // 4, SIZE // 4), (4, 1, SIZE, SIZE)]


def seed_file(folder: Path) -> Path:
    """A NADS-Net state dict without a configuration beside it: the seed's pvt_tiny and FPN."""
    path = folder / "seed_nadsnet.pth"
    net = build_nadsnet(dict(SEED_NADSNET_CONFIG, image_size=SIZE, fpn_channels=8, head_channels=8))
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.parametrize("case, flags, held, fitting", [
    ("continue", (), "--backbone pvt_v2_b0 --fpn standard", " --backbone pvt_v2_b0 --fpn standard"),
    # The FPN wirings share every tensor: only the configuration tells them apart.
    ("continue", ("--backbone", "pvt_v2_b0"), "--fpn standard", " --backbone pvt_v2_b0 --fpn standard"),
    ("pretrained", (), "--backbone pvt_v2_b0 --fpn standard", " --backbone pvt_v2_b0 --fpn standard"),
    ("seed file", CHOICE_FLAGS, "--backbone pvt_tiny --fpn seed", ""),  # the defaults need no flag
])
def test_a_file_of_another_backbone_or_fpn_is_refused_naming_the_flags(trained, tmp_path, capsys, case, flags, held,
                                                                       fitting):
    folder, checkpoints = trained
    if case == "continue":
        run = tmp_path / "run"
        shutil.copytree(checkpoints, run)
        argv = training_argv(folder, run, *flags, "--continue-train")
    else:
        weights = checkpoints / BEST_WEIGHTS if case == "pretrained" else seed_file(tmp_path)
        argv = training_argv(folder, tmp_path / "new", *flags, "--pretrained", str(weights))
    assert train_module.main(argv) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1, error
    assert f"holds a NADS-Net built with {held}, this run builds " in error, error
    assert error.rstrip().endswith(f"it fits --image-size {SIZE} --fpn-channels 8 --head-channels 8{fitting}"), error
