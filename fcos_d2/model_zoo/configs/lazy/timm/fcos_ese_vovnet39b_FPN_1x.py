# FCOS 1x on timm's ese_vovnet39b (the backbone of the FCOS write-up's second implementation) as
# a LazyConfig config: the model and recipe of configs/timm/FCOS_ese_vovnet39b_FPN_1x.yaml.
# ImageNet weights come through timm (pip install "fcos_d2[timm]"); offline, set
# model.backbone.bottom_up.pretrained_file to a local file of them. Not trained here: no AP.
from detectron2.config import LazyCall as L

from fcos_d2.modeling.timm_backbone import build_timm_backbone

from ..fcos_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.backbone.bottom_up = L(build_timm_backbone)(
    name="ese_vovnet39b",
    out_features=["res3", "res4", "res5"],
    pretrained=True,
    pretrained_file="",
    norm="FrozenBN",  # every BatchNorm frozen (timm's freeze_batch_norm_2d)
    freeze_at=2,  # the stem and the stride-4 stage, as MODEL.BACKBONE.FREEZE_AT
)
# timm's ImageNet normalisation (its pretrained_cfg mean / std) in 0-255 RGB units
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]
model.input_format = "RGB"
dataloader.train.mapper.image_format = "RGB"  # the test mapper follows it
train.init_checkpoint = ""  # the backbone's weights are timm's
train.output_dir = "output/fcos/lazy_timm_ese_vovnet39b_1x"
