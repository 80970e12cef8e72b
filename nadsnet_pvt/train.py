"""NADS-Net training, top to bottom: options -> data -> networks -> the epoch loop -> pictures.

Each training batch has its first samples rendered by the pretrained SPADE generator in
changed arm poses (nadsnet_pvt.batch, SPEC 10); after every epoch NADS-Net is validated on
the validation JSON (losses, PCK, seatbelt IoU / Dice: nadsnet_pvt.metrics).

Files in `--checkpoints-dir`:
- `nadsnet_best.pth` (+ `nadsnet_best.json`, its configuration): a plain state dict, written
  only when an epoch's validation loss is the lowest so far;
- `nadsnet_train_state.pth`: everything an exact `--continue-train` needs (weights, optimiser,
  scheduler, best loss, epoch and batch position, RNG states, curves), written after every
  epoch, every `--save-latest-freq` iterations within an epoch, and on Ctrl-C / SIGTERM;
- `nadsnet_log.txt` (epoch summaries), `nadsnet_opt.txt` (options), `tensorboard/nadsnet/`
  (scalars per epoch), `web/nadsnet.html` with `web/images/nadsnet_*.png`.

Surviving crashes (README "After a crash"): the data, options and checkpoints to load are all
checked before the first file is written; every file is written atomically; Ctrl-C / SIGTERM
stop at the next batch boundary after saving; a non-finite loss stops without saving (or,
with --on-nonfinite skip, drops the batch); --continue-train resumes exactly, mid-epoch too.
"""

from __future__ import annotations

import argparse
import math
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.checkpoints import (
    CheckpointError,
    capture_rng_states,
    load_file,
    load_weights_strict,
    remove_stale_temporaries,
    restore_rng_states,
    save_atomic,
    save_network,
    write_text_atomic,
)
from common.dataset import DataError, PoseDataset, make_loader
from common.devices import describe_placement, resolve_devices
from common.interrupts import NONFINITE_STREAK_LIMIT, GracefulStop, TrainingInterrupted, batches_until_stopped, run_command
from common.maps import nadsnet_targets
from common.models.factory import build_nadsnet, describe_state_dict, load_generator
from common.pose import NUM_KEYPOINTS, NUM_PAF_CHANNELS
from common.runlog import RunLog
from common.sampling import ResumableSampler
from nadsnet_pvt.batch import GeneratedSamples, build_training_batch, generated_count, geometric_generator
from nadsnet_pvt.metrics import ValidationMetrics, format_keypoint_table
from common.options import format_options
from common.interrupts import NonFiniteLossError
from nadsnet_pvt.trainer import NADSNetTrainer
from nadsnet_pvt.visualizer import NADSNetVisualizer

TRAIN_STATE = "nadsnet_train_state.pth"
BEST_WEIGHTS = "nadsnet_best.pth"
STATE_FORMAT = "nadsnet-train-state/1"
# Options a continued run must share with the run it continues (they change what is trained on).
RESUME_KEYS = ("batch_size", "image_size", "include_background", "gan_fraction", "arm_augment", "seed", "lr_schedule")
LOSS_NAMES = ("total", "heatmap", "paf", "seatbelt", "dice")



class Log(RunLog):
    """NADS-Net's log, `<checkpoints>/nadsnet_log.txt`: every message is printed and logged."""

    def __init__(self, checkpoints_dir: Path, hold: bool = False):
        super().__init__(Path(checkpoints_dir) / "nadsnet_log.txt", info_to_file=True, hold=hold)


@dataclass
class Progress:
    """Where the run is: `epoch` (1-based), the batches of it already trained, the sums of
    their losses (for the epoch means), and the best validation loss so far."""

    epoch: int = 1
    epoch_batches: int = 0
    loss_sums: dict[str, float] = field(default_factory=dict)
    loss_batches: int = 0
    best_loss: float = math.inf
    best_epoch: int = 0
    total_iterations: int = 0  # batches trained (or skipped) since the start of the run
    nonfinite_streak: int = 0  # batches skipped in a row for non-finite losses (--on-nonfinite skip)
    log_bytes: int | None = None  # size of nadsnet_log.txt at the save this run continues from

    def add(self, losses: dict[str, float]) -> None:
        for name, value in losses.items():
            self.loss_sums[name] = self.loss_sums.get(name, 0.0) + value
        self.loss_batches += 1

    def epoch_means(self) -> dict[str, float]:
        return {name: total / max(1, self.loss_batches) for name, total in self.loss_sums.items()}

    def describe(self) -> str:
        return f"epoch {self.epoch}, after {self.epoch_batches} batch(es) of it (iteration {self.total_iterations})"

    def next_epoch(self) -> None:
        self.epoch += 1
        self.epoch_batches = 0
        self.loss_sums = {}
        self.loss_batches = 0


