"""What the study runs: its data, its presets, its conditions and its list of steps.

Data (synthetic, every set from its own seed, all seeds drawn from --data-seed): a small
training set whose arms stay on the wheel and in the lap, with a validation split of the same
kind (the training side: what per-epoch validation and any choice of settings may look at);
three held-out sets, never looked at before the final evaluation: `narrow` (the training
families), `wide` (every family; its arms in families absent from training are the
`new_pose_arms` subset); the judge's own set of every family; and the pose library, a set of
every family whose front-row arms are the poses the augmentation draws (`--arm-augment
library`): what a practitioner takes from a pose collection of the activities in a car, never
the frames of the held-out sets or the judge's.

Steps, in order: the judge (NADS-Net on its own frames, longer than any condition, never used
as guidance); the guidance network (NADS-Net on the training set); the GAN on the training
set with that guidance; frames rendered once ahead of the conditions and shared by every seed
(`pools`: the GAN's in new arm poses and in unchanged poses, and the oracle's, the synthetic
renderer's own frames in exactly the GAN's new poses); then NADS-Net under each condition for
each of its seeds, all with the same number of real samples per step, steps and data order.
`StudySteps` builds those steps; the exploration stage (study.explore) builds its own with it,
on the training side's sets alone (`training_sets`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from common.models.factory import LATEST_GENERATOR
from nadsnet_pvt.run_files import BEST_WEIGHTS

NARROW_FAMILIES = ("wheel", "lap")
BASELINE = "real-only"
JUDGE_SEED, GUIDANCE_SEED = 101, 102
POOL_AUGMENT = "library"  # the arm augmentation of the pools' new poses: arms of the pose library's people


# Each set's seed is 1000 x --data-seed + its offset: the same --data-seed, the same sets.
SET_SEED_OFFSETS = {"train": 11, "train_valid": 14, "narrow": 12, "wide": 13, "judge": 15, "judge_valid": 16,
                    "poses": 17, "explore_valid": 18}  # explore_valid: the exploration stage's (study.explore)


def set_seed(data_seed: int, name: str) -> int:
    """The seed of set `name` (a key of SET_SEED_OFFSETS) under `data_seed`."""
    return 1000 * data_seed + SET_SEED_OFFSETS[name]


@dataclass(frozen=True)
class Condition:
    """One way of training NADS-Net: its flags, the frames rendered ahead it draws from (a pool
    name, or None), whether the generator runs at every step, and which of the preset's seeds."""

    name: str
    flags: tuple[str, ...]
    pool: str | None = None
    online_generator: bool = False
    main: bool = False  # run with the preset's main_seeds (else other_seeds)
    summary: str = ""
    by_default: bool = True  # in a study without --conditions (else only when named)


def conditions(main_dose: float = 1.0, dose_fractions: tuple[float, ...] = (0.25, 0.5)) -> list[Condition]:
    """The study's conditions; `generated` against `real-only` is the primary comparison.
    `main_dose` is the generated share (of a batch's real count, added) of oracle, generated,
    generated-unchanged and generated-online; `dose_fractions` the other shares of generated."""
    add = ("--generated", "add")
    main = ("--gan-fraction", f"{main_dose:g}")
    share = f"{main_dose:.0%} of a batch's real count"
    found = [
        Condition(BASELINE, ("--gan-fraction", "0"), main=True, summary="real frames only"),
        Condition("oracle", (*add, *main), pool="oracle", main=True,
                  summary=f"the perfect generator: the synthetic renderer's own frames in the new poses, {share} added"),
        Condition("generated", (*add, *main), pool="gan", main=True,
                  summary=f"the GAN's frames in new poses, {share} added (the primary comparison)"),
        Condition("generated-unchanged", (*add, *main), pool="gan-unchanged",
                  summary="the GAN's frames in the training poses as they are, added: the cost (or the gain) of more "
                  "frames per step that show nothing new"),
        *(Condition(f"generated-{dose:g}", (*add, "--gan-fraction", f"{dose:g}"), pool="gan",
                    summary=f"as generated, with {dose:.0%} of a batch's real count added") for dose in dose_fractions),
        # Left out of the default plan, to shorten the cpu study: the pool's
        # lever, measured once (docs/study.md), and run again with --conditions.
        Condition("generated-online", (*add, *main, "--arm-augment", POOL_AUGMENT, "--generator-eval"),
                  online_generator=True, by_default=False,
                  summary="as generated, but the GAN renders a new pose drawn at every step instead of one of the "
                  "pool's: whether rendering once ahead changes the recipe"),
        Condition("seed-recipe", ("--generated", "replace", "--gan-fraction", "0.5", "--arm-augment", "highly"),
                  online_generator=True,
                  summary="the seed's recipe: half of every batch replaced by the GAN rendering 'highly' arms each step"),
        Condition("geometric", ("--gan-fraction", "0", "--smallest-scale", "0.6"),
                  summary="conventional augmentation instead: each sample shrunk to 0.6-1.0 per axis and placed anywhere"),
    ]
    return found


