"""Build networks from configurations and from weight files (this project's or the seed's).

A weight file written by this project has its configuration beside it (`<name>.json`); a file
written by the seed has none, and is read with the seed's configuration (generator: ngf 64,
26 input channels, 384 px; NADS-Net: PVT-tiny at 384 px, 9 or 10 heatmaps as the file says).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from common.training.checkpoints import load_file, load_network_config, load_state_dict_file, load_weights_strict, state_dict_of
from common.errors import CheckpointError
from common.posedata.pose import NUM_KEYPOINTS, NUM_PAF_CHANNELS, REFERENCE_IMAGE_SIZE, SEMANTIC_CHANNELS

SEED_GENERATOR_CONFIG: dict[str, Any] = {
    "network": "SPADEGenerator",
    "semantic_nc": SEMANTIC_CHANNELS,
    "ngf": 64,
    "crop_size": REFERENCE_IMAGE_SIZE,
    "num_upsampling_layers": "normal",
    "spade_hidden": 128,
}
SEED_DISCRIMINATOR_CONFIG: dict[str, Any] = {
    "network": "MultiscaleDiscriminator",
    "input_nc": SEMANTIC_CHANNELS + 3,
    "ndf": 64,
    "n_layers": 4,
    "num_D": 2,
}
SEED_NADSNET_CONFIG: dict[str, Any] = {
    "network": "NADSNet",
    "num_heatmaps": NUM_KEYPOINTS,
    "num_pafs": NUM_PAF_CHANNELS,
    "seatbelt": True,
    "image_size": REFERENCE_IMAGE_SIZE,
    "backbone": "pvt_tiny",
    "fpn": "seed",
    "fpn_channels": 256,
    "head_channels": 128,
}

# The NADS-Net architecture choices beside its widths (config key: its name in words), each set
# by the train_nadsnet.py flag of the same name (--backbone, --fpn). A configuration without
# them, an older file's or the seed's, is the seed's: pvt_tiny and the seed FPN.
NADSNET_CHOICES = {"backbone": "backbone", "fpn": "FPN"}

_GENERATOR_KEYS = ("semantic_nc", "ngf", "crop_size", "num_upsampling_layers", "spade_hidden")
_DISCRIMINATOR_KEYS = ("input_nc", "ndf", "n_layers", "num_D")
# Key names of the seed's NADS-Net (tests/data/seed_state_dict_keys.txt).
_HEATMAP_OUTPUT_KEY = "keypoint_heatmap_branch.convs_on_feature_maps.4.weight"
_SEATBELT_PREFIX = "seatbelt_segmentation_branch."
_NADSNET_KEYS = ("num_heatmaps", "num_pafs", "seatbelt", "image_size", "backbone", "fpn", "fpn_channels", "head_channels")


def _pick(config: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: config[key] for key in keys if key in config}


def build_generator(config: dict[str, Any]):
    from common.models.generator import SPADEGenerator

    return SPADEGenerator(**_pick(config, _GENERATOR_KEYS))


def build_discriminator(config: dict[str, Any]):
    from common.models.discriminator import MultiscaleDiscriminator

    return MultiscaleDiscriminator(**_pick(config, _DISCRIMINATOR_KEYS))


def build_nadsnet(config: dict[str, Any]):
    from common.models.nadsnet import NADSNet

    return NADSNet(**_pick(config, _NADSNET_KEYS))


def nadsnet_choices(config: dict[str, Any]) -> dict[str, str]:
    """{'backbone': ..., 'fpn': ...} of a NADS-Net configuration (the seed's where it has none)."""
    return {key: config.get(key, SEED_NADSNET_CONFIG[key]) for key in NADSNET_CHOICES}


def non_seed_choices(config: dict[str, Any]) -> dict[str, str]:
    """The choices of `nadsnet_choices` that are not the seed's (empty for the seed's network)."""
    return {key: value for key, value in nadsnet_choices(config).items() if value != SEED_NADSNET_CONFIG[key]}


def generator_config(ngf: int, image_size: int, num_upsampling_layers: str = "normal", spade_hidden: int = 128) -> dict[str, Any]:
    return dict(SEED_GENERATOR_CONFIG, ngf=ngf, crop_size=image_size, num_upsampling_layers=num_upsampling_layers,
                spade_hidden=spade_hidden)


def discriminator_config(ndf: int, n_layers: int = 4, num_D: int = 2) -> dict[str, Any]:
    return dict(SEED_DISCRIMINATOR_CONFIG, ndf=ndf, n_layers=n_layers, num_D=num_D)


def describe_config(config: dict[str, Any]) -> str:
    """A network configuration in words, for messages: 'ngf 8, 64 px, normal upsampling'.
    (The scripts' own flag strings live with their options: gan.options, nadsnet_pvt.options.)"""
    network = config.get("network")
    if network == "SPADEGenerator":
        size = f", {config['crop_size']} px" if config.get("crop_size") else ""
        hidden = f", SPADE hidden {config['spade_hidden']}" if config.get("spade_hidden", 128) != 128 else ""
        return f"ngf {config['ngf']}{size}, {config.get('num_upsampling_layers', 'normal')} upsampling{hidden}"
    if network == "MultiscaleDiscriminator":
        return f"ndf {config['ndf']}, {config['n_layers']} layers, {config['num_D']} scales"
    if network == "NADSNet":
        widths = "" if (config.get("fpn_channels", 256), config.get("head_channels", 128)) == (256, 128) else \
            f", FPN {config['fpn_channels']}, heads {config['head_channels']}"
        choices = "".join(f", {value} {NADSNET_CHOICES[key]}" for key, value in non_seed_choices(config).items())
        return f"{config['image_size']} px, {config['num_heatmaps']} heatmaps{widths}{choices}"
    return ", ".join(f"{key} {value}" for key, value in config.items())


def infer_generator_config(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The configuration a generator state dict was saved with, read off its shapes.

    `fc.weight` is (16 ngf, semantic_nc, 3, 3). The crop size cannot be read off the weights
    (it only sets the start grid); the seed's 384 is assumed.
    """
    if "fc.weight" not in state_dict:
        raise CheckpointError("not a SPADE generator state dict (no 'fc.weight')")
    out_channels, semantic_nc = state_dict["fc.weight"].shape[:2]
    levels = "most" if any(key.startswith("up_4.") for key in state_dict) else "normal"
    hidden = state_dict.get("head_0.norm_0.mlp_shared.0.weight")
    return dict(SEED_GENERATOR_CONFIG, ngf=int(out_channels) // 16, semantic_nc=int(semantic_nc), num_upsampling_layers=levels,
                spade_hidden=int(hidden.shape[0]) if hidden is not None else 128)


def infer_discriminator_config(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A MultiscaleDiscriminator's configuration read off its state dict: `ndf` and `input_nc`
    from the first conv of scale 0 ((ndf, input_nc, 4, 4)), `num_D` from the scales present,
    `n_layers` from the last `model<n>` of scale 0."""
    first = state_dict.get("discriminator_0.model0.0.weight")
    if first is None:
        raise CheckpointError("not a multi-scale discriminator state dict (no 'discriminator_0.model0.0.weight')")
    scales = {key.split(".", 1)[0] for key in state_dict if key.startswith("discriminator_")}
    layers = [int(key.split(".")[1][len("model"):]) for key in state_dict if key.startswith("discriminator_0.model")]
    return dict(
        SEED_DISCRIMINATOR_CONFIG, ndf=int(first.shape[0]), input_nc=int(first.shape[1]), num_D=len(scales), n_layers=max(layers)
    )


def describe_state_dict(state_dict: dict[str, torch.Tensor]) -> str:
    """What a state dict holds, by its key names: 'a SPADE generator (ngf 8)', 'a NADS-Net', ..."""
    if "fc.weight" in state_dict and any(key.startswith("head_0.") for key in state_dict):
        return f"a SPADE generator (ngf {infer_generator_config(state_dict)['ngf']})"
    if "discriminator_0.model0.0.weight" in state_dict:
        return f"a multi-scale discriminator ({describe_config(infer_discriminator_config(state_dict))})"
    if any(key.startswith(("PVT.", "FPN.", "keypoint_heatmap_branch.")) for key in state_dict):
        return "a NADS-Net"
    return f"an unknown network ({len(state_dict)} tensors, first key {next(iter(state_dict), 'none')!r})"


def _held_config(infer, state_dict: dict[str, torch.Tensor]) -> str:
    try:
        return describe_config(infer(state_dict))
    except CheckpointError as error:
        return str(error)


def _check_kind(path: str | Path, config: dict[str, Any], network: str, what: str, state_dict: dict[str, torch.Tensor]) -> None:
    """Refuse a file whose stored configuration is for another kind of network."""
    if config.get("network", network) != network:
        raise CheckpointError(
            f"{path} is not {what}: its configuration ({Path(path).with_suffix('.json').name}) is for a "
            f"{config.get('network')}; the file holds {describe_state_dict(state_dict)}"
        )


def infer_nadsnet_config(state_dict: dict[str, torch.Tensor], image_size: int = REFERENCE_IMAGE_SIZE) -> dict[str, Any]:
    """NADS-Net's configuration from a state dict: the heatmap count from its last heatmap
    conv, the seatbelt head from its presence. The image size comes from the position
    embedding of stage 1 (a (1, (S/4)^2, 64) tensor) when there is one."""
    config = dict(SEED_NADSNET_CONFIG, image_size=image_size)
    if _HEATMAP_OUTPUT_KEY in state_dict:
        config["num_heatmaps"] = int(state_dict[_HEATMAP_OUTPUT_KEY].shape[0])
    config["seatbelt"] = any(k.startswith(_SEATBELT_PREFIX) for k in state_dict)
    for name, value in state_dict.items():
        if name.endswith("pos_embed_1"):
            tokens = int(value.shape[1])
            side = int(round(tokens ** 0.5))
            if side * side == tokens:
                config["image_size"] = side * 4
            break
    if "FPN.lateral_layer_5.weight" in state_dict:
        config["fpn_channels"] = int(state_dict["FPN.lateral_layer_5.weight"].shape[0])
    level = state_dict.get("keypoint_heatmap_branch.convs_on_P5.0.weight")
    if level is not None:
        config["head_channels"] = int(level.shape[0])
    return config


def _weights_and_config(path: str | Path, network_part: str, config_part: str, what: str) -> tuple[dict, dict | None]:
    """(state dict, configuration or None) of a weights file (its configuration: the JSON beside
    it), or of a training state holding the network (`what`, in words) as `network_part` with
    `config_part`."""
    data = load_file(path, "weights file")
    parts = data.get("parts") if isinstance(data, dict) else None
    if isinstance(parts, dict) and network_part in parts and config_part in parts:
        return state_dict_of(parts[network_part], path), dict(parts[config_part])
    if isinstance(parts, dict):
        held = ", ".join(name for name in parts if isinstance(parts[name], dict) and not name.endswith("_config"))
        raise CheckpointError(f"{path} is a training state without {what} (it holds {held})")
    return state_dict_of(data, path), load_network_config(path)


# The file a GAN run folder keeps its latest generator in (the seed's name; its configuration in
# the .json beside it): what generate.py and train_nadsnet.py --generator-weights auto look for.
LATEST_GENERATOR = "latest_net_G.pth"


def load_generator(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """A generator from a weights file, with its configuration (the JSON beside it, else the
    seed's configuration inferred from the shapes), or from a GAN training state
    (gan_train_state.pth: the generator it was saved with). Raises CheckpointError on a mismatch."""
    state_dict, config = _weights_and_config(path, "netG", "generator_config", "a generator")
    if config is None:
        if "fc.weight" not in state_dict:
            raise CheckpointError(f"{path} is not a SPADE generator: it holds {describe_state_dict(state_dict)}")
        config = infer_generator_config(state_dict)
    _check_kind(path, config, "SPADEGenerator", "a SPADE generator", state_dict)
    net = build_generator(config)
    load_weights_strict(net, state_dict, path, "a generator with " + _held_config(infer_generator_config, state_dict))
    return net.to(device), config


def load_nadsnet(
    path: str | Path, device: torch.device | str = "cpu", image_size: int | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A NADS-Net from a weights file (this project's, or the seed's) or from a training state
    (nadsnet_train_state.pth: the weights it was saved with), with its configuration.

    `image_size`, when given, must equal the file's (position embeddings are sized for it).
    """
    state_dict, config = _weights_and_config(path, "nadsnet", "nadsnet_config", "a NADS-Net")
    if config is None:
        if describe_state_dict(state_dict) != "a NADS-Net":
            raise CheckpointError(f"{path} is not a NADS-Net: it holds {describe_state_dict(state_dict)}")
        config = infer_nadsnet_config(state_dict)
    _check_kind(path, config, "NADSNet", "a NADS-Net", state_dict)
    if image_size is not None and int(config["image_size"]) != int(image_size):
        raise CheckpointError(
            f"{path} holds a NADS-Net for {config['image_size']} px input, but this run uses {image_size} px "
            f"(use --image-size {config['image_size']}, or NADS-Net weights trained at {image_size} px)"
        )
    net = build_nadsnet(config)
    held = describe_config(infer_nadsnet_config(state_dict, int(config["image_size"])))
    load_weights_strict(net, state_dict, path, f"a NADS-Net with {held}")
    return net.to(device), config
