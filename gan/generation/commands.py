"""The two commands of generate.py, top to bottom: read, plan, check, render and write, finish.

A command becomes a Plan: the output frames (Jobs: an id, the source frame, the pose to render)
and the output annotation file's records, all decided before the first frame is rendered, from
the inputs alone. The frames are then rendered in batches of --batch-size, in plan order, and
written with their masks and contact sheet pictures; after each batch the progress record says
how many are done (gan.generation.output), so a rerun of the same command continues after the
last complete batch, and the annotation file is written at the end.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import numpy as np
from tqdm import tqdm

from common.posedata.augment import arm_augment
from common.training.checkpoints import config_path_for
from common.training.cli import run_script
from common.posedata.dataset import PERSON_LABEL
from common.errors import DataError, OptionError
from common.models.factory import build_generator, describe_config, load_generator
from common.models.normalization import normalised_map_areas
from common.models.rendering import occluded_joints_of
from common.posedata.pose import SEMANTIC_CHANNELS
from common.synthetic.layout import RAW_IMAGES_DIR, SEATBELT_MASK_DIR
from common.posedata.visualize import save_png
from gan.generation.frames import Frames, generated_keypoint_values, read_annotated_frames, read_pose_frames
from gan.generation.options import PROG, parse_options
from gan.generation.output import FINISHED, OutputFolder, command_record, write_annotation_file
from gan.generation.rendering import FrameRenderer, to_frame_size
from gan.generation.sheet import ContactSheet

COPY_SUFFIX = "_gen"  # copy k of source frame <id> is <id>_gen<k>


@dataclass(frozen=True)
class Job:
    """One output frame: its id in OUT, the index of its source frame, which copy of that frame
    it is (0 for `poses`), and the pose it is rendered in, float32 (P, 9, 2) input pixels at S
    (NaN = missing)."""

    image_id: str
    frame: int
    copy: int
    keypoints: np.ndarray


@dataclass
class Plan:
    """What a command writes: `jobs` in order, the output annotation file's `annotations` (in
    order) and its `info`; with `include_source` the source files of every frame are copied too."""

    command: str
    frames: Frames
    jobs: list[Job]
    annotations: list[dict]
    info: dict = field(default_factory=dict)
    include_source: bool = False


# --------------------------------------------------------------------------- plans


def generated_annotations(frames: Frames, job: Job) -> list[dict]:
    """The Person annotations of one generated frame: the source's records with the changed
    keypoints rewritten (gan.generation.frames.generated_keypoint_values), plus source_image_id."""
    width, height = frames.size_of(job.frame)
    source_id = frames.image_ids[job.frame]
    return [
        {"image_id": job.image_id, "label": PERSON_LABEL,
         "keypoints": generated_keypoint_values(record["keypoints"], original, augmented, width, height,
                                                frames.image_size),
         "source_image_id": source_id}
        for record, original, augmented in zip(frames.person_records[job.frame], frames.keypoints[job.frame], job.keypoints)
    ]


def dataset_plan(frames: Frames, mode: str, copies: int, seed: int, include_source: bool,
                 library: np.ndarray | None = None) -> Plan:
    """`copies` frames per source frame in arm-augmented poses (front-row people only, as in the seed;
    `library`: the arms 'library' draws, common.posedata.pose_library).
    Copy k of frame i draws from np.random.default_rng([seed, i, k]), so a copy's pose depends
    on nothing else (not on the batch size, nor on which frames a resumed run still renders)."""
    jobs, annotations = [], []
    for index, source_id in enumerate(frames.image_ids):
        if include_source:
            annotations += [dict(record, image_id=source_id, source_image_id=source_id)
                            for record in frames.person_records[index] + frames.other_records[index]]
        for copy in range(copies):
            rng = np.random.default_rng([seed, index, copy])
            width, height = frames.size_of(index)
            pose = arm_augment(frames.keypoints[index], mode, rng, image_size=frames.image_size,
                               pixel_aspect=width / height, library=library).astype(np.float32)
            jobs.append(Job(f"{source_id}{COPY_SUFFIX}{copy}", index, copy, pose))
            annotations += generated_annotations(frames, jobs[-1])
    if include_source:
        sources = set(frames.image_ids)
        clash = next((job for job in jobs if job.image_id in sources), None)
        if clash is not None:
            raise DataError(f"{frames.annotation_file}: image id {clash.image_id!r} is a source frame and also copy "
                            f"{clash.copy} of {frames.image_ids[clash.frame]!r}; leave out --include-source or "
                            "rename the source frame")
    return Plan("dataset", frames, jobs, annotations, include_source=include_source)


def poses_plan(frames: Frames) -> Plan:
    """One frame per source frame, in the poses as they are; annotations copied with source_image_id."""
    jobs = [Job(image_id, index, 0, frames.keypoints[index]) for index, image_id in enumerate(frames.image_ids)]
    annotations = [dict(record, image_id=image_id, source_image_id=image_id)
                   for image_id, records in zip(frames.image_ids, frames.person_records) for record in records]
    return Plan("poses", frames, jobs, annotations)


def frames_left_unchanged(plan: Plan) -> int:
    """How many source frames got no changed pose in any copy (no front-row person, or 'none')."""
    changed = {job.frame for job in plan.jobs
               if not np.array_equal(job.keypoints, plan.frames.keypoints[job.frame], equal_nan=True)}
    return len(plan.frames) - len(changed)


# --------------------------------------------------------------------------- checks


def check_batch_statistics(options: argparse.Namespace, config: dict, frames: int) -> None:
    """With --batch-statistics every batch (the last, smaller one too) must give the generator's
    batch norms more than one value per channel (OptionError otherwise)."""
    if not options.batch_statistics:
        return
    size = int(config["crop_size"])
    area = normalised_map_areas(lambda: build_generator(config), (SEMANTIC_CHANNELS, size, size))["batch_norm"]
    fewest = min(options.batch_size, frames - (frames - 1) // options.batch_size * options.batch_size)
    if area and fewest * area <= 1:
        raise OptionError(f"--batch-statistics with --batch-size {options.batch_size}",
                          f"a batch of {fewest} frame(s) gives the generator's batch norms one value per channel at "
                          f"{size} px; choose a --batch-size that leaves at least 2 frames in every batch of these "
                          f"{frames}, or leave out --batch-statistics")


# --------------------------------------------------------------------------- rendering and writing


def write_batch(plan: Plan, batch: Sequence[Job], first_row: int, renderer: FrameRenderer, sheet: ContactSheet,
                out: Path) -> None:
    """Render one batch and write each frame, its mask, its source files (--include-source) and
    its contact sheet pictures."""
    frames = plan.frames
    belts = {index: frames.belt_at_input(index) for index in dict.fromkeys(job.frame for job in batch)}
    occluded = None if frames.occluded is None else [frames.occluded[job.frame] for job in batch]
    rendered = renderer.render([job.keypoints for job in batch], np.stack([belts[job.frame] for job in batch]), occluded)
    for row, (job, square) in enumerate(zip(batch, rendered), start=first_row):
        picture = to_frame_size(square, *frames.size_of(job.frame))
        save_png(out / RAW_IMAGES_DIR / f"{job.image_id}.png", picture)
        frames.write_mask(job.frame, out / SEATBELT_MASK_DIR / job.image_id)
        if plan.include_source and job.copy == 0:
            frames.copy_source(job.frame, out / RAW_IMAGES_DIR, out / SEATBELT_MASK_DIR)
        if sheet.shows(row):
            sheet.add_generated(row, picture, frames.to_source_pixels(job.frame, job.keypoints))
            if job.copy == 0:
                people = frames.to_source_pixels(job.frame, frames.keypoints[job.frame])
                sheet.add_reference(job.frame, frames.picture(job.frame), people)


def write_plan(plan: Plan, folder: OutputFolder, renderer: FrameRenderer, batch_size: int) -> None:
    """Render and write every job not done yet, batch by batch, then the annotation file, the
    page and the finished mark."""
    out, jobs = folder.out, plan.jobs
    reference = "source" if plan.frames.image_paths is not None else "pose"
    sheet = ContactSheet(out, f"generate.py {plan.command}: {plan.frames.annotation_file.name}", reference)
    rows = [(job.image_id, job.frame, plan.frames.image_ids[job.frame]) for job in jobs[: sheet.rows]]
    done = folder.start(len(jobs))
    with tqdm(total=len(jobs), initial=done, unit="frame", desc=f"generate {plan.command}", dynamic_ncols=True) as bar:
        for first in range(done, len(jobs), batch_size):
            batch = jobs[first: first + batch_size]
            write_batch(plan, batch, first, renderer, sheet, out)
            folder.record(first + len(batch))
            if sheet.shows(first):
                sheet.write(rows, len(jobs))  # the first rows can be looked at while the run goes on
            bar.update(len(batch))
    write_annotation_file(out / plan.frames.annotation_file.name, plan.annotations, plan.info)
    sheet.write(rows, len(jobs))
    folder.finish()


# --------------------------------------------------------------------------- the commands


def read_frames(options: argparse.Namespace, image_size: int) -> Frames:
    """The command's source frames (DataError for anything wrong with them)."""
    log = SimpleNamespace(info=print)  # validated_dataset's warnings (e.g. keypoints beyond the frame)
    if options.command == "dataset":
        return read_annotated_frames(options.annotations, options.images_dir, options.masks_dir, image_size, log)
    if options.images_dir is not None or options.masks_dir is not None:
        return read_annotated_frames(options.annotations, options.images_dir, options.masks_dir, image_size, log,
                                     belt=options.belt)
    frame_size = options.frame_size or (image_size, image_size)
    return read_pose_frames(options.annotations, frame_size, image_size, options.belt)


