"""The GAN training loop, top to bottom: options -> data -> networks -> trainer -> pictures.

Files in `--checkpoints-dir` (SPADE's names, so seed tools and checkpoints keep working):
`latest_net_G.pth`, `latest_net_D.pth`, `<epoch>_net_G.pth`, `<epoch>_net_D.pth` (plain state
dicts, the configuration beside each as JSON), `gan_train_state.pth` (everything an exact
resume needs), `iter.txt`, `loss_log.txt`, `opt.txt` and `web/index.html`.

Surviving crashes (README "After a crash"): the data, options and checkpoints to load are all
checked before the first file is written; every file is written atomically; Ctrl-C / SIGTERM
stop at the next batch boundary after saving; a non-finite loss stops without saving (or,
with --on-nonfinite skip, drops the batch); --continue-train resumes exactly, mid-epoch too.
"""

from __future__ import annotations

import argparse
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

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
    remove_stale_temporaries,
    restore_rng_states,
    save_atomic,
    save_network,
    write_text_atomic,
)
from common.dataset import DataError, PoseDataset, make_loader
from common.interrupts import NONFINITE_STREAK_LIMIT, GracefulStop, TrainingInterrupted, batches_until_stopped, run_command
from common.devices import describe_placement, resolve_devices
from common.models.factory import (
    build_discriminator,
    build_generator,
    discriminator_config,
    fitting_flags,
    generator_config,
    load_nadsnet,
)
from common.models.init import init_weights
from common.models.losses import VGGLoss
from common.runlog import RunLog
from common.sampling import ResumableSampler
from gan.model import GANModel, LossWeights
from common.options import format_options
from common.interrupts import NonFiniteLossError
from gan.trainer import GANTrainer
from gan.visualizer import GANVisualizer

TRAIN_STATE = "gan_train_state.pth"
STATE_FORMAT = "pose-gan-train-state/1"
# Options a continued run must share with the run it continues (they change what it trains on).
RESUME_KEYS = ("batch_size", "image_size", "seed")



class Log(RunLog):
    """The GAN's log: messages are printed; loss lines are printed and appended to
    `<checkpoints>/loss_log.txt` (loss lines only, as in SPADE)."""

    def __init__(self, checkpoints_dir: Path):
        super().__init__(Path(checkpoints_dir) / "loss_log.txt", info_to_file=False)

    def losses(self, epoch: int, iteration: int, seconds: float, losses: dict[str, float]) -> None:
        terms = " ".join(f"{name}: {value:.3f}" for name, value in losses.items())
        self.line(f"(epoch: {epoch}, iters: {iteration}, time: {seconds:.3f}) {terms}")


@dataclass
class Progress:
    """Where the run is: `epoch` (1-based) and the batches of it already trained."""

    epoch: int = 1
    epoch_batches: int = 0
    total_iterations: int = 0
    skipped_batches: int = 0  # batches dropped for non-finite losses (--on-nonfinite skip)
    nonfinite_streak: int = 0  # of them, the ones in a row up to now
    loss_log_bytes: int | None = None  # size of loss_log.txt at the save this run continues from


# Allocations at least this large are served by mmap and handed back to the OS when freed.
MMAP_THRESHOLD_BYTES = 1 << 20


