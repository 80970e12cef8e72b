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

from common.training.files import write_atomic, write_text_atomic
from common.posedata.pose import LIMBS, NUM_KEYPOINTS

# One BGR-free RGB colour per limb and per keypoint, for skeleton overlays.
_LIMB_COLOURS = np.array(
    [(255, 80, 80), (255, 160, 60), (255, 230, 60), (80, 200, 255), (60, 140, 255), (120, 90, 255), (90, 230, 120), (60, 190, 90)],
    dtype=np.uint8,
)


def save_png(path: str | Path, image_rgb: np.ndarray) -> Path:
    """Write a uint8 (H, W, 3) RGB or (H, W) grey image as PNG, atomically (not fsynced: a
    picture is redrawn at the next display step; common.training.files)."""
    image = np.ascontiguousarray(image_rgb)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    return write_atomic(path, lambda handle: handle.write(encoded.tobytes()), durable=False)


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


SHORT_CURVE_POINTS = 30


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
        # Markers where a line would hide the points: a curve of one point draws nothing without them.
        axis.plot(xs, ys, label=name, linewidth=1.2, marker="o" if len(points) <= SHORT_CURVE_POINTS else None,
                  markersize=3)
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, ncol=2)
    figure.tight_layout()
    buffer = _figure_png_bytes(figure)
    plt.close(figure)
    return write_atomic(path, lambda handle: handle.write(buffer), durable=False)


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
    notes: Sequence[str] = (),
) -> Path:
    """Write an HTML page with `plots` at the top and `sections` below, atomically.

    Images whose files do not exist are left out, and sections left empty are dropped, so the
    page never shows a broken image. `links` are (href, text) pairs shown under the title,
    `notes` lines of text under them.
    """
    page_path = Path(page_path)
    root = page_path.parent

    def exists(relative: str) -> bool:
        return (root / relative).is_file()

    document = dominate.document(title=title)
    _page_head(document, refresh_seconds)
    with document:
        tags.h1(title)
        if links:
            tags.p([tags.span(tags.a(text, href=href), " ") for href, text in links])
        for note in notes:
            tags.p(note)
        for plot in filter(exists, plots):
            tags.img(src=plot, style="max-width:100%;width:900px")
        for section in sections:
            present = [(src, caption) for src, caption in section.images if exists(src)]
            if present:
                tags.h3(section.heading)
                tags.div([_figure(src, caption, image_width) for src, caption in present])
    return write_text_atomic(document.render(), page_path, durable=False)


def _page_head(document, refresh_seconds: int | None) -> None:
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


def _figure(src: str, caption: str, width: int):
    """An image linking to itself, with its caption."""
    return tags.figure(tags.a(tags.img(src=src, width=width), href=src), tags.figcaption(caption))


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
    write_text_atomic(html.replace("</h1>", "</h1>\n" + link, 1), page_path, durable=False)
    return True


class BoundedSeries:
    """A curve of (x, y) points kept in at most `capacity` points, however long the run.

    While there is room every point is kept; when full, neighbouring points are merged in
    pairs (their means), so memory, the saved state and the cost of plotting stay bounded and
    the curve keeps its shape at a coarser step. The full record is in the run's log.
    """

    def __init__(self, capacity: int = 2048, points: Sequence[Sequence[float]] = (), merge: int = 1):
        self.capacity = capacity
        self.points: list[tuple[float, float]] = [(float(x), float(y)) for x, y in points]
        self.merge = merge  # raw points per stored point of the newest bucket
        self._pending: list[tuple[float, float]] = []

    def add(self, x: float, y: float) -> None:
        self._pending.append((float(x), float(y)))
        if len(self._pending) < self.merge:
            return
        xs, ys = zip(*self._pending)
        self.points.append((sum(xs) / len(xs), sum(ys) / len(ys)))
        self._pending = []
        if len(self.points) >= self.capacity:
            pairs = zip(self.points[0::2], self.points[1::2])
            self.points = [((a[0] + b[0]) / 2, (a[1] + b[1]) / 2) for a, b in pairs]
            self.merge *= 2

    def state_dict(self) -> dict:
        return {"points": [list(p) for p in self.points], "merge": self.merge}

    @classmethod
    def from_state(cls, state: dict, capacity: int = 2048) -> "BoundedSeries":
        return cls(capacity, state.get("points", ()), int(state.get("merge", 1)))


@dataclass
class GalleryEntry:
    """One block of pictures on a page: `epoch`, `key` (its order, e.g. the iteration),
    a heading and (file name in images/, caption) pairs."""

    epoch: int
    key: int
    heading: str
    images: list[tuple[str, str]]
    archived: bool = False  # shown on an archive page: its pictures stay

    def as_list(self) -> list:
        return [self.epoch, self.key, self.heading, [list(image) for image in self.images], self.archived]

    @classmethod
    def from_list(cls, item: Sequence) -> "GalleryEntry":
        archived = bool(item[4]) if len(item) > 4 else False
        return cls(int(item[0]), int(item[1]), str(item[2]), [(str(a), str(b)) for a, b in item[3]], archived)

    def same_as(self, other: "GalleryEntry | None") -> bool:
        return other is not None and (self.epoch, self.key) == (other.epoch, other.key)


