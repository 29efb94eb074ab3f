#!/usr/bin/env python
"""
Train or evaluate FCOS, as detectron2 projects' train_net.py does; the same run as
``fcos-d2 train`` / ``fcos-d2 evaluate`` (fcos_d2.engine.train_main: exact --resume, atomic
checkpoints, multi-process CPU training; see docs/reliability.md).

    python train_net.py --config-file configs/FCOS_R_50_FPN_1x.yaml --num-gpus 8
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS /path/to/model.pth
    python train_net.py --config-file configs/lazy/fcos_R_50_FPN_1x.py train.max_iter=100
"""

from detectron2.engine import default_argument_parser

import fcos_d2  # noqa: F401  (registers FCOS)
from fcos_d2.cli.train import launch_run
from fcos_d2.engine.main import Trainer, setup, train_main

__all__ = ["Trainer", "setup", "main"]
main = train_main

if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch_run(args)  # train_main under detectron2's launch, as fcos-d2 train
