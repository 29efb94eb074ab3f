"""
Training and evaluation from LazyConfig (Python) configs (``model``, ``dataloader``,
``optimizer``, ``lr_multiplier``, ``train``, as detectron2's ``tools/lazyconfig_train_net.py``
reads them), with the guarantees of the YAML path's :class:`~fcos_d2.engine.FCOSTrainer`:
exact ``--resume`` (with fcos_d2's stream, ``dataloader.train =
L(build_fcos_train_loader)(...)``), atomic checkpoints, DDP on the CPU and
``train.amp.enabled``.
"""

import copy
import logging
import os
import weakref
from typing import Any, Dict, Optional

from detectron2.config import instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    TrainerBase,
    default_setup,
    default_writers,
    hooks,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from omegaconf import DictConfig

from ..checkpoint import FCOSCheckpointer
from ..config import load_config
from ..config.lazy import build_lazy_model, check_lazy_input_format
from ..utils import describe_cpu
from .ddp import create_ddp_model
from .loader import checkpoint_stream
from .trainer import check_amp, setup_fcos_logger

__all__ = ["FCOSLazyTrainer", "lazy_test", "lazy_main"]

logger = logging.getLogger(__name__)


def lazy_test(cfg: DictConfig, model) -> Dict[str, Any]:
    """``dataloader.evaluator``'s results of ``model`` on ``dataloader.test`` ({} without an
    evaluator)."""
    if "evaluator" not in cfg.dataloader:
        return {}
    check_lazy_input_format(cfg)
    evaluator = cfg.dataloader.evaluator
    if "output_dir" not in evaluator and "output_dir" in cfg.train:
        # as YAML runs: the results file under OUTPUT_DIR/inference (COCOEvaluator's output_dir)
        evaluator = copy.deepcopy(evaluator)
        evaluator.output_dir = os.path.join(str(cfg.train.output_dir), "inference")
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(evaluator))
    if comm.is_main_process():
        print_csv_format(results)
    return results


class FCOSLazyTrainer(TrainerBase):
    """
    The training loop of a LazyConfig config: ``SimpleTrainer`` (``AMPTrainer`` with
    ``train.amp.enabled``) with detectron2's hooks (LR schedule ``lr_multiplier``, periodic
    checkpoints ``train.checkpointer``, evaluation every ``train.eval_period``, writers every
    ``train.log_period``), fcos_d2's atomic checkpointer, and the stream's position saved as
    ``data_sampler`` when ``dataloader.train`` is fcos_d2's resumable loader.
    """

    def __init__(self, cfg: DictConfig):
        super().__init__()
        train = cfg.train
        check_amp(train.amp.enabled, train.device, "train.amp.enabled")
        check_lazy_input_format(cfg)
        logger.info(f"Machine: {describe_cpu()}")
        model = build_lazy_model(cfg)
        optimizer_cfg = copy.deepcopy(cfg.optimizer)  # the caller's cfg keeps no model
        optimizer_cfg.params.model = model  # detectron2's convention for its optimizer configs
        optimizer = instantiate(optimizer_cfg)
        data_loader = instantiate(cfg.dataloader.train)
        model = create_ddp_model(model, **train.ddp)
        loop = AMPTrainer if train.amp.enabled else SimpleTrainer
        self._trainer = loop(model, data_loader, optimizer)
        self.cfg = cfg
        self.start_iter, self.max_iter = 0, train.max_iter
        self.checkpointer = FCOSCheckpointer(model, train.output_dir, trainer=weakref.proxy(self))
        self.data_sampler = checkpoint_stream(self.checkpointer, data_loader)
        if self.data_sampler is None:
            logger.warning(
                f"dataloader.train ({type(data_loader).__name__}) is not fcos_d2's resumable "
                "stream (fcos_d2.engine.build_fcos_train_loader): --resume restores weights, "
                "optimizer and iteration, not the batches an uninterrupted run would have seen"
            )
        main = comm.is_main_process()
        self.register_hooks(
            [
                hooks.IterationTimer(),
                hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
                (
                    hooks.PeriodicCheckpointer(self.checkpointer, **train.checkpointer)
                    if main
                    else None
                ),
                hooks.EvalHook(train.eval_period, self._evaluate),
                (
                    hooks.PeriodicWriter(
                        default_writers(train.output_dir, train.max_iter), period=train.log_period
                    )
                    if main
                    else None
                ),
            ]
        )

    @property
    def model(self):
        return self._trainer.model

    @property
    def optimizer(self):
        return self._trainer.optimizer

    def _evaluate(self) -> Dict[str, Any]:
        self.last_eval_results = lazy_test(self.cfg, self.model)
        return self.last_eval_results

    def train(self) -> Dict[str, Any]:
        """Train from ``start_iter`` to ``train.max_iter``; the last evaluation's results."""
        self.last_eval_results: Dict[str, Any] = {}
        super().train(self.start_iter, self.max_iter)
        return self.last_eval_results

    def run_step(self) -> None:
        self._trainer.iter = self.iter
        self._trainer.run_step()

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state["_trainer"] = self._trainer.state_dict()  # optimizer (and AMP's grad scaler)
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._trainer.load_state_dict(state["_trainer"])

    def resume_or_load(self, resume: bool = True) -> None:
        """``train.init_checkpoint``, or with ``resume`` the last checkpoint of
        ``train.output_dir`` and the stream's position after it."""
        self.checkpointer.resume_or_load(self.cfg.train.init_checkpoint, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = self.iter + 1
        if self.data_sampler is not None:
            self.data_sampler.skip(self.start_iter)  # one batch per finished iteration


def lazy_main(args, cfg: Optional[DictConfig] = None) -> Optional[Dict[str, Any]]:
    """``train_net.py``'s run for a Python config: train (``--resume``) or ``--eval-only``."""
    if cfg is None:
        cfg = load_config(args.config_file, args.opts)
    default_setup(cfg, args)  # detectron2's and fvcore's loggers, config.yaml, seed
    setup_fcos_logger(cfg.train.output_dir)
    if args.eval_only:
        model = create_ddp_model(build_lazy_model(cfg))
        FCOSCheckpointer(model, cfg.train.output_dir, strict=True).resume_or_load(
            cfg.train.init_checkpoint, resume=args.resume
        )
        return lazy_test(cfg, model)
    trainer = FCOSLazyTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()
