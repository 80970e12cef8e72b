"""What the seed actually computed, where an earlier version of this
project differed: the as-run initial weights, Adam's betas under TTUR, the GAN loader's last
batch, generated frames' value range in NADS-Net training, keypoints beyond the frame, and
the start-of-run report / display pass of the GAN. Tiny configurations, random weights."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from common.parallel.devices import Placement
from common.posedata.maps import nadsnet_targets, render_heatmaps, render_pafs
from common.models.factory import build_generator, build_nadsnet, generator_config
from common.training.runlog import RunLog
from conftest import person_keypoints

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def gan_options(*extra: str):
    from gan.options import parse_options

    argv = ["--preset", "cpu", "--image-size", "64", "--ngf", "16", "--ndf", "16", "--no-vgg-loss",
            "--nadsnet-weights", "none", *extra]
    return parse_options(argv, gpu_available=False)[0]


def built_gan(options):
    from gan.train import build_model

    model, _ = build_model(options, Placement(CPU, CPU), RunLog("/dev/null", hold=True, echo=False))
    return model


def fans(weight: torch.Tensor) -> tuple[int, int]:
    receptive = weight[0, 0].numel()
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def test_as_run_init_per_layer_spread_of_weight_orig():
    """The seed's xavier init never reached `weight_orig` of spectral-normed convs
    (moved to the GPU first): they keep PyTorch's default, kaiming uniform a = sqrt(5), i.e.
    std 1 / sqrt(3 fan_in); every other conv gets xavier normal 0.02; biases 0."""
    model = built_gan(gan_options())
    checked = {"spectral": 0, "xavier": 0}
    for net in (model.netG, model.netD):
        for name, module in net.named_modules():
            if not isinstance(module, nn.Conv2d):
                continue
            spectral = hasattr(module, "weight_orig")
            weight = module.weight_orig if spectral else module.weight
            fan_in, fan_out = fans(weight)
            expected = 1 / math.sqrt(3 * fan_in) if spectral else 0.02 * math.sqrt(2 / (fan_in + fan_out))
            assert weight.std().item() == pytest.approx(expected, rel=0.10), name
            if module.bias is not None:
                assert torch.count_nonzero(module.bias) == 0, name
            checked["spectral" if spectral else "xavier"] += 1
    assert checked["spectral"] >= 20 and checked["xavier"] >= 20

    # --init-type xavier initialises the spectral-normed weights too (about 1/30 of the spread).
    xavier = built_gan(gan_options("--init-type", "xavier"))
    conv = xavier.netG.head_0.conv_0
    fan_in, fan_out = fans(conv.weight_orig)
    assert conv.weight_orig.std().item() == pytest.approx(0.02 * math.sqrt(2 / (fan_in + fan_out)), rel=0.10)


def test_adam_betas_are_used_with_ttur_too():
    from gan.trainer import GANTrainer

    options = gan_options("--beta1", "0.5", "--beta2", "0.99")
    trainer = GANTrainer.from_options(options, built_gan(options))
    for optimizer, lr in ((trainer.optimizer_G, options.lr / 2), (trainer.optimizer_D, options.lr * 2)):
        assert optimizer.param_groups[0]["betas"] == (0.5, 0.99)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(lr)
    defaults = GANTrainer.from_options(gan_options(), built_gan(gan_options()))
    assert defaults.optimizer_G.param_groups[0]["betas"] == (0.0, 0.9)


def test_gan_loader_keeps_the_last_batch_nadsnet_loader_drops_it(tiny_dataset_dir):
    from gan.train import build_loader
    from nadsnet_pvt.options import parse_options as nadsnet_parse
    from nadsnet_pvt.train import build_loaders

    data = tiny_dataset_dir(num_images=7, width=96, height=80)
    from common.posedata.dataset import PoseDataset

    log = RunLog("/dev/null", hold=True, echo=False)
    dataset = PoseDataset(*data.dataset_args(), image_size=64)
    options = gan_options("--batch-size", "2", "--num-workers", "0")
    sizes = [len(batch["index"]) for batch in build_loader(options, dataset, CPU, log)]
    assert sizes == [2, 2, 2, 1]  # the seed's GAN loader: drop_last False

    # At 32 px the generator's first batch norm sees 1 x 1 maps: a last batch of 1 is left out, with a note.
    small = PoseDataset(*data.dataset_args(), image_size=32)
    options32 = gan_options("--batch-size", "2", "--num-workers", "0", "--image-size", "32")
    assert [len(b["index"]) for b in build_loader(options32, small, CPU, log)] == [2, 2, 2]
    assert any("last batch" in line and "left out" in line for line in log.held)

    nadsnet_options, _ = nadsnet_parse(["--preset", "cpu", "--batch-size", "2", "--num-workers", "0",
                                        "--image-size", "64", "--gan-fraction", "0"], gpu_available=False)
    train_loader, valid_loader, own_frames = build_loaders(nadsnet_options, dataset, dataset, CPU)
    assert own_frames is None  # no --train-eval-frames
    assert [len(b["index"]) for b in train_loader] == [2, 2, 2]  # the seed's NADS-Net loader: drop_last
    assert [len(b["index"]) for b in valid_loader] == [2, 2, 2, 1]  # validation sees every sample


def test_generated_frames_range_is_train_nadsnet_own_choice(tmp_path):
    """A generator file saying image_range 'seed' does not make NADS-Net training feed [-1, 1]
    frames: --image-range of train_nadsnet.py decides (converted by default)."""
    from common.training.checkpoints import save_network
    from nadsnet_pvt.options import parse_options as nadsnet_parse
    from nadsnet_pvt.train import build_generated_samples

    config = dict(generator_config(2, 64), image_range="seed")
    path = save_network(build_generator(config), tmp_path / "latest_net_G.pth", config)
    assert json.loads(path.with_suffix(".json").read_text())["image_range"] == "seed"
    log = RunLog(tmp_path / "log.txt", hold=True, echo=False)
    for extra, expected in (((), "converted"), (("--image-range", "seed"), "seed")):
        options, _ = nadsnet_parse(["--preset", "cpu", "--image-size", "64", "--generator-weights", str(path), *extra],
                                   gpu_available=False)
        assert build_generated_samples(options, CPU, log).image_range == expected


def test_keypoints_beyond_the_frame_draw_their_in_frame_tails(tiny_dataset_dir):
    """As in the seed, a labelled keypoint beyond the right edge is kept; its heatmap tail and its
    limb's PAF reach into the frame (numpy and torch renderers alike)."""
    from common.posedata.dataset import PoseDataset

    data = tiny_dataset_dir(num_images=1, width=200, height=100)
    keypoints = person_keypoints(200, 100, scale=0.6)
    keypoints[6 * 3 + 0] = 203.0  # left wrist 3 px beyond the right edge (the elbow is inside)
    data.write_annotations({"annotations": [{"image_id": data.image_ids[0], "label": "Person", "keypoints": keypoints}]})
    with pytest.warns(UserWarning, match="beyond the right or bottom edge"):
        dataset = PoseDataset(*data.dataset_args(), image_size=64)
    people = dataset[0]["keypoints"]
    assert people[0, 6, 0].item() == pytest.approx(203 * 64 / 200)  # > 64: beyond the input
    heatmaps = render_heatmaps(people.numpy(), 64, 64, 1.0, sigma=7 * 64 / 384)
    assert heatmaps[6, :, -1].max() > 0.1  # the wrist's tail in the last column
    pafs = render_pafs(people.numpy(), 16, 16, 4.0)
    assert np.abs(pafs[10:12, :, -1]).max() > 0.5  # the forearm's PAF reaches the edge
    torch_heatmaps, torch_pafs = nadsnet_targets(people[None], 64)
    assert np.allclose(torch_heatmaps[0].numpy(), render_heatmaps(people.numpy(), 16, 16, 4.0, sigma=7 * 64 / 384), atol=1e-5)
    assert np.allclose(torch_pafs[0].numpy(), pafs, atol=1e-5)