# --------------------------------------------------------------------------- building


def nadsnet_config(options: argparse.Namespace) -> dict[str, Any]:
    return {
        "network": "NADSNet",
        "num_heatmaps": NUM_KEYPOINTS + int(options.include_background),
        "num_pafs": NUM_PAF_CHANNELS,
        "seatbelt": True,
        "image_size": options.image_size,
        "backbone": "pvt_tiny",
        "fpn": "seed",
    }


def build_network(options: argparse.Namespace, device: torch.device, log: Log) -> tuple[torch.nn.Module, dict]:
    """NADS-Net, seeded with the run's seed, with the --pretrained weights loaded (reported)."""
    torch.manual_seed(options.seed)
    config = nadsnet_config(options)
    net = build_nadsnet(config)
    if options.pretrained is not None:
        load_pretrained(net, options.pretrained, log)
    return net.to(device), config


def load_pretrained(net: torch.nn.Module, path: Path, log: Log) -> None:
    """Seed NADS-Net state dicts, this project's, or ImageNet PVT weights (into the backbone).
    Loads whatever fits (the seed used strict=False) and says what did not."""
    from common.models.adapt import load_into, read_state_dict

    try:
        state_dict = read_state_dict(path)
    except (FileNotFoundError, ValueError) as error:
        raise CheckpointError(f"--pretrained: {error}") from None
    try:
        report = load_into(net, state_dict)
    except (ValueError, RuntimeError) as error:
        raise CheckpointError(f"--pretrained {path}: {error}") from None
    if not report.loaded:
        raise CheckpointError(
            f"--pretrained {path}: no tensor fits NADS-Net (the file holds {describe_state_dict(state_dict)}, "
            f"{report.layout} layout); nothing loaded"
        )
    log.info(f"--pretrained {path}: {report}")
    if not report.complete:
        log.info("WARNING: the tensors listed above did not load and keep their random initialisation")


def resolve_generator_path(options: argparse.Namespace) -> Path:
    if options.generator_weights in (None, "", "auto"):
        return options.checkpoints_dir / "latest_net_G.pth"
    return Path(options.generator_weights)


def build_generated_samples(options: argparse.Namespace, device: torch.device, log: Log) -> GeneratedSamples | None:
    """The generator for the generated half of the batches; None with --gan-fraction 0."""
    if options.gan_fraction == 0:
        log.info("--gan-fraction 0: plain training on real frames (no generator)")
        return None
    path = resolve_generator_path(options)
    if not path.is_file():
        raise CheckpointError(
            f"no generator at {path}: train one with `python train_gan.py` (it writes latest_net_G.pth), "
            "pass --generator-weights PATH, or use --gan-fraction 0 for plain training"
        )
    generator, config = load_generator(path, device)
    if int(config["crop_size"]) != options.image_size:
        raise CheckpointError(
            f"{path} renders {config['crop_size']} px frames but this run uses --image-size {options.image_size}; "
            f"use --image-size {config['crop_size']} (or the matching --preset)"
        )
    image_range = config.get("image_range", "converted")
    mode = "eval mode (running statistics)" if options.generator_eval else "batch statistics (stored statistics kept)"
    log.info(
        f"generator: {path} (ngf {config['ngf']}, {config['crop_size']} px, {mode}; outputs "
        + ("converted to ImageNet normalisation)" if image_range == "converted" else "fed in [-1, 1], as the seed did)")
    )
    return GeneratedSamples(generator, device, image_range, eval_mode=options.generator_eval, amp=options.amp)


def build_loader(options: argparse.Namespace, dataset: PoseDataset, sampler: ResumableSampler, device: torch.device) -> DataLoader:
    return make_loader(dataset, sampler, options.num_workers, device)


# --------------------------------------------------------------------------- state


