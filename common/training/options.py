"""Command-line options both training scripts share, defined once: the option groups, the
argument types that refuse what cannot work, presets, and the options file (`opt.txt`).

Rule for bad values: every value that cannot work is refused before any file is written,
with one line naming the option and what would work, exit code 2. argparse types catch what
one value alone decides (a negative seed, a batch of 0); `OptionError` what depends on other
options or on the networks' shapes (common.models.normalization.normalised_map_areas).
`--print-freq` and `--save-latest-freq` mean the same in both scripts: every N iterations,
0 = off.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from common.parallel.devices import AMP_MODES, amp_problem
from common.errors import OptionError

Presets = Mapping[str, Mapping[str, Any]]  # {preset name: {option dest: value}}

MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit
IMAGE_SIZE_STEP = 32  # the PVT backbone and the generator's 'normal' upsampling both need it
NONFINITE_STREAK_LIMIT = 20  # common.training.run's limit of skipped batches in a row, for --help
AMP_CHOICES = ("auto", *AMP_MODES)  # the training scripts' --amp


def _bounded(kind: Callable[[str], Any], low: float | None, high: float | None, what: str) -> Callable[[str], Any]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_int = _bounded(int, 1, None, "a whole number >= 1")
non_negative_int = _bounded(int, 0, None, "a whole number >= 0 (0 = off)")
seed_value = _bounded(int, 0, MAX_SEED, f"a seed from 0 to {MAX_SEED}")
fraction = _bounded(float, 0.0, 1.0, "a number from 0 to 1")
positive_float = _bounded(float, 1e-300, None, "a number > 0")
non_negative_float = _bounded(float, 0.0, None, "a number >= 0")
adam_beta = _bounded(float, 0.0, 0.999999, "a number from 0 to below 1")


def image_size_value(text: str) -> int:
    """argparse type: a positive multiple of 32 (finer limits come from the networks)."""
    value = positive_int(text)
    if value % IMAGE_SIZE_STEP:
        lower = max(IMAGE_SIZE_STEP, value - value % IMAGE_SIZE_STEP)
        raise argparse.ArgumentTypeError(f"expected a multiple of {IMAGE_SIZE_STEP}, got {value} (e.g. {lower} or {lower + IMAGE_SIZE_STEP})")
    return value


def add_shared_options(parser: argparse.ArgumentParser, presets: Presets, validation: bool) -> dict:
    """The option groups both scripts have; returns the groups by name, so a script can add
    its own options to them. `validation`: the script also reads a validation set."""
    groups = {name: parser.add_argument_group(name) for name in ("run", "data", "devices and speed", "output")}
    run = groups["run"]
    run.add_argument("--preset", choices=sorted(presets), default=None,
                     help="seed: the seed's configuration; cpu: a small configuration that learns on a CPU "
                     "in minutes. Default: seed with a GPU, cpu without one. Any option overrides its preset.")
    run.add_argument("--seed", type=seed_value, default=0, help="random seed (weights, data order, augmentation)")
    run.add_argument("--checkpoints-dir", type=Path, default=Path("checkpoints"),
                     help="where checkpoints, logs, metrics and the web pages go (one run at a time)")
    run.add_argument("--continue-train", action="store_true",
                     help="continue exactly where the last save in --checkpoints-dir left off")
    run.add_argument("--max-iterations", type=positive_int, default=None,
                     help="stop after this many iterations in all, saving the state (continue with --continue-train); "
                     "counted from the run's start, not from a resume: with --continue-train give the new total")
    run.add_argument("--config", type=Path, default=None, metavar="FILE",
                     help="options from a file: a run's options file (opt.txt, nadsnet_opt.txt) or --print-config's "
                     "output, one 'name: value' per line (docs/options-files.md); the preset < the file < the "
                     "flags; never the folder, --continue-train or --max-iterations")
    run.add_argument("--print-config", action="store_true",
                     help="print the resolved options in the --config format and exit")
    run.add_argument("--on-nonfinite", choices=("stop", "skip"), default="stop",
                     help="a NaN/inf loss term: stop naming the term and the iteration (nothing is saved after it), "
                     f"or skip that batch's update with a warning (stops after {NONFINITE_STREAK_LIMIT} in a row)")

    data = groups["data"]
    where = "default: the preset's data (seed: data_sample/; cpu: a synthetic set built once, common/presets.py)"
    data.add_argument("--train-annotations", type=Path, default=None, help=where)
    if validation:
        data.add_argument("--valid-annotations", type=Path, default=None, help=where)
    data.add_argument("--images-dir", type=Path, default=None, help=where)
    data.add_argument("--masks-dir", type=Path, default=None, help=where)
    if validation:
        data.add_argument("--valid-images-dir", type=Path, default=None, help="validation frames (default: --images-dir)")
        data.add_argument("--valid-masks-dir", type=Path, default=None, help="validation masks (default: --masks-dir)")
    data.add_argument("--image-size", type=image_size_value, default=None, help="input size S (a multiple of 32)")
    data.add_argument("--batch-size", type=positive_int, default=None,
                      help="samples per iteration (under torchrun: the whole job's, split over its processes)")
    data.add_argument("--num-workers", type=non_negative_int, default=2, help="data loader processes")
    data.add_argument("--image-range", choices=("converted", "seed"), default="converted",
                      help="converted: [-1, 1] frames are converted to ImageNet normalisation before NADS-Net or VGG "
                      "see them")

    devices = groups["devices and speed"]
    devices.add_argument("--gan-device", default=None, help="default: cuda:0 with a GPU, else cpu")
    devices.add_argument("--nadsnet-device", default=None, help="default: cuda:1 with two GPUs, the GAN's device otherwise")
    devices.add_argument("--amp", choices=AMP_CHOICES, default=None,
                         help="autocast precision: off = float32; bf16 on a GPU or a CPU (faster where the CPU "
                         "computes bfloat16 natively: avx512_bf16 or AMX); fp16 on CUDA only (loss scaling); auto = "
                         "bf16 on such a CPU, off elsewhere. Losses, normalisation statistics, attention, weights and "
                         "optimiser stay float32")
    devices.add_argument("--lean-memory", action="store_true",
                         help="CPU: hand freed activation memory back to the OS at once (glibc): a little lower "
                         "peak memory than the default, slower steps (page faults)")

    output = groups["output"]
    output.add_argument("--print-freq", type=non_negative_int, default=None, help="print the losses every N iterations (0 = off)")
    output.add_argument("--save-latest-freq", type=non_negative_int, default=None,
                        help="save the training state every N iterations, mid-epoch included (0 = off)")
    output.add_argument("--no-html", action="store_true", help="write no web page")
    return groups


@dataclass(frozen=True)
class TrainingCommand:
    """One training script's command line, built and parsed the same way for every training.

    `add_options(parser, groups)` adds the script's own options to the shared groups (see
    add_shared_options); `presets` fill the options left unset (None); `checks` run on the
    filled options, in order, before the shared device and batch checks, each raising
    OptionError for what cannot work.
    """

    prog: str
    description: str
    presets: Presets
    add_options: Callable[[argparse.ArgumentParser, dict], None]
    checks: tuple[Callable[[argparse.Namespace], None], ...] = field(default=())

    def parser(self) -> argparse.ArgumentParser:
        from common.training.cli import OneLineParser

        parser = OneLineParser(prog=self.prog, description=self.description, formatter_class=HelpFormatter)
        self.add_options(parser, add_shared_options(parser, self.presets, validation=True))
        describe_presets(parser, self.presets)
        return parser

    def parse(self, argv: Sequence[str] | None = None, gpu_available: bool | None = None
              ) -> tuple[argparse.Namespace, list[str]]:
        """Parse (flags over --config), fill from the preset, refuse what cannot work (OptionError,
        exit code 2), answer --print-config; returns the options and messages for the log."""
        options = parse_with_config(self.parser(), argv)
        messages = apply_preset(options, self.presets, gpu_available)
        for check in self.checks:
            check(options)
        check_devices(options)
        check_batch_split(options)
        print_config_and_exit(options)
        return options, messages


def apply_preset(
    options: argparse.Namespace, presets: Presets, gpu_available: bool | None = None
) -> list[str]:
    """Fill the options left unset (None) from `presets[options.preset]`; returns messages for the log.

    Without `--preset`, 'seed' is used with a GPU and 'cpu' without one (and a message says so).
    """
    if gpu_available is None:
        gpu_available = torch.cuda.is_available()
    messages = []
    amp_given = getattr(options, "amp", None) is not None
    if options.preset is None:
        options.preset = "seed" if gpu_available else "cpu"
        if options.preset == "cpu":
            messages.append("no GPU found and no --preset given: using --preset cpu "
                            "(small and fast; pass --preset seed for the seed's configuration)")
    for key, value in presets[options.preset].items():
        if getattr(options, key, None) is None:
            setattr(options, key, value)
    if hasattr(options, "amp"):
        messages.extend(resolve_amp(options, gpu_available, given=amp_given))
    return messages


def run_device_types(options: argparse.Namespace, gpu_available: bool) -> set[str]:
    """The device types ('cpu', 'cuda', ...) the run's networks will use: --gan-device and
    --nadsnet-device where given, else CUDA with a GPU and the CPU without one."""
    default = "cuda" if gpu_available else "cpu"
    names = (getattr(options, "gan_device", None), getattr(options, "nadsnet_device", None))
    try:
        return {torch.device(name).type if name else default for name in names}
    except RuntimeError:  # an unknown name: check_devices reports it
        return {default}


def check_amp(amp: str, device_types: Iterable[str]) -> None:
    """OptionError (one line) when --amp `amp` cannot run on devices of these types."""
    problem = amp_problem(amp, device_types)
    if problem:
        raise OptionError(f"--amp {amp}", problem)


def resolve_amp(options: argparse.Namespace, gpu_available: bool, given: bool = True) -> list[str]:
    """--amp 'auto' becomes 'bf16' when every network runs on a CPU that computes bfloat16
    natively (common.parallel.devices.cpu_bf16_supported), else 'off'; fp16 off CUDA is refused
    (OptionError). Returns the line for the start of the run: which precision an 'auto' run
    got, for a preset's float32 (`given` False) on such a CPU that bf16 is there to try, and for
    bf16 asked for on a CPU without it that it is emulated (slow)."""
    from common.parallel.devices import cpu_bf16_supported  # looked up per call: tests set the processor

    types = run_device_types(options, gpu_available)
    check_amp(options.amp, types)
    native = types == {"cpu"} and cpu_bf16_supported()
    if options.amp == "off" and not given and native:
        return ["precision: float32 (this CPU computes bfloat16 natively: --amp bf16 trains faster; "
                "docs/performance.md has its speed and what is known of its accuracy)"]
    if options.amp == "bf16" and "cpu" in types and not cpu_bf16_supported():
        return ["precision: bf16 autocast on a CPU without native bfloat16: emulated in float32 instructions, "
                "many times slower than --amp off (--amp auto picks the faster)"]
    if options.amp != "auto":
        return []
    if native:
        options.amp = "bf16"
        return ["precision: bf16 autocast (--amp auto: this CPU computes bfloat16 natively; --amp off trains in "
                "float32)"]
    options.amp = "off"
    where = "this CPU has no native bfloat16" if types == {"cpu"} else "not measured on GPUs here"
    return [f"precision: float32 (--amp auto: {where})"]


def check_devices(options: argparse.Namespace) -> None:
    """--gan-device / --nadsnet-device name devices that exist (else OptionError)."""
    from common.parallel.devices import parse_device

    for flag in ("gan_device", "nadsnet_device"):
        name = getattr(options, flag, None)
        if name:
            try:
                parse_device(name)
            except ValueError as error:
                raise OptionError(f"--{flag.replace('_', '-')} {name}", str(error)) from None


def check_batch_split(options: argparse.Namespace) -> None:
    """Under torchrun --batch-size is the global batch: it must split evenly over the processes."""
    from common.parallel.distributed import torchrun_environment

    environment = torchrun_environment()
    world = environment[1] if environment else 1
    if options.batch_size % world:
        lower = max(world, options.batch_size - options.batch_size % world)
        raise OptionError(f"--batch-size {options.batch_size}",
                          f"the global batch must split evenly over the job's {world} processes (e.g. {lower})")


def format_options(options: argparse.Namespace, provenance: Mapping[str, str] | None = None) -> str:
    """The options as text, one per line (NVlabs SPADE's opt.txt layout), then the provenance."""
    lines = ["----------------- Options ---------------"]
    for key, value in sorted(vars(options).items()):
        lines.append(f"{key:>24}: {value}")
    lines.append("----------------- End -------------------")
    for key, value in (provenance or {}).items():
        lines.append(f"{key:>24}: {value}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- options files

CONFIG_NOT_READ = ("checkpoints_dir", "continue_train", "max_iterations", "config", "print_config")
_MARKER = "-----------------"  # format_options' first and last lines; what follows the last is provenance


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with defaults, except for options whose default None means "the preset's"
    (describe_presets names those values)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None:
            return action.help or ""
        return super()._get_help_string(action)


def describe_presets(parser: argparse.ArgumentParser, presets: Presets) -> None:
    """Append to each option's help what every preset sets it to (call once all options exist)."""
    for action in parser._actions:  # argparse has no public list of a parser's options
        values = [(name, preset[action.dest]) for name, preset in sorted(presets.items()) if action.dest in preset]
        if values:
            shown = "; ".join(f"{name}: {value}" for name, value in values)
            action.help = f"{action.help + ' ' if action.help else ''}[{shown}]".replace("%", "%%")


def _config_value(action: argparse.Action, text: str, where: str) -> Any:
    """`text` of a options file line converted as the flag's own value would be."""
    if text == "None":
        return None
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if text not in ("True", "False"):
            raise OptionError(where, f"expected True or False, got {text!r}")
        return text == "True"
    try:
        value = action.type(text) if action.type else text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as error:
        raise OptionError(where, str(error) or f"invalid value {text!r}") from None
    if action.choices is not None and value not in action.choices:
        raise OptionError(where, f"{value!r} is not one of {', '.join(map(str, action.choices))}")
    return value


def read_config(path: Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """{option dest: value} from an options file: `name: value` lines (names as in the file a
    run writes, e.g. `batch_size: 4`; `None` = unset; blank lines and `#` comments skipped; the
    provenance after the closing marker line ignored), less CONFIG_NOT_READ. OptionError (one
    line naming the file, the line and the name) for a name the script does not have or a value
    its flag would refuse."""
    actions = {action.dest: action for action in parser._actions if action.option_strings}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise OptionError(f"--config {path}", f"cannot be read ({error})") from None
    values: dict[str, Any] = {}
    markers = 0
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if text.startswith(_MARKER):
            markers += 1
            if markers == 2:
                break
            continue
        if not text or text.startswith("#"):
            continue
        name, colon, value = text.partition(":")
        name, where = name.strip(), f"--config {path}, line {number}"
        if not colon or name not in actions or name in ("help",):
            raise OptionError(f"{where}: {name!r}", f"not an option of {parser.prog} (write 'name: value', "
                              "names as in the file a run writes)")
        if name not in CONFIG_NOT_READ:
            values[name] = _config_value(actions[name], value.strip(), f"{where}: {name}")
    return values


def parse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """The parsed flags over --config FILE's values (which then stand in for the defaults)."""
    options = parser.parse_args(argv)
    if options.config is None:
        return options
    parser.set_defaults(**read_config(options.config, parser))
    return parser.parse_args(argv)


def print_config_and_exit(options: argparse.Namespace) -> None:
    """--print-config: the resolved options in the --config format on stdout, then exit 0."""
    if options.print_config:
        print(format_options(argparse.Namespace(**{key: value for key, value in vars(options).items()
                                                   if key not in ("config", "print_config")})), end="")
        raise SystemExit(0)
