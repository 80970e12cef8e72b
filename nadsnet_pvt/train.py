"""NADS-Net training, top to bottom: options -> data -> networks -> the loop.

Each training batch has its first samples rendered by the pretrained SPADE generator in
changed arm poses (nadsnet_pvt.batch); after every epoch NADS-Net is validated on the
validation JSON (nadsnet_pvt.evaluate: losses, PCK, PCKt, seatbelt IoU / Dice), the numbers go
to the log, `nadsnet_metrics.jsonl`, TensorBoard and the page, and the best weights are kept.
The run skeleton (common.training.run) owns the folder, resume, saves, stop requests and non-finite
losses. Everything that can be wrong with the data, the options or the checkpoints to load is
found before the first file is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from common.training.cli import run_script
from common.posedata.dataset import PoseDataset, WithGeneratedFrames, make_loader, validated_dataset
from common.parallel.devices import place_networks
from common.parallel.distributed import SINGLE_PROCESS, sum_over_processes
from common.errors import CheckpointError, DataError
from common.models.factory import build_nadsnet, describe_state_dict, infer_nadsnet_config, load_generator
from common.posedata.pose import NUM_KEYPOINTS, NUM_PAF_CHANNELS
from common.posedata.pose_library import load_arm_pose_library
from common.presets import prepare_data
from common.training.checkpoints import load_network_config
from common.training.run import Run, RunSpec
from common.posedata.sampling import ResumableSampler
from common.models.rendering import GeneratedSamples, occluded_joints_of
from common.models.factory import LATEST_GENERATOR
from nadsnet_pvt.batch import BatchRecipe
from nadsnet_pvt.checkpoint import NADSNetCheckpoint, check_network_choices
from nadsnet_pvt.evaluate import Evaluation, evaluate
from nadsnet_pvt.metrics import format_keypoint_table
from nadsnet_pvt.options import parse_options
from nadsnet_pvt.run_files import BEST_WEIGHTS, LOG_FILE, METRICS_FILE, OPTIONS_FILE, STATE_FILE
from nadsnet_pvt.trainer import NADSNetTrainer
from nadsnet_pvt.visualizer import NADSNetVisualizer

RUN_KIND = RunSpec(
    name="NADS-Net",
    state_file=STATE_FILE,
    state_format="nadsnet-train-state/2",
    log_file=LOG_FILE,
    options_file=OPTIONS_FILE,
    metrics_file=METRICS_FILE,
    messages_to_log=True,
    resume_keys=("batch_size", "image_size", "include_background", "gan_fraction", "arm_augment", "seed", "lr_schedule",
                 "generated"),
    tensorboard_folder="nadsnet",
)
TRAIN_STATE = RUN_KIND.state_file
LOSS_NAMES = ("total", "heatmap", "paf", "seatbelt", "dice")
METRIC_NAMES = ("pck5", "pck10", "pckt", "pckt_arms", "seatbelt_iou", "seatbelt_dice")
TRAIN_FRAMES_METRICS = ("pckt", "pckt_arms", "seatbelt_iou")  # on --train-eval-frames, as train_frames_<name>


def train(options: argparse.Namespace, messages: list[str] = ()) -> torch.nn.Module:
    """Run the whole training; returns NADS-Net with its final weights."""
    run = Run(options, RUN_KIND, messages)
    prepare_data(options, run.log, run.check_stop)
    devices = place_networks(options, run.log, run.job, generator_used=runs_generator(options))
    run.settings["devices"] = f"GAN {devices.gan}, NADS-Net {devices.nadsnet}"
    train_loader, valid_loader, fit_loader = build_loaders(options, *load_datasets(options, run.log), devices.nadsnet,
                                                           run.job)
    run.check_stop()
    net, config = build_network(options, devices.nadsnet, run.log)
    generated_samples = build_generated_samples(options, devices.gan, run.log)
    if generated_samples is not None:
        generated_samples.distribute(run.job)
    recipe = BatchRecipe(options.batch_size, options.gan_fraction, generated_samples, devices.nadsnet,
                         options.include_background, options.seed, run.job.rank, run.job.world_size,
                         options.smallest_scale, options.generated)
    trainer = NADSNetTrainer.from_options(options, net, devices.nadsnet)
    trainer.distribute(run.job)
    visualizer = NADSNetVisualizer(options.checkpoints_dir / "web", enabled=not options.no_html and run.is_writer)
    checkpoint = NADSNetCheckpoint(net, config, trainer, visualizer)

    with run.session(checkpoint, options.epochs):
        for epoch in run.epochs():
            for batch in run.batches(train_loader):
                with run.step():
                    training_batch = recipe.build(batch, epoch, run.batch_index)
                    run.record(trainer.train_step(training_batch))
                    visualizer.training_batch(epoch, training_batch, recipe, first=run.batch_index == 0)
            with run.validating():
                validation = evaluate(net, valid_loader, options.image_size, options.include_background, devices.nadsnet,
                                      options.amp, on_batch=picture_taker(visualizer, epoch, options),
                                      reduce=sum_over_processes if run.job.distributed else None)
                own_frames = None if fit_loader is None else evaluate(
                    net, fit_loader, options.image_size, options.include_background, devices.nadsnet, options.amp,
                    reduce=sum_over_processes if run.job.distributed else None)
            if checkpoint.is_best(epoch, validation.losses["total"]) and run.is_writer:
                checkpoint.save_best(options.checkpoints_dir)
            lr, next_lr = trainer.lr, trainer.end_epoch(validation.losses["total"])
            report_epoch(run, visualizer, checkpoint, validation, lr, next_lr, own_frames)
            run.end_epoch(save=True)
    best = (f"best validation loss {checkpoint.best_loss:.4g} at epoch {checkpoint.best_epoch} "
            f"({options.checkpoints_dir / BEST_WEIGHTS})" if checkpoint.best_epoch else "no validation yet")
    run.finish(f"{best}; pictures: {options.checkpoints_dir / 'web' / 'nadsnet.html'}")
    return net


def report_epoch(run: Run, visualizer: NADSNetVisualizer, checkpoint: NADSNetCheckpoint, validation: Evaluation,
                 lr: float, next_lr: float, own_frames: Evaluation | None = None) -> None:
    """The epoch's numbers: a log summary, one line of the metrics file, TensorBoard, the page.
    own_frames: the evaluation on the first --train-eval-frames training frames, if asked for."""
    epoch, summary = run.progress.epoch, validation.summary
    train_losses = run.epoch_means()
    metrics = {name: summary[name] for name in METRIC_NAMES}
    fit = {} if own_frames is None else {f"train_frames_{name}": own_frames.summary[name] for name in TRAIN_FRAMES_METRICS}
    run.write_metrics({"epoch": epoch, "iteration": run.progress.total_iterations, "lr": lr,
                       **{f"train_{name}": value for name, value in train_losses.items()},
                       "valid_loss": validation.losses["total"], **{f"valid_{k}": v for k, v in validation.losses.items()},
                       **metrics, "mean_error_px": summary["mean_error_px"], "present": summary["present"],
                       "present_arms": summary["present_arms"], "skipped_people": summary["skipped_people"], **fit})
    scalars = {f"train/{name}": value for name, value in train_losses.items()}
    scalars.update({f"valid/{name}": value for name, value in validation.losses.items()})
    scalars.update({f"valid/{name}": value for name, value in metrics.items()})
    scalars.update({f"train_frames/{name[len('train_frames_'):]}": value for name, value in fit.items()})
    run.scalars({**scalars, "lr": lr, "epoch": epoch})
    visualizer.record(epoch, "train", train_losses)
    visualizer.record(epoch, "valid", {**validation.losses, **metrics})
    visualizer.finish_epoch(epoch)
    improved = checkpoint.best_epoch == epoch
    run.log.info("\n".join([
        f"epoch {epoch}/{run.total_epochs} (lr {lr:.3g}, {run.elapsed():.0f} s so far)"
        + (f"  -> new best, saved {BEST_WEIGHTS}" if improved else ""),
        f"  train: {format_losses(train_losses)}",
        f"  valid: {format_losses(validation.losses)}",
        f"  keypoints: PCKt@0.2 {summary['pckt']:.3f} (arms {summary['pckt_arms']:.3f}, {summary['present']} keypoints, "
        f"{summary['skipped_people']} people skipped)  PCK@5 {summary['pck5']:.3f}  PCK@10 {summary['pck10']:.3f}  "
        f"seatbelt: IoU {summary['seatbelt_iou']:.3f}  Dice {summary['seatbelt_dice']:.3f}",
        *([f"  own training frames ({own_frames.samples}): PCKt@0.2 {own_frames.summary['pckt']:.3f} (arms "
           f"{own_frames.summary['pckt_arms']:.3f})  seatbelt IoU {own_frames.summary['seatbelt_iou']:.3f}"]
          if own_frames is not None else []),
        *("  " + line for line in format_keypoint_table(summary).splitlines()),
        *([f"  learning rate lowered to {next_lr:.3g}"] if next_lr != lr else []),
    ]))
    if run.is_writer:
        visualizer.write_page(running=run.progress.epoch < run.total_epochs)


def format_losses(losses: dict[str, float]) -> str:
    return " ".join(f"{name} {losses[name]:.4g}" for name in LOSS_NAMES if name in losses)


def picture_taker(visualizer: NADSNetVisualizer, epoch: int, options: argparse.Namespace):
    """evaluate()'s on_batch: pictures of the first --display-samples validation samples."""
    shown = [0]

    def take(batch: dict[str, Any], images: torch.Tensor, predictions: tuple) -> None:
        count = min(images.shape[0], options.display_samples - shown[0])
        if count <= 0 or not visualizer.enabled:
            return
        seatbelt = None if predictions.seatbelt is None else predictions.seatbelt[:count]
        visualizer.validation_samples(epoch, images[:count], batch["keypoints"][:count], batch["seatbelt"][:count],
                                      predictions.heatmaps[:count], seatbelt, batch["image_id"][:count])
        shown[0] += count

    return take


