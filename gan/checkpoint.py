"""What a GAN run saves, in SPADE's file names so seed tools and checkpoints keep working.

Beside the training state (common.training.run): `latest_net_G.pth`, `latest_net_D.pth` (plain state
dicts, the configuration beside each as JSON), an epoch copy `<epoch>_net_G/D.pth` at saved
epoch ends (only the newest `--keep-epoch-checkpoints` of them kept), `iter.txt` (the seed's
iteration record) and the page `web/index.html`. A folder holding only the seed's
`latest_net_G/D.pth` and `iter.txt` can be continued too (the optimisers then start afresh).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from common.training.checkpoints import (config_path_for, load_network_config, load_state_dict_file, load_weights_strict,
                                    save_network)
from common.errors import CheckpointError
from common.training.files import write_text_atomic
from common.models.factory import infer_discriminator_config, infer_generator_config
from common.models.rendering import occluded_joints_of
from common.training.run import Progress
from common.training.runlog import RunLog
from gan.model import GANModel
from gan.options import DISCRIMINATOR_SHAPE_FLAGS, GENERATOR_SHAPE_FLAGS, fitting_flags
from gan.trainer import GANTrainer
from gan.visualizer import GANVisualizer

_EPOCH_COPY = re.compile(r"^(\d+)_net_G\.pth$")


class GANCheckpoint:
    """The GAN's part of a save (the `Checkpoint` of common.training.run)."""

    def __init__(self, model: GANModel, trainer: GANTrainer, visualizer: GANVisualizer, configs: dict[str, dict],
                 batch_size: int, keep_epoch_checkpoints: int | None, which_epoch: str = "latest"):
        self.model, self.trainer, self.visualizer = model, trainer, visualizer
        self.configs = configs  # {"generator": ..., "discriminator": ...}
        self.batch_size = batch_size
        self.keep_epoch_checkpoints = keep_epoch_checkpoints
        self.which_epoch = which_epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "netG": self.model.netG.state_dict(),
            "netD": self.model.netD.state_dict(),
            "generator_config": self.configs["generator"],
            "discriminator_config": self.configs["discriminator"],
            "trainer": self.trainer.state_dict(),
            "visualizer": self.visualizer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], source: Path) -> None:
        self._check_input_choice(state["generator_config"], source)
        load_weights_strict(self.model.netG, state["netG"], f"{source} (generator)",
                            self._fits("generator", state["netG"], state["generator_config"]))
        load_weights_strict(self.model.netD, state["netD"], f"{source} (discriminator)",
                            self._fits("discriminator", state["netD"], state["discriminator_config"]))
        try:
            self.trainer.load_state_dict(state["trainer"])
        except (ValueError, KeyError, RuntimeError) as error:
            raise CheckpointError(f"{source}: the optimiser states do not fit this run ({error})") from None
        self.visualizer.load_state_dict(state.get("visualizer", {}))

    def write_files(self, directory: Path, epoch_label: str | None, progress: Progress) -> None:
        """latest_net_G/D.pth (+ JSON), the epoch copy, iter.txt; older epoch copies pruned."""
        labels = ["latest"] + ([epoch_label] if epoch_label else [])
        for label in labels:
            save_network(self.model.netG, directory / f"{label}_net_G.pth", self.configs["generator"])
            save_network(self.model.netD, directory / f"{label}_net_D.pth", self.configs["discriminator"])
        write_text_atomic(f"{progress.epoch}\n{progress.epoch_batches * self.batch_size}\n", directory / "iter.txt")
        if epoch_label and self.keep_epoch_checkpoints:
            prune_epoch_copies(directory, self.keep_epoch_checkpoints)

    def write_pages(self, running: bool, progress: Progress) -> None:
        """The page; a finished or stopped run's last iteration gets its pictures first, however
        short the run (a display step may not have come)."""
        if not running and self.trainer.last_inputs is not None:
            epoch = progress.epoch - (progress.epoch_batches == 0)  # the epoch of that iteration
            self.visualizer.display_once(epoch, progress.total_iterations, *self.trainer.display_images())
        self.visualizer.write_page(running=running)

    def _check_input_choice(self, held: dict[str, Any], source: Path) -> None:
        """A generator trained on other input maps (--occluded-joints) has the same tensors but
        learned another task: continuing it under this run's choice would mix the two."""
        held_choice = occluded_joints_of(held)
        own_choice = occluded_joints_of(self.configs["generator"])
        if held_choice != own_choice:
            raise CheckpointError(f"{source} holds a generator trained with --occluded-joints {held_choice}, this run "
                                  f"gives --occluded-joints {own_choice}: continue it with --occluded-joints {held_choice}")

    def _fits(self, network: str, state_dict: dict, held: dict | None = None) -> str:
        """The flags this run needs to build `network` ('generator' or 'discriminator') as a file
        holds it: its configuration `held`, else the one read off `state_dict`. Every flag that
        differs from this run is named, so that following the hint makes the file fit."""
        if held is None:
            try:
                held = (infer_generator_config if network == "generator" else infer_discriminator_config)(state_dict)
            except CheckpointError as error:
                return f"no such network ({error})"
        shape_flags = GENERATOR_SHAPE_FLAGS if network == "generator" else DISCRIMINATOR_SHAPE_FLAGS
        flags = fitting_flags(held, self.configs[network], shape_flags)
        return f"{flags} (this run differs in each)" if flags else ""

    def resume_without_state(self, directory: Path, log: RunLog) -> Progress | None:
        """Continue from the seed's files: `<which_epoch>_net_G/D.pth` and iter.txt."""
        g_path = directory / f"{self.which_epoch}_net_G.pth"
        d_path = directory / f"{self.which_epoch}_net_D.pth"
        if not g_path.is_file():
            return None
        self._check_input_choice(load_network_config(g_path) or {}, g_path)  # the seed's files have none: 'drawn'
        g_state = load_state_dict_file(g_path)
        load_weights_strict(self.model.netG, g_state, g_path, self._fits("generator", g_state))
        if d_path.is_file():
            d_state = load_state_dict_file(d_path)
            load_weights_strict(self.model.netD, d_state, d_path, self._fits("discriminator", d_state))
        else:
            log.info(f"WARNING: {d_path} not found: the discriminator starts afresh")
        epoch, samples = read_iteration_record(directory) or (1, 0)
        progress = Progress(epoch=epoch, epoch_batches=samples // self.batch_size)
        log.info(f"continuing from {g_path.name} (no training state: optimisers start afresh) at epoch {epoch}, "
                 f"after {progress.epoch_batches} batch(es)")
        return progress


def read_iteration_record(directory: Path) -> tuple[int, int] | None:
    """iter.txt in the seed's format: (epoch, samples of it already trained), or None."""
    path = directory / "iter.txt"
    if not path.is_file():
        return None
    try:
        values = np.loadtxt(path, delimiter=",", dtype=int).reshape(-1)
        return int(values[0]), int(values[1])
    except (ValueError, IndexError, OSError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from None


def prune_epoch_copies(directory: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` epoch copies (<epoch>_net_G/D.pth and their JSON)."""
    epochs = sorted(int(match.group(1)) for path in directory.glob("*_net_G.pth") if (match := _EPOCH_COPY.match(path.name)))
    removed = []
    for epoch in epochs[:-keep]:
        for network in ("G", "D"):
            weights = directory / f"{epoch}_net_{network}.pth"
            for path in (weights, config_path_for(weights)):
                if path.is_file():
                    path.unlink()
                    removed.append(path)
    return removed
