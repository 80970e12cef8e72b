"""train_gan.py end to end on tiny configurations (64 px, a few channels, CPU).

Networks use random weights on purpose (VGG included: `--vgg-weights random`); nothing is
downloaded.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.training.checkpoints import load_network_config, load_state_dict_file, save_network
from common.parallel.devices import process_devices, resolve_devices
from common.errors import CheckpointError
from common.models.factory import build_nadsnet, load_generator, load_nadsnet
from gan.options import CPU_PRESET, SEED_PRESET, parse_options
from gan.train import TRAIN_STATE, train

ROOT = Path(__file__).resolve().parents[1]


def tiny_args(data, checkpoints: Path, *extra: str) -> list[str]:
    return [
        "--train-annotations", str(data.annotation_file),
        "--images-dir", str(data.images_dir),
        "--masks-dir", str(data.masks_dir),
        "--checkpoints-dir", str(checkpoints),
        "--preset", "cpu",
        "--image-size", "64", "--ngf", "4", "--ndf", "4", "--batch-size", "2",
        "--niter", "2", "--niter-decay", "0",
        "--num-workers", "0",
        "--print-freq", "1", "--display-freq", "2", "--save-latest-freq", "3", "--save-epoch-freq", "1",
        "--vgg-weights", "random", "--nadsnet-weights", "none",
        *extra,
    ]


def run_training(argv: list[str]):
    options, messages = parse_options(argv, gpu_available=False)
    return train(options, messages)


def test_tiny_training_writes_checkpoints_logs_and_page(tiny_dataset_dir, tmp_path, capsys):
    data = tiny_dataset_dir(num_images=4, width=96, height=80)
    checkpoints = tmp_path / "run"
    model = run_training(tiny_args(data, checkpoints))
    output = capsys.readouterr().out

    for name in ("latest_net_G.pth", "latest_net_D.pth", "1_net_G.pth", "2_net_D.pth", TRAIN_STATE, "iter.txt", "opt.txt", "loss_log.txt"):
        assert (checkpoints / name).is_file(), name
    # Plain state dicts with their configuration beside them, loadable like the seed's.
    generator_state = load_state_dict_file(checkpoints / "latest_net_G.pth")
    assert "fc.weight" in generator_state and generator_state["fc.weight"].shape[0] == 16 * 4
    assert load_network_config(checkpoints / "latest_net_G.pth")["crop_size"] == 64
    reloaded, _ = load_generator(checkpoints / "latest_net_G.pth")
    for key, value in model.netG.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value.cpu()), key

    # Every loss printed is finite; the guidance terms are reported as off.
    lines = (checkpoints / "loss_log.txt").read_text().splitlines()
    assert len(lines) == 4  # 2 epochs x 2 batches, printed every iteration
    values = [float(v) for v in re.findall(r": (-?[\d.]+|nan|inf)", " ".join(lines)) if v not in ("nan", "inf")]
    assert values and all(abs(v) < 1e6 for v in values)
    assert "nan" not in " ".join(lines) and "inf" not in " ".join(lines)
    assert "guidance losses (heatmap, paf, seatbelt) are OFF" in output
    assert "GAN_Feat" in lines[0] and "VGG" in lines[0] and "D_Fake" in lines[0]

    # The page lists only images that exist, newest first, three per display step.
    page = (checkpoints / "web" / "index.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    images = [s for s in sources if s.startswith("images/")]
    assert len(images) == 2 * 3
    assert all((checkpoints / "web" / s).is_file() for s in sources)
    assert images[0].startswith("images/epoch002_iter000004")
    assert "b'" not in page and 'http-equiv="refresh"' not in page  # final page stops refreshing
    assert (checkpoints / "iter.txt").read_text().split() == ["3", "0"]


def test_resume_from_mid_epoch_save_reproduces_uninterrupted_run(tiny_dataset_dir, tmp_path):
    data = tiny_dataset_dir(num_images=6, width=96, height=80)
    full = run_training(tiny_args(data, tmp_path / "full"))

    # Stop after 4 iterations (the save at iteration 3 is mid-epoch 2), then continue.
    partial_dir = tmp_path / "partial"
    run_training(tiny_args(data, partial_dir, "--max-iterations", "4"))
    state = torch.load(partial_dir / TRAIN_STATE, weights_only=True)["progress"]
    assert (state["epoch"], state["epoch_batches"]) == (2, 1)  # iteration 4 = batch 1 of epoch 2
    resumed = run_training(tiny_args(data, partial_dir, "--continue-train"))

    for key, value in full.netG.state_dict().items():
        torch.testing.assert_close(resumed.netG.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)
    for key, value in full.netD.state_dict().items():
        torch.testing.assert_close(resumed.netD.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)


def test_continue_from_seed_format_checkpoints(tiny_dataset_dir, tmp_path):
    """The seed wrote only latest_net_G/D.pth (plain state dicts, no JSON) and iter.txt."""
    data = tiny_dataset_dir(num_images=4, width=96, height=80)
    source = tmp_path / "source"
    first = run_training(tiny_args(data, source, "--niter", "1"))
    from_state, config = load_generator(source / TRAIN_STATE)  # where a generator file is asked, a state serves
    assert config["ngf"] == 4 and all(torch.equal(value, first.netG.state_dict()[key])
                                      for key, value in from_state.state_dict().items())
    with pytest.raises(CheckpointError, match="a training state without a NADS-Net"):
        load_nadsnet(source / TRAIN_STATE)
    seed_dir = tmp_path / "seed_layout"
    seed_dir.mkdir()
    torch.save(first.netG.state_dict(), seed_dir / "latest_net_G.pth")
    torch.save(first.netD.state_dict(), seed_dir / "latest_net_D.pth")
    (seed_dir / "iter.txt").write_text("2\n0\n")  # the seed's np.savetxt record

    resumed = run_training(tiny_args(data, seed_dir, "--continue-train", "--niter", "2"))
    assert (seed_dir / "2_net_G.pth").is_file() and not (seed_dir / "1_net_G.pth").exists()
    changed = any(
        not torch.equal(value, first.netG.state_dict()[key]) for key, value in resumed.netG.state_dict().items()
    )
    assert changed  # it trained epoch 2 on top of the loaded weights


def test_continuing_seed_files_names_every_flag_that_differs_and_following_it_works(tiny_dataset_dir, tmp_path, capsys):
    """Seed files (no configuration beside them) of a generator with the seed's SPADE hidden width,
    continued with the cpu preset (a narrower one) and another --ngf: the refusal names both
    flags, and the run given them continues."""
    from common.models.factory import build_discriminator, build_generator, discriminator_config, generator_config
    from gan.train import main

    data = tiny_dataset_dir(num_images=4, width=96, height=80)
    seed_dir = tmp_path / "seed_layout"
    seed_dir.mkdir()
    torch.save(build_generator(generator_config(8, 64, spade_hidden=128)).state_dict(), seed_dir / "latest_net_G.pth")
    torch.save(build_discriminator(discriminator_config(4)).state_dict(), seed_dir / "latest_net_D.pth")
    (seed_dir / "iter.txt").write_text("1\n0\n")
    argv = tiny_args(data, seed_dir, "--continue-train", "--niter", "1", "--max-iterations", "1")
    assert main(argv) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "it fits --ngf 8 --spade-hidden 128" in error[0], error
    assert main([*argv, "--ngf", "8", "--spade-hidden", "128"]) == 0


def test_a_generator_trained_on_other_input_maps_is_not_continued(tiny_dataset_dir, tmp_path, capsys):
    """--occluded-joints changes what the generator's input shows, not its tensors: continuing a
    run (its training state, or its latest_net_G.pth alone) under the other choice is refused in
    one line naming the flag, and continuing with the run's own choice works."""
    from gan.train import main

    data = tiny_dataset_dir(num_images=4, width=96, height=80)
    argv = tiny_args(data, tmp_path / "run", "--niter", "1", "--max-iterations", "1")
    assert main([*argv, "--occluded-joints", "omitted"]) == 0
    capsys.readouterr()
    assert main([*argv, "--continue-train", "--niter", "2", "--max-iterations", "2"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "continue it with --occluded-joints omitted" in error[0], error
    (tmp_path / "run" / "gan_train_state.pth").unlink()  # the latest files alone: checked as well
    assert main([*argv, "--continue-train", "--niter", "2", "--max-iterations", "2"]) == 1
    assert "--occluded-joints omitted" in capsys.readouterr().err
    assert main([*argv, "--continue-train", "--niter", "2", "--max-iterations", "2", "--occluded-joints", "omitted"]) == 0


def test_a_judge_kept_in_the_folder_is_no_guidance_unless_it_guides(tiny_dataset_dir, tmp_path, capsys):
    """--judge-weights FOLDER/nadsnet_best.pth with --nadsnet-weights none: nothing guides, so the
    judge is accepted; the same file as the guidance is refused (one line, exit 2)."""
    from gan.train import main

    data = tiny_dataset_dir(num_images=2, width=96, height=80)
    folder = tmp_path / "run"
    folder.mkdir()
    judge = folder / "nadsnet_best.pth"
    save_network(build_nadsnet({"image_size": 64}), judge, build_nadsnet({"image_size": 64}).config())
    judged = ("--judge-weights", str(judge), "--judge-annotations", str(data.annotation_file), "--valid-images-dir",
              str(data.images_dir), "--valid-masks-dir", str(data.masks_dir), "--max-iterations", "1", "--niter", "1")
    argv = tiny_args(data, folder, *judged)
    assert main(argv) == 0  # tiny_args passes --nadsnet-weights none
    capsys.readouterr()
    assert main([*argv, "--nadsnet-weights", str(judge), "--continue-train"]) == 2
    assert "the same file as the guidance NADS-Net" in capsys.readouterr().err


def test_guidance_on_with_a_nadsnet_checkpoint(tiny_dataset_dir, tmp_path, capsys):
    data = tiny_dataset_dir(num_images=2, width=96, height=80)
    torch.manual_seed(0)
    nadsnet = build_nadsnet({"image_size": 64})  # random weights on purpose
    weights = tmp_path / "nadsnet_best.pth"
    save_network(nadsnet, weights, nadsnet.config())
    checkpoints = tmp_path / "guided"
    model = run_training(tiny_args(data, checkpoints, "--niter", "1", "--nadsnet-weights", str(weights), "--no-vgg-loss"))
    lines = (checkpoints / "loss_log.txt").read_text().splitlines()
    assert all(term in lines[0] for term in ("heatmap:", "paf:", "seatbelt:"))
    assert "VGG" not in lines[0]
    # Frozen, in eval mode, and untouched by training.
    assert not model.nadsnet.training
    assert all(not p.requires_grad for p in model.nadsnet.parameters())
    for key, value in nadsnet.state_dict().items():
        assert torch.equal(model.nadsnet.state_dict()[key], value), key

    # A NADS-Net for another input size guides too: the frames are resized to its input (the
    # cpu preset's 64 px GAN is guided by a 128 px NADS-Net), and the log says so.
    other = tmp_path / "other"
    run_training(tiny_args(data, other, "--image-size", "96", "--niter", "1", "--nadsnet-weights", str(weights),
                           "--no-vgg-loss"))
    assert "(a 64 px NADS-Net: frames are resized to its input)" in (other / "opt.txt").read_text() + capsys.readouterr().out
    first_line = (other / "loss_log.txt").read_text().splitlines()[0]
    assert all(term in first_line for term in ("heatmap:", "paf:", "seatbelt:"))


def test_presets_and_overrides():
    options, messages = parse_options([], gpu_available=False)
    assert options.preset == "cpu" and options.image_size == CPU_PRESET["image_size"]
    assert messages and "--preset cpu" in messages[0]
    options, messages = parse_options([], gpu_available=True)
    assert options.preset == "seed" and not messages
    assert (options.image_size, options.ngf, options.niter, options.batch_size) == (384, 64, 50, 1)
    assert (options.lr, options.beta1, options.beta2, options.lambda_feat, options.lambda_vgg) == (0.0002, 0.0, 0.9, 10.0, 10.0)
    assert (options.lambda_heatmap, options.lambda_paf, options.lambda_seatbelt) == (100.0, 100.0, 1.0)
    assert options.save_latest_freq == SEED_PRESET["save_latest_freq"] == 500
    options, _ = parse_options(["--preset", "seed", "--ngf", "8"], gpu_available=False)
    assert options.ngf == 8 and options.image_size == 384


@pytest.mark.parametrize("gpus, processes, expected", [
    (0, 1, [("cpu", "cpu")]),
    (1, 1, [("cuda:0", "cuda:0")]),
    (2, 1, [("cuda:0", "cuda:1")]),  # the seed's split
    (4, 1, [("cuda:0", "cuda:1")]),
    (4, 2, [("cuda:0", "cuda:1"), ("cuda:2", "cuda:3")]),  # process r: GPU 2r for the GAN, 2r + 1 for NADS-Net
    (3, 2, [("cuda:0", "cuda:0"), ("cuda:1", "cuda:1")]),  # one GPU per process: both networks on it
    (2, 2, [("cuda:0", "cuda:0"), ("cuda:1", "cuda:1")]),
    (8, 4, [(f"cuda:{2 * r}", f"cuda:{2 * r + 1}") for r in range(4)]),
    (0, 3, [("cpu", "cpu")] * 3),
])
def test_device_placement_rule_over_machine_shapes(gpus, processes, expected):
    assert [process_devices(rank, processes, gpus) for rank in range(processes)] == expected


def test_device_placement_refusals_and_overrides():
    with pytest.raises(ValueError, match="only 1 GPU"):
        process_devices(0, 2, 1)
    cpu = torch.device("cpu")
    assert resolve_devices("cpu", "cpu", gpus=2) == (cpu, cpu)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_devices("cuda:1", None)


def test_cli_help_is_grouped_and_bad_data_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "train_gan.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for group in ("run:", "data:", "losses:", "optimisation:", "devices and speed:", "output:"):
        assert group in result.stdout
    for flag in ("--lambda-feat", "--lambda-vgg", "--lambda-heatmap", "--lambda-paf", "--lambda-seatbelt", "--image-range", "--nadsnet-weights"):
        assert flag in result.stdout
    missing = tmp_path / "missing.json"
    result = subprocess.run(
        [sys.executable, "train_gan.py", "--train-annotations", str(missing), "--checkpoints-dir", str(tmp_path / "c")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(missing) in result.stderr