# --------------------------------------------------------------------------- building


def runs_generator(options: argparse.Namespace) -> bool:
    """Whether the SPADE generator renders samples during training (not with frames rendered ahead)."""
    return options.gan_fraction > 0 and options.generated_frames is None


def load_datasets(options: argparse.Namespace, log) -> tuple[PoseDataset, PoseDataset]:
    """The training set (with its frames rendered ahead, if given) and the validation set,
    validated before anything is written."""
    library = None if options.arm_pose_library is None else load_arm_pose_library(options.arm_pose_library)
    train_set = validated_dataset(log, options.train_annotations, options.images_dir, options.masks_dir,
                                  image_size=options.image_size, arm_augment=options.arm_augment, seed=options.seed,
                                  arm_pose_library=library)
    if library is not None:
        log.info(f"arm poses drawn from {len(library)} arms of {options.arm_pose_library}")
    if options.generated_frames is not None:
        with_frames = WithGeneratedFrames(train_set, options.generated_frames, seed=options.seed)
        with_frames.frames.verify_file_ends()
        log.info(f"generated samples from {len(with_frames.frames)} frames rendered ahead ({options.generated_frames}), "
                 f"{min(map(len, with_frames.variants))}-{max(map(len, with_frames.variants))} per training frame; "
                 "--arm-augment does not apply to them")
        train_set = with_frames
    valid_set = validated_dataset(log, options.valid_annotations, options.valid_images_dir, options.valid_masks_dir,
                                  image_size=options.image_size)
    if len(train_set) < options.batch_size:
        raise DataError(f"{options.train_annotations}: {len(train_set)} image(s), fewer than one batch of "
                        f"{options.batch_size} (training drops incomplete batches, as the seed did); lower --batch-size")
    if options.gan_fraction == 0 and options.arm_augment != "none":
        log.info(f"note: --arm-augment {options.arm_augment} changes only generated samples; with --gan-fraction 0 "
                 "it has no effect")
    joined = "replacing real samples" if options.generated == "replace" else "added to the real samples"
    log.info(f"{len(train_set)} training images ({len(train_set) // options.batch_size} batches of {options.batch_size} "
             f"per epoch), {len(valid_set)} validation images, {options.image_size} px, {options.epochs} epochs of "
             f"{options.optimizer} at lr {options.lr:g} ({options.lr_schedule} schedule), arm augmentation "
             f"'{options.arm_augment}', {options.gan_fraction:.0%} of each batch generated ({joined})")
    if options.train_eval_frames > len(train_set):
        raise DataError(f"{options.train_annotations}: --train-eval-frames {options.train_eval_frames} asks for more "
                        f"frames than its {len(train_set)}")
    return train_set, valid_set


