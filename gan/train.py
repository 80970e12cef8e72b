"""The GAN training, top to bottom: options -> data -> networks -> the loop.

The run skeleton (common.training.run) owns the folder, resume, saves, stop requests and non-finite
losses; gan.checkpoint says what is saved (SPADE's file names); gan.trainer takes the steps;
gan.visualizer writes the page. Everything that can be wrong with the data, the options or
the checkpoints to load is found before the first file is written.
"""

from __future__ import annotations

import argparse
import functools
import warnings
from pathlib import Path

import torch

from common.training.cli import run_script
from common.posedata.dataset import PoseDataset, make_loader, validated_dataset
from common.parallel.devices import Placement, place_networks, release_free_heap_pages
from common.parallel.distributed import SINGLE_PROCESS
from common.errors import DataError
from common.models.factory import build_discriminator, build_generator, discriminator_config, generator_config, load_nadsnet
from common.models.init import init_weights
from common.models.losses import VGGLoss
from common.presets import prepare_data
from common.training.run import Run, RunSpec
from common.posedata.sampling import ResumableSampler
from gan.checkpoint import GANCheckpoint
from gan.faithfulness import Faithfulness, load_judge
from gan.model import GANModel, LossWeights
from gan.options import parse_options, smallest_generator_batch
from gan.run_files import STATE_FILE
from gan.trainer import GANTrainer
from nadsnet_pvt.run_files import BEST_WEIGHTS
from gan.visualizer import GANVisualizer

RUN_KIND = RunSpec(
    name="GAN",
    state_file=STATE_FILE,
    state_format="pose-gan-train-state/2",
    log_file="loss_log.txt",  # loss lines only, as in SPADE
    options_file="opt.txt",
    metrics_file="gan_metrics.jsonl",
    messages_to_log=False,
    resume_keys=("batch_size", "image_size", "seed"),
    tensorboard_folder="gan",
)
TRAIN_STATE = RUN_KIND.state_file


def train(options: argparse.Namespace, messages: list[str] = ()) -> GANModel:
    """Run the whole training; returns the model (its networks hold the final weights)."""
    run = Run(options, RUN_KIND, messages)
    prepare_data(options, run.log, run.check_stop)
    devices = place_networks(options, run.log, run.job)
    run.settings["devices"] = f"GAN {devices.gan}, NADS-Net {devices.nadsnet}"
    loader = build_loader(options, load_training_data(options, run.log), devices.gan, run.log, run.job)
    run.check_stop()
    model, configs = build_model(options, devices, run.log)
    model.distribute(run.job)
    trainer = GANTrainer.from_options(options, model)
    visualizer = GANVisualizer(options.checkpoints_dir / "web", enabled=not options.no_html and run.is_writer)
    judge = build_judge(options, devices, run.log)
    checkpoint = GANCheckpoint(model, trainer, visualizer, configs, options.batch_size,
                               options.keep_epoch_checkpoints, options.which_epoch)
    epochs = options.niter + options.niter_decay
    run.log.info(f"{len(loader.dataset)} training images, {loader.batch_sampler.batches_per_epoch()} batches of up to "
                 f"{options.batch_size} per epoch, {epochs} epochs")

    with run.session(checkpoint, epochs):
        model.train()
        for epoch in run.epochs():
            lr = trainer.set_epoch(epoch)
            for batch in run.batches(loader):
                with run.step():
                    generator_turn = run.batch_index % options.d_steps_per_g == 0
                    losses = trainer.step(batch, generator_turn, reuse_fake=options.reuse_fake)
                    show(run, losses, visualizer, trainer, options.display_freq)
            run.log.info(f"end of epoch {epoch}/{epochs} (lr {lr:.6g}), {run.elapsed():.0f} s so far")
            run.scalars({"lr": lr, "epoch": epoch})
            due = epoch % options.save_epoch_freq == 0 or epoch == epochs
            if due and judge is not None:
                report_faithfulness(run, visualizer, judge.measure(model.netG, model.occluded_joints))
            run.end_epoch(save=due, epoch_label=str(epoch) if due else None)
    run.finish(f"pictures: {options.checkpoints_dir / 'web' / 'index.html'}")
    return model


def show(run: Run, losses: dict[str, torch.Tensor], visualizer: GANVisualizer, trainer: GANTrainer,
         display_freq: int) -> None:
    """Losses printed (and plotted) every --print-freq iterations, pictures every --display-freq."""
    if (values := run.record(losses)) is not None:
        visualizer.record_losses(run.progress.total_iterations, values)
    if run.every(display_freq):
        visualizer.display(run.progress.epoch, run.progress.total_iterations, *trainer.display_images())


def build_judge(options: argparse.Namespace, devices: Placement, log) -> Faithfulness | None:
    """--judge-weights: the judge of pose faithfulness on --judge-annotations (gan.faithfulness)."""
    if options.judge_weights is None:
        return None
    judge, config = load_judge(options.judge_weights, guidance_weights(options), devices.nadsnet)
    annotations = options.judge_annotations or options.valid_annotations
    held_out = validated_dataset(log, annotations, options.valid_images_dir, options.valid_masks_dir,
                                 image_size=config["image_size"])
    log.info(f"pose faithfulness judged by {options.judge_weights} on {len(held_out)} held-out frames of {annotations}")
    return Faithfulness(judge, held_out, devices.nadsnet, num_workers=options.num_workers)


