"""The perfect generator: a synthetic training set's own frames re-rendered in changed arm poses.

write_oracle_pool(source_set, poses_file, out) reads the poses of a `generate.py dataset`
folder (its annotation file: frame <source id>_gen<k> per changed pose, each Person record
naming its `source_image_id`, people in the source frame's order, keypoints in source pixels)
and draws every such frame again with the renderer that drew the source frame, from the same
random stream, with only the changed elbows and wrists moved (render_frame's arm_overrides):
the same person, cabin, camera, lighting and belt. Each oracle frame gets its own visibility
flags and seatbelt mask, drawn for the moved arms; a GAN frame of the same pose keeps the real
frame's mask and flags (a moved arm may now cover the belt, or a joint may now be hidden,
without its labels saying so).

The pool is written in the seed's layout (Raw_Images/, Seatbelt_Mask/, the annotation file
named like generate.py's, each Person record with its `source_image_id`), into a temporary
sibling folder renamed into place when complete: a folder with the final name is whole.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from common.posedata.dataset import PERSON_LABEL, read_annotation_list
from common.errors import DataError
from common.posedata.pose import NUM_KEYPOINTS
from common.synthetic.files import SET_RECORD, write_frame_images, frame_annotations, write_annotation_file
from common.synthetic.frame import ARM_OVERRIDE_JOINTS, render_frame
from common.synthetic.layout import SPLITS

# A joint counts as moved when it is this far (source pixels) from the source frame's label:
# labels are rounded to 0.1 px, generate.py writes moved joints to 0.01 px.
MOVED_TOLERANCE_PX = 0.06
POOL_ANNOTATIONS = SPLITS[0][1]  # the file name generate.py gives a pool made from a training set
_FRAME_ID = re.compile(r"^(?P<split>[a-z]+)/frame_(?P<index>\d+)$")


def _person_records(annotation_file: Path) -> dict[str, list[dict]]:
    """image id -> its Person records, in file order."""
    by_image: dict[str, list[dict]] = {}
    for annotation in read_annotation_list(annotation_file):
        if isinstance(annotation, dict) and annotation.get("label") == PERSON_LABEL:
            by_image.setdefault(str(annotation["image_id"]).replace("\\", "/").strip("/"), []).append(annotation)
    return by_image


def arm_overrides(source_people: list[dict], posed_people: list[dict], where: str) -> dict[int, np.ndarray]:
    """{person index: (4, 2) source pixels of the elbows and wrists the pose moved, NaN = keep}.

    source_people, posed_people: the Person records of a source frame and of one of its posed
    copies (same people, same order); a joint the pose leaves missing (v = 0) stays as drawn."""
    if len(source_people) != len(posed_people):
        raise DataError(f"{where}: {len(posed_people)} people, its source frame has {len(source_people)}")
    overrides = {}
    for person, (source, posed) in enumerate(zip(source_people, posed_people)):
        before = np.asarray(source["keypoints"], np.float64).reshape(NUM_KEYPOINTS, 3)[list(ARM_OVERRIDE_JOINTS)]
        after = np.asarray(posed["keypoints"], np.float64).reshape(NUM_KEYPOINTS, 3)[list(ARM_OVERRIDE_JOINTS)]
        moved = (after[:, 2] > 0) & (np.abs(after[:, :2] - before[:, :2]).max(axis=1) > MOVED_TOLERANCE_PX)
        if moved.any():
            overrides[person] = np.where(moved[:, None], after[:, :2], np.nan)
    return overrides


def _source_frame(source_id: str, record: dict, where: str) -> tuple[int, int, dict]:
    """(split index, frame index, the split's record) of a frame id such as 'train/frame_000012'."""
    match = _FRAME_ID.match(source_id)
    names = [split for split, _ in SPLITS]
    if match is None or match["split"] not in names:
        raise DataError(f"{where}: source_image_id {source_id!r} is not a synthetic frame id (split/frame_NNNNNN)")
    split_index = names.index(match["split"])
    return split_index, int(match["index"]), record["splits"][match["split"]]


def write_oracle_pool(source_set: Path, poses_file: Path, out: Path,
                      on_frame: Callable[[], object] | None = None) -> Path:
    """Render the oracle pool of `poses_file` (a generate.py annotation file) from `source_set`
    (a folder write_dataset made, with its SET_RECORD) into `out`; returns `out`.

    DataError (one line naming the file and record) for a set without its record, an unknown
    source frame or a posed frame whose people differ from its source's."""
    source_set, poses_file, out = Path(source_set), Path(poses_file), Path(out)
    record_file = source_set / SET_RECORD
    if not record_file.is_file():
        raise DataError(f"{record_file}: missing; the oracle re-renders sets written by common.synthetic (version 2 on)")
    record = json.loads(record_file.read_text(encoding="utf-8"))
    sources = {}
    for split, json_name in SPLITS:
        if record["splits"][split]["frames"]:
            sources.update(_person_records(source_set / json_name))
    temporary = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        temporary.mkdir(parents=True)
        annotations = []
        for image_id, posed in _person_records(poses_file).items():
            where = f"{poses_file}: frame {image_id!r}"
            source_id = str(posed[0].get("source_image_id", "")).replace("\\", "/").strip("/")
            if source_id not in sources:
                raise DataError(f"{where}: source_image_id {source_id!r} is not a frame of {source_set}")
            split_index, frame_index, split = _source_frame(source_id, record, where)
            frame = render_frame(split["seed"], split_index, frame_index, record["width"], record["height"],
                                 split["arm_poses"], arm_overrides(sources[source_id], posed, where))
            frame.image_id = image_id
            write_frame_images(temporary, frame)
            annotations += [dict(a, source_image_id=source_id) for a in frame_annotations(frame)
                            if a["label"] == PERSON_LABEL]
            if on_frame is not None:
                on_frame()
        write_annotation_file(temporary / POOL_ANNOTATIONS, annotations)
        shutil.rmtree(out, ignore_errors=True)
        os.rename(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return out