def return_freed_memory_to_os(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """glibc only: make freed tensor memory leave the process instead of staying in the heap.

    By default glibc raises its mmap threshold (up to 32 MiB) every time a large block is
    freed, after which tensors of up to that size come from the heap, whose freed memory stays
    resident. A GAN iteration at 384 px allocates and frees gigabytes of activations, and that
    retained heap cost about 0.5 GB of peak resident memory on the CPU (benchmarks/README.md).
    Fixing the threshold (which also fixes the trim threshold) keeps the resident size close to
    the live tensors. The cost is page faults on fresh pages: about 6 s more system CPU time per
    384 px iteration on a 2-core CPU (benchmarks/README.md). Returns False where it does not
    apply (not glibc).
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, threshold_bytes)) and bool(libc.mallopt(m_trim_threshold, threshold_bytes))


# From this input size on, a CPU run's peak memory is dominated by activations of tens of MB,
# and handing them back to the OS is worth its page faults. Below it, activations are small,
# memory is no concern, and the page faults would cost up to 40 % of the run time (measured at
# 64 px: 136 s system time in a 182 s cpu-preset run).
LARGE_IMAGE_SIZE = 256


def tune_allocator_for(options: argparse.Namespace, gan_device: torch.device) -> bool:
    """Call return_freed_memory_to_os() for CPU runs at LARGE_IMAGE_SIZE px and more."""
    if gan_device.type == "cpu" and options.image_size >= LARGE_IMAGE_SIZE:
        return return_freed_memory_to_os()
    return False


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


def build_trainer(options: argparse.Namespace, model: GANModel) -> GANTrainer:
    """The optimisers and schedule the options describe (TTUR unless --no-ttur)."""
    return GANTrainer(
        model,
        lr=options.lr,
        beta1=options.beta1,
        beta2=options.beta2,
        ttur=not options.no_ttur,
        niter=options.niter,
        niter_decay=options.niter_decay,
        amp=options.amp,
    )


def build_loader(options: argparse.Namespace, dataset: PoseDataset, sampler: ResumableSampler, device: torch.device) -> DataLoader:
    return make_loader(dataset, sampler, options.num_workers, device)


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
        "format": STATE_FORMAT,
        "netG": model.netG.state_dict(),
        "netD": model.netD.state_dict(),
        "generator_config": g_config,
        "discriminator_config": d_config,
        "trainer": trainer.state_dict(),
        "epoch": progress.epoch,
        "epoch_batches": progress.epoch_batches,
        "total_iterations": progress.total_iterations,
        "skipped_batches": progress.skipped_batches,
        "nonfinite_streak": progress.nonfinite_streak,
        "batch_size": options.batch_size,
        "seed": options.seed,
        "options": {key: getattr(options, key) for key in RESUME_KEYS},
        "loss_log_bytes": Log(options.checkpoints_dir).size(),
        "rng": capture_rng_states(),
        "visualizer": visualizer.state_dict(),
    }
    save_atomic(state, path)


def checkpoint_everything(
    options, model, trainer, progress, visualizer, g_config, d_config, epoch_label: str | None = None
) -> None:
    """Save 'latest' (and an epoch copy): networks, iter.txt and the training state.

    Every file is written atomically (temp file, fsync, rename), so a kill at any moment leaves
    each file either as it was or as it is now. The training state goes first: it alone is what
    --continue-train reads, and it is complete on its own.
    """
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
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{state_path} is not a GAN training state ({STATE_FORMAT})")
        saved = state.get("options", {"batch_size": state.get("batch_size")})
        differing = [key for key in RESUME_KEYS if key in saved and saved[key] != getattr(options, key)]
        if differing:
            flags = " ".join(f"--{key.replace('_', '-')} {saved[key]}" for key in differing)
            raise CheckpointError(f"{state_path} was saved with {flags}; continue with the same value(s)")
        g_config = state["generator_config"]
        hint = f"--ngf {g_config['ngf']} --image-size {g_config['crop_size']}"
        if g_config.get("num_upsampling_layers", "normal") != "normal":
            hint += f" --num-upsampling-layers {g_config['num_upsampling_layers']}"
        load_weights_strict(model.netG, state["netG"], f"{state_path} (generator)", hint)
        load_weights_strict(model.netD, state["netD"], f"{state_path} (discriminator)", fitting_flags("discriminator", state["netD"]))
        try:
            trainer.load_state_dict(state["trainer"])
        except (ValueError, KeyError, RuntimeError) as error:
            raise CheckpointError(f"{state_path}: the optimiser states do not fit this run ({error})") from None
        restore_rng_states(state["rng"])
        visualizer.load_state_dict(state.get("visualizer", {}))
        progress = Progress(
            state["epoch"],
            state["epoch_batches"],
            state["total_iterations"],
            skipped_batches=state.get("skipped_batches", 0),
            nonfinite_streak=state.get("nonfinite_streak", 0),
            loss_log_bytes=state.get("loss_log_bytes"),
        )
        log.info(
            f"continuing from {state_path}: epoch {progress.epoch}, after {progress.epoch_batches} batch(es) of it "
            f"(iteration {progress.total_iterations})"
        )
        return progress
    g_path = directory / f"{options.which_epoch}_net_G.pth"
    d_path = directory / f"{options.which_epoch}_net_D.pth"
    if not g_path.is_file():
        raise CheckpointError(f"--continue-train: nothing to continue from in {directory} (no {TRAIN_STATE}, no {g_path.name})")
    g_state = load_state_dict_file(g_path)
    load_weights_strict(model.netG, g_state, g_path, fitting_flags("generator", g_state))
    if d_path.is_file():
        d_state = load_state_dict_file(d_path)
        load_weights_strict(model.netD, d_state, d_path, fitting_flags("discriminator", d_state))
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


def load_training_data(options: argparse.Namespace, log: Log) -> PoseDataset:
    """The training set, validated before anything is written (SPEC 1): a bad file fails here
    with one line naming the file, the record and the field. Warnings become log lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = PoseDataset(options.train_annotations, options.images_dir, options.masks_dir, image_size=options.image_size)
    for warning in caught:
        log.info(f"WARNING: {warning.message}")
    dataset.verify_file_ends()
    if len(dataset) < options.batch_size:
        raise DataError(
            f"{options.train_annotations}: {len(dataset)} image(s), fewer than one batch of {options.batch_size}; "
            "lower --batch-size"
        )
    return dataset


def train(options: argparse.Namespace, messages: list[str] = ()) -> GANModel:
    """Run the whole training; returns the model (its networks hold the final weights).

    Everything that can be wrong with the data, the options or the checkpoints to load is
    found before the first file is written: such a run leaves `--checkpoints-dir` untouched.
    """
    directory: Path = options.checkpoints_dir
    log = Log(directory)  # prints only, until the first losses are logged
    for message in messages:
        log.info(message)

    gan_device, nadsnet_device = resolve_devices(options.gan_device, options.nadsnet_device)
    tune_allocator_for(options, gan_device)
    log.info(describe_placement(gan_device, nadsnet_device))
    if gan_device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    dataset = load_training_data(options, log)
    sampler = ResumableSampler(len(dataset), options.batch_size, seed=options.seed, shuffle=True, drop_last=True)
    loader = build_loader(options, dataset, sampler, gan_device)

    model, g_config, d_config = build_model(options, gan_device, nadsnet_device, log)
    terms = model.active_terms()
    log.info("G loss terms: " + ", ".join(f"{name} {'on' if on else 'OFF'}" for name, on in terms.items()))
    trainer = build_trainer(options, model)
    visualizer = GANVisualizer(directory / "web", enabled=not options.no_html)
    progress = Progress()
    if options.continue_train:
        progress = resume(options, model, trainer, visualizer, g_config, d_config, log)

    # Everything checked: from here on the run writes files.
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f"cannot create --checkpoints-dir {directory}: {error.strerror or error}") from None
    for stale in remove_stale_temporaries(directory):
        log.info(f"removed {stale.name}, a half-written file a killed run left behind")
    log.start_file(cut_back_to=progress.loss_log_bytes)
    write_text_atomic(format_options(options), directory / "opt.txt")

    total_epochs = options.niter + options.niter_decay
    batches = sampler.batches_per_epoch()
    log.info(f"{len(dataset)} training images, {batches} batches of {options.batch_size} per epoch, {total_epochs} epochs")
    model.train()
    started = time.time()

    def save_and_stop(signal_number: int) -> None:
        """A requested stop, at a batch boundary: save everything, then end the run."""
        checkpoint_everything(options, model, trainer, progress, visualizer, g_config, d_config)
        visualizer.write_page(running=False)
        name = signal.Signals(signal_number).name
        message = (
            f"interrupted ({name}): saved the state at epoch {progress.epoch}, after {progress.epoch_batches} "
            f"batch(es) of it (iteration {progress.total_iterations}), in {directory}. "
            "Continue with the same command plus --continue-train."
        )
        log.info(message)
        raise TrainingInterrupted(signal_number, message)

    with GracefulStop() as stop:
        while progress.epoch <= total_epochs:
            epoch = progress.epoch
            lr = trainer.set_epoch(epoch)
            sampler.set_epoch(epoch, skip_batches=progress.epoch_batches)
            bar = tqdm(total=batches, initial=progress.epoch_batches, desc=f"epoch {epoch}/{total_epochs}", leave=False, dynamic_ncols=True)
            iteration_started = time.time()
            try:
                for batch in batches_until_stopped(loader, stop):
                    semantics, real = model.prepare_batch(batch)
                    losses: dict[str, torch.Tensor] = {}
                    did_generator_step = progress.epoch_batches % options.d_steps_per_g == 0
                    skipped = False
                    try:
                        if did_generator_step:
                            losses.update(trainer.generator_step(semantics, real))
                        losses.update(trainer.discriminator_step(semantics, real, reuse_fake=options.reuse_fake and did_generator_step))
                    except NonFiniteLossError as error:
                        handle_nonfinite(error, options, progress, epoch, directory, log)
                        skipped = True
                    progress.epoch_batches += 1
                    progress.total_iterations += 1
                    step = progress.total_iterations
                    bar.update(1)
                    if not skipped:
                        progress.nonfinite_streak = 0
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
                    if stop.requested is not None:
                        save_and_stop(stop.requested)
                    if options.max_iterations is not None and step >= options.max_iterations:
                        break
            except DataError as error:
                raise DataError(
                    f"{error}; training stopped at epoch {epoch}, iteration {progress.total_iterations + 1}: fix or "
                    f"remove the file, then continue with --continue-train (the last save in {directory} is intact)"
                ) from None
            finally:
                bar.close()
            if stop.requested is not None:
                save_and_stop(stop.requested)  # the loader ended early: its workers got the signal too
            reached_limit = options.max_iterations is not None and progress.total_iterations >= options.max_iterations
            if reached_limit and progress.epoch_batches < batches:
                return stop_early(options, model, trainer, progress, visualizer, g_config, d_config, log)
            finished_epoch = epoch
            progress.epoch, progress.epoch_batches = epoch + 1, 0
            log.info(f"end of epoch {finished_epoch}/{total_epochs} (lr {lr:.6g}), {time.time() - started:.0f} s so far")
            if finished_epoch % options.save_epoch_freq == 0 or finished_epoch == total_epochs:
                checkpoint_everything(options, model, trainer, progress, visualizer, g_config, d_config, epoch_label=str(finished_epoch))
                log.info(f"saved latest and epoch {finished_epoch}")
            if stop.requested is not None and progress.epoch <= total_epochs:
                save_and_stop(stop.requested)
            if reached_limit and progress.epoch <= total_epochs:
                return stop_early(options, model, trainer, progress, visualizer, g_config, d_config, log)
    visualizer.write_page(running=False)
    skipped_note = f"; {progress.skipped_batches} batch(es) skipped for non-finite losses" if progress.skipped_batches else ""
    log.info(f"done in {time.time() - started:.0f} s{skipped_note}; pictures: {directory / 'web' / 'index.html'}")
    return model