@dataclass(frozen=True)
class StudyPreset:
    """Sizes and settings of one study preset (flags are the training scripts' own)."""

    name: str
    train_frames: int
    train_valid_frames: int
    held_out_frames: int
    judge_frames: int
    pose_library_frames: int  # frames of the pose library's set (its front-row arms are drawn)
    frame_size: tuple[int, int]
    main_seeds: int
    other_seeds: int
    variants: int  # frames rendered ahead per training frame (new poses)
    amp: str  # every NADS-Net and GAN run's --amp: 'auto' is resolved once per study (study.__main__)
    nadsnet_flags: tuple[str, ...]  # every NADS-Net run (judge, guidance, conditions)
    condition_epochs: int
    judge_epochs: int
    gan_flags: tuple[str, ...]
    max_iterations: int | None = None  # smoke: every training cut to this many iterations
    main_dose: float = 1.0  # generated frames added per real one in the main conditions
    dose_fractions: tuple[float, ...] = (0.25, 0.5)  # generated's other shares (the dose-response)


PRESETS = {
    # 2-core CPU: the quick start's NADS-Net (128 px, narrow FPN) on 100 frames, long enough
    # (30 epochs, a cosine schedule settling at the end) that real-only overfits, at half the
    # quick start's peak lr so that seeds do not scatter, with as many generated frames added
    # as real ones, in bfloat16 where the CPU computes it natively (docs/study.md, "Where the
    # study stands": each choice made on --data-seed 0); no per-run web page (it redraws its
    # curves every epoch; the study draws its own page); the quick start's GAN for 12 epochs
    # of those frames.
    "cpu": StudyPreset(
        name="cpu", train_frames=100, train_valid_frames=40, held_out_frames=300, judge_frames=400,
        pose_library_frames=400, frame_size=(320, 180), main_seeds=5, other_seeds=3, variants=8, amp="auto",
        nadsnet_flags=("--preset", "cpu", "--num-workers", "1", "--batch-size", "4", "--lr", "5e-4",
                       "--no-html"),
        condition_epochs=30, judge_epochs=10,
        gan_flags=("--preset", "cpu", "--niter", "12", "--niter-decay", "0", "--num-workers", "1",
                   "--save-epoch-freq", "4", "--display-freq", "100")),
    # One GPU: 384 px and the seed's networks (both scripts' seed presets, AdamW for NADS-Net).
    "gpu": StudyPreset(
        name="gpu", train_frames=400, train_valid_frames=100, held_out_frames=400, judge_frames=2000,
        pose_library_frames=2000, frame_size=(640, 360), main_seeds=5, other_seeds=3, variants=8, amp="off",
        nadsnet_flags=("--preset", "seed", "--optimizer", "adamw", "--lr", "3e-4", "--weight-decay", "1e-2",
                       "--lr-schedule", "cosine", "--batch-size", "8", "--num-workers", "8"),
        condition_epochs=40, judge_epochs=30,
        gan_flags=("--preset", "seed", "--niter", "20", "--niter-decay", "20", "--batch-size", "4",
                   "--num-workers", "8", "--save-epoch-freq", "5", "--print-freq", "50", "--display-freq", "200")),
}


