"""What the study runs: its data, its presets and its list of trainings.

Data (synthetic, each set from its own seed): a training set whose arms stay on the wheel and
in the lap; two held-out sets with new people and cabins: `narrow` (the same families) and
`wide` (every family). Runs, in order: the judge (NADS-Net on real frames, its own seed); a
NADS-Net on real frames for the GAN's guidance (another seed); the GAN on the training set
with that guidance, judged at every saved epoch; then NADS-Net under four conditions, each for
every seed, with the same number of steps and the same data order (the data order depends on
the run's seed only): `real-only` (--gan-fraction 0), `generated-none` (generated frames in
unchanged poses), `generated-slightly`, `generated-highly`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

NARROW_FAMILIES = ("wheel", "lap")
CONDITIONS = {
    "real-only": ("--gan-fraction", "0", "--arm-augment", "none"),
    "generated-none": ("--gan-fraction", "0.5", "--arm-augment", "none"),
    "generated-slightly": ("--gan-fraction", "0.5", "--arm-augment", "slightly"),
    "generated-highly": ("--gan-fraction", "0.5", "--arm-augment", "highly"),
}
JUDGE_SEED, GUIDANCE_SEED = 101, 102
TRAIN_SEED, NARROW_SEED, WIDE_SEED = 11, 12, 13


@dataclass(frozen=True)
class StudyPreset:
    """Sizes and settings of one study preset (flags are the training scripts' own)."""

    name: str
    train_frames: int
    held_out_frames: int
    frame_size: tuple[int, int]
    seeds: int
    nadsnet_flags: tuple[str, ...]  # every NADS-Net run (judge, guidance, conditions)
    reference_epochs: int  # judge and guidance
    condition_epochs: int
    gan_flags: tuple[str, ...]
    max_iterations: int | None = None  # --smoke: every training cut to this many iterations


PRESETS = {
    # About 80 minutes on a 2-core CPU: the cpu presets of both scripts on 600 frames. NADS-Net's
    # schedule and seatbelt weight are pinned to what README's study results were measured with
    # (the quick start's preset has since moved to a cosine schedule and seatbelt weight 300).
    "cpu": StudyPreset(
        name="cpu", train_frames=600, held_out_frames=80, frame_size=(320, 180), seeds=2,
        nadsnet_flags=("--preset", "cpu", "--lr-schedule", "metric-based", "--seatbelt-weight", "100",
                       "--num-workers", "2"),
        reference_epochs=3, condition_epochs=3,
        gan_flags=("--preset", "cpu", "--niter", "2", "--niter-decay", "0", "--num-workers", "2",
                   "--save-epoch-freq", "1")),
    # One GPU: 384 px and the seed's networks (both scripts' seed presets), 3 seeds.
    "gpu": StudyPreset(
        name="gpu", train_frames=2000, held_out_frames=200, frame_size=(640, 360), seeds=3,
        nadsnet_flags=("--preset", "seed", "--optimizer", "adamw", "--lr", "3e-4", "--weight-decay", "1e-2",
                       "--batch-size", "8", "--num-workers", "8"),
        reference_epochs=10, condition_epochs=10,
        gan_flags=("--preset", "seed", "--niter", "5", "--niter-decay", "5", "--batch-size", "4",
                   "--num-workers", "8", "--save-epoch-freq", "1", "--print-freq", "50", "--display-freq", "200")),
}


def smoke(preset: StudyPreset) -> StudyPreset:
    """The preset's whole pipeline at 64 px with every training cut to two iterations: one epoch
    of 4 frames in batches of 2, so that every run validates and saves (tests)."""
    tiny = ("--image-size", "64", "--num-workers", "0", "--batch-size", "2")
    return replace(preset, train_frames=4, held_out_frames=3, frame_size=(160, 96), max_iterations=2,
                   reference_epochs=1, condition_epochs=1,
                   nadsnet_flags=(*preset.nadsnet_flags, *tiny, "--fpn-channels", "16", "--head-channels", "8"),
                   gan_flags=(*preset.gan_flags, *tiny, "--ngf", "4", "--ndf", "4", "--spade-hidden", "8",
                              "--niter", "1", "--niter-decay", "0"))


@dataclass(frozen=True)
class DataSet:
    """A folder in the seed's layout (its validation file is the held-out set)."""

    root: Path

    def flags(self, split: str) -> tuple[str, ...]:
        """The data flags of the training ('train') or validation ('valid') side."""
        if split == "train":
            return ("--train-annotations", str(self.root / "Train_keypoint_Annotation_sample.json"),
                    "--images-dir", str(self.root / "Raw_Images"), "--masks-dir", str(self.root / "Seatbelt_Mask"))
        return ("--valid-annotations", str(self.annotations), "--valid-images-dir", str(self.root / "Raw_Images"),
                "--valid-masks-dir", str(self.root / "Seatbelt_Mask"))

    @property
    def annotations(self) -> Path:
        return self.root / "Valid_keypoint_Annotation_sample.json"


@dataclass(frozen=True)
class Training:
    """One training of the study: its name, script, folder, flags and planned iterations."""

    name: str
    script: str  # "gan" or "nadsnet"
    directory: Path
    argv: tuple[str, ...]
    iterations: int
    condition: str | None = None
    seed: int | None = None
    epochs: int = 1
    tags: dict = field(default_factory=dict)


def trainings(preset: StudyPreset, out: Path, train: DataSet, narrow: DataSet, wide: DataSet) -> list[Training]:
    """The study's trainings, in the order they run."""
    runs_dir = out / "runs"
    per_epoch = preset.train_frames // _batch(preset.nadsnet_flags)
    data = (*train.flags("train"), *narrow.flags("valid"))
    cut = ("--max-iterations", str(preset.max_iterations)) if preset.max_iterations else ()

    def nadsnet(name: str, seed: int, epochs: int, extra: tuple[str, ...], condition: str | None = None) -> Training:
        iterations = preset.max_iterations or per_epoch * epochs
        argv = (*preset.nadsnet_flags, *data, "--seed", str(seed), "--epochs", str(epochs), *cut, *extra,
                "--checkpoints-dir", str(runs_dir / name))
        return Training(name, "nadsnet", runs_dir / name, argv, iterations, condition, seed, epochs)

    judge = nadsnet("judge", JUDGE_SEED, preset.reference_epochs, CONDITIONS["real-only"])
    guidance = nadsnet("guidance", GUIDANCE_SEED, preset.reference_epochs, CONDITIONS["real-only"])
    gan_dir = runs_dir / "gan"
    gan_argv = (*preset.gan_flags, *train.flags("train"), *wide.flags("valid"), *cut, "--seed", "0",
                "--nadsnet-weights", str(guidance.directory / "nadsnet_best.pth"),
                "--judge-weights", str(judge.directory / "nadsnet_best.pth"), "--checkpoints-dir", str(gan_dir))
    gan_iterations = preset.max_iterations or (preset.train_frames // _batch(preset.gan_flags)) * _epochs(preset.gan_flags)
    gan = Training("gan", "gan", gan_dir, gan_argv, gan_iterations, epochs=_epochs(preset.gan_flags))
    runs = [judge, guidance, gan]
    for condition, flags in CONDITIONS.items():
        generator = ("--generator-weights", str(gan_dir / "latest_net_G.pth")) if condition != "real-only" else ()
        for seed in range(1, preset.seeds + 1):
            runs.append(nadsnet(f"{condition}-seed{seed}", seed, preset.condition_epochs, (*flags, *generator),
                                condition))
    return runs


def _flag(flags: tuple[str, ...], name: str, default: str) -> str:
    """The last value given for `name` in `flags` (later flags override earlier ones)."""
    values = [flags[i + 1] for i, flag in enumerate(flags[:-1]) if flag == name]
    return values[-1] if values else default


def _batch(flags: tuple[str, ...]) -> int:
    return int(_flag(flags, "--batch-size", "4"))


def _epochs(flags: tuple[str, ...]) -> int:
    return int(_flag(flags, "--niter", "1")) + int(_flag(flags, "--niter-decay", "0"))