@pytest.mark.parametrize("seatbelt", [True, False])
def test_start_of_run_report_says_whether_the_seatbelt_guidance_is_on(seatbelt):
    from gan.model import GANModel

    nadsnet = build_nadsnet({"image_size": 64, "seatbelt": seatbelt})
    model = GANModel(build_generator(generator_config(2, 64)), nn.Identity(), nadsnet=nadsnet)
    assert model.active_terms()["seatbelt"] is seatbelt


def test_display_pass_on_discriminator_only_iterations_moves_no_statistics(tiny_dataset_dir):
    """--d-steps-per-g 2: on iterations without a G step the picture's fake is generated with
    the batch statistics, but G's running statistics and spectral-norm vectors stay put."""
    from common.posedata.dataset import PoseDataset, collate_poses
    from gan.trainer import GANTrainer

    options = gan_options("--d-steps-per-g", "2", "--batch-size", "2")
    model = built_gan(options)
    model.train()
    trainer = GANTrainer.from_options(options, model)
    data = tiny_dataset_dir(num_images=2, width=96, height=80)
    batch = collate_poses([PoseDataset(*data.dataset_args(), image_size=64)[i] for i in range(2)])
    trainer.step(batch, generator_turn=False)
    before = {name: buffer.clone() for name, buffer in model.netG.named_buffers()}
    semantics, fake, real = trainer.display_images()
    assert fake.shape == (3, 64, 64) and semantics.shape[0] == 26
    for name, buffer in model.netG.named_buffers():
        assert torch.equal(buffer, before[name]), name