def smoke(preset: StudyPreset) -> StudyPreset:
    """The preset's whole pipeline at 64 px with every training cut to two iterations or one
    epoch of 4 frames, 2 main seeds and 1 other, so that every step runs, validates and saves (tests)."""
    tiny = ("--image-size", "64", "--num-workers", "0")
    return replace(preset, train_frames=4, train_valid_frames=2, held_out_frames=3, judge_frames=4, pose_library_frames=4,
                   frame_size=(160, 96), max_iterations=2, main_seeds=2, other_seeds=1, variants=2,
                   condition_epochs=1, judge_epochs=1, dose_fractions=(0.25,),
                   nadsnet_flags=(*preset.nadsnet_flags, *tiny, "--batch-size", "4", "--fpn-channels", "16",
                                  "--head-channels", "8"),
                   gan_flags=(*preset.gan_flags, *tiny, "--batch-size", "2", "--ngf", "4", "--ndf", "4",
                              "--spade-hidden", "8", "--niter", "1", "--niter-decay", "0"))


@dataclass(frozen=True)
class DataSet:
    """A folder in the seed's layout: its training file (when it has frames) and its validation file."""

    root: Path

    def flags(self, split: str) -> tuple[str, ...]:
        """The data flags of the training ('train') or validation ('valid') side."""
        if split == "train":
            return ("--train-annotations", str(self.train_annotations), "--images-dir", str(self.root / "Raw_Images"),
                    "--masks-dir", str(self.root / "Seatbelt_Mask"))
        return ("--valid-annotations", str(self.annotations), "--valid-images-dir", str(self.root / "Raw_Images"),
                "--valid-masks-dir", str(self.root / "Seatbelt_Mask"))

    @property
    def train_annotations(self) -> Path:
        return self.root / "Train_keypoint_Annotation_sample.json"

    @property
    def annotations(self) -> Path:
        return self.root / "Valid_keypoint_Annotation_sample.json"


@dataclass(frozen=True)
class StudyData:
    """Every set one study uses."""

    train: DataSet  # its validation file is the training side's validation split
    narrow: DataSet
    wide: DataSet
    judge: DataSet
    poses: DataSet  # the pose library: its training file's front-row arms


@dataclass(frozen=True)
class Training:
    """One step of the study: its name, script ('nadsnet', 'gan', 'generate', 'oracle' or
    'filter'), the folder of its log and done mark, its arguments, and its planned iterations
    (for the time estimate). `output` is where a pool step writes its frames."""

    name: str
    script: str
    directory: Path
    argv: tuple[str, ...]
    iterations: int
    condition: str | None = None
    seed: int | None = None
    epochs: int = 1
    output: Path | None = None
    tags: dict = field(default_factory=dict)


def pool_annotations(pool_dir: Path) -> Path:
    """The annotation file of a pool folder (generate.py names it after the training file)."""
    return pool_dir / "Train_keypoint_Annotation_sample.json"


def trainings(preset: StudyPreset, out: Path, data: StudyData, data_seed: int,
              only: tuple[str, ...] | None = None) -> list[Training]:
    """The study's steps, in the order they run (`only`: just these conditions, else those run by
    default, and the steps every study runs)."""
    steps = StudySteps(preset, out, data.train, data.poses, data_seed)
    judge = steps.nadsnet("judge", JUDGE_SEED, preset.judge_epochs, (*data.judge.flags("train"), *data.judge.flags("valid")),
                          preset.judge_frames, ("--gan-fraction", "0"))
    guidance = steps.guidance()
    gan = steps.gan("gan", guidance)
    pool_gan = steps.pool("gan", gan, POOL_AUGMENT, preset.variants)
    pool_unchanged = steps.pool("gan-unchanged", gan, "none", 1)
    pools_dir, runs_dir = steps.pools_dir, steps.runs_dir
    oracle_argv = ("--source-set", str(data.train.root), "--poses", str(pool_annotations(pools_dir / "gan")),
                   "--out", str(pools_dir / "oracle"))
    pool_oracle = Training("pool-oracle", "oracle", runs_dir / "pool-oracle", oracle_argv, 0, output=pools_dir / "oracle")
    found = [judge, guidance, gan, pool_gan, pool_unchanged, pool_oracle]
    # the overfitting curve: real-only's first seed also validates on the wide held-out set every epoch
    curve = (*data.train.flags("train"), *data.wide.flags("valid")), ("--train-eval-frames", str(preset.train_frames))
    for condition in conditions(preset.main_dose, preset.dose_fractions):
        if condition.name in only if only is not None else condition.by_default:
            seeds = preset.main_seeds if condition.main else preset.other_seeds
            found += steps.condition_runs(condition, seeds, gan, curve=curve if condition.name == BASELINE else None)
    return found


