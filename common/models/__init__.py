"""Every network and loss of the seed, written once.

- `SPADEGenerator`: 26-channel pose maps -> frame in [-1, 1] (SPADE, 'normal'/'more'/'most').
- `MultiscaleDiscriminator`: multi-scale PatchGAN over (pose maps, frame).
- `NADSNet`: PVT-tiny (or timm PVT-v2) -> FPN -> heatmaps, PAFs, seatbelt; `pvt_tiny` the backbone.
- Losses: `GANLoss`, `feature_matching_loss`, `VGGLoss`, `dice_bce_loss`, `nadsnet_loss`.
- `adapt`: foreign checkpoints (ImageNet PVT, seed state dicts); `factory`: build and load from files.
The state dicts at the seed's configuration equal the seed's key for key
(tests/data/seed_state_dict_keys.txt), so seed checkpoints load with strict=True.
"""

from common.models.discriminator import MultiscaleDiscriminator, NLayerDiscriminator
from common.models.generator import SPADEGenerator, SPADEResnetBlock
from common.models.init import init_weights
from common.models.losses import GANLoss, VGGLoss, dice_bce_loss, feature_matching_loss, nadsnet_loss
from common.models.nadsnet import FPN, NADSNet
from common.models.normalization import SPADE, convert_sync_norms
from common.models.pvt import PyramidVisionTransformer, pvt_tiny

__all__ = [
    "FPN",
    "GANLoss",
    "MultiscaleDiscriminator",
    "NADSNet",
    "NLayerDiscriminator",
    "PyramidVisionTransformer",
    "SPADE",
    "SPADEGenerator",
    "SPADEResnetBlock",
    "VGGLoss",
    "convert_sync_norms",
    "dice_bce_loss",
    "feature_matching_loss",
    "init_weights",
    "nadsnet_loss",
    "pvt_tiny",
]
