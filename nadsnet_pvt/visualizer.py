"""NADS-Net's pictures: `web/images/nadsnet_epochNNN_*.png` and `web/nadsnet.html`.

Per epoch (pictures of small inputs are upscaled to about 256 px):
- the epoch's first training batch as NADS-Net saw it (after the geometric augmentation),
  each sample captioned 'generated (augmented pose)' or 'real', with its seatbelt target
  (magenta) and its label skeleton drawn at the place the augmentation moved it to. Where
  each sample went is read off `geometric_augment` itself, run with the batch's own seeded
  random draws on a probe image (`geometric_placements`);
- validation predictions: the predicted heatmap peaks (one dot per peak, coloured per
  keypoint type as in the legend on the page) and the predicted seatbelt (magenta), beside
  the ground truth skeleton and seatbelt;
- loss curves and metric curves (train and validation, per epoch).
The page lists only images that exist, newest epoch first, links back to the GAN's
index.html, and refreshes itself while training runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from common.posedata.augment import geometric_augment
from common.posedata.imaging import imagenet_to_uint8
from common.posedata.pose import KEYPOINT_NAMES, NUM_KEYPOINTS
from common.posedata.visualize import (
    BoundedSeries,
    Gallery,
    GalleryEntry,
    PageSection,
    draw_skeleton,
    link_from_page,
    overlay_mask,
    plot_curves,
    save_png,
    write_page,
)
from nadsnet_pvt.metrics import cell_centres, find_peaks

# One RGB colour per keypoint type for predicted peaks (right side warm, left side cool, hips green).
PEAK_COLOURS = np.array(
    [(255, 60, 60), (255, 140, 40), (255, 220, 40), (255, 255, 255), (60, 200, 255), (60, 120, 255),
     (150, 80, 255), (60, 220, 120), (30, 150, 60)],
    dtype=np.uint8,
)
BELT_COLOUR = (255, 0, 200)  # magenta: no limb is drawn in it
CURVE_LABELS = {
    "total": "total loss",
    "heatmap": "heatmap SSE / B",
    "paf": "PAF SSE / B",
    "seatbelt": "seatbelt Dice-BCE",
    "dice": "seatbelt Dice loss",
    "pck5": "PCK@5",
    "pck10": "PCK@10",
    "pckt": "PCKt@0.2",
    "pckt_arms": "PCKt@0.2 arms",
    "seatbelt_iou": "seatbelt IoU",
    "seatbelt_dice": "seatbelt Dice",
}
# One plot per group of curves of similar size: (file, title, names).
PLOTS = (
    ("nadsnet_total.png", "NADS-Net total loss (per epoch)", ("total",)),
    ("nadsnet_maps.png", "heatmap and PAF losses (per epoch)", ("heatmap", "paf")),
    ("nadsnet_seatbelt.png", "seatbelt losses (per epoch)", ("seatbelt", "dice")),
    ("nadsnet_metrics.png", "validation metrics (per epoch)",
     ("pckt", "pckt_arms", "pck5", "pck10", "seatbelt_iou", "seatbelt_dice")),
)


DISPLAY_SIZE = 256  # pictures are drawn at least this large, so 64 px runs stay readable


def display_factor(size: int) -> int:
    """Whole-number upscaling from the network input size S to the picture size."""
    return max(1, DISPLAY_SIZE // size)


def to_display(image_uint8: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image_uint8
    size = image_uint8.shape[0] * factor
    return cv2.resize(image_uint8, (size, size), interpolation=cv2.INTER_LINEAR)


def mask_to_display(mask: torch.Tensor, factor: int) -> np.ndarray:
    """(S, S) mask -> (S * factor, S * factor) float32 numpy, nearest."""
    return np.kron(mask.detach().float().cpu().numpy(), np.ones((factor, factor), np.float32))


def points_to_display(points: np.ndarray, factor: int) -> np.ndarray:
    """Input-pixel (x, y) -> picture pixels (pixel centres stay centres)."""
    return (points + 0.5) * factor - 0.5


def geometric_placements(
    batch: int, size: int, map_shape: tuple[int, ...], paf_channels: int, augment_generator: torch.Generator,
    first_sample: int = 0, global_batch: int | None = None, smallest_tenths: int = 3,
) -> torch.Tensor:
    """Where `geometric_augment` put each sample, with the batch's own random draws:
    int64 (B, 4) = (dy, dx, new height, new width) in input pixels.

    `augment_generator` must be a fresh generator in the state the batch's augmentation
    started from (`nadsnet_pvt.batch.geometric_generator(seed, epoch, batch_index)`). An image of
    ones on a zero canvas goes through `geometric_augment` itself (bicubic resizing keeps a
    constant 1 exactly), so the pasted rectangle is read off the result.
    """
    ones = torch.ones(batch, 3, size, size)
    heatmaps = torch.zeros((batch,) + tuple(map_shape))
    pafs = torch.zeros((batch, paf_channels) + tuple(map_shape[1:]))
    moved, _, _, _ = geometric_augment(ones, torch.zeros(batch, 1, size, size), heatmaps, pafs, augment_generator,
                                       torch.zeros(3), first_sample, global_batch, smallest_tenths)
    inside = moved[:, 0] > 0.5  # (B, S, S)
    rows, columns = inside.any(dim=2), inside.any(dim=1)  # (B, S)
    first_row = rows.float().argmax(dim=1)
    first_column = columns.float().argmax(dim=1)
    return torch.stack([first_row, first_column, rows.sum(dim=1), columns.sum(dim=1)], dim=1).long()


def place_keypoints(keypoints: torch.Tensor, placements: torch.Tensor, size: int) -> torch.Tensor:
    """Keypoints (B, P, 9, 2) input pixels -> where they are after the placement (B, 4) of
    `geometric_placements` (resizing maps pixel centres: x' = (x + 0.5) * w / S - 0.5 + dx)."""
    dy, dx, height, width = (placements[:, k].to(keypoints.dtype).view(-1, 1, 1) for k in range(4))
    x = (keypoints[..., 0] + 0.5) * width / size - 0.5 + dx
    y = (keypoints[..., 1] + 0.5) * height / size - 0.5 + dy
    return torch.stack([x, y], dim=-1)


def draw_peaks(image_uint8: np.ndarray, heatmaps: torch.Tensor, size: int, factor: int) -> np.ndarray:
    """Dots at the heatmap peaks of one sample ((C, h, w) predicted heatmaps of an S = `size`
    input) on a picture upscaled by `factor`, coloured per keypoint type."""
    canvas = np.ascontiguousarray(image_uint8.copy())
    peaks = find_peaks(heatmaps[None, :NUM_KEYPOINTS].float())[0].cpu()  # (9, h, w)
    centres = points_to_display(cell_centres(heatmaps.shape[-1], size / heatmaps.shape[-1]).numpy(), factor)
    radius = max(2, canvas.shape[0] // 100)
    for channel, y_index, x_index in torch.nonzero(peaks).tolist():
        centre = (int(round(float(centres[x_index]))), int(round(float(centres[y_index]))))
        colour = tuple(int(c) for c in PEAK_COLOURS[channel])
        cv2.circle(canvas, centre, radius, colour, -1, cv2.LINE_AA)
    return canvas


class NADSNetVisualizer:
    """Writes web/nadsnet.html: one entry per epoch (its validation predictions and its first
    training batch), the newest first, with the loss and metric curves. Page, state and
    pictures on disk stay bounded as the run goes on (common.posedata.visualize.Gallery)."""

    def __init__(self, web_dir: str | Path, refresh_seconds: int = 10, enabled: bool = True, recent: int = 5):
        self.web_dir = Path(web_dir)
        self.image_dir = self.web_dir / "images"
        self.refresh_seconds = refresh_seconds
        self.enabled = enabled
        self.gallery = Gallery(self.web_dir, "nadsnet.html", recent=recent)
        self.pending: dict[str, list[list[str]]] = {"train": [], "valid": []}  # this epoch's pictures so far
        self.curves: dict[str, BoundedSeries] = {}  # "train/total", "valid/pck5", ... -> (epoch, value)

    def _save(self, epoch: int, kind: str, name: str, caption: str, picture: np.ndarray) -> None:
        file_name = f"nadsnet_epoch{epoch:03d}_{name}.png"
        save_png(self.image_dir / file_name, picture)
        self.pending[kind] = [item for item in self.pending[kind] if item[0] != file_name] + [[file_name, caption]]

    def finish_epoch(self, epoch: int) -> None:
        """Put the epoch's pictures on the page (validation predictions first)."""
        if not self.enabled:
            return
        images = [tuple(item) for item in self.pending["valid"] + self.pending["train"]]
        heading = f"epoch {epoch}: validation predictions, then the first training batch as NADS-Net saw it"
        self.gallery.add(GalleryEntry(epoch, epoch, heading, images))
        self.pending = {"train": [], "valid": []}

    def training_batch(self, epoch: int, batch, recipe, first: bool = True) -> None:
        """Pictures of an epoch's first TrainingBatch (nadsnet_pvt.batch) after augmentation, with
        the label skeletons moved to where the augmentation put them (the batch's own draws,
        `recipe.geometric(epoch, 0)`) and the seatbelt target overlaid. Other batches (`first`
        False, e.g. the first of a continued epoch) are not drawn."""
        if not self.enabled or not first:
            return
        augment_generator = recipe.geometric(epoch, 0)
        size = batch.images.shape[-1]
        factor = display_factor(size)
        placements = geometric_placements(
            batch.images.shape[0], size, tuple(batch.heatmaps.shape[1:]), batch.pafs.shape[1], augment_generator,
            recipe.first_sample, recipe.batch_size, recipe.smallest_tenths)
        people = place_keypoints(batch.label_keypoints.detach().cpu().float(), placements, size)
        for sample in range(batch.images.shape[0]):
            picture = to_display(imagenet_to_uint8(batch.images[sample]), factor)
            picture = overlay_mask(picture, mask_to_display(batch.seatbelt[sample, 0], factor), BELT_COLOUR, alpha=0.5)
            picture = draw_skeleton(picture, points_to_display(people[sample].numpy(), factor))
            kind = "generated (augmented pose)" if bool(batch.generated[sample]) else "real"
            self._save(epoch, "train", f"train{sample}", f"{kind}: labels + seatbelt target", picture)

    def validation_samples(
        self,
        epoch: int,
        images: torch.Tensor,
        keypoints: torch.Tensor,
        seatbelt: torch.Tensor,
        pred_heatmaps: torch.Tensor,
        pred_seatbelt: torch.Tensor | None,
        image_ids: list[str],
    ) -> None:
        """Prediction (peaks + seatbelt) beside ground truth (skeleton + seatbelt) per sample."""
        if not self.enabled:
            return
        size = images.shape[-1]
        factor = display_factor(size)
        for sample in range(images.shape[0]):
            frame = to_display(imagenet_to_uint8(images[sample]), factor)
            predicted = frame
            if pred_seatbelt is not None:
                predicted = overlay_mask(predicted, mask_to_display(pred_seatbelt[sample, 0], factor), BELT_COLOUR, alpha=0.5)
            predicted = draw_peaks(predicted, pred_heatmaps[sample], size, factor)
            truth = overlay_mask(frame, mask_to_display(seatbelt[sample, 0], factor), BELT_COLOUR, alpha=0.5)
            truth = draw_skeleton(truth, points_to_display(keypoints[sample].detach().cpu().float().numpy(), factor))
            name = image_ids[sample]
            self._save(epoch, "valid", f"valid{sample}_pred", f"{name}: prediction (peaks, seatbelt > 0.5)", predicted)
            self._save(epoch, "valid", f"valid{sample}_truth", f"{name}: ground truth", truth)

    def record(self, epoch: int, split: str, values: dict[str, float]) -> None:
        """Add one epoch's scalars of `split` ('train' or 'valid') to the curves."""
        for name, value in values.items():
            self.curves.setdefault(f"{split}/{name}", BoundedSeries()).add(epoch, float(value))

    def write_page(self, running: bool) -> None:
        if not self.enabled:
            return
        self.web_dir.mkdir(parents=True, exist_ok=True)

        def curves(names: tuple[str, ...]) -> dict[str, list[tuple[float, float]]]:
            selected = {}
            for key, series in self.curves.items():
                split, name = key.split("/", 1)
                if name in names:
                    selected[f"{split}: {CURVE_LABELS.get(name, name)}"] = series.points
            return selected

        plots = [file_name for file_name, title, names in PLOTS
                 if plot_curves(self.web_dir / file_name, curves(names), title, "epoch")]
        sections = [PageSection(heading="colours of the predicted peaks", images=[(self.write_legend(), "keypoint types")])]
        pending = [(f"images/{name}", caption) for name, caption in self.pending["valid"] + self.pending["train"]]
        if pending:  # the current epoch's pictures so far (all a run stopped inside its first epoch has)
            sections.append(PageSection(heading="this epoch so far: the first training batch as NADS-Net saw it",
                                        images=pending))
        sections += self.gallery.sections()
        links = [("index.html", "GAN training pictures")] if (self.web_dir / "index.html").is_file() else []
        write_page(
            self.web_dir / "nadsnet.html",
            "NADS-Net training" + (f" (running: refreshes every {self.refresh_seconds} s)" if running else ""),
            sections,
            plots=plots,
            links=links + self.gallery.archive_links(),
            refresh_seconds=self.refresh_seconds if running else None,
        )
        link_from_page(self.web_dir / "index.html", "nadsnet.html", "NADS-Net training pictures")

    def write_legend(self) -> str:
        """A small picture naming the peak colours (written once); returns its page-relative path."""
        name = "images/nadsnet_peak_legend.png"
        path = self.web_dir / name
        if not path.is_file():
            row = 22
            legend = np.full((row * NUM_KEYPOINTS + 8, 256, 3), 40, np.uint8)
            for index, keypoint in enumerate(KEYPOINT_NAMES):
                y = 4 + index * row + row // 2
                colour = tuple(int(c) for c in PEAK_COLOURS[index])
                cv2.circle(legend, (16, y), 6, colour, -1, cv2.LINE_AA)
                cv2.putText(legend, keypoint, (32, y + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (235, 235, 235), 1, cv2.LINE_AA)
            save_png(path, legend)
        return name

    def state_dict(self) -> dict[str, Any]:
        return {"gallery": self.gallery.state_dict(), "pending": self.pending,
                "curves": {key: series.state_dict() for key, series in self.curves.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gallery.load_state_dict(state.get("gallery", {}))
        self.pending = {kind: [list(item) for item in items] for kind, items in state.get("pending", {}).items()}
        self.pending.setdefault("train", [])
        self.pending.setdefault("valid", [])
        self.curves = {key: BoundedSeries.from_state(series) for key, series in state.get("curves", {}).items()}
