#!/usr/bin/env python
"""
Train or evaluate FCOS with fcos_d2's FCOSTrainer (detectron2's DefaultTrainer with exact
--resume, atomic checkpoints and multi-process CPU training; see README "Reliability").

    python train_net.py --config-file configs/FCOS_R_50_FPN_1x.yaml --num-gpus 8
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS /path/to/model.pth
    python train_net.py --config-file configs/lazy/fcos_R_50_FPN_1x.py train.max_iter=100
"""

import logging
import os
from collections import OrderedDict

import detectron2.utils.comm as comm
from detectron2.engine import default_argument_parser, default_setup, hooks, launch
from detectron2.evaluation import verify_results

import fcos_d2
from fcos_d2.checkpoint import FCOSCheckpointer
from fcos_d2.config_loader import is_lazy_config
from fcos_d2.data import register_shapes
from fcos_d2.engine import FCOSTrainer, hold_fcos_messages, lazy_main, setup_fcos_logger
from fcos_d2.tta import tta_model


class Trainer(FCOSTrainer):
    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Evaluate with test-time augmentation (TEST.AUG.*), results under inference_TTA/."""
        logging.getLogger("detectron2.trainer").info(
            "Running inference with test-time augmentation ..."
        )
        out = os.path.join(cfg.OUTPUT_DIR, "inference_TTA")
        evaluators = [cls.build_evaluator(cfg, name, out) for name in cfg.DATASETS.TEST]
        res = cls.test(cfg, tta_model(cfg, model), evaluators)
        return OrderedDict((k + "_TTA", v) for k, v in res.items())


def setup(args):
    register_shapes(replace=False)  # the demo's datasets, unless the user registered their own
    with hold_fcos_messages():  # the config's messages wait for the log file
        # fcos_d2 and AdelaiDet FCOS YAML files alike.
        cfg = fcos_d2.load_config(args.config_file, args.opts)
        cfg.freeze()
        default_setup(cfg, args)  # detectron2's and fvcore's loggers
        setup_fcos_logger(cfg.OUTPUT_DIR)  # fcos_d2's, to the same log.txt
    return cfg


def main(args):
    if is_lazy_config(args.config_file):  # LazyConfig: fcos_d2's loop of the same guarantees
        register_shapes(replace=False)
        return lazy_main(args)
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        # strict: refuses weights that leave model tensors unloaded, naming them
        FCOSCheckpointer(model, save_dir=cfg.OUTPUT_DIR, strict=True).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(Trainer.test_with_TTA(cfg, model))
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    if cfg.TEST.AUG.ENABLED:
        trainer.register_hooks(
            [hooks.EvalHook(0, lambda: trainer.test_with_TTA(cfg, trainer.model))]
        )
    return trainer.train()


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
