"""The GAN: generator, discriminator, their losses and the frozen NADS-Net guidance.

Plain methods instead of SPADE's `forward(mode=...)` switch:
- `generator_losses(semantics, real)` -> the G step's loss terms and the fake;
- `discriminator_losses(semantics, real, fake=None)` -> the D step's loss terms.

Work the seed did and nobody used is not done here, without changing any value:
- NADS-Net's and VGG's parameters are frozen (no weight gradients); their real-image branches
  run without autograd;
- in the G step the discriminator's parameters are frozen, and the real image goes through it
  without autograd (only its features are used, as fixed targets) and without advancing its
  spectral-norm vectors a second time (the seed ran fake and real through D in one batch);
- in the D step the fake is generated without autograd (it is detached in any case).
- in the G step each branch judging the fake (D, VGG, NADS-Net) is differentiated with respect
  to the fake as soon as it has run, so its activations are freed before the next one runs.

Images are (B, 3, S, S) RGB in [-1, 1] (the generator's tanh range). Where NADS-Net or VGG
consume them they are converted to ImageNet normalisation, unless `image_range='seed'`
reproduces the seed, which fed [-1, 1] images to both.
"""

from __future__ import annotations

import inspect

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from common.parallel.devices import convolution_memory_format
from common.posedata.imaging import gan_to_imagenet, resize_images
from common.posedata.maps import gan_input
from common.models.losses import GANLoss, dice_bce_loss, feature_matching_loss
from common.models.normalization import frozen_norm_statistics


@dataclass
class LossWeights:
    """Weights of the G step's terms (the seed's by default); a term whose network is missing is off."""

    feat: float = 10.0
    vgg: float = 10.0
    heatmap: float = 100.0
    paf: float = 100.0
    seatbelt: float = 1.0
    use_feat: bool = True
    l1: float = 0.0  # not in the seed; the cpu preset's stand-in for the VGG term it lacks


def _fp16_autocast(device: torch.device) -> bool:
    """Is fp16 autocast on for `device`? (Its gradients need the trainer's loss scaling, which
    the eager branch gradients would bypass.)"""
    return torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.float16


def set_requires_grad(net: nn.Module, flag: bool) -> None:
    for parameter in net.parameters():
        parameter.requires_grad_(flag)