@dataclass
class StudySteps:
    """Builds the study's steps (the main study's and the exploration stage's, study.explore) on
    one training set: folders under `out`/runs and `out`/pools, the preset's flags, one precision."""

    preset: StudyPreset
    out: Path
    train: DataSet
    poses: DataSet  # the pose library the pools' new arms come from
    data_seed: int

    runs_dir: Path = field(init=False)  # every step's folder: its log and done mark, a training's checkpoints
    pools_dir: Path = field(init=False)  # the frames rendered ahead of the conditions, a folder per pool

    def __post_init__(self) -> None:
        self.runs_dir, self.pools_dir = self.out / "runs", self.out / "pools"

    def _cut(self) -> tuple[str, ...]:
        return ("--max-iterations", str(self.preset.max_iterations)) if self.preset.max_iterations else ()

    def training_side(self) -> tuple[str, ...]:
        """The data flags of the training set and its validation split (the training side)."""
        return (*self.train.flags("train"), *self.train.flags("valid"))

    def nadsnet(self, name: str, seed: int, epochs: int, sets: tuple[str, ...], frames: int,
                extra: tuple[str, ...] = (), condition: str | None = None) -> Training:
        """A NADS-Net training of `frames` frames per epoch on the data flags `sets`."""
        preset = self.preset
        iterations = preset.max_iterations or frames // _batch(preset.nadsnet_flags) * epochs
        argv = (*preset.nadsnet_flags, "--amp", preset.amp, *sets, "--seed", str(seed), "--epochs", str(epochs),
                *self._cut(), *extra, "--checkpoints-dir", str(self.runs_dir / name))
        return Training(name, "nadsnet", self.runs_dir / name, argv, iterations, condition, seed, epochs)

    def guidance(self) -> Training:
        """The guidance network: NADS-Net on the training set, real frames only."""
        return self.nadsnet("guidance", GUIDANCE_SEED, self.preset.condition_epochs, self.training_side(),
                            self.preset.train_frames, ("--gan-fraction", "0"))

    def gan(self, name: str, guidance: Training, extra: tuple[str, ...] = ()) -> Training:
        """The GAN on the training set, guided by `guidance`; `extra`: train_gan.py flags over the
        preset's (a later flag wins)."""
        preset, directory = self.preset, self.runs_dir / name
        flags = (*preset.gan_flags, *extra)
        argv = (*flags, "--amp", preset.amp, *self.training_side(), *self._cut(), "--seed", "0",
                "--nadsnet-weights", str(guidance.directory / BEST_WEIGHTS), "--checkpoints-dir", str(directory))
        epochs = _epochs(flags)
        iterations = preset.max_iterations or preset.train_frames // _batch(flags) * epochs
        return Training(name, "gan", directory, argv, iterations, epochs=epochs)

    def pool(self, name: str, gan: Training, mode: str, copies: int) -> Training:
        """`copies` frames of each training frame rendered by `gan`'s generator with --arm-augment
        `mode` (the pose library's arms for 'library'), into `out`/pools/`name`."""
        library = ("--arm-pose-library", str(self.poses.train_annotations)) if mode == "library" else ()
        source = ("--annotations", str(self.train.train_annotations), "--images-dir", str(self.train.root / "Raw_Images"),
                  "--masks-dir", str(self.train.root / "Seatbelt_Mask"))
        argv = ("dataset", "--generator", str(gan.directory / LATEST_GENERATOR), *source, "--arm-augment", mode, *library,
                "--copies", str(copies), "--seed", str(self.data_seed), "--amp", self.preset.amp,
                "--out", str(self.pools_dir / name))
        return Training(f"pool-{name}", "generate", self.runs_dir / f"pool-{name}", argv, 0, output=self.pools_dir / name)

    def condition_runs(self, condition: Condition, seeds: int, gan: Training, prefix: str = "",
                       curve: tuple[tuple[str, ...], tuple[str, ...]] | None = None) -> list[Training]:
        """NADS-Net under `condition` for training seeds 1..`seeds`, named `prefix`<condition>-seed<s>,
        drawing from its pool under `out`/pools or rendering with `gan`'s generator online.
        `curve`: (data flags, extra flags) of seed 1 instead of the training side's (the overfitting curve)."""
        frames = () if condition.pool is None else \
            ("--generated-frames", str(pool_annotations(self.pools_dir / condition.pool)))
        online = ("--generator-weights", str(gan.directory / LATEST_GENERATOR)) if condition.online_generator else ()
        if "library" in condition.flags:
            online += ("--arm-pose-library", str(self.poses.train_annotations))
        runs = []
        for seed in range(1, seeds + 1):
            sets, watch = curve if curve is not None and seed == 1 else (self.training_side(), ())
            runs.append(self.nadsnet(f"{prefix}{condition.name}-seed{seed}", seed, self.preset.condition_epochs, sets,
                                     self.preset.train_frames, (*condition.flags, *frames, *online, *watch),
                                     condition.name))
        return runs