def save_training_state(
    path: Path, net, trainer: NADSNetTrainer, progress: Progress, visualizer: NADSNetVisualizer, config, options, log: Log
) -> None:
    """Everything an exact --continue-train needs, written atomically (temp file, fsync, rename)."""
    state = {
        "format": STATE_FORMAT,
        "nadsnet": net.state_dict(),
        "nadsnet_config": config,
        "trainer": trainer.state_dict(),
        "epoch": progress.epoch,
        "epoch_batches": progress.epoch_batches,
        "loss_sums": dict(progress.loss_sums),
        "loss_batches": progress.loss_batches,
        "best_loss": progress.best_loss,
        "best_epoch": progress.best_epoch,
        "total_iterations": progress.total_iterations,
        "nonfinite_streak": progress.nonfinite_streak,
        "log_bytes": log.size(),
        "options": {key: getattr(options, key) for key in RESUME_KEYS},
        "rng": capture_rng_states(),
        "visualizer": visualizer.state_dict(),
    }
    save_atomic(state, path)


def resume(path: Path, net, trainer: NADSNetTrainer, visualizer: NADSNetVisualizer, options, log: Log) -> Progress:
    if not path.is_file():
        raise CheckpointError(f"--continue-train: nothing to continue from ({path} not found)")
    state = load_file(path, "training state")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a NADS-Net training state ({STATE_FORMAT})")
    saved = state["options"]
    differing = [key for key in RESUME_KEYS if saved.get(key) != getattr(options, key)]
    if differing:
        flags = ", ".join(f"--{key.replace('_', '-')} {saved.get(key)}" for key in differing)
        raise CheckpointError(f"{path} was saved with {flags}; continue with the same values")
    saved_config = state.get("nadsnet_config", {})
    hint = f"--image-size {saved_config['image_size']}" if "image_size" in saved_config else ""
    load_weights_strict(net, state["nadsnet"], f"{path} (NADS-Net)", hint)
    try:
        trainer.load_state_dict(state["trainer"])
    except (KeyError, RuntimeError) as error:
        raise CheckpointError(f"{path}: the optimiser or scheduler state does not fit this run ({error})") from None
    restore_rng_states(state["rng"])
    visualizer.load_state_dict(state.get("visualizer", {}))
    progress = Progress(
        epoch=state["epoch"],
        epoch_batches=state["epoch_batches"],
        loss_sums=dict(state["loss_sums"]),
        loss_batches=state["loss_batches"],
        best_loss=state["best_loss"],
        best_epoch=state["best_epoch"],
        total_iterations=state.get("total_iterations", 0),
        nonfinite_streak=state.get("nonfinite_streak", 0),
        log_bytes=state.get("log_bytes"),
    )
    log.info(f"continuing from {path}: {progress.describe()}; "
             f"best validation loss so far {progress.best_loss:.4g} (epoch {progress.best_epoch})")
    return progress


# --------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(
    trainer: NADSNetTrainer, loader: DataLoader, options, device: torch.device, visualizer: NADSNetVisualizer, epoch: int
) -> tuple[dict[str, float], dict]:
    """Validation losses (means over samples) and metrics; saves the first samples' pictures."""
    metrics = ValidationMetrics(options.image_size)
    sums: dict[str, torch.Tensor] = {}
    samples = 0
    shown = 0
    for batch in loader:
        images = batch["image"].to(device)
        seatbelt = batch["seatbelt"].to(device)
        keypoints = batch["keypoints"].to(device)
        heatmaps, pafs = nadsnet_targets(keypoints, options.image_size, options.include_background)
        losses, predictions = trainer.validation_step(images, seatbelt, heatmaps, pafs)
        size = images.shape[0]
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + value * size
        samples += size
        pred_seatbelt = predictions[2] if len(predictions) > 2 else None
        metrics.update(predictions[0], keypoints, pred_seatbelt, seatbelt)
        if shown < options.display_samples:
            take = min(size, options.display_samples - shown)
            visualizer.validation_samples(
                epoch, images[:take], keypoints[:take], seatbelt[:take], predictions[0][:take],
                None if pred_seatbelt is None else pred_seatbelt[:take], batch["image_id"][:take],
            )
            shown += take
    means = {name: float(total) / samples for name, total in sums.items()}
    return means, metrics.summary()


# --------------------------------------------------------------------------- reporting