def arm_pose_library(mode: str, library_file: Path | None) -> np.ndarray | None:
    """The arms --arm-augment library draws (read from --arm-pose-library), None for another
    mode; OptionError when the mode and the file do not go together."""
    if (mode == "library") != (library_file is not None):
        raise OptionError("--arm-pose-library", "goes with --arm-augment library, and only with it")
    if library_file is None:
        return None
    from common.posedata.pose_library import load_arm_pose_library

    return load_arm_pose_library(library_file)


def make_plan(options: argparse.Namespace, frames: Frames, config: dict) -> Plan:
    """The command's Plan, with the info the annotation file records."""
    info = {"generated_by": f"{PROG} {options.command}", "generator": str(options.generator),
            "generator_config": describe_config(config), "occluded_joints": occluded_joints(options, config),
            "normalisation": "batch statistics" if options.batch_statistics else "eval mode (stored statistics)",
            "source_annotations": str(options.annotations)}
    if options.command == "dataset":
        plan = dataset_plan(frames, options.arm_augment, options.copies, options.seed, options.include_source,
                            arm_pose_library(options.arm_augment, options.arm_pose_library))
        info.update(arm_augment=options.arm_augment, copies=options.copies, seed=options.seed,
                    include_source=options.include_source)
        unchanged = frames_left_unchanged(plan)
        if unchanged and options.arm_augment != "none":
            print(f"note: {unchanged} of {len(frames)} frames keep the source pose in every copy (the arm "
                  "augmentation changes only front-row people: torso above 70 px at 384)")
    else:
        plan = poses_plan(frames)
        info.update(belt="mask" if options.masks_dir else options.belt)
    plan.info = info
    return plan


