"""The GAN's pictures: `web/images/epochNNN_iterNNNNNN_<label>.png` and `web/index.html`.

Per display step, three pictures of the batch's first sample (SPEC 11): the input composite
(per pixel, the max over the 26 input channels of |value|), the synthesized image and the
real image, all mapped from [-1, 1] by (v + 1) / 2 * 255 (so the composite's 0 is mid-grey).
The page lists them newest first under a plot of the losses, and refreshes itself every few
seconds while training runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from common.imaging import gan_to_uint8
from common.visualize import PageSection, plot_curves, save_png, write_page

LABELS = (("input_label", "input composite"), ("synthesized_image", "synthesized"), ("real_image", "real"))


class GANVisualizer:
    def __init__(self, web_dir: str | Path, refresh_seconds: int = 5, enabled: bool = True):
        self.web_dir = Path(web_dir)
        self.image_dir = self.web_dir / "images"
        self.refresh_seconds = refresh_seconds
        self.enabled = enabled
        self.entries: list[dict[str, Any]] = []  # {"epoch", "iteration", "files": [[label, name], ...]}
        self.loss_history: dict[str, list[tuple[int, float]]] = {}

    @staticmethod
    def input_composite(semantics: torch.Tensor) -> torch.Tensor:
        """(26, S, S) -> (3, S, S): the per-pixel max of |value| over the channels, repeated."""
        return semantics.abs().amax(dim=0, keepdim=True).expand(3, -1, -1)

    def display(self, epoch: int, iteration: int, semantics: torch.Tensor, fake: torch.Tensor, real: torch.Tensor) -> None:
        """Save the three pictures of one sample ((26|3, S, S) tensors) and rewrite the page."""
        if not self.enabled:
            return
        pictures = (self.input_composite(semantics), fake, real)
        files = []
        for (label, _caption), picture in zip(LABELS, pictures):
            name = f"epoch{epoch:03d}_iter{iteration:06d}_{label}.png"
            save_png(self.image_dir / name, gan_to_uint8(picture))
            files.append([label, name])
        self.entries.append({"epoch": epoch, "iteration": iteration, "files": files})
        self.write_page(running=True)

    def record_losses(self, iteration: int, losses: dict[str, float]) -> None:
        for name, value in losses.items():
            self.loss_history.setdefault(name, []).append((iteration, float(value)))

    def write_page(self, running: bool) -> None:
        if not self.enabled:
            return
        plot = plot_curves(self.web_dir / "losses.png", self.loss_history, "GAN losses", "iteration")
        captions = dict(LABELS)
        sections = [
            PageSection(
                heading=f"epoch {entry['epoch']}, iteration {entry['iteration']}",
                images=[(f"images/{name}", captions.get(label, label)) for label, name in entry["files"]],
            )
            for entry in reversed(self.entries)
        ]
        links = []
        if (self.web_dir / "nadsnet.html").is_file():
            links.append(("nadsnet.html", "NADS-Net training pictures"))
        write_page(
            self.web_dir / "index.html",
            "SPADE GAN training" + (" (running: refreshes every %d s)" % self.refresh_seconds if running else ""),
            sections,
            plots=["losses.png"] if plot else [],
            links=links,
            refresh_seconds=self.refresh_seconds if running else None,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"entries": self.entries, "loss_history": {k: [list(p) for p in v] for k, v in self.loss_history.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.entries = list(state.get("entries", []))
        self.loss_history = {k: [tuple(p) for p in v] for k, v in state.get("loss_history", {}).items()}