class GANModel(nn.Module):
    """G, D, the losses and the guidance, placed on their devices.

    Args:
        generator: SPADEGenerator (on `gan_device`).
        discriminator: MultiscaleDiscriminator (on `gan_device`).
        gan_mode: 'hinge', 'original', 'ls' or 'w'.
        weights: the loss weights.
        vgg_loss: a VGGLoss with weights (on `gan_device`) or None (term off).
        nadsnet: a pretrained NADS-Net (on `nadsnet_device`) or None (guidance off). It is
            frozen and put in eval mode here.
        image_range: 'converted' or 'seed' (see module docstring).
        occluded_joints: how the generator's input shows the joints labelled occluded
            (common.posedata.maps.OCCLUDED_JOINTS: 'drawn', the seed's, or 'omitted').
        eager_branch_gradients: free each loss branch's activations as soon as its gradient
            with respect to the fake is known (see `generator_losses`; same values, less memory).
        release_memory: called where a step has just freed much memory (after each loss
            branch, after each optimiser step): the place for the caller's memory tuning
            (gan.train gives the CPU's heap release); a no-op by default.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        gan_mode: str = "hinge",
        weights: LossWeights | None = None,
        vgg_loss: nn.Module | None = None,
        nadsnet: nn.Module | None = None,
        image_range: str = "converted",
        gan_device: torch.device | str = "cpu",
        nadsnet_device: torch.device | str = "cpu",
        eager_branch_gradients: bool = True,
        release_memory: Callable[[], object] = lambda: None,
        occluded_joints: str = "drawn",
    ):
        super().__init__()
        if image_range not in ("converted", "seed"):
            raise ValueError(f"image_range must be 'converted' or 'seed', got {image_range!r}")
        self.gan_device = torch.device(gan_device)
        self.nadsnet_device = torch.device(nadsnet_device)
        # The networks' layout on their device (channels_last on the CPU: faster convolutions,
        # same values up to float rounding); inputs in the default layout are convolved in it.
        layout = convolution_memory_format(self.gan_device)
        self.netG = generator.to(self.gan_device, memory_format=layout)
        self.netD = discriminator.to(self.gan_device, memory_format=layout)
        # What the steps that update G and D run through: the networks themselves, or their
        # DistributedDataParallel wrappers in a distributed job (`distribute`).
        self.train_G: nn.Module = self.netG
        self.train_D: nn.Module = self.netD
        self.reducer = None  # global sums of the Dice terms in a distributed job
        self.criterion_gan = GANLoss(gan_mode)
        self.eager_branch_gradients = eager_branch_gradients
        self.release_memory = release_memory
        self.weights = weights or LossWeights()
        self.image_range = image_range
        self.occluded_joints = occluded_joints
        self.vgg_loss = vgg_loss.to(self.gan_device, memory_format=layout) if vgg_loss is not None else None
        if self.vgg_loss is not None:
            set_requires_grad(self.vgg_loss, False)
            self.vgg_loss.eval()
        self.nadsnet = (nadsnet.to(self.nadsnet_device, memory_format=convolution_memory_format(self.nadsnet_device))
                        if nadsnet is not None else None)
        if self.nadsnet is not None:
            set_requires_grad(self.nadsnet, False)
            self.nadsnet.eval()

    def distribute(self, job) -> None:
        """In a distributed job (common.parallel.distributed): G's batch norms gather their statistics over
        every process's samples, and G and D are wrapped separately in DistributedDataParallel
        (the frozen NADS-Net and VGG are not). Buffers are not sent before each forward pass, on purpose: every process
        computes the same batch-norm statistics (gathered) and the same spectral-norm power
        iteration (identical weights), so the buffers agree without being sent before each
        forward pass, and D's extra no-grad pass over the real image in the G step cannot
        desynchronise them. In the G step D runs unwrapped (frozen: nothing to reduce)."""
        if not job.distributed:
            return
        from torch.nn.parallel import DistributedDataParallel

        from common.parallel.distributed_ops import global_sums
        from common.models.normalization import convert_batch_norms_for_distributed

        convert_batch_norms_for_distributed(self.netG, job.backend)
        device_ids = [self.gan_device] if self.gan_device.type == "cuda" else None
        # PyTorch 2.13 renamed broadcast_buffers to forward_sync_buffers (the old name warns).
        renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        no_buffer_sync = {"forward_sync_buffers" if renamed else "broadcast_buffers": False}
        self.train_G = DistributedDataParallel(self.netG, device_ids=device_ids, **no_buffer_sync)
        self.train_D = DistributedDataParallel(self.netD, device_ids=device_ids, **no_buffer_sync)
        self.reducer = global_sums

    def train(self, mode: bool = True) -> "GANModel":
        """Only G and D follow train/eval; the frozen guidance networks always stay in eval mode."""
        self.training = mode
        self.netG.train(mode)
        self.netD.train(mode)
        return self

    # ------------------------------------------------------------------ inputs
    def prepare_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """A collated dataset batch -> (semantics (B, 26, S, S), real (B, 3, S, S) in [-1, 1]).

        The label maps are rendered on the GAN's device from the keypoints (no CPU maps).
        """
        from common.posedata.imaging import imagenet_to_gan

        non_blocking = self.gan_device.type == "cuda"
        image = batch["image"].to(self.gan_device, non_blocking=non_blocking)
        seatbelt = batch["seatbelt"].to(self.gan_device, non_blocking=non_blocking)
        keypoints = batch["keypoints"].to(self.gan_device, non_blocking=non_blocking)
        occluded = batch.get("occluded")
        semantics = gan_input(keypoints, seatbelt, image.shape[-1], occluded, self.occluded_joints)
        return semantics, imagenet_to_gan(image)

    def active_terms(self) -> dict[str, bool]:
        """Which G-step terms are on (for the start-of-run report)."""
        guidance = self.nadsnet is not None
        return {
            "GAN": True,
            "GAN_Feat": self.weights.use_feat,
            "VGG": self.vgg_loss is not None,
            **({"L1": True} if self.weights.l1 > 0 else {}),
            "heatmap": guidance,
            "paf": guidance,
            "seatbelt": guidance and bool(getattr(self.nadsnet, "has_seatbelt", False)),
        }

    def _for_pretrained(self, images: torch.Tensor) -> torch.Tensor:
        return gan_to_imagenet(images) if self.image_range == "converted" else images

    def _for_nadsnet(self, images: torch.Tensor) -> torch.Tensor:
        """Frames as the guidance NADS-Net takes them: its normalisation, its input size, its device."""
        return resize_images(self._for_pretrained(images), self.nadsnet.image_size).to(self.nadsnet_device)

    # ------------------------------------------------------------------ networks
    def generate(self, semantics: torch.Tensor) -> torch.Tensor:
        """The fake the G step differentiates (through DDP in a distributed job)."""
        return self.train_G(semantics)

    @torch.no_grad()
    def generate_for_display(self, semantics: torch.Tensor) -> torch.Tensor:
        """A fake for the pictures, as the training generates it (batch statistics), without
        changing anything the training keeps: running statistics and spectral-norm vectors
        stay as they are (an extra pass outside any training step must not move them)."""
        with frozen_norm_statistics(self.netG):
            return self.netG(semantics)

    def discriminate(self, semantics: torch.Tensor, image: torch.Tensor) -> list[list[torch.Tensor]]:
        return self.netD(torch.cat([semantics, image], dim=1))

    # ------------------------------------------------------------------ G step
    def generator_losses(self, semantics: torch.Tensor, real: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Loss terms of the G step (each already weighted) and the fake (B, 3, S, S).

        With `eager_branch_gradients` (the default; off under fp16 autocast) each branch that
        judges the fake -- the discriminator (GAN, GAN_Feat), VGG, NADS-Net -- runs on a detached
        copy of it, and its gradient with respect to the fake is taken at once, which frees that
        branch's activations before the next branch runs. The summed gradient reaches the
        generator through a term of value exactly 0 added to the first loss, so the trainer's
        `sum(losses).backward()` is unchanged. The values and gradients are the one-graph
        formulation's (up to float rounding of the gradient sum); the peak memory is the
        generator's activations plus the largest branch instead of all branches.
        """
        set_requires_grad(self.netD, False)
        try:
            fake = self.generate(semantics)
            eager = self.eager_branch_gradients and fake.requires_grad and not _fp16_autocast(fake.device)
            image = fake.detach().requires_grad_() if eager else fake
            losses: dict[str, torch.Tensor] = {}
            image_grad: torch.Tensor | None = None
            for branch in (self.adversarial_losses, self.perceptual_losses, self.guidance_losses):
                branch_losses = branch(semantics, image, real)
                if not branch_losses:
                    continue
                if eager:
                    (grad,) = torch.autograd.grad(sum(branch_losses.values()), image)
                    self.release_memory()  # the branch's activations are gone
                    image_grad = grad if image_grad is None else image_grad + grad
                    branch_losses = {name: value.detach() for name, value in branch_losses.items()}
                losses.update(branch_losses)
            if eager and image_grad is not None:
                carrier = (fake * image_grad).sum()
                first = next(iter(losses))
                losses[first] = losses[first] + (carrier - carrier.detach())  # + 0, gradient image_grad
        finally:
            set_requires_grad(self.netD, True)
        return losses, fake

    def adversarial_losses(self, semantics: torch.Tensor, fake: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """GAN (D's verdict on the fake) and GAN_Feat (feature matching against the real)."""
        pred_fake = self.discriminate(semantics, fake)
        losses = {"GAN": self.criterion_gan(pred_fake, True, for_discriminator=False)}
        if self.weights.use_feat:
            # No autograd, and no second spectral-norm power iteration: the real image sees
            # the same normalised weights as the fake, as in the seed's single fake+real batch.
            with torch.no_grad(), frozen_norm_statistics(self.netD):
                pred_real = self.discriminate(semantics, real)
            losses["GAN_Feat"] = feature_matching_loss(pred_fake, pred_real, self.weights.feat)
        return losses

    def perceptual_losses(self, semantics: torch.Tensor, fake: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """VGG and L1 (each left out when off)."""
        losses = {}
        if self.vgg_loss is not None:
            losses["VGG"] = self.vgg_loss(self._for_pretrained(fake), self._for_pretrained(real)) * self.weights.vgg
        if self.weights.l1 > 0:
            losses["L1"] = F.l1_loss(fake, real) * self.weights.l1
        return losses

    def guidance_losses(self, semantics: torch.Tensor, fake: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """NADS-Net on fake vs on real: heatmap and PAF MSE, seatbelt Dice-BCE
        (empty when the guidance is off). `semantics` is unused (same signature as the other
        branches). NADS-Net may sit on another device and take another input size: the images
        are resized and moved there, the losses come back.
        """
        if self.nadsnet is None:
            return {}
        with torch.no_grad():
            target = self.nadsnet(self._for_nadsnet(real))
        prediction = self.nadsnet(self._for_nadsnet(fake))
        losses = {
            "heatmap": F.mse_loss(prediction.heatmaps.float(), target.heatmaps.float()) * self.weights.heatmap,
            "paf": F.mse_loss(prediction.pafs.float(), target.pafs.float()) * self.weights.paf,
        }
        if prediction.seatbelt is not None:
            seatbelt = dice_bce_loss(prediction.seatbelt.float(), target.seatbelt.float(), reducer=self.reducer)
            losses["seatbelt"] = seatbelt * self.weights.seatbelt
        return {name: value.to(self.gan_device) for name, value in losses.items()}

    # ------------------------------------------------------------------ D step
    def discriminator_losses(
        self, semantics: torch.Tensor, real: torch.Tensor, fake: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Loss terms of the D step. The fake is regenerated without autograd unless given."""
        if fake is None:
            with torch.no_grad():
                fake = self.netG(semantics)
        fake = fake.detach()
        predictions = self.train_D(torch.cat([torch.cat([semantics, semantics], dim=0), torch.cat([fake, real], dim=0)], dim=1))
        batch = fake.shape[0]
        pred_fake = [[layer[:batch] for layer in scale] for scale in predictions]
        pred_real = [[layer[batch:] for layer in scale] for scale in predictions]
        return {
            "D_Fake": self.criterion_gan(pred_fake, False, for_discriminator=True),
            "D_real": self.criterion_gan(pred_real, True, for_discriminator=True),
        }
