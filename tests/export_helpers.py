"""
Helpers of the export tests.

Random-weight models get detections by a wider spread of the class logits (the predictor's
weights drawn with a larger std) and boxes of about one stride per side; the prior bias (-4.6, p = 0.01 < 0.05) stays. The test configs
use an integer PIXEL_MEAN, so that an image at the pixel mean normalises to exactly zero: with
bias-free (or zero-bias) convs and norms at their initial statistics every feature is then zero,
every class logit equals the prior bias and nothing passes the threshold (the eager model is
checked to give D = 0 there).
"""

import os

import numpy as np
import torch
from detectron2.modeling import build_model

import fcos_d2
from tests.common_utils import REPO, randomize_head

DEMO = os.path.join(REPO, "configs", "demo", "FCOS_R18_shapes_demo.yaml")
R50 = os.path.join(REPO, "configs", "FCOS_R_50_FPN_1x.yaml")


def shapes_image(height, width, seed):
    """uint8 (3, H, W): flat background with a few coloured squares (edges give detections)."""
    gen = np.random.default_rng(seed)
    a = np.full((height, width, 3), 100, np.uint8)
    for _ in range(6):
        x, y = gen.integers(0, width - 12), gen.integers(0, height - 12)
        s = gen.integers(10, 80)
        a[y : y + s, x : x + s] = gen.integers(0, 256, 3)
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


def load_test_config(path, *opts):
    cfg = fcos_d2.load_config(path, ["MODEL.DEVICE", "cpu", *opts])
    cfg.MODEL.PIXEL_MEAN = [round(m) for m in cfg.MODEL.PIXEL_MEAN]  # see the module docstring
    return cfg


def mean_image(cfg, height, width):
    """uint8 (3, H, W) at the config's (integer) pixel mean."""
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).to(torch.uint8)
    return mean[:, None, None].expand(3, height, width).contiguous()


def random_model(cfg, cls_std):
    """Eval model with random weights whose class logits spread (see the module docstring)."""
    torch.manual_seed(0)
    # Distances of about one stride: boxes of realistic size that overlap their neighbours (NMS
    # has work to do), instead of the near-zero-width boxes of the initial zero bias.
    return randomize_head(build_model(cfg).eval(), cls_std=cls_std, quality_std=0.05, box_bias=1.0)