def handle_nonfinite(error: NonFiniteLossError, options, progress: Progress, epoch: int, directory: Path, log: Log) -> None:
    """A non-finite loss term: stop (raise, saving nothing, so the last save stays as it was),
    or with --on-nonfinite skip drop the batch with a warning and count it."""
    where = f"at epoch {epoch}, iteration {progress.total_iterations + 1}"
    if options.on_nonfinite == "stop":
        raise NonFiniteLossError(
            f"{error} {where}; stopped without saving, so the last save in {directory} is intact "
            "(lower --lr, check the data, or --on-nonfinite skip)",
            terms=error.terms,
            network=error.network,
        ) from None
    progress.skipped_batches += 1
    progress.nonfinite_streak += 1
    updated = " (the generator was updated before the discriminator step failed)" if error.network == "discriminator" else ""
    log.info(f"WARNING: {error} {where}: batch skipped, no {error.network} update{updated}")
    if progress.nonfinite_streak >= NONFINITE_STREAK_LIMIT:
        raise NonFiniteLossError(
            f"{progress.nonfinite_streak} batches in a row had non-finite losses (the last: {', '.join(error.terms)} {where}): "
            f"the run has diverged; stopped without saving, the last save in {directory} is intact (lower --lr)",
            terms=error.terms,
            network=error.network,
        )


def main(argv: list[str] | None = None) -> int:
    """The command line: 0 done, 1 an error (one line on stderr, no traceback), 128 + signal
    number after a Ctrl-C (130) or SIGTERM (143) that saved the state."""
    from gan.options import parse_options

    options, messages = parse_options(argv)
    return run_command(train, options, messages, (DataError, CheckpointError, NonFiniteLossError, ValueError))
