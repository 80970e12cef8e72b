"""Network checkpoints: saving them with their configuration, and loading them safely.

Networks are saved as plain state dicts (the seed's format: `torch.save(net.state_dict())`),
so a file written here loads like the seed's and the other way round. The configuration that
rebuilds the network is written beside it as JSON (`latest_net_G.pth` -> `latest_net_G.json`).
Writes are atomic (common.training.files). Every read uses `torch.load(..., weights_only=True)`: a file
that carries code is refused and its code never runs.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch

from common.errors import CheckpointError, first_line
from common.training.files import save_atomic, write_text_atomic


def config_path_for(weights_path: str | Path) -> Path:
    """`latest_net_G.pth` -> `latest_net_G.json`: where the network's configuration lives."""
    return Path(weights_path).with_suffix(".json")


def save_network(net: torch.nn.Module, path: str | Path, config: dict[str, Any]) -> Path:
    """Save `net.state_dict()` (tensors moved to CPU) at `path` and `config` as JSON beside it.

    The JSON is written first: a weights file never exists without its configuration.
    """
    # contiguous: files in the default layout whatever layout the network trained in.
    state = {key: value.detach().cpu().contiguous() for key, value in net.state_dict().items()}
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
        raise CheckpointError(f"cannot read {what} {path}: {first_line(error) or 'not a torch file'}") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, KeyError, IndexError, TypeError) as error:
        raise CheckpointError(f"cannot read {what} {path} (truncated or not a torch file?): {first_line(error)}") from None


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a plain state dict (the seed's format, or this project's), safely.

    Accepts a dict of tensors, also one nested under 'state_dict' or 'model', and strips the
    'module.' prefix that DataParallel/DDP add; refuses weights holding NaN or infinite values.
    """
    return state_dict_of(load_file(path, "weights file"), path)


def state_dict_of(data: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """load_state_dict_file's checks and unwrapping, for `data` already loaded from `path`."""
    if isinstance(data, dict):
        for nested in ("state_dict", "model"):
            if nested in data and isinstance(data[nested], dict):
                data = data[nested]
                break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path} is not a state dict (a mapping of names to tensors)")
    if data and all(key.startswith("module.") for key in data):
        data = {key[len("module."):]: value for key, value in data.items()}
    broken = next((name for name, value in data.items()
                   if value.is_floating_point() and not bool(torch.isfinite(value).all())), None)
    if broken is not None:
        raise CheckpointError(f"{path}: tensor {broken!r} holds NaN or infinite values (the run that wrote it "
                              "diverged?): nothing computed with these weights could be trusted")
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