def occluded_joints(options: argparse.Namespace, config: dict) -> str:
    """--occluded-joints, or the generator's own choice (its configuration) when not given."""
    return options.occluded_joints or occluded_joints_of(config)


def output_folder(options: argparse.Namespace) -> OutputFolder:
    """OUT with this command's record: every option the files depend on (the device and --amp
    too: other kernels, other last bits), and the input files' contents."""
    shaping = {key: value for key, value in vars(options).items() if key not in ("out", "overwrite", "command")}
    shaping["device"] = str(options.device)
    if not options.batch_statistics:
        del shaping["batch_size"]  # in eval mode the files do not depend on it: a rerun may change it
    files = {"generator": options.generator, "generator_config": config_path_for(options.generator),
             "annotations": options.annotations}
    if getattr(options, "arm_pose_library", None) is not None:
        files["arm_pose_library"] = options.arm_pose_library
    inputs = [options.generator, options.annotations, options.images_dir, options.masks_dir]
    return OutputFolder(options.out, command_record(options.command, shaping, files), options.overwrite, inputs)


def generate(options: argparse.Namespace, messages: Sequence[str] = ()) -> dict:
    """Run one command; returns {'frames', 'written', 'seconds'}. Everything that can be refused
    (options, the generator, the data, OUT) is refused before the first file is written."""
    started = time.perf_counter()
    generator, config = load_generator(options.generator, options.device)
    size = int(config["crop_size"])
    frames = read_frames(options, size)
    plan = make_plan(options, frames, config)
    check_batch_statistics(options, config, len(plan.jobs))
    folder = output_folder(options)
    if folder.check() == FINISHED:
        print(f"{options.out} already holds the complete output of this command ({len(plan.jobs)} frames); nothing to do")
        return {"frames": len(plan.jobs), "written": 0, "seconds": time.perf_counter() - started}
    print(f"generator: {options.generator} ({describe_config(config)}; {plan.info['normalisation']}) on {options.device}; "
          f"{len(frames)} source frames -> {len(plan.jobs)} frames")
    renderer = FrameRenderer(generator, size, options.device, options.batch_statistics, options.amp,
                             occluded_joints(options, config))
    try:
        write_plan(plan, folder, renderer, options.batch_size)
    finally:
        folder.release()
    seconds = time.perf_counter() - started
    print(f"wrote {len(plan.jobs)} frames to {options.out}/{RAW_IMAGES_DIR}, masks to {options.out}/{SEATBELT_MASK_DIR}, "
          f"annotations to {options.out / frames.annotation_file.name}; contact sheet {options.out / 'index.html'} "
          f"({seconds:.1f} s)")
    return {"frames": len(plan.jobs), "written": len(plan.jobs), "seconds": seconds}


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; exit codes (common.training.cli): 0 done, 1 a bad file or folder (one line), 2 bad options."""
    return run_script(PROG, parse_options, generate, argv)
