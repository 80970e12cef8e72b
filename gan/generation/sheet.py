"""OUT/index.html: a contact sheet of generated frames beside their sources, skeletons drawn.

One row per output frame, in output order, for the first SHEET_ROWS (100) frames only, so the
page stays quick to open whatever the data set's size. Each row: the generated frame with the
pose it was rendered from, and the source frame (or, for `poses` without images, the belt on
black) with the source pose. Pictures are thumbnails at most THUMBNAIL_WIDTH px wide, in
`contact_sheet/`: `<row>.png` for generated frames, `source_<frame>.png` for sources.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from common.posedata.visualize import PageSection, draw_skeleton, save_png, write_page

SHEET_ROWS = 100
THUMBNAIL_WIDTH = 256
SHEET_DIR = "contact_sheet"
PAGE_NAME = "index.html"


def thumbnail(picture: np.ndarray, people: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) picture with `people` (P, 9, 2) in its pixels -> at most THUMBNAIL_WIDTH
    wide, skeletons drawn at the thumbnail's scale."""
    height, width = picture.shape[:2]
    scale = min(1.0, THUMBNAIL_WIDTH / width)
    if scale < 1.0:
        picture = cv2.resize(picture, (THUMBNAIL_WIDTH, max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    return draw_skeleton(picture, np.asarray(people, dtype=np.float64) * scale, thickness=1)


class ContactSheet:
    """The contact sheet of one command's output folder.

    Args:
        out: OUT; the page is OUT/index.html, pictures in OUT/contact_sheet/.
        title: the page's title.
        reference: the caption of the right-hand picture ('source' or 'pose').
        rows: how many output frames get a row (the first ones).
    """

    def __init__(self, out: Path, title: str, reference: str, rows: int = SHEET_ROWS):
        self.out = Path(out)
        self.title = title
        self.reference = reference
        self.rows = rows

    def shows(self, row: int) -> bool:
        return row < self.rows

    def generated_name(self, row: int) -> str:
        return f"{SHEET_DIR}/{row:04d}.png"

    def reference_name(self, frame: int) -> str:
        return f"{SHEET_DIR}/source_{frame:06d}.png"

    def add_generated(self, row: int, picture: np.ndarray, people: np.ndarray) -> None:
        """Row `row`'s generated frame (uint8 (H, W, 3)) with `people` (P, 9, 2) in its pixels."""
        save_png(self.out / self.generated_name(row), thumbnail(picture, people))

    def add_reference(self, frame: int, picture: np.ndarray, people: np.ndarray) -> None:
        """Source frame `frame`'s picture with its people, once for all its rows."""
        save_png(self.out / self.reference_name(frame), thumbnail(picture, people))

    def write(self, rows: Sequence[tuple[str, int, str]], total: int) -> Path:
        """The page: `rows` are (output image id, source frame index, source image id) of the
        first output frames; `total` is how many frames the command writes."""
        shown = rows[: self.rows]
        sections = [
            PageSection(f"{image_id}", [(self.generated_name(row), "generated"),
                                        (self.reference_name(frame), f"{self.reference} {source_id}")])
            for row, (image_id, frame, source_id) in enumerate(shown)
        ]
        note = (f"The first {len(shown)} of {total} generated frames (the sheet shows at most {self.rows}); "
                f"each beside its {self.reference}, with the pose drawn on both.")
        return write_page(self.out / PAGE_NAME, self.title, sections, notes=[note], image_width=THUMBNAIL_WIDTH)