def build_loaders(options: argparse.Namespace, train_set: PoseDataset, valid_set: PoseDataset, device: torch.device,
                  job=SINGLE_PROCESS):
    """Training batches shuffled, the last incomplete one dropped (the seed's NADS-Net loader);
    validation in file order, every sample; with --train-eval-frames N, a third loader of the
    first N training frames in file order (else None). Each process loads its share of every
    batch (its validation counts are summed over the processes)."""
    if len(valid_set) < job.world_size:
        raise DataError(f"{options.valid_annotations}: {len(valid_set)} image(s), fewer than the job's "
                        f"{job.world_size} processes")
    train_sampler = ResumableSampler(len(train_set), options.batch_size, seed=options.seed, shuffle=True, drop_last=True,
                                     rank=job.rank, world_size=job.world_size)
    valid_sampler = ResumableSampler(len(valid_set), options.batch_size, seed=options.seed, shuffle=False, drop_last=False,
                                     rank=job.rank, world_size=job.world_size, even=False)
    fit_loader = None
    if options.train_eval_frames:
        real = getattr(train_set, "real", train_set)
        fit_sampler = ResumableSampler(options.train_eval_frames, options.batch_size, seed=options.seed, shuffle=False,
                                       drop_last=False, rank=job.rank, world_size=job.world_size, even=False)
        fit_sampler.set_epoch(0)
        fit_loader = make_loader(real, fit_sampler, options.num_workers, device)
    return (make_loader(train_set, train_sampler, options.num_workers, device),
            make_loader(valid_set, valid_sampler, options.num_workers, device), fit_loader)


