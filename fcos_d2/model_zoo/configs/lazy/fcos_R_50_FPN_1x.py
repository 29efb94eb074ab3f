# FCOS R-50-FPN 1x on COCO 2017 as a LazyConfig config: the recipe of
# configs/FCOS_R_50_FPN_1x.yaml (batch 16, lr 0.01, 90k iterations, steps at 60k and 80k, 1000
# warm-up iterations from 0.001). AdelaiDet's published result for it: 38.7 box AP (their
# number, not measured here).
#
#     python train_net.py --config-file configs/lazy/fcos_R_50_FPN_1x.py --num-gpus 8
#     python train_net.py --config-file configs/lazy/fcos_R_50_FPN_1x.py train.max_iter=100
from detectron2.model_zoo import get_config

from .common.data.coco import dataloader
from .common.models.fcos import model  # noqa: F401 (the config)
from .common.train import train

optimizer = get_config("common/optim.py").SGD
optimizer.lr = 0.01
lr_multiplier = get_config("common/coco_schedule.py").lr_multiplier_1x
train.max_iter = 90000
train.output_dir = "output/fcos/lazy_R_50_1x"
dataloader.train.seed = "${train.seed}"
dataloader.train.num_classes = "${model.head.num_classes}"  # refuses datasets of more
