# FCOS 1x on timm's efficientnet_b3 as a LazyConfig config: the model and recipe of
# configs/timm/FCOS_efficientnet_b3_FPN_1x.yaml (see fcos_ese_vovnet39b_FPN_1x.py). Not trained
# here: no AP.
from .fcos_ese_vovnet39b_FPN_1x import dataloader, lr_multiplier, model, optimizer, train  # noqa

model.backbone.bottom_up.name = "efficientnet_b3"
train.output_dir = "output/fcos/lazy_timm_efficientnet_b3_1x"
