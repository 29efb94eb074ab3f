# The `make demo` recipe (configs/demo/FCOS_R18_shapes_demo.yaml) as a LazyConfig config: a small
# ResNet-18-FPN FCOS trained from scratch on the CPU on the synthetic shapes data (python -m
# fcos_d2.data.shapes), P3-P5 only, AdamW, 500 iterations.
#
#     python train_net.py --config-file configs/lazy/fcos_R18_shapes_demo.py
import torch
from detectron2.config import LazyCall as L
from detectron2.layers import ShapeSpec
from detectron2.solver import WarmupParamScheduler
from detectron2.solver.build import get_default_optimizer_params
from fvcore.common.param_scheduler import MultiStepParamScheduler

from .common.data.coco import dataloader
from .common.models.fcos import model
from .common.train import train

backbone = model.backbone
backbone.bottom_up.stem.norm = "BN"
backbone.bottom_up.stages.update(depth=18, norm="BN")
del backbone.bottom_up.stages.stride_in_1x1  # basic blocks have no 1x1 conv
backbone.bottom_up.freeze_at = 0
backbone.out_channels = 64
backbone.top_block = None  # no P6/P7: objects are 12-160 px
model.head.update(input_shape=[ShapeSpec(channels=64)] * 3, num_classes=3)
model.head.update(num_cls_convs=2, num_box_convs=2)
model.head_in_features = ["p3", "p4", "p5"]
model.core.sizes_of_interest = [64, 128]  # strides: the backbone's
model.pixel_std = [57.375, 57.120, 58.395]

dataloader.train.dataset_names = "shapes_train"
dataloader.train.mapper.augmentations[0].update(short_edge_length=(192,), max_size=274)
dataloader.train.total_batch_size = 6
dataloader.train.num_workers = 1
dataloader.train.seed = "${train.seed}"
dataloader.train.num_classes = "${model.head.num_classes}"  # refuses datasets of more
dataloader.test.dataset.names = "shapes_val"
dataloader.test.mapper.augmentations[0].update(short_edge_length=224, max_size=320)
dataloader.test.num_workers = 1

# AdamW at 0.001 with decoupled weight decay 0.05 (SOLVER.OPTIMIZER "ADAMW" of the YAML recipe)
optimizer = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),
    lr=0.001,
    betas=(0.9, 0.999),
    weight_decay=0.05,
    fused=True,  # as fcos_d2.solver's: one pass over each tensor on CPUs and GPUs
)
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1, 0.01], milestones=[400, 460, 500]),
    warmup_length=50 / 500,
    warmup_method="linear",
    warmup_factor=0.01,
)

train.init_checkpoint = ""
train.device = "cpu"
train.max_iter = 500
train.checkpointer.period = 100000
train.seed = 0
train.output_dir = "output/lazy_demo"