def format_losses(losses: dict[str, float]) -> str:
    return " ".join(f"{name} {losses[name]:.4g}" for name in LOSS_NAMES if name in losses)


def epoch_report(epoch: int, epochs: int, lr: float, seconds: float, train: dict, valid: dict, summary: dict, saved: bool) -> str:
    lines = [
        f"epoch {epoch}/{epochs} (lr {lr:.3g}, {seconds:.0f} s)" + ("  -> new best, saved " + BEST_WEIGHTS if saved else ""),
        f"  train: {format_losses(train)}",
        f"  valid: {format_losses(valid)}",
        f"  keypoints: PCK@5 {summary['pck5']:.3f}  PCK@10 {summary['pck10']:.3f}  mean error {summary['mean_error_px']:.2f} px "
        f"({summary['matched']}/{summary['present']} matched)   seatbelt: IoU {summary['seatbelt_iou']:.3f}  "
        f"Dice {summary['seatbelt_dice']:.3f}",
    ]
    lines.extend("  " + line for line in format_keypoint_table(summary).splitlines())
    return "\n".join(lines)


def write_scalars(writer, epoch: int, train: dict[str, float], valid: dict[str, float], summary: dict, lr: float) -> None:
    if writer is None:
        return
    tags = {"total": "total", "heatmap": "heatmap", "paf": "PAF", "seatbelt": "seatbelt_dice_bce", "dice": "seatbelt_dice_loss"}
    for split, losses in (("train", train), ("valid", valid)):
        for name, tag in tags.items():
            if name in losses:
                writer.add_scalar(f"{split}/{tag}", losses[name], epoch)
    for name in ("pck5", "pck10", "mean_error_px", "seatbelt_iou", "seatbelt_dice"):
        if math.isfinite(summary[name]):
            writer.add_scalar(f"valid/{name}", summary[name], epoch)
    writer.add_scalar("lr", lr, epoch)
    writer.flush()


def open_writer(directory: Path, purge_step: int | None, log: Log):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional at run time
        log.info("WARNING: tensorboard is not installed: no TensorBoard scalars")
        return None
    return SummaryWriter(str(directory / "tensorboard" / "nadsnet"), purge_step=purge_step)


# --------------------------------------------------------------------------- the run


