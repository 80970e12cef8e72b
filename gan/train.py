"""The GAN training loop, top to bottom: options -> data -> networks -> trainer -> pictures.

Files in `--checkpoints-dir` (SPADE's names, so seed tools and checkpoints keep working):
`latest_net_G.pth`, `latest_net_D.pth`, `<epoch>_net_G.pth`, `<epoch>_net_D.pth` (plain state
dicts, the configuration beside each as JSON), `gan_train_state.pth` (everything an exact
resume needs), `iter.txt`, `loss_log.txt`, `opt.txt` and `web/index.html`.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.checkpoints import (
    CheckpointError,
    capture_rng_states,
    load_file,
    load_state_dict_file,
    load_weights_strict,
    restore_rng_states,
    save_atomic,
    save_network,
    write_text_atomic,
)
from common.dataset import DataError, PoseDataset, collate_poses
from common.devices import describe_placement, resolve_devices
from common.models.factory import (
    build_discriminator,
    build_generator,
    discriminator_config,
    generator_config,
    load_nadsnet,
)
from common.models.init import init_weights
from common.models.losses import VGGLoss
from common.sampling import ResumableSampler
from gan.model import GANModel, LossWeights
from gan.options import format_options
from gan.trainer import GANTrainer, NonFiniteLossError
from gan.visualizer import GANVisualizer

TRAIN_STATE = "gan_train_state.pth"


class Log:
    """Prints above the progress bars and appends the loss lines to loss_log.txt."""

    def __init__(self, checkpoints_dir: Path):
        self.loss_log = checkpoints_dir / "loss_log.txt"

    def info(self, message: str) -> None:
        tqdm.write(message)

    def losses(self, epoch: int, iteration: int, seconds: float, losses: dict[str, float]) -> None:
        terms = " ".join(f"{name}: {value:.3f}" for name, value in losses.items())
        line = f"(epoch: {epoch}, iters: {iteration}, time: {seconds:.3f}) {terms}"
        tqdm.write(line)
        with open(self.loss_log, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


@dataclass
class Progress:
    """Where the run is: `epoch` (1-based) and the batches of it already trained."""

    epoch: int = 1
    epoch_batches: int = 0
    total_iterations: int = 0


def resolve_nadsnet_weights(options: argparse.Namespace) -> Path | None:
    if options.nadsnet_weights in (None, "", "none"):
        return None
    if options.nadsnet_weights == "auto":
        candidate = options.checkpoints_dir / "nadsnet_best.pth"
        return candidate if candidate.is_file() else None
    return Path(options.nadsnet_weights)


def build_model(options: argparse.Namespace, gan_device: torch.device, nadsnet_device: torch.device, log: Log) -> tuple[GANModel, dict, dict]:
    """G, D (freshly initialised with the run's seed), VGG and the NADS-Net guidance."""
    torch.manual_seed(options.seed)
    g_config = generator_config(options.ngf, options.image_size, options.num_upsampling_layers)
    g_config["image_range"] = options.image_range
    d_config = discriminator_config(options.ndf, options.n_layers_d, options.num_d)
    generator = build_generator(g_config)
    discriminator = build_discriminator(d_config)
    if getattr(options, "checkpoint_generator", False) and hasattr(generator, "checkpoint_blocks"):
        generator.checkpoint_blocks = True
    init_weights(generator, gain=options.init_gain)
    init_weights(discriminator, gain=options.init_gain)

    vgg = None
    if not options.no_vgg_loss:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            vgg = VGGLoss(weights=options.vgg_weights)
        for warning in caught:
            log.info(f"WARNING: {warning.message}")
        if not getattr(vgg, "available", True):
            vgg = None

    nadsnet = None
    weights_path = resolve_nadsnet_weights(options)
    if weights_path is None:
        log.info(
            "WARNING: no NADS-Net weights, so the guidance losses (heatmap, paf, seatbelt) are OFF. "
            "Train one with `python train_nadsnet.py --gan-fraction 0` (it writes "
            f"{options.checkpoints_dir / 'nadsnet_best.pth'}) or pass --nadsnet-weights PATH."
        )
    else:
        nadsnet, _ = load_nadsnet(weights_path, nadsnet_device, image_size=options.image_size)
        log.info(f"NADS-Net guidance: {weights_path}")

    model = GANModel(
        generator,
        discriminator,
        gan_mode=options.gan_mode,
        weights=LossWeights(
            feat=options.lambda_feat,
            vgg=options.lambda_vgg,
            heatmap=options.lambda_heatmap,
            paf=options.lambda_paf,
            seatbelt=options.lambda_seatbelt,
            use_feat=not options.no_ganfeat_loss,
        ),
        vgg_loss=vgg,
        nadsnet=nadsnet,
        image_range=options.image_range,
        gan_device=gan_device,
        nadsnet_device=nadsnet_device,
    )
    return model, g_config, d_config


def build_loader(options: argparse.Namespace, dataset: PoseDataset, sampler: ResumableSampler, device: torch.device) -> DataLoader:
    workers = max(0, options.num_workers)
    return DataLoader(
        dataset,
        batch_size=options.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_poses,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )


def save_networks(model: GANModel, directory: Path, label: str, g_config: dict, d_config: dict) -> None:
    save_network(model.netG, directory / f"{label}_net_G.pth", g_config)
    save_network(model.netD, directory / f"{label}_net_D.pth", d_config)


def write_iteration_record(directory: Path, epoch: int, epoch_samples: int) -> None:
    """iter.txt in the seed's format: the epoch, then the samples of it already trained."""
    write_text_atomic(f"{epoch}\n{epoch_samples}\n", directory / "iter.txt")


def read_iteration_record(directory: Path) -> tuple[int, int] | None:
    path = directory / "iter.txt"
    if not path.is_file():
        return None
    try:
        values = np.loadtxt(path, delimiter=",", dtype=int).reshape(-1)
        return int(values[0]), int(values[1])
    except (ValueError, IndexError, OSError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from None


def save_training_state(
    path: Path, model: GANModel, trainer: GANTrainer, progress: Progress, visualizer: GANVisualizer, g_config: dict, d_config: dict, options: argparse.Namespace
) -> None:
    state = {
        "format": "pose-gan-train-state/1",
        "netG": model.netG.state_dict(),
        "netD": model.netD.state_dict(),
        "generator_config": g_config,
        "discriminator_config": d_config,
        "trainer": trainer.state_dict(),
        "epoch": progress.epoch,
        "epoch_batches": progress.epoch_batches,
        "total_iterations": progress.total_iterations,
        "batch_size": options.batch_size,
        "seed": options.seed,
        "rng": capture_rng_states(),
        "visualizer": visualizer.state_dict(),
    }
    save_atomic(state, path)


def checkpoint_everything(
    options, model, trainer, progress, visualizer, g_config, d_config, epoch_label: str | None = None
) -> None:
    """Save 'latest' (and an epoch copy): networks, iter.txt and the training state."""
    directory = options.checkpoints_dir
    save_training_state(directory / TRAIN_STATE, model, trainer, progress, visualizer, g_config, d_config, options)
    save_networks(model, directory, "latest", g_config, d_config)
    if epoch_label is not None:
        save_networks(model, directory, epoch_label, g_config, d_config)
    write_iteration_record(directory, progress.epoch, progress.epoch_batches * options.batch_size)


def resume(options, model: GANModel, trainer: GANTrainer, visualizer: GANVisualizer, g_config, d_config, log: Log) -> Progress:
    """Restore from the training state, or from the seed's latest_net_G/D.pth and iter.txt."""
    directory = options.checkpoints_dir
    state_path = directory / TRAIN_STATE
    if state_path.is_file():
        state = load_file(state_path, "training state")
        if state.get("batch_size") != options.batch_size:
            raise CheckpointError(
                f"{state_path} was saved with --batch-size {state.get('batch_size')}; continue with that batch size"
            )
        hint = f"--ngf {state['generator_config']['ngf']} --image-size {state['generator_config']['crop_size']}"
        load_weights_strict(model.netG, state["netG"], f"{state_path} (generator)", hint)
        load_weights_strict(model.netD, state["netD"], f"{state_path} (discriminator)", f"--ndf {state['discriminator_config']['ndf']}")
        trainer.load_state_dict(state["trainer"])
        restore_rng_states(state["rng"])
        visualizer.load_state_dict(state.get("visualizer", {}))
        progress = Progress(state["epoch"], state["epoch_batches"], state["total_iterations"])
        log.info(f"continuing from {state_path}: epoch {progress.epoch}, after {progress.epoch_batches} batch(es) of it")
        return progress
    g_path = directory / f"{options.which_epoch}_net_G.pth"
    d_path = directory / f"{options.which_epoch}_net_D.pth"
    if not g_path.is_file():
        raise CheckpointError(f"--continue-train: nothing to continue from in {directory} (no {TRAIN_STATE}, no {g_path.name})")
    load_weights_strict(model.netG, load_state_dict_file(g_path), g_path, "the seed's generator: --ngf 64 --image-size 384")
    if d_path.is_file():
        load_weights_strict(model.netD, load_state_dict_file(d_path), d_path, "the seed's discriminator: --ndf 64")
    else:
        log.info(f"WARNING: {d_path} not found: the discriminator starts afresh")
    record = read_iteration_record(directory)
    epoch, samples = record if record else (1, 0)
    progress = Progress(epoch, samples // options.batch_size, 0)
    log.info(
        f"continuing from {g_path.name} (no training state: optimisers start afresh) at epoch {epoch}, "
        f"after {progress.epoch_batches} batch(es)"
    )
    return progress


def stop_early(options, model, trainer, progress, visualizer, g_config, d_config, log: Log) -> GANModel:
    """--max-iterations reached: save everything needed to continue, and return."""
    checkpoint_everything(options, model, trainer, progress, visualizer, g_config, d_config)
    visualizer.write_page(running=False)
    log.info(
        f"stopped after {progress.total_iterations} iterations (--max-iterations); state saved, "
        "continue with --continue-train"
    )
    return model


def train(options: argparse.Namespace, messages: list[str] = ()) -> GANModel:
    """Run the whole training; returns the model (its networks hold the final weights)."""
    directory: Path = options.checkpoints_dir
    directory.mkdir(parents=True, exist_ok=True)
    log = Log(directory)
    for message in messages:
        log.info(message)

    gan_device, nadsnet_device = resolve_devices(options.gan_device, options.nadsnet_device)
    log.info(describe_placement(gan_device, nadsnet_device))
    if gan_device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    dataset = PoseDataset(options.train_annotations, options.images_dir, options.masks_dir, image_size=options.image_size)
    if len(dataset) < options.batch_size:
        raise DataError(
            f"{options.train_annotations}: {len(dataset)} image(s), fewer than one batch of {options.batch_size}; "
            "lower --batch-size"
        )
    sampler = ResumableSampler(len(dataset), options.batch_size, seed=options.seed, shuffle=True, drop_last=True)
    loader = build_loader(options, dataset, sampler, gan_device)

    model, g_config, d_config = build_model(options, gan_device, nadsnet_device, log)
    terms = model.active_terms()
    log.info("G loss terms: " + ", ".join(f"{name} {'on' if on else 'OFF'}" for name, on in terms.items()))
    trainer = GANTrainer(
        model,
        lr=options.lr,
        beta1=options.beta1,
        beta2=options.beta2,
        ttur=not options.no_ttur,
        niter=options.niter,
        niter_decay=options.niter_decay,
        amp=options.amp,
    )
    visualizer = GANVisualizer(directory / "web", enabled=not options.no_html)
    progress = Progress()
    if options.continue_train:
        progress = resume(options, model, trainer, visualizer, g_config, d_config, log)
    write_text_atomic(format_options(options), directory / "opt.txt")

    total_epochs = options.niter + options.niter_decay
    batches = sampler.batches_per_epoch()
    log.info(f"{len(dataset)} training images, {batches} batches of {options.batch_size} per epoch, {total_epochs} epochs")
    model.train()
    started = time.time()
    try:
        while progress.epoch <= total_epochs:
            epoch = progress.epoch
            lr = trainer.set_epoch(epoch)
            sampler.set_epoch(epoch, skip_batches=progress.epoch_batches)
            bar = tqdm(loader, total=batches, initial=progress.epoch_batches, desc=f"epoch {epoch}/{total_epochs}", leave=False, dynamic_ncols=True)
            iteration_started = time.time()
            for batch in bar:
                semantics, real = model.prepare_batch(batch)
                losses: dict[str, torch.Tensor] = {}
                did_generator_step = progress.epoch_batches % options.d_steps_per_g == 0
                try:
                    if did_generator_step:
                        losses.update(trainer.generator_step(semantics, real))
                    losses.update(trainer.discriminator_step(semantics, real, reuse_fake=options.reuse_fake and did_generator_step))
                except NonFiniteLossError as error:
                    raise NonFiniteLossError(
                        f"{error} at epoch {epoch}, iteration {progress.total_iterations + 1}; the last saved "
                        f"checkpoint in {directory} is intact (lower --lr, or check the data)"
                    ) from None
                progress.epoch_batches += 1
                progress.total_iterations += 1
                step = progress.total_iterations
                if step % options.print_freq == 0:
                    values = {name: float(value) for name, value in losses.items()}
                    visualizer.record_losses(step, values)
                    log.losses(epoch, step, (time.time() - iteration_started), values)
                    bar.set_postfix({name: f"{value:.3f}" for name, value in values.items()}, refresh=False)
                if step % options.display_freq == 0:
                    fake = trainer.last_fake if did_generator_step else None
                    if fake is None:
                        with torch.no_grad():
                            fake = model.generate(semantics)
                    visualizer.display(epoch, step, semantics[0], fake[0], real[0])
                if step % options.save_latest_freq == 0:
                    checkpoint_everything(options, model, trainer, progress, visualizer, g_config, d_config)
                    log.info(f"saved latest (epoch {epoch}, iteration {step})")
                iteration_started = time.time()
                if options.max_iterations is not None and step >= options.max_iterations:
                    break
            bar.close()
            reached_limit = options.max_iterations is not None and progress.total_iterations >= options.max_iterations
            if reached_limit and progress.epoch_batches < batches:
                return stop_early(options, model, trainer, progress, visualizer, g_config, d_config, log)
            finished_epoch = epoch
            progress = Progress(epoch + 1, 0, progress.total_iterations)
            log.info(f"end of epoch {finished_epoch}/{total_epochs} (lr {lr:.6g}), {time.time() - started:.0f} s so far")
            if finished_epoch % options.save_epoch_freq == 0 or finished_epoch == total_epochs:
                checkpoint_everything(options, model, trainer, progress, visualizer, g_config, d_config, epoch_label=str(finished_epoch))
                log.info(f"saved latest and epoch {finished_epoch}")
            if reached_limit and progress.epoch <= total_epochs:
                return stop_early(options, model, trainer, progress, visualizer, g_config, d_config, log)
    except KeyboardInterrupt:
        checkpoint_everything(options, model, trainer, progress, visualizer, g_config, d_config)
        visualizer.write_page(running=False)
        log.info(
            f"interrupted: saved the state at epoch {progress.epoch}, after {progress.epoch_batches} batch(es). "
            "Continue with the same command plus --continue-train."
        )
        raise
    visualizer.write_page(running=False)
    log.info(f"done in {time.time() - started:.0f} s; pictures: {directory / 'web' / 'index.html'}")
    return model


def main(argv: list[str] | None = None) -> int:
    from gan.options import parse_options

    options, messages = parse_options(argv)
    try:
        train(options, messages)
    except (DataError, CheckpointError, NonFiniteLossError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
