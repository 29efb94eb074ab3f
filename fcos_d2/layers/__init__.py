"""
Layers and operations below the model code: each has one implementation per place it runs
(eager CPU, GPU, a torch.jit graph), chosen inside it, so that the algorithm modules above
(targets, losses, post-processing) hold no device or export branches.
"""

from .frozen_bn import FrozenBNConv2d, fold_frozen_batchnorm, set_frozen_batchnorm_eps
from .fused_resnet import fuse_resnet_blocks
from .graph import exporting, topk_at_most
from .layout import channels_last_helps, one_image_at_a_time
from .nms import classwise_nms
from .winograd import winograd_conv2d, winograd_convolutions, winograd_helps

__all__ = [
    "FrozenBNConv2d",
    "channels_last_helps",
    "classwise_nms",
    "exporting",
    "fold_frozen_batchnorm",
    "fuse_resnet_blocks",
    "one_image_at_a_time",
    "set_frozen_batchnorm_eps",
    "topk_at_most",
    "winograd_conv2d",
    "winograd_convolutions",
    "winograd_helps",
]