class Gallery:
    """The pictures a page shows, bounded in page size, saved state and disk use.

    The page (`web/<page_name>`) lists the `recent` newest entries, then one entry per epoch
    (the epoch's last) for the epochs of the current block of `epochs_per_page`; a completed
    block is written once to an archive page (`<stem>_epochs_<first>-<last>.html`, linked from
    the page) and leaves the state. Picture files of an entry that is neither recent nor its
    epoch's last are deleted as the page moves on. So writing the page costs the same on day 3
    as on minute 1, and the state holds at most `recent + epochs_per_page` entries.
    """

    def __init__(self, web_dir: str | Path, page_name: str, recent: int = 12, epochs_per_page: int = 25):
        self.web_dir = Path(web_dir)
        self.image_dir = self.web_dir / "images"
        self.page_name = page_name
        self.recent_limit = recent
        self.epochs_per_page = epochs_per_page
        self.recent: list[GalleryEntry] = []  # newest last
        self.epoch_last: dict[int, GalleryEntry] = {}  # epochs of the current block
        self.archived_blocks = 0

    def add(self, entry: GalleryEntry) -> None:
        """Add an entry (its pictures already saved in images/) and delete what drops out."""
        previous = self.epoch_last.get(entry.epoch)
        self.epoch_last[entry.epoch] = entry
        self.recent = [item for item in self.recent if not item.same_as(entry)] + [entry]
        if previous is not None and not previous.same_as(entry) and not any(previous.same_as(i) for i in self.recent):
            self._delete(previous)  # (a re-added entry of a continued run has the same files)
        while len(self.recent) > self.recent_limit:
            dropped = self.recent.pop(0)
            if not dropped.same_as(self.epoch_last.get(dropped.epoch)) and not dropped.archived:
                self._delete(dropped)
        self._archive_completed_blocks()

    def _delete(self, entry: GalleryEntry) -> None:
        for name, _ in entry.images:
            try:
                (self.image_dir / name).unlink()
            except OSError:
                pass

    def _block_range(self, block: int) -> tuple[int, int]:
        return block * self.epochs_per_page + 1, (block + 1) * self.epochs_per_page

    def _archive_completed_blocks(self) -> None:
        newest = max(self.epoch_last, default=0)
        while newest > self._block_range(self.archived_blocks)[1]:
            first, last = self._block_range(self.archived_blocks)
            entries = [self.epoch_last.pop(e) for e in sorted(self.epoch_last, reverse=True) if first <= e <= last]
            for entry in entries:
                entry.archived = True
            write_page(self.web_dir / self.archive_name(self.archived_blocks), f"epochs {first}-{last}",
                       [self._section(entry) for entry in entries], links=[(self.page_name, "back to the page")])
            self.archived_blocks += 1

    def archive_name(self, block: int) -> str:
        first, last = self._block_range(block)
        return f"{Path(self.page_name).stem}_epochs_{first:03d}-{last:03d}.html"

    @staticmethod
    def _section(entry: GalleryEntry) -> PageSection:
        return PageSection(entry.heading, [(f"images/{name}", caption) for name, caption in entry.images])

    def sections(self) -> list[PageSection]:
        """The page's sections: recent entries newest first, then earlier epochs' last entries."""
        recent = [self._section(entry) for entry in reversed(self.recent)]
        shown = {(entry.epoch, entry.key) for entry in self.recent}
        earlier = [self._section(self.epoch_last[epoch]) for epoch in sorted(self.epoch_last, reverse=True)
                   if (epoch, self.epoch_last[epoch].key) not in shown]
        return recent + earlier

    def archive_links(self) -> list[tuple[str, str]]:
        return [(self.archive_name(block), "epochs {}-{}".format(*self._block_range(block)))
                for block in reversed(range(self.archived_blocks))]

    def state_dict(self) -> dict:
        return {"recent": [entry.as_list() for entry in self.recent],
                "epoch_last": [entry.as_list() for entry in self.epoch_last.values()],
                "archived_blocks": self.archived_blocks}

    def load_state_dict(self, state: dict) -> None:
        self.recent = [GalleryEntry.from_list(item) for item in state.get("recent", [])]
        by_key = {(entry.epoch, entry.key): entry for entry in self.recent}
        self.epoch_last = {}
        for item in state.get("epoch_last", []):
            entry = GalleryEntry.from_list(item)
            self.epoch_last[entry.epoch] = by_key.get((entry.epoch, entry.key), entry)
        self.archived_blocks = int(state.get("archived_blocks", 0))