def report_faithfulness(run: Run, visualizer: GANVisualizer, measured: dict) -> None:
    """One line of gan_metrics.jsonl, a log line and the page's line."""
    epoch = run.progress.epoch
    run.write_metrics({"epoch": epoch, "iteration": run.progress.total_iterations, **measured})
    run.scalars({f"faithfulness/{name}": value for name, value in measured.items()
                 if isinstance(value, (int, float)) and not isinstance(value, bool)})

    def shown(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    line = (f"epoch {epoch}, iteration {run.progress.total_iterations}: pose faithfulness "
            f"{shown(measured['faithfulness'])} (arms {shown(measured['faithfulness_arms'])}; judge's PCKt@0.2 "
            f"{shown(measured['generated_pckt'])} on generated / {shown(measured['real_pckt'])} on real frames, "
            f"seatbelt IoU {shown(measured['generated_seatbelt_iou'])})")
    run.log.info(line)
    visualizer.metrics_lines = [line] + visualizer.metrics_lines[:9]


def load_training_data(options: argparse.Namespace, log) -> PoseDataset:
    """The training set, validated before anything is written (one line naming the file, the
    record and the field on any problem); warnings become log lines."""
    dataset = validated_dataset(log, options.train_annotations, options.images_dir, options.masks_dir,
                                image_size=options.image_size)
    if len(dataset) < options.batch_size:
        raise DataError(f"{options.train_annotations}: {len(dataset)} image(s), fewer than one batch of "
                        f"{options.batch_size}; lower --batch-size")
    return dataset


def build_loader(options: argparse.Namespace, dataset: PoseDataset, device: torch.device, log, job=SINGLE_PROCESS):
    """The seed's GAN loader: shuffled, the last incomplete batch kept, except one too
    small for the generator's batch norms or one the job's processes cannot share evenly (then
    it is left out, with a note). Each process loads its share of every batch."""
    smallest = smallest_generator_batch(options)
    sampler = ResumableSampler(len(dataset), options.batch_size, seed=options.seed, shuffle=True, drop_last=False,
                               smallest_batch=smallest, rank=job.rank, world_size=job.world_size)
    if sampler.drop_last:
        log.info(f"note: the last batch of each epoch ({len(dataset) % options.batch_size} sample(s)) is left out: the "
                 f"generator's batch norms need at least {smallest} samples at --image-size {options.image_size}, "
                 f"and the job's {job.world_size} process(es) must share it evenly")
    return make_loader(dataset, sampler, options.num_workers, device)


def build_model(options: argparse.Namespace, devices: Placement, log) -> tuple[GANModel, dict[str, dict]]:
    """G, D (freshly initialised with the run's seed), VGG and the NADS-Net guidance."""
    torch.manual_seed(options.seed)
    configs = {"generator": dict(generator_config(options.ngf, options.image_size, options.num_upsampling_layers,
                                                  options.spade_hidden), image_range=options.image_range,
                                 occluded_joints=options.occluded_joints),
               "discriminator": discriminator_config(options.ndf, options.n_layers_d, options.num_d)}
    generator = build_generator(configs["generator"])
    discriminator = build_discriminator(configs["discriminator"])
    generator.checkpoint_blocks = options.checkpoint_generator
    init_weights(generator, options.init_type, options.init_gain)
    init_weights(discriminator, options.init_type, options.init_gain)
    weights = LossWeights(feat=options.lambda_feat, vgg=options.lambda_vgg, heatmap=options.lambda_heatmap,
                          paf=options.lambda_paf, seatbelt=options.lambda_seatbelt, use_feat=not options.no_ganfeat_loss,
                          l1=options.lambda_l1)
    model = GANModel(generator, discriminator, gan_mode=options.gan_mode, weights=weights, vgg_loss=build_vgg(options, log),
                     nadsnet=build_guidance(options, devices, log), image_range=options.image_range,
                     gan_device=devices.gan, nadsnet_device=devices.nadsnet,
                     release_memory=functools.partial(release_free_heap_pages, devices.gan),
                     occluded_joints=options.occluded_joints)
    log.info("G loss terms: " + ", ".join(f"{name} {'on' if on else 'OFF'}" for name, on in model.active_terms().items()))
    return model, configs


def build_vgg(options: argparse.Namespace, log) -> VGGLoss | None:
    if options.no_vgg_loss:
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vgg = VGGLoss(weights=options.vgg_weights)
    for warning in caught:
        log.info(f"WARNING: {warning.message}")
    return vgg if vgg.available else None


def guidance_weights(options: argparse.Namespace) -> Path | None:
    """The guidance NADS-Net's file --nadsnet-weights names: none -> None (no guidance); auto ->
    the checkpoints folder's nadsnet_best.pth when there is one; else the path given."""
    if options.nadsnet_weights in (None, "", "none"):
        return None
    if options.nadsnet_weights == "auto":
        candidate = options.checkpoints_dir / BEST_WEIGHTS
        return candidate if candidate.is_file() else None
    return Path(options.nadsnet_weights)


def build_guidance(options: argparse.Namespace, devices: Placement, log) -> torch.nn.Module | None:
    """The frozen NADS-Net of the guidance losses, or None (the terms are then OFF)."""
    path = guidance_weights(options)
    if path is None:
        log.info("WARNING: no NADS-Net weights, so the guidance losses (heatmap, paf, seatbelt) are OFF. Train one with "
                 f"`python train_nadsnet.py --gan-fraction 0` (it writes {options.checkpoints_dir / BEST_WEIGHTS}) "
                 "or pass --nadsnet-weights PATH.")
        return None
    nadsnet, config = load_nadsnet(path, devices.nadsnet)
    resized = "" if config["image_size"] == options.image_size else \
        f" (a {config['image_size']} px NADS-Net: frames are resized to its input)"
    log.info(f"NADS-Net guidance: {path}{resized}")
    return nadsnet


def main(argv: list[str] | None = None) -> int:
    """The command line (exit codes: common.training.cli)."""
    return run_script("train_gan.py", lambda args: parse_options(args), train, argv)
