# FCOS R-50-FPN 2x with multi-scale training (short side 640-800, step 32), 180k iterations:
# the recipe of configs/FCOS_MS_R_50_FPN_2x.yaml. AdelaiDet's published result for it: 41.0 box
# AP (their number, not measured here).
from detectron2.model_zoo import get_config

from .fcos_R_50_FPN_1x import dataloader, model, optimizer, train  # noqa: F401 (the config)

dataloader.train.mapper.augmentations[0].short_edge_length = (640, 672, 704, 736, 768, 800)
lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_2x
train.max_iter = 180000
train.output_dir = "output/fcos/lazy_MS_R_50_2x"
