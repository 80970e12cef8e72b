"""Pictures people can open: PNG files, loss plots and HTML pages (written with dominate).

Both trainings write into `<checkpoints>/web/`: images in `web/images/`, the GAN's page
`index.html` and NADS-Net's `nadsnet.html`. Pages list only images that exist on disk, newest
first, and refresh themselves while a run is going on. Every file is written atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import dominate
from dominate import tags

from common.checkpoints import write_atomic, write_text_atomic
from common.pose import LIMBS, NUM_KEYPOINTS

# One BGR-free RGB colour per limb and per keypoint, for skeleton overlays.
_LIMB_COLOURS = np.array(
    [(255, 80, 80), (255, 160, 60), (255, 230, 60), (80, 200, 255), (60, 140, 255), (120, 90, 255), (90, 230, 120), (60, 190, 90)],
    dtype=np.uint8,
)


def save_png(path: str | Path, image_rgb: np.ndarray) -> Path:
    """Write a uint8 (H, W, 3) RGB or (H, W) grey image as PNG, atomically."""
    image = np.ascontiguousarray(image_rgb)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    return write_atomic(path, lambda handle: handle.write(encoded.tobytes()))


def draw_skeleton(image_rgb: np.ndarray, people: np.ndarray, thickness: int = 2) -> np.ndarray:
    """A copy of `image_rgb` (H, W, 3) uint8 with the skeletons of `people` (P, 9, 2) drawn on it.

    Coordinates are pixels of this image; NaN keypoints and limbs touching them are skipped.
    """
    canvas = np.ascontiguousarray(image_rgb.copy())
    people = np.asarray(people, dtype=np.float64).reshape(-1, NUM_KEYPOINTS, 2)
    for person in people:
        for limb_index, (a, b) in enumerate(LIMBS):
            if np.isfinite(person[[a, b]]).all():
                colour = tuple(int(c) for c in _LIMB_COLOURS[limb_index])
                pa = tuple(int(round(v)) for v in person[a])
                pb = tuple(int(round(v)) for v in person[b])
                cv2.line(canvas, pa, pb, colour, thickness, cv2.LINE_AA)
        for point in person[np.isfinite(person).all(axis=1)]:
            cv2.circle(canvas, (int(round(point[0])), int(round(point[1]))), thickness + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return canvas


def overlay_mask(image_rgb: np.ndarray, mask: np.ndarray, colour=(0, 255, 0), alpha: float = 0.45) -> np.ndarray:
    """Blend `colour` into `image_rgb` (H, W, 3) uint8 where `mask` (H, W) in [0, 1] is > 0.5."""
    out = image_rgb.astype(np.float32)
    where = mask > 0.5
    out[where] = (1 - alpha) * out[where] + alpha * np.asarray(colour, dtype=np.float32)
    return out.round().astype(np.uint8)


def heatmap_composite(maps: np.ndarray) -> np.ndarray:
    """(C, H, W) maps -> uint8 (H, W, 3) grey picture of the per-pixel max of |value| over C."""
    peak = np.abs(maps).max(axis=0).clip(0, 1)
    grey = (peak * 255).round().astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def plot_curves(path: str | Path, curves: dict[str, Sequence[tuple[float, float]]], title: str, xlabel: str) -> Path | None:
    """Plot named curves of (x, y) points into a PNG; returns None when there is nothing to plot."""
    curves = {name: points for name, points in curves.items() if len(points) > 0}
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 4.5), dpi=90)
    for name, points in sorted(curves.items()):
        xs, ys = zip(*points)
        axis.plot(xs, ys, label=name, linewidth=1.2)
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    buffer = _figure_png_bytes(figure)
    plt.close(figure)
    return write_atomic(path, lambda handle: handle.write(buffer))


def _figure_png_bytes(figure) -> bytes:
    import io

    stream = io.BytesIO()
    figure.savefig(stream, format="png")
    return stream.getvalue()


@dataclass
class PageSection:
    """One block of a page: a heading and images (paths relative to the page) with captions."""

    heading: str
    images: list[tuple[str, str]] = field(default_factory=list)


def write_page(
    page_path: str | Path,
    title: str,
    sections: Iterable[PageSection],
    plots: Sequence[str] = (),
    links: Sequence[tuple[str, str]] = (),
    refresh_seconds: int | None = None,
    image_width: int = 256,
) -> Path:
    """Write an HTML page with `plots` at the top and `sections` below, atomically.

    Images whose files do not exist are left out, and sections left empty are dropped, so the
    page never shows a broken image. `links` are (href, text) pairs shown under the title.
    """
    page_path = Path(page_path)
    root = page_path.parent

    def exists(relative: str) -> bool:
        return (root / relative).is_file()

    document = dominate.document(title=title)
    with document.head:
        tags.meta(charset="utf-8")
        if refresh_seconds:
            tags.meta(http_equiv="refresh", content=str(refresh_seconds))
        tags.style(
            "body{font-family:sans-serif;margin:16px;background:#fafafa}"
            "figure{display:inline-block;margin:4px 8px 12px 0;text-align:center}"
            "figcaption{font-size:13px;color:#333}"
            "img{border:1px solid #ccc;image-rendering:auto}"
            "h3{margin:18px 0 4px 0}"
        )
    with document:
        tags.h1(title)
        if links:
            with tags.p():
                for href, text in links:
                    tags.a(text, href=href)
                    tags.span(" ")
        for plot in plots:
            if exists(plot):
                tags.img(src=plot, style="max-width:100%;width:900px")
        for section in sections:
            present = [(src, caption) for src, caption in section.images if exists(src)]
            if not present:
                continue
            tags.h3(section.heading)
            with tags.div():
                for src, caption in present:
                    with tags.figure():
                        with tags.a(href=src):
                            tags.img(src=src, width=image_width)
                        tags.figcaption(caption)
    return write_text_atomic(document.render(), page_path)


def link_from_page(page_path: str | Path, href: str, text: str) -> bool:
    """Add a link to `href` under the title of an existing page written by `write_page`, once.

    Lets the page of one training point to the other's whichever ran first (the GAN's
    index.html is otherwise only rewritten while the GAN trains). Returns True if it was added.
    """
    page_path = Path(page_path)
    if not page_path.is_file():
        return False
    html = page_path.read_text(encoding="utf-8")
    if f'href="{href}"' in html or "</h1>" not in html:
        return False
    link = str(tags.p(tags.a(text, href=href)))
    write_text_atomic(html.replace("</h1>", "</h1>\n" + link, 1), page_path)
    return True