def flag_value(flags: tuple[str, ...], name: str, default: str) -> str:
    """The last value given for `name` in `flags` (later flags override earlier ones)."""
    values = [flags[i + 1] for i, flag in enumerate(flags[:-1]) if flag == name]
    return values[-1] if values else default


def _batch(flags: tuple[str, ...]) -> int:
    return int(flag_value(flags, "--batch-size", "4"))


def _epochs(flags: tuple[str, ...]) -> int:
    return int(flag_value(flags, "--niter", "1")) + int(flag_value(flags, "--niter-decay", "0"))


# --------------------------------------------------------------------------- the data


def synthetic_set(preset: StudyPreset, out: Path, data_seed: int, train: int, valid: int, seed: str, valid_seed: str,
                  families: tuple[str, ...] | None) -> DataSet:
    """One synthetic set under `out`/data (built once): `train` training frames from set `seed`'s
    seed and `valid` validation frames from `valid_seed`'s (keys of SET_SEED_OFFSETS), arms of
    `families` (None: every family), at the preset's frame size."""
    from common.synthetic import ensure_synthetic_dataset

    width, height = preset.frame_size
    return DataSet(ensure_synthetic_dataset(out / "data", train=train, valid=valid, seed=set_seed(data_seed, seed),
                                            valid_seed=set_seed(data_seed, valid_seed), width=width, height=height,
                                            arm_poses=families, valid_arm_poses=None, announce=print))


def training_sets(preset: StudyPreset, out: Path, data_seed: int) -> tuple[DataSet, DataSet]:
    """The training side's sets: the training set with its validation split, and the pose library."""
    return (synthetic_set(preset, out, data_seed, preset.train_frames, preset.train_valid_frames, "train", "train_valid",
                          NARROW_FAMILIES),
            synthetic_set(preset, out, data_seed, preset.pose_library_frames, 0, "poses", "poses", None))


def build_data(preset: StudyPreset, out: Path, data_seed: int) -> StudyData:
    """Every set of the study, each from its own seed, built once under DIR/data."""
    train, poses = training_sets(preset, out, data_seed)
    return StudyData(
        train=train,
        narrow=synthetic_set(preset, out, data_seed, 0, preset.held_out_frames, "narrow", "narrow", NARROW_FAMILIES),
        wide=synthetic_set(preset, out, data_seed, 0, preset.held_out_frames, "wide", "wide", None),
        judge=synthetic_set(preset, out, data_seed, preset.judge_frames, preset.train_valid_frames, "judge",
                            "judge_valid", None),
        poses=poses)