def nadsnet_config(options: argparse.Namespace) -> dict[str, Any]:
    return {"network": "NADSNet", "num_heatmaps": NUM_KEYPOINTS + int(options.include_background),
            "num_pafs": NUM_PAF_CHANNELS, "seatbelt": True, "image_size": options.image_size,
            "backbone": options.backbone, "fpn": options.fpn, "fpn_channels": options.fpn_channels,
            "head_channels": options.head_channels}


def build_network(options: argparse.Namespace, device: torch.device, log) -> tuple[torch.nn.Module, dict]:
    """NADS-Net, seeded with the run's seed, with the --pretrained weights loaded (reported)."""
    torch.manual_seed(options.seed)
    config = nadsnet_config(options)
    net = build_nadsnet(config)
    if options.pretrained is not None:
        load_pretrained(net, Path(options.pretrained), log)
    return net.to(device), config


def load_pretrained(net: torch.nn.Module, path: Path, log) -> None:
    """Seed NADS-Net state dicts, this project's, or ImageNet backbone weights (PVT v1 tiny, timm
    or official PVT-v2; into the backbone). Loads whatever fits (the seed used strict=False) and
    says what did not; a whole NADS-Net of another --backbone or --fpn is refused."""
    from common.models.adapt import load_into, read_state_dict

    try:
        state_dict = read_state_dict(path)
        if any(key.startswith("FPN.") for key in state_dict):  # a whole NADS-Net, not backbone weights
            check_network_choices(load_network_config(path) or infer_nadsnet_config(state_dict), net.config(), "the file")
        report = load_into(net, state_dict)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"--pretrained {path}: {error}") from None
    if not report.loaded:
        raise CheckpointError(f"--pretrained {path}: no tensor fits NADS-Net with --backbone {net.backbone_name} (the "
                              f"file holds {describe_state_dict(state_dict)}, {report.layout} layout); nothing loaded")
    log.info(f"--pretrained {path}: {report}")
    if report.missing or report.mismatched:  # unexpected keys alone (an ImageNet classifier) leave nothing random
        log.info("WARNING: the tensors listed above did not load and keep their random initialisation")


def build_generated_samples(options: argparse.Namespace, device: torch.device, log) -> GeneratedSamples | None:
    """The generator for the generated part of the batches; None with --gan-fraction 0. How
    its frames reach NADS-Net is this run's --image-range, never the generator file's."""
    if options.gan_fraction == 0:
        log.info("--gan-fraction 0: plain training on real frames (no generator)")
        return None
    if options.generated_frames is not None:
        return None
    path = options.checkpoints_dir / LATEST_GENERATOR if options.generator_weights in (None, "", "auto") \
        else Path(options.generator_weights)
    if not path.is_file():
        raise CheckpointError(f"no generator at {path}: train one with `python train_gan.py` (it writes {LATEST_GENERATOR}), "
                              "pass --generator-weights PATH, or use --gan-fraction 0 for plain training")
    generator, config = load_generator(path, device)
    resized = "" if int(config["crop_size"]) == options.image_size else f", resized to {options.image_size} px"
    mode = "eval mode (running statistics)" if options.generator_eval else "batch statistics (stored statistics kept)"
    fed = "converted to ImageNet normalisation" if options.image_range == "converted" else "fed in [-1, 1], as the seed did"
    log.info(f"generator: {path} (ngf {config['ngf']}, {config['crop_size']} px{resized}, {mode}; outputs {fed})")
    return GeneratedSamples(generator, device, options.image_range, eval_mode=options.generator_eval, amp=options.amp,
                            occluded_joints=occluded_joints_of(config))  # as the generator was trained


def main(argv: list[str] | None = None) -> int:
    """The command line (exit codes: common.training.cli)."""
    return run_script("train_nadsnet.py", lambda args: parse_options(args), train, argv)
