"""The GAN's pictures: `web/images/epochNNN_iterNNNNNN_<label>.png` and `web/index.html`.

Per display step, three pictures of the batch's first sample, as the seed saved them: the input composite
(per pixel, the max over the 26 input channels of |value|), the synthesized image and the
real image, all mapped from [-1, 1] by (v + 1) / 2 * 255 (so the composite's 0 is mid-grey).
The page lists the newest display steps first, then one step per earlier epoch, under a
plot of the losses, and refreshes itself while training runs. A display step costs the same
however long the run has been going: the page, the saved state and the pictures on disk are
bounded (common.posedata.visualize.Gallery), the loss curves are kept in a bounded number of points and
the plot is redrawn at most every PLOT_INTERVAL_S seconds (and at the end).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from common.posedata.imaging import gan_to_uint8
from common.posedata.visualize import BoundedSeries, Gallery, GalleryEntry, plot_curves, save_png, write_page

LABELS = (("input_label", "input composite"), ("synthesized_image", "synthesized"), ("real_image", "real"))
PLOT_INTERVAL_S = 30.0


class GANVisualizer:
    def __init__(self, web_dir: str | Path, refresh_seconds: int = 5, enabled: bool = True, recent: int = 12):
        self.web_dir = Path(web_dir)
        self.refresh_seconds = refresh_seconds
        self.enabled = enabled
        self.gallery = Gallery(self.web_dir, "index.html", recent=recent)
        self.curves: dict[str, BoundedSeries] = {}
        self.metrics_lines: list[str] = []  # extra lines shown under the title (e.g. pose faithfulness)
        self._plotted_at = -float("inf")

    @staticmethod
    def input_composite(semantics: torch.Tensor) -> torch.Tensor:
        """(26, S, S) -> (3, S, S): the per-pixel max of |value| over the channels, repeated."""
        return semantics.abs().amax(dim=0, keepdim=True).expand(3, -1, -1)

    def display(self, epoch: int, iteration: int, semantics: torch.Tensor, fake: torch.Tensor, real: torch.Tensor) -> None:
        """Save the three pictures of one sample ((26|3, S, S) tensors) and rewrite the page."""
        if not self.enabled:
            return
        pictures = (self.input_composite(semantics), fake, real)
        images = []
        for (label, caption), picture in zip(LABELS, pictures):
            name = f"epoch{epoch:03d}_iter{iteration:06d}_{label}.png"
            save_png(self.gallery.image_dir / name, gan_to_uint8(picture))
            images.append((name, caption))
        self.gallery.add(GalleryEntry(epoch, iteration, f"epoch {epoch}, iteration {iteration}", images))
        self.write_page(running=True)

    def display_once(self, epoch: int, iteration: int, semantics: torch.Tensor, fake: torch.Tensor,
                     real: torch.Tensor) -> None:
        """`display`, unless the page already shows this iteration."""
        if self.gallery.recent and self.gallery.recent[-1].key == iteration:
            return
        self.display(epoch, iteration, semantics, fake, real)

    def record_losses(self, iteration: int, losses: dict[str, float]) -> None:
        for name, value in losses.items():
            self.curves.setdefault(name, BoundedSeries()).add(iteration, value)

    def write_page(self, running: bool) -> None:
        if not self.enabled:
            return
        plot = self.web_dir / "losses.png"
        if not running or time.monotonic() - self._plotted_at >= PLOT_INTERVAL_S or not plot.is_file():
            plot_curves(plot, {name: series.points for name, series in self.curves.items()}, "GAN losses", "iteration")
            self._plotted_at = time.monotonic()
        links = self.gallery.archive_links()
        if (self.web_dir / "nadsnet.html").is_file():
            links.insert(0, ("nadsnet.html", "NADS-Net training pictures"))
        write_page(
            self.web_dir / "index.html",
            "SPADE GAN training" + (" (running: refreshes every %d s)" % self.refresh_seconds if running else ""),
            self.gallery.sections(),
            plots=["losses.png"],
            links=links,
            refresh_seconds=self.refresh_seconds if running else None,
            notes=self.metrics_lines,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"gallery": self.gallery.state_dict(), "curves": {name: s.state_dict() for name, s in self.curves.items()},
                "metrics_lines": list(self.metrics_lines)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gallery.load_state_dict(state.get("gallery", {}))
        self.curves = {name: BoundedSeries.from_state(s) for name, s in state.get("curves", {}).items()}
        self.metrics_lines = list(state.get("metrics_lines", []))
