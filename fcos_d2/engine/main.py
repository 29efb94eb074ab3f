"""
The training and evaluation run of ``fcos-d2 train`` / ``fcos-d2 evaluate`` and ``train_net.py``
(one code path): ``train_main(args)`` with detectron2's ``default_argument_parser`` arguments
(``config_file``, ``opts``, ``eval_only``, ``resume``, ``num_gpus`` ...), run under
``detectron2.engine.launch``; ``fcos-d2`` adds ``output``, ``weights``, ``device`` and
``test_datasets``, set on the loaded config (of either kind) in each process.
"""

import logging
import os
from collections import OrderedDict
from typing import Any, Dict

import detectron2.utils.comm as comm
from detectron2.config import CfgNode
from detectron2.engine import default_setup, hooks
from detectron2.evaluation import verify_results

from ..checkpoint import FCOSCheckpointer
from ..config import (
    AnyConfig,
    is_lazy_config,
    load_config,
    set_device,
    set_output_dir,
    set_test_datasets,
    set_weights,
)
from ..data import register_config_datasets, register_shapes
from ..tta import tta_model
from .lazy import lazy_main
from .trainer import FCOSTrainer, hold_fcos_messages, setup_fcos_logger

__all__ = ["Trainer", "load_run_config", "setup", "train_main"]


class Trainer(FCOSTrainer):
    """:class:`FCOSTrainer` that also evaluates with test-time augmentation (TEST.AUG.*)."""

    @classmethod
    def test_with_TTA(cls, cfg: CfgNode, model) -> Dict[str, Any]:
        """Evaluate with test-time augmentation, results under OUTPUT_DIR/inference_TTA/."""
        logging.getLogger("detectron2.trainer").info(
            "Running inference with test-time augmentation ..."
        )
        out = os.path.join(cfg.OUTPUT_DIR, "inference_TTA")
        evaluators = [cls.build_evaluator(cfg, name, out) for name in cfg.DATASETS.TEST]
        res = cls.test(cfg, tta_model(cfg, model), evaluators)
        return OrderedDict((k + "_TTA", v) for k, v in res.items())


def load_run_config(args) -> AnyConfig:
    """The config of ``args.config_file`` with ``args.opts``, and the settings ``fcos-d2``'s
    options give (``output``, ``weights``, ``device``, ``test_datasets``), when present."""
    cfg = load_config(args.config_file, args.opts)  # fcos_d2 and AdelaiDet files alike
    for name, apply in (
        ("output", set_output_dir),
        ("weights", set_weights),
        ("device", set_device),
        ("test_datasets", set_test_datasets),
    ):
        value = getattr(args, name, None)
        if value:
            apply(cfg, value)
    return cfg


def setup(args) -> CfgNode:
    """The frozen YAML config of ``args`` with detectron2's and fcos_d2's loggers set up."""
    with hold_fcos_messages():  # the config's messages wait for the log file
        cfg = load_run_config(args)
        cfg.freeze()
        default_setup(cfg, args)  # detectron2's and fvcore's loggers
        setup_fcos_logger(cfg.OUTPUT_DIR)  # fcos_d2's, to the same log.txt
    return cfg


def train_main(args):
    """Train (``args.resume``: continue the last checkpoint) or, with ``args.eval_only``,
    evaluate ``MODEL.WEIGHTS`` / ``train.init_checkpoint`` on the test datasets."""
    register_shapes(replace=False)  # the demo's datasets, unless the user registered their own
    if is_lazy_config(args.config_file):  # LazyConfig: fcos_d2's loop of the same guarantees
        cfg = load_run_config(args)
        register_config_datasets(cfg, train=not args.eval_only)
        return lazy_main(args, cfg)
    cfg = setup(args)
    register_config_datasets(cfg, train=not args.eval_only)  # coco:/voc:/yolo: dataset specs
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
