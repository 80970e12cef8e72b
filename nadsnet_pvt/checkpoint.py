"""What a NADS-Net run saves beside its training state (common.training.run).

- `nadsnet_best.pth` (+ `nadsnet_best.json`, its configuration): a plain state dict, written
  when an epoch's validation loss is the lowest so far (the seed saved only then); `train_gan.py` uses it for
  its guidance by default;
- the page `web/nadsnet.html`.
The state's part: the network, the optimiser and scheduler, the best loss so far and the page.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch import nn

from common.training.checkpoints import load_weights_strict, save_network
from common.errors import CheckpointError
from common.models.factory import nadsnet_choices
from common.training.run import Progress
from nadsnet_pvt.options import nadsnet_flags
from nadsnet_pvt.run_files import BEST_WEIGHTS
from nadsnet_pvt.trainer import NADSNetTrainer
from nadsnet_pvt.visualizer import NADSNetVisualizer


def check_network_choices(held: dict[str, Any], own: dict[str, Any], source: str | Path) -> None:
    """Refuse a file's NADS-Net (configuration `held`; without the keys, the seed's pvt_tiny and
    seed FPN) whose --backbone or --fpn differs from this run's (`own`), naming the flags that fit.
    Checked before the weights: the two FPN wirings have the same tensors, so a strict load
    would pass and silently compute another network."""
    held_choices, own_choices = nadsnet_choices(held), nadsnet_choices(own)
    differing = [key for key in held_choices if held_choices[key] != own_choices[key]]
    if differing:
        saved = " ".join(f"--{key} {held_choices[key]}" for key in differing)
        given = " ".join(f"--{key} {own_choices[key]}" for key in differing)
        raise CheckpointError(f"{source} holds a NADS-Net built with {saved}, this run builds {given}; "
                              f"it fits {nadsnet_flags(held)}")


class NADSNetCheckpoint:
    """NADS-Net's part of a save (the `Checkpoint` of common.training.run), and the best so far."""

    def __init__(self, net: nn.Module, config: dict[str, Any], trainer: NADSNetTrainer, visualizer: NADSNetVisualizer):
        self.net, self.config, self.trainer, self.visualizer = net, config, trainer, visualizer
        self.best_loss = math.inf
        self.best_epoch = 0

    def is_best(self, epoch: int, validation_loss: float) -> bool:
        """Record an epoch's validation loss; True when it is the lowest so far."""
        if not validation_loss < self.best_loss:
            return False
        self.best_loss, self.best_epoch = validation_loss, epoch
        return True

    def save_best(self, directory: Path) -> Path:
        return save_network(self.net, directory / BEST_WEIGHTS, self.config)

    def state_dict(self) -> dict[str, Any]:
        return {"nadsnet": self.net.state_dict(), "nadsnet_config": self.config, "trainer": self.trainer.state_dict(),
                "best_loss": self.best_loss, "best_epoch": self.best_epoch, "visualizer": self.visualizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any], source: Path) -> None:
        check_network_choices(state["nadsnet_config"], self.config, f"{source} (NADS-Net)")
        load_weights_strict(self.net, state["nadsnet"], f"{source} (NADS-Net)", nadsnet_flags(state["nadsnet_config"]))
        try:
            self.trainer.load_state_dict(state["trainer"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise CheckpointError(f"{source}: the optimiser or scheduler state does not fit this run ({error})") from None
        self.best_loss, self.best_epoch = float(state["best_loss"]), int(state["best_epoch"])
        self.visualizer.load_state_dict(state.get("visualizer", {}))

    def write_files(self, directory: Path, epoch_label: str | None, progress: Progress) -> None:
        """Nothing beside the state: the best weights are written when they improve."""

    def write_pages(self, running: bool, progress: Progress) -> None:
        self.visualizer.write_page(running=running)