def load_datasets(options: argparse.Namespace, log: Log) -> tuple[PoseDataset, PoseDataset]:
    """The training and validation sets, validated before anything is written (SPEC 1): a bad
    file fails here with one line naming the file, the record and the field. Warnings (e.g.
    keypoints outside their frame) become log lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_set = PoseDataset(options.train_annotations, options.images_dir, options.masks_dir,
                                image_size=options.image_size, arm_augment=options.arm_augment, seed=options.seed)
        valid_set = PoseDataset(options.valid_annotations, options.images_dir, options.masks_dir,
                                image_size=options.image_size, arm_augment="none")
    for warning in caught:
        log.info(f"WARNING: {warning.message}")
    train_set.verify_file_ends()
    valid_set.verify_file_ends()
    if len(train_set) < options.batch_size:
        raise DataError(
            f"{options.train_annotations}: {len(train_set)} image(s), fewer than one batch of {options.batch_size} "
            "(training drops incomplete batches, as the seed did); lower --batch-size"
        )
    return train_set, valid_set


def train(options: argparse.Namespace, messages: list[str] = ()) -> torch.nn.Module:
    """Run the whole training; returns NADS-Net with its final weights.

    Everything that can be wrong with the data, the options or the checkpoints to load is
    found before the first file is written: such a run leaves `--checkpoints-dir` untouched.
    """
    directory: Path = options.checkpoints_dir
    log = Log(directory, hold=True)
    for message in messages:
        log.info(message)

    gan_device, nadsnet_device = resolve_devices(options.gan_device, options.nadsnet_device)
    if options.gan_fraction > 0:
        log.info(describe_placement(gan_device, nadsnet_device))
    else:
        log.info(f"devices: NADS-Net on {nadsnet_device}")
    if nadsnet_device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    train_set, valid_set = load_datasets(options, log)
    per_batch = options.batch_size * options.gan_fraction
    if options.gan_fraction > 0 and abs(per_batch - round(per_batch)) > 1e-9:
        log.info(
            f"note: --batch-size {options.batch_size} x --gan-fraction {options.gan_fraction} = {per_batch:g} generated "
            f"samples per batch: batches alternate between {math.floor(per_batch)} and {math.ceil(per_batch)} generated "
            f"samples so that {options.gan_fraction:.0%} of all samples are generated"
        )
    if options.gan_fraction == 0 and options.arm_augment != "none":
        log.info(f"note: --arm-augment {options.arm_augment} changes only generated samples; with --gan-fraction 0 it has no effect")

    train_sampler = ResumableSampler(len(train_set), options.batch_size, seed=options.seed, shuffle=True, drop_last=True)
    valid_sampler = ResumableSampler(len(valid_set), options.batch_size, seed=options.seed, shuffle=False, drop_last=False)
    train_loader = build_loader(options, train_set, train_sampler, nadsnet_device)
    valid_loader = build_loader(options, valid_set, valid_sampler, nadsnet_device)

    net, config = build_network(options, nadsnet_device, log)
    generated_samples = build_generated_samples(options, gan_device, log)
    trainer = NADSNetTrainer(
        net, nadsnet_device, lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay,
        schedule=options.lr_schedule, amp=options.amp, on_nonfinite=options.on_nonfinite,
    )
    visualizer = NADSNetVisualizer(directory / "web", enabled=not options.no_html)
    progress = Progress()
    if options.continue_train:
        progress = resume(directory / TRAIN_STATE, net, trainer, visualizer, options, log)

    # Everything checked: from here on the run writes files.
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f"cannot create --checkpoints-dir {directory}: {error.strerror or error}") from None
    log.start_file(cut_back_to=progress.log_bytes)
    for stale in remove_stale_temporaries(directory):
        log.info(f"removed {stale.name}, a half-written file a killed run left behind")
    write_text_atomic(format_options(options), directory / "nadsnet_opt.txt")
    writer = open_writer(directory, progress.epoch if options.continue_train else None, log)

    batches = train_sampler.batches_per_epoch()
    log.info(
        f"{len(train_set)} training images ({batches} batches of {options.batch_size} per epoch), "
        f"{len(valid_set)} validation images, {options.image_size} px, {options.epochs} epochs, "
        f"arm augmentation '{options.arm_augment}', {options.gan_fraction:.0%} of each batch generated"
    )
    started = time.time()
    page_written = False

    def save_state() -> None:
        save_training_state(directory / TRAIN_STATE, net, trainer, progress, visualizer, config, options, log)

    def save_and_stop(signal_number: int) -> None:
        """A requested stop, at a batch boundary: save the state, then end the run."""
        save_state()
        visualizer.write_page(running=False)
        message = (
            f"interrupted ({signal.Signals(signal_number).name}): saved the state at {progress.describe()}, in "
            f"{directory}. Continue with the same command plus --continue-train."
        )
        log.info(message)
        raise TrainingInterrupted(signal_number, message)

    try:
        with GracefulStop() as stop:
            while progress.epoch <= options.epochs:
                epoch = progress.epoch
                epoch_started = time.time()
                train_set.set_epoch(epoch)
                train_sampler.set_epoch(epoch, skip_batches=progress.epoch_batches)
                shown_batch = progress.epoch_batches > 0  # a continued epoch showed its first batch already
                bar = tqdm(total=batches, initial=progress.epoch_batches,
                           desc=f"epoch {epoch}/{options.epochs}", leave=False, dynamic_ncols=True)
                try:
                    for batch in batches_until_stopped(train_loader, stop):
                        batch_index = progress.epoch_batches
                        training_batch = build_training_batch(
                            batch,
                            generated_count(options.batch_size, options.gan_fraction, batch_index),
                            generated_samples,
                            nadsnet_device,
                            options.include_background,
                            geometric_generator(options.seed, epoch, batch_index),
                        )
                        try:
                            losses = trainer.train_step(training_batch.images, training_batch.seatbelt,
                                                        training_batch.heatmaps, training_batch.pafs)
                        except NonFiniteLossError as error:
                            raise NonFiniteLossError(
                                f"{error} at epoch {epoch}, batch {batch_index + 1} (iteration "
                                f"{progress.total_iterations + 1}); stopped without saving, so the last save in "
                                f"{directory} is intact (lower --lr, check the data, or --on-nonfinite skip)",
                                error.terms,
                            ) from None
                        progress.epoch_batches += 1
                        progress.total_iterations += 1
                        bar.update(1)
                        if losses is None:
                            progress.nonfinite_streak += 1
                            log.info(
                                f"WARNING: non-finite loss term(s) {trainer.last_nonfinite} at epoch {epoch}, batch "
                                f"{progress.epoch_batches} (iteration {progress.total_iterations}): batch skipped, "
                                f"no update ({trainer.skipped_steps} skipped so far)"
                            )
                            if progress.nonfinite_streak >= NONFINITE_STREAK_LIMIT:
                                raise NonFiniteLossError(
                                    f"{progress.nonfinite_streak} batches in a row had non-finite losses (the last: "
                                    f"{trainer.last_nonfinite} at iteration {progress.total_iterations}): the run has "
                                    f"diverged; stopped without saving, the last save in {directory} is intact (lower --lr)"
                                )
                        else:
                            progress.nonfinite_streak = 0
                            values = {name: float(value) for name, value in losses.items()}
                            progress.add(values)
                            bar.set_postfix({name: f"{values[name]:.3g}" for name in LOSS_NAMES if name in values}, refresh=False)
                            if options.print_freq and progress.epoch_batches % options.print_freq == 0:
                                log.info(f"(epoch {epoch}, batch {progress.epoch_batches}/{batches}) {format_losses(values)}")
                            if not shown_batch:
                                visualizer.training_batch(epoch, training_batch, geometric_generator(options.seed, epoch, batch_index))
                                shown_batch = True
                        if options.save_latest_freq and progress.total_iterations % options.save_latest_freq == 0 \
                                and progress.epoch_batches < batches:
                            save_state()  # mid-epoch (the end of the epoch saves after validation)
                            log.info(f"saved the training state ({progress.describe()})")
                        if stop.requested is not None:
                            save_and_stop(stop.requested)
                except DataError as error:
                    raise DataError(
                        f"{error}; training stopped at epoch {epoch}, iteration {progress.total_iterations + 1}: fix or "
                        f"remove the file, then continue with --continue-train (the last save in {directory} is intact)"
                    ) from None
                finally:
                    bar.close()
                if stop.requested is not None:
                    save_and_stop(stop.requested)  # the loader ended early: its workers got the signal too

                valid_losses, summary = validate(trainer, valid_loader, options, nadsnet_device, visualizer, epoch)
                train_losses = progress.epoch_means()
                improved = valid_losses["total"] < progress.best_loss
                if improved:
                    progress.best_loss, progress.best_epoch = valid_losses["total"], epoch
                    save_network(net, directory / BEST_WEIGHTS, config)
                lr = trainer.lr
                next_lr = trainer.end_epoch(valid_losses["total"])
                visualizer.record(epoch, "train", train_losses)
                visualizer.record(epoch, "valid", {**valid_losses, **{k: summary[k] for k in ("pck5", "pck10", "seatbelt_iou", "seatbelt_dice")}})
                write_scalars(writer, epoch, train_losses, valid_losses, summary, lr)
                log.info(epoch_report(epoch, options.epochs, lr, time.time() - epoch_started, train_losses, valid_losses, summary, improved))
                if next_lr != lr:
                    log.info(f"  learning rate lowered to {next_lr:.3g}")
                progress.next_epoch()
                save_state()
                visualizer.write_page(running=progress.epoch <= options.epochs)
                page_written = True
                if stop.requested is not None and progress.epoch <= options.epochs:
                    save_and_stop(stop.requested)
    finally:
        if writer is not None:
            writer.close()
    if not page_written:
        visualizer.write_page(running=False)
    skipped = f"; {trainer.skipped_steps} batch(es) skipped for non-finite losses" if trainer.skipped_steps else ""
    log.info(
        f"done in {time.time() - started:.0f} s{skipped}; best validation loss {progress.best_loss:.4g} at epoch "
        f"{progress.best_epoch} ({directory / BEST_WEIGHTS}); pictures: {directory / 'web' / 'nadsnet.html'}"
    )
    return net


def main(argv: list[str] | None = None) -> int:
    """The command line: 0 done, 1 an error (one line on stderr, no traceback), 128 + signal
    number after a Ctrl-C (130) or SIGTERM (143) that saved the state."""
    from nadsnet_pvt.options import parse_options

    options, messages = parse_options(argv)
    return run_command(train, options, messages, (DataError, CheckpointError, NonFiniteLossError, ValueError))
