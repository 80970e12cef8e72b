"""NADS-Net's optimiser, learning-rate schedule and training step.

The seed's SGD with momentum 0.9 (no Nesterov), lr 1e-5, weight decay 5e-7; or AdamW (the cpu
preset's, since the seed's SGD at lr 1e-5 is far too slow for a short run). Schedules:
- 'metric-based': ReduceLROnPlateau on the total validation loss (factor 0.8, patience 4,
  threshold 1e-4 relative), stepped once per epoch after validation;
- 'fixed': StepLR (step 20 epochs, gamma 0.8), stepped once per epoch;
- 'cosine' (not in the seed; the cpu preset's): lr x (1 + cos(pi e / epochs)) / 2 after e epochs,
  from lr to 0 over `epochs`, stepped once per epoch, so that a short run ends on small steps
  instead of on the noise of full-size ones. A run continued with a larger --epochs follows the
  longer curve from where it stands (its lr rises to that curve's value).
Loss: common.models.losses.nadsnet_loss, SSE(heatmaps)/B + SSE(PAFs)/B + w * DiceBCE(seatbelt),
w = 500 as in the seed (`seatbelt_weight`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from common.parallel.devices import optimizer_implementation
from common.parallel.distributed import any_process
from common.errors import NonFiniteLossError
from common.models.losses import nadsnet_loss
from nadsnet_pvt.evaluate import predict

PLATEAU = dict(factor=0.8, patience=4, threshold=1e-4, threshold_mode="rel")
STEP = dict(step_size=20, gamma=0.8)
SCHEDULES = ("metric-based", "fixed", "cosine")


def detached(losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.detach() for name, value in losses.items()}


class NADSNetTrainer:
    """Owns NADS-Net's optimiser, scheduler and (fp16) gradient scaler.

    Args:
        net: NADSNet on `device`.
        device: NADS-Net's device.
        lr, momentum, weight_decay: optimiser settings (momentum: SGD only).
        optimizer: 'sgd' (the seed's) or 'adamw'.
        seatbelt_weight: weight of the seatbelt Dice-BCE in the loss (the seed's 500).
        heatmap_weight: weight of the heatmap SSE / B in the loss (the seed's 1).
        schedule: 'metric-based', 'fixed' or 'cosine' (see the module docstring).
        epochs: the run's length in epochs (the cosine schedule's period).
        amp: 'off' | 'bf16' | 'fp16' autocast of the forward pass (losses in float32).
    A non-finite loss raises NonFiniteLossError before any update, with the network's buffers
    put back as they were before the batch's forward pass (the run then stops or skips it).
    """

    def __init__(
        self,
        net: nn.Module,
        device: torch.device | str,
        lr: float = 1e-5,
        momentum: float = 0.9,
        weight_decay: float = 5e-7,
        schedule: str = "metric-based",
        amp: str = "off",
        optimizer: str = "sgd",
        seatbelt_weight: float = 500.0,
        heatmap_weight: float = 1.0,
        epochs: int = 100,
    ):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.net = net
        self.device = torch.device(device)
        self.schedule = schedule
        self.amp = amp
        self.seatbelt_weight, self.heatmap_weight = seatbelt_weight, heatmap_weight
        self.train_net: nn.Module = net  # DistributedDataParallel(net) in a distributed job
        self.reducer = None  # global sums of the loss terms in a distributed job
        trainable = [parameter for parameter in net.parameters() if parameter.requires_grad]
        implementation = optimizer_implementation(self.device)
        if optimizer == "sgd":  # the seed's
            self.optimizer = torch.optim.SGD(trainable, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                             **implementation)
        elif optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay, **implementation)
        else:
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {optimizer!r}")
        if schedule == "metric-based":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode="min", **PLATEAU)
        elif schedule == "fixed":
            self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, **STEP)
        else:
            # The closed form over this run's --epochs, not CosineAnnealingLR: that one stores its
            # period in the training state, so a run continued with a larger --epochs would keep the
            # old period and, past it, climb back to the full lr.
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda epoch: 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs)))
        # fp16 needs loss scaling; bf16 has float32's range and does not.
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16" and self.device.type == "cuda")

    @classmethod
    def from_options(cls, options: Any, net: nn.Module, device: torch.device) -> "NADSNetTrainer":
        """The optimiser, schedule and loss balance train_nadsnet.py's options describe."""
        return cls(net, device, lr=options.lr, momentum=options.momentum, weight_decay=options.weight_decay,
                   schedule=options.lr_schedule, amp=options.amp, optimizer=options.optimizer,
                   seatbelt_weight=options.seatbelt_weight, heatmap_weight=options.heatmap_weight,
                   epochs=options.epochs)

    def distribute(self, job) -> None:
        """In a distributed job: NADS-Net trains through DistributedDataParallel, and its loss
        terms are computed from sums over every process's samples (common.models.losses), so
        that the averaged gradients are one process's on the global batch."""
        if not job.distributed:
            return
        from torch.nn.parallel import DistributedDataParallel

        from common.parallel.distributed_ops import global_sums

        device_ids = [self.device] if self.device.type == "cuda" else None
        self.train_net = DistributedDataParallel(self.net, device_ids=device_ids)
        self.reducer = global_sums

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def losses(
        self, images: torch.Tensor, seatbelt: torch.Tensor, heatmaps: torch.Tensor, pafs: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        """Forward pass (under autocast) and the loss terms in float32; returns (losses, predictions)."""
        predictions = predict(self.train_net, images, self.device, self.amp)
        losses = nadsnet_loss(predictions.heatmaps, predictions.pafs, predictions.seatbelt, heatmaps, pafs, seatbelt,
                              seatbelt_weight=self.seatbelt_weight, reducer=self.reducer,
                              heatmap_weight=self.heatmap_weight)
        return losses, predictions

    @staticmethod
    def nonfinite_terms(losses: dict[str, torch.Tensor]) -> list[str]:
        """Names of the non-finite terms (one device sync for all of them)."""
        values = torch.stack([value.detach().float() for value in losses.values()])
        finite = torch.isfinite(values).tolist()
        return [name for name, ok in zip(losses, finite) if not ok]

    def train_step(self, batch) -> dict[str, torch.Tensor]:
        """One SGD update on a TrainingBatch (nadsnet_pvt.batch); returns the detached loss
        terms. Raises NonFiniteLossError naming the term before any update (buffers put back)."""
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        buffers = [(buffer, buffer.detach().clone()) for buffer in self.net.buffers()]
        losses, _ = self.losses(batch.images, batch.seatbelt, batch.heatmaps, batch.pafs)
        bad = self.nonfinite_terms(losses)
        if any_process(bool(bad)):  # every process of a job skips or stops at the same step
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
            shown = ", ".join(f"{name} = {float(losses[name].detach())}" for name in bad) or "on another process"
            raise NonFiniteLossError(f"non-finite loss term(s) {shown}", tuple(bad), "NADS-Net")
        self.scaler.scale(losses["total"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return detached(losses)

    def end_epoch(self, validation_loss: float) -> float:
        """Step the scheduler after an epoch's validation; returns the lr for the next epoch."""
        if self.schedule == "metric-based":
            if math.isfinite(validation_loss):
                self.scheduler.step(validation_loss)
        else:
            self.scheduler.step()
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "schedule": self.schedule,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("schedule", self.schedule) != self.schedule:
            raise ValueError(
                f"the training state used --lr-schedule {state['schedule']}; continue with that schedule"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
