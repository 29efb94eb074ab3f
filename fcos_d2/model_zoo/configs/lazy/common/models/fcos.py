# FCOS R-50-FPN as a LazyConfig model: the same model as configs/FCOS_R_50_FPN_1x.yaml (same
# state-dict keys, same outputs for the same weights), its parts written out so that they can be
# edited before `instantiate`:
#
#     from fcos_d2 import model_zoo
#     model = model_zoo.get_config("lazy/common/models/fcos.py").model
#     model.head.num_classes = 3
#
# The modules are used as built: the YAML path's speed settings (MODEL.FCOS.FOLD_FROZEN_BN,
# FUSE_RESNET_BLOCKS, CHANNELS_LAST, WINOGRAD) are not applied here (README "LazyConfig").
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import FPN, BasicStem, ResNet
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from fcos_d2.modeling import FCOS, FCOSHead
from fcos_d2.modeling.core import make_fcos_core

model = L(FCOS)(
    backbone=L(FPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=True, norm="FrozenBN"),
            out_features=["res3", "res4", "res5"],
            freeze_at=2,
        ),
        in_features=["res3", "res4", "res5"],
        out_channels=256,
        # P6 from P5 (the paper's choice; RetinaNet computes it from C5)
        top_block=L(LastLevelP6P7)(in_channels=256, out_channels=256, in_feature="p5"),
    ),
    head=L(FCOSHead)(
        input_shape=[ShapeSpec(channels=256)] * 5,
        num_classes=80,
        num_cls_convs=4,
        num_box_convs=4,
        num_share_convs=0,
        norm="GN",
        use_scale=True,
        prior_prob=0.01,
        use_deformable=False,
    ),
    head_in_features=["p3", "p4", "p5", "p6", "p7"],
    # matching, losses and decoding: the MODEL.FCOS keys of the same names, in lower case (the
    # strides are the backbone's, of head_in_features)
    core=L(make_fcos_core)(
        num_classes="${..head.num_classes}",
        sizes_of_interest=[64, 128, 256, 512],
        center_sampling_radius=1.5,
        box_loss_type="giou",
        focal_loss_alpha=0.25,
        focal_loss_gamma=2.0,
        box_quality="ctrness",
        legacy_conventions=False,
        postprocess=dict(
            score_thresh=0.05,
            topk=1000,
            nms_thresh=0.6,
            max_detections=100,
            thresh_with_ctr=False,
        ),
    ),
    pixel_mean=[103.530, 116.280, 123.675],
    pixel_std=[1.0, 1.0, 1.0],
    input_format="BGR",
    channels_last=False,
    loss_normalizer_cls="fg",
    inference_dtype="float32",
    train_dtype="float32",
)
