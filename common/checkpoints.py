"""Checkpoint files: atomic writes, safe loading, configurations stored beside the weights.

Networks are saved as plain state dicts (the seed's format: `torch.save(net.state_dict())`),
so a file written here loads like the seed's and the other way round. The configuration that
rebuilds the network is written beside it as JSON (`latest_net_G.pth` -> `latest_net_G.json`).

Every write goes to a temporary file in the same folder, is flushed and fsynced, then renamed
over the target: a run killed at any moment leaves the previous file intact.
Every read uses `torch.load(..., weights_only=True)`: a file that carries code is refused and
its code never runs.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch


TEMP_SUFFIX = ".tmp"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message is one readable line."""


def _first_line(error: BaseException, limit: int = 200) -> str:
    """The first sentence of an exception's first line (torch's messages run on for lines)."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    sentence = line.split(". ")[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 3] + "..."


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some file systems do not allow opening a directory; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: str | Path, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Write a file through `write(file_object)` atomically: temp file, flush, fsync, rename.

    On any failure (disk full, read-only folder, an exception in `write`) the temporary file is
    removed, the previous file at `path` is left untouched, and CheckpointError is raised.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as error:
        raise CheckpointError(f"cannot write {path}: {error.strerror or error}") from error
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as error:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        if isinstance(error, OSError):
            reason = error.strerror or str(error) or type(error).__name__
        elif isinstance(error, Exception) and not isinstance(error, CheckpointError):
            # torch.save reports a failed write (e.g. a full disk) as a RuntimeError
            reason = _first_line(error)
        else:
            raise  # KeyboardInterrupt, SystemExit, our own errors: the temp file is gone, nothing else changed
        raise CheckpointError(f"cannot write {path}: {reason}; the previous file is unchanged") from error
    _fsync_directory(path.parent)
    return path


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files that killed runs left in `directory` and its subfolders.

    write_atomic names its temporaries `.<target>.<pid>.<random>.tmp`; only those whose
    process no longer runs are removed, so a run writing into the same folder at the same
    time is not disturbed. Returns the removed paths.
    """
    removed = []
    for candidate in Path(directory).rglob(f".*{TEMP_SUFFIX}"):
        parts = candidate.name.rsplit(".", 3)  # ['.<target>', '<pid>', '<random>', 'tmp']
        if len(parts) != 4 or not parts[1].isdigit() or _process_alive(int(parts[1])):
            continue
        try:
            candidate.unlink()
            removed.append(candidate)
        except OSError:
            pass
    return removed


def save_atomic(obj: Any, path: str | Path) -> Path:
    """`torch.save(obj, path)`, atomically."""
    return write_atomic(path, lambda handle: torch.save(obj, handle))


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write a UTF-8 text file atomically."""
    return write_atomic(path, lambda handle: handle.write(text.encode("utf-8")))


def config_path_for(weights_path: str | Path) -> Path:
    """`latest_net_G.pth` -> `latest_net_G.json`: where the network's configuration lives."""
    return Path(weights_path).with_suffix(".json")


def save_network(net: torch.nn.Module, path: str | Path, config: dict[str, Any]) -> Path:
    """Save `net.state_dict()` (tensors moved to CPU) at `path` and `config` as JSON beside it.

    The JSON is written first: a weights file never exists without its configuration.
    """
    state = {key: value.detach().cpu() for key, value in net.state_dict().items()}
    write_text_atomic(json.dumps(config, indent=2, sort_keys=True) + "\n", config_path_for(path))
    return save_atomic(state, path)


def load_file(path: str | Path, what: str = "checkpoint") -> Any:
    """`torch.load(path, weights_only=True)` on the CPU, with one-line errors.

    Raises CheckpointError when the file is missing, truncated or not a torch file, or when it
    carries code (pickled objects other than tensors and plain containers), which is never run.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        with warnings.catch_warnings():
            # old pickle protocols make torch warn; the file is refused or read all the same
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights_only" in str(error) or "Unsupported global" in str(error) or "GLOBAL" in str(error):
            raise CheckpointError(
                f"refused to load {what} {path}: it carries Python objects or code, not only weights "
                "(loaded with weights_only=True; nothing in it was run)"
            ) from None
        raise CheckpointError(f"cannot read {what} {path}: {_first_line(error) or 'not a torch file'}") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, KeyError, IndexError, TypeError) as error:
        raise CheckpointError(f"cannot read {what} {path} (truncated or not a torch file?): {_first_line(error)}") from None


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a plain state dict (the seed's format, or this project's), safely.

    Accepts a dict of tensors, also one nested under 'state_dict' or 'model', and strips the
    'module.' prefix that DataParallel/DDP add.
    """
    data = load_file(path, "weights file")
    if isinstance(data, dict):
        for nested in ("state_dict", "model"):
            if nested in data and isinstance(data[nested], dict):
                data = data[nested]
                break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} is not a state dict (a mapping of names to tensors)")
    if data and all(key.startswith("module.") for key in data):
        data = {key[len("module."):]: value for key, value in data.items()}
    return data


def load_network_config(path: str | Path) -> dict[str, Any] | None:
    """The configuration stored beside a weights file, or None when there is none (seed files)."""
    config_path = config_path_for(path)
    if not config_path.is_file():
        return None
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read the configuration {config_path}: {error}") from None


def _preview(keys: Sequence[str], limit: int) -> str:
    shown = ", ".join(keys[:limit])
    more = f", ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return f"{len(keys)} key{'s' if len(keys) != 1 else ''}: {shown}{more}"


def describe_mismatch(
    missing: Sequence[str], unexpected: Sequence[str], mismatched: Sequence[str] = (), limit: int = 8
) -> str:
    """Readable summary of a key mismatch, one line per non-empty group (missing, unexpected,
    shape mismatch) with its count and first `limit` keys; empty when all groups are empty."""
    lines = []
    if missing:
        lines.append(f"missing from the checkpoint, {_preview(list(missing), limit)}")
    if unexpected:
        lines.append(f"unexpected in the checkpoint, {_preview(list(unexpected), limit)}")
    if mismatched:
        lines.append(f"shape mismatch, {_preview(list(mismatched), limit)}")
    return "\n".join(lines)


def load_weights_strict(
    net: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path, fitting_config: str = ""
) -> None:
    """`net.load_state_dict(state_dict, strict=True)` with a readable error.

    The error lists missing/unexpected keys and shape differences, and (when given) names the
    configuration that would fit the file, e.g. "--ngf 32 --image-size 256".
    """
    own = net.state_dict()
    missing = [key for key in own if key not in state_dict]
    unexpected = [key for key in state_dict if key not in own]
    wrong_shape = [
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}"
        for key in own
        if key in state_dict and tuple(state_dict[key].shape) != tuple(own[key].shape)
    ]
    if missing or unexpected or wrong_shape:
        detail = describe_mismatch(missing, unexpected, wrong_shape, limit=6).replace("\n", "; ")
        hint = f"; it fits {fitting_config}" if fitting_config else ""
        raise CheckpointError(f"{source} does not fit this network: {detail}{hint}")
    net.load_state_dict(state_dict, strict=True)


def capture_rng_states() -> dict[str, Any]:
    """RNG states of torch (CPU and every CUDA device) for exact resume."""
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of capture_rng_states."""
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        cuda_states = states["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
