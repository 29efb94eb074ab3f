# FCOS 1x on timm's convnext_tiny as a LazyConfig config: the model and recipe of
# configs/timm/FCOS_convnext_tiny_FPN_1x.yaml: fine-tuned whole (LayerNorms, nothing frozen) with
# AdamW at 1e-4, weight decay 0.05, as the ConvNeXt paper fine-tunes it for detection. Not
# trained here: no AP.
import torch
from detectron2.config import LazyCall as L
from detectron2.solver.build import get_default_optimizer_params

from .fcos_ese_vovnet39b_FPN_1x import dataloader, lr_multiplier, model, train  # noqa: F401

model.backbone.bottom_up.update(name="convnext_tiny", freeze_at=0)
optimizer = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(weight_decay_norm=0.0),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.05,
    fused=True,  # as fcos_d2.solver's "ADAMW"
)
train.output_dir = "output/fcos/lazy_timm_convnext_tiny_1x"
