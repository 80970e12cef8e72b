"""HTML pages: only existing images are listed, and the two trainings' pages link each other."""

from __future__ import annotations

import numpy as np

from common.posedata.visualize import PageSection, link_from_page, save_png, write_page


def test_page_lists_only_existing_images_and_links_are_added_once(tmp_path):
    save_png(tmp_path / "images" / "a.png", np.zeros((8, 8, 3), np.uint8))
    page = write_page(
        tmp_path / "index.html",
        "GAN training",
        [PageSection("step 2", [("images/a.png", "real"), ("images/missing.png", "fake")]), PageSection("empty", [("images/gone.png", "x")])],
        refresh_seconds=5,
    )
    html = page.read_text()
    assert 'src="images/a.png"' in html and "missing.png" not in html and "empty" not in html
    assert 'http-equiv="refresh"' in html and "<figcaption>real</figcaption>" in html

    assert link_from_page(page, "nadsnet.html", "NADS-Net training pictures")
    assert not link_from_page(page, "nadsnet.html", "NADS-Net training pictures")
    assert page.read_text().count('href="nadsnet.html"') == 1
    assert not link_from_page(tmp_path / "absent.html", "nadsnet.html", "x")
