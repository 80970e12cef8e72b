"""Optimisers, learning-rate schedule and the two update steps of the GAN.

Adam with betas (beta1, beta2) (default (0, 0.9)) and the two time-scale update rule (G at
lr/2, D at 2 lr); the seed used the given betas with TTUR too (NVlabs SPADE forces (0, 0.9)
there). The learning rate is constant for `niter` epochs, then decays linearly over
`niter_decay` epochs (NVlabs SPADE lowers it by lr / niter_decay at the end of every epoch
past niter).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from common.parallel.devices import autocast_context, optimizer_implementation
from common.parallel.distributed import any_process
from common.errors import NonFiniteLossError
from gan.model import GANModel


class GANTrainer:
    def __init__(
        self,
        model: GANModel,
        lr: float = 0.0002,
        beta1: float = 0.0,
        beta2: float = 0.9,
        ttur: bool = True,
        niter: int = 50,
        niter_decay: int = 0,
        amp: str = "off",
    ):
        self.model = model
        self.base_lr = lr
        self.ttur = ttur
        self.niter = niter
        self.niter_decay = niter_decay
        self.amp = amp
        betas = (beta1, beta2)
        g_lr, d_lr = self.split_lr(lr)
        implementation = optimizer_implementation(model.gan_device)
        self.optimizer_G = torch.optim.Adam(model.netG.parameters(), lr=g_lr, betas=betas, **implementation)
        self.optimizer_D = torch.optim.Adam(model.netD.parameters(), lr=d_lr, betas=betas, **implementation)
        # fp16 needs loss scaling; bf16 has float32's range and does not.
        enabled = amp == "fp16" and model.gan_device.type == "cuda"
        self.scaler_G = torch.amp.GradScaler("cuda", enabled=enabled)
        self.scaler_D = torch.amp.GradScaler("cuda", enabled=enabled)
        self.last_fake: torch.Tensor | None = None
        self.last_inputs: tuple[torch.Tensor, torch.Tensor] | None = None  # (semantics, real) of the last step

    @classmethod
    def from_options(cls, options: Any, model: GANModel) -> "GANTrainer":
        """The optimisers and schedule train_gan.py's options describe."""
        return cls(model, lr=options.lr, beta1=options.beta1, beta2=options.beta2, ttur=not options.no_ttur,
                   niter=options.niter, niter_decay=options.niter_decay, amp=options.amp)

    def split_lr(self, lr: float) -> tuple[float, float]:
        """(G lr, D lr) for a base lr: TTUR halves G's and doubles D's."""
        return (lr / 2, lr * 2) if self.ttur else (lr, lr)

    def lr_for_epoch(self, epoch: int) -> float:
        """Base lr while training epoch `epoch` (1-based): constant, then linear decay."""
        if self.niter_decay <= 0 or epoch <= self.niter + 1:
            return self.base_lr
        return max(0.0, self.base_lr - (epoch - self.niter - 1) * self.base_lr / self.niter_decay)

    def set_epoch(self, epoch: int) -> float:
        """Set both optimisers' learning rates for `epoch`; returns the base lr."""
        lr = self.lr_for_epoch(epoch)
        g_lr, d_lr = self.split_lr(lr)
        for group in self.optimizer_G.param_groups:
            group["lr"] = g_lr
        for group in self.optimizer_D.param_groups:
            group["lr"] = d_lr
        return lr

    @staticmethod
    def check_finite(losses: dict[str, torch.Tensor], network: str = "") -> None:
        """Raise NonFiniteLossError (before any backward or update) when a term is NaN/inf, here
        or on any other process of the job. One device sync for all the terms; the names are
        looked up only on failure."""
        values = torch.stack([value.detach().float() for value in losses.values()])
        bad_here = not bool(torch.isfinite(values).all())
        if any_process(bad_here):  # every process of a job skips or stops at the same step
            bad = tuple(name for name, value in losses.items() if not math.isfinite(float(value.detach())))
            shown = ", ".join(f"{name} = {float(losses[name].detach())}" for name in bad) or "on another process"
            step = f" in the {network} step" if network else ""
            raise NonFiniteLossError(f"non-finite loss term(s) {shown}{step}", terms=tuple(bad), network=network)

    def _buffer_snapshot(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Copies of G's and D's buffers (normalisation running statistics, spectral-norm
        vectors), which a forward pass in training mode changes. Small: no weights."""
        return [(buffer, buffer.detach().clone()) for net in (self.model.netG, self.model.netD) for buffer in net.buffers()]

    def _check_or_restore(self, losses: dict[str, torch.Tensor], network: str, buffers) -> None:
        """On a non-finite loss, put the buffers back as they were before this step's forward
        passes, so that a skipped batch (--on-nonfinite skip) leaves no trace, then raise."""
        try:
            self.check_finite(losses, network)
        except NonFiniteLossError:
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
            raise

    def generator_step(self, semantics: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """One G update; returns the detached loss terms."""
        self.optimizer_G.zero_grad(set_to_none=True)
        buffers = self._buffer_snapshot()
        with autocast_context(self.model.gan_device, self.amp):
            losses, fake = self.model.generator_losses(semantics, real)
        self._check_or_restore(losses, "generator", buffers)
        total = sum(losses.values())
        self.scaler_G.scale(total).backward()
        self.scaler_G.step(self.optimizer_G)
        self.scaler_G.update()
        self.model.release_memory()
        self.last_fake = fake.detach()
        return {name: value.detach() for name, value in losses.items()}

    def discriminator_step(
        self, semantics: torch.Tensor, real: torch.Tensor, reuse_fake: bool = False
    ) -> dict[str, torch.Tensor]:
        """One D update; regenerates the fake unless `reuse_fake` (then the G step's is used)."""
        self.optimizer_D.zero_grad(set_to_none=True)
        fake = self.last_fake if reuse_fake else None
        buffers = self._buffer_snapshot()
        with autocast_context(self.model.gan_device, self.amp):
            losses = self.model.discriminator_losses(semantics, real, fake)
        self._check_or_restore(losses, "discriminator", buffers)
        total = sum(losses.values())
        self.scaler_D.scale(total).backward()
        self.scaler_D.step(self.optimizer_D)
        self.scaler_D.update()
        self.model.release_memory()
        return {name: value.detach() for name, value in losses.items()}

    def step(self, batch: dict[str, Any], generator_turn: bool, reuse_fake: bool = False) -> dict[str, torch.Tensor]:
        """One iteration on a collated batch: a G update when it is G's turn (as in the seed: on
        iterations where i % D_steps_per_G == 0), then a D update. Returns the detached terms;
        raises NonFiniteLossError before the update whose loss is not finite."""
        semantics, real = self.model.prepare_batch(batch)
        self.last_inputs, self.last_fake = (semantics, real), None
        losses: dict[str, torch.Tensor] = {}
        if generator_turn:
            losses.update(self.generator_step(semantics, real))
        losses.update(self.discriminator_step(semantics, real, reuse_fake=reuse_fake and generator_turn))
        return losses

    def display_images(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(semantics, fake, real) of the last step's first sample, for the pictures: the G
        step's fake, or on D-only iterations one generated without touching any statistics."""
        semantics, real = self.last_inputs
        fake = self.last_fake if self.last_fake is not None else self.model.generate_for_display(semantics)
        return semantics[0], fake[0], real[0]

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer_G": self.optimizer_G.state_dict(),
            "optimizer_D": self.optimizer_D.state_dict(),
            "scaler_G": self.scaler_G.state_dict(),
            "scaler_D": self.scaler_D.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer_G.load_state_dict(state["optimizer_G"])
        self.optimizer_D.load_state_dict(state["optimizer_D"])
        if state.get("scaler_G"):
            self.scaler_G.load_state_dict(state["scaler_G"])
        if state.get("scaler_D"):
            self.scaler_D.load_state_dict(state["scaler_D"])
