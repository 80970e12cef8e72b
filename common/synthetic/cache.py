"""A cache of built synthetic data sets: build once, reuse, never leave a half-built set.

ensure_synthetic_dataset(root, train=..., valid=..., seed=..., ...) returns
root/<name made from the parameters>, e.g. train800-s1-all_valid120-s2-all_320x180_gen2, a
folder in the seed's layout as write_dataset writes it. When it is missing the set is built:

  * into a hidden sibling, root/.<name>.building-<host>-<pid>-<token>, renamed to its final
    name only when complete; a rename within one folder is atomic, so a folder with the final
    name is always complete, whenever the build is stopped (Ctrl-C, SIGKILL, a crash);
  * a build that raises (KeyboardInterrupt included) removes its own temporary folder; one
    killed outright leaves it behind, and the next call removes every temporary folder whose
    process (on this host) is gone, then builds again from the start;
  * two processes asking at the same moment both build (no lock to go stale); the first
    rename wins, the other process finds the final folder there, discards its own identical
    copy and returns the winner's folder.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Callable, Iterable

from common.synthetic.arms import ALL_ARM_POSES, check_arm_poses, format_arm_poses
from common.synthetic.files import write_dataset
from common.synthetic.layout import DEFAULT_HEIGHT, DEFAULT_WIDTH

# Git-ignored (/.cache/ in .gitignore), at the repository root.
DEFAULT_CACHE_ROOT = Path(__file__).resolve().parents[2] / ".cache" / "synthetic"
# Bump when a change to the package alters any frame or annotation drawn from the same arguments (the
# data_sample test fails then): sets built by older code then have other names and are never reused.
GENERATOR_VERSION = 2
# Seconds per frame ~ a + b * pixels, fitted on a development machine: only for the rough duration announced.
_SECONDS_PER_FRAME = 0.008
_SECONDS_PER_PIXEL = 0.23e-6

_BUILDING = re.compile(r"^\.(?P<name>.+)\.building-(?P<host>.+)-(?P<pid>\d+)-(?P<token>[0-9a-f]+)$")


def _host() -> str:
    """This machine's name with only letters, digits and '-' (it goes into folder names)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _arm_pose_tag(allowed: frozenset[str]) -> str:
    """'all', or the families in ARM_POSE_FAMILIES order joined by '+' (e.g. 'wheel+lap')."""
    return "all" if allowed == ALL_ARM_POSES else format_arm_poses(allowed).replace(",", "+")


def cache_name(*, train: int, valid: int, seed: int, valid_seed: int, width: int, height: int,
               arm_poses: frozenset[str], valid_arm_poses: frozenset[str]) -> str:
    """Folder name of a set, e.g. 'train800-s1-wheel+lap_valid120-s2-all_320x180_gen2'."""
    return (f"train{train}-s{seed}-{_arm_pose_tag(arm_poses)}_valid{valid}-s{valid_seed}-"
            f"{_arm_pose_tag(valid_arm_poses)}_{width}x{height}_gen{GENERATOR_VERSION}")


def _process_gone(pid: int) -> bool:
    """True when no process `pid` runs on this machine (a zombie, killed but not yet reaped,
    counts as gone)."""
    if os.name == "nt":  # os.kill there would terminate the process: never judge it gone
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    try:  # Linux: the state letter follows the parenthesised command name
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state == "Z"


def remove_abandoned_builds(root: Path) -> list[Path]:
    """Delete temporary build folders under `root` whose process on this host is gone; returns them."""
    removed = []
    host = _host()
    for path in root.glob(".*.building-*"):
        match = _BUILDING.match(path.name)
        if match and path.is_dir() and match["host"] == host and _process_gone(int(match["pid"])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _duration(seconds: float) -> str:
    """'12 s' or '3 min', never '0 s'."""
    return f"{max(seconds, 1):.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def ensure_synthetic_dataset(root: Path = DEFAULT_CACHE_ROOT, *, train: int, valid: int, seed: int = 0,
                             valid_seed: int | None = None, width: int = DEFAULT_WIDTH, height: int = DEFAULT_HEIGHT,
                             arm_poses: Iterable[str] | None = None, valid_arm_poses: Iterable[str] | None = None,
                             announce: Callable[[str], object] = print,
                             on_frame: Callable[[], object] | None = None) -> Path:
    """The folder of this synthetic set under `root`, built first if it is not there yet.

    Parameters as write_dataset's: frame counts, seeds (valid_seed None = seed), frame size in
    pixels, arm-pose families (None = all; valid_arm_poses None = those of arm_poses). A build
    calls `announce` once with one line (what, where, about how long) and `on_frame` after
    every frame (it may raise to stop the build); a set found complete calls nothing. ValueError for a family set that check_arm_poses refuses, before any work.
    Safe against being stopped halfway and against concurrent callers (see the module doc).
    """
    train_poses = check_arm_poses(arm_poses)
    valid_poses = train_poses if valid_arm_poses is None else check_arm_poses(valid_arm_poses)
    valid_seed = seed if valid_seed is None else valid_seed
    name = cache_name(train=train, valid=valid, seed=seed, valid_seed=valid_seed, width=width, height=height,
                      arm_poses=train_poses, valid_arm_poses=valid_poses)
    root = Path(root)
    final = root / name
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    remove_abandoned_builds(root)
    seconds = (train + valid) * (_SECONDS_PER_FRAME + _SECONDS_PER_PIXEL * width * height)
    announce(f"building synthetic set: {train} training + {valid} validation frames, {width}x{height}, "
             f"into {final} (about {_duration(seconds)}, once; later runs reuse it)")
    temporary = root / f".{name}.building-{_host()}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        write_dataset(temporary, train, valid, seed, width, height, arm_poses=train_poses,
                      valid_seed=valid_seed, valid_arm_poses=valid_poses, on_frame=on_frame)
        _publish(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return final


def _publish(temporary: Path, final: Path) -> None:
    """Rename the complete build into place; if another process got there first, keep its copy."""
    try:
        os.rename(temporary, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(temporary, ignore_errors=True)  # the same parameters built the same files
