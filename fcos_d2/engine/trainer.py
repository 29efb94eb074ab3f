"""
``FCOSTrainer``: detectron2's ``DefaultTrainer`` with an exactly resumable data stream, atomic
checkpoints, multi-process training on the CPU and the bad-data policy of
``fcos_d2.data.mapper``; ``setup_fcos_logger``: fcos_d2's messages in the run's log file.
"""

import contextlib
import logging
import os
import weakref
from typing import Callable, Dict, Iterable, Iterator, List, Optional

import torch
from detectron2.data import build_detection_test_loader
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.evaluation import DatasetEvaluators
from detectron2.utils import comm

from ..checkpoint import FCOSCheckpointer
from ..data.mapper import FCOSDatasetMapper
from ..evaluation import FCOSCOCOEvaluator
from ..solver import build_optimizer
from ..utils import describe_cpu, setup_command_logger
from .ddp import create_ddp_model
from .loader import (
    checkpoint_stream,
    resumable_stream,
    sampler_arguments,
    training_records,
)

__all__ = ["FCOSTrainer", "check_amp", "setup_fcos_logger", "hold_fcos_messages"]

logger = logging.getLogger(__name__)


def check_amp(enabled: bool, device: str, key: str) -> None:
    """One-line error for detectron2's AMP training (``AMPTrainer``: CUDA float16 with a grad
    scaler) asked for on a CPU, where its assertion would stop the run deep inside."""
    if enabled and (not str(device).startswith("cuda") or not torch.cuda.is_available()):
        raise ValueError(
            f"{key}=True needs CUDA (detectron2's AMPTrainer), the device is {device!r}; on the "
            "CPU, train in bfloat16 with MODEL.FCOS.TRAIN_DTYPE / the model's train_dtype"
        )


def setup_fcos_logger(output_dir: Optional[str] = None) -> logging.Logger:
    """
    Log fcos_d2's messages (the ``fcos_d2.*`` loggers: dropped boxes, recognised checkpoint
    layouts, resume warnings) as detectron2's ``default_setup`` logs detectron2's and fvcore's:
    detectron2's format, stdout on the main process only, and the file ``output_dir/log.txt``
    (``log.txt.rank{N}`` on process N > 0). ``train_net.py`` calls it after ``default_setup``;
    :class:`FCOSTrainer` calls it with ``cfg.OUTPUT_DIR`` when nothing set up the "fcos_d2"
    logger before. A second call with the same directory adds no handler (detectron2's
    ``setup_logger`` is cached on its arguments); one with another directory adds that file.
    """
    return setup_command_logger("fcos_d2", output_dir or None, comm.get_rank())


@contextlib.contextmanager
def hold_fcos_messages() -> Iterator[None]:
    """
    Hold back fcos_d2's messages logged inside the block and log them at its end, through the
    handlers set up inside it: messages of ``fcos_d2.load_config`` (before the output directory
    is known) then reach the run's log file as well::

        with hold_fcos_messages():
            cfg = fcos_d2.load_config(args.config_file, args.opts)
            default_setup(cfg, args)
            setup_fcos_logger(cfg.OUTPUT_DIR)
    """
    held: List[logging.LogRecord] = []
    root = logging.getLogger("fcos_d2")
    holder = logging.Handler()
    # hold only until a handler is set up inside the block: it sees later messages itself
    holder.emit = lambda record: held.append(record) if root.handlers == [holder] else None
    handlers, level, propagate = list(root.handlers), root.level, root.propagate
    for handler in handlers:  # an earlier set-up (an earlier run's file) gets them at the end
        root.removeHandler(handler)
    root.addHandler(holder)
    root.setLevel(logging.DEBUG)
    root.propagate = False  # held, not also printed now by an ancestor's handler
    try:
        yield
    finally:
        set_up = root.handlers != [holder]
        root.removeHandler(holder)
        for handler in handlers:
            root.addHandler(handler)
        if not set_up:
            root.setLevel(level)
            root.propagate = propagate
        for record in held:
            held_by = logging.getLogger(record.name)
            if held_by.isEnabledFor(record.levelno):  # the levels in force once set up
                held_by.handle(record)


class FCOSTrainer(DefaultTrainer):
    """
    ``DefaultTrainer`` whose ``--resume`` continues with the batches and augmentations an
    uninterrupted run would have used (the data stream's seed is saved in each checkpoint as
    ``data_sampler``; the position is the iteration), whose checkpoints are written atomically,
    and whose model is wrapped in DDP without device ids when it lives on the CPU. fcos_d2's
    messages go to ``OUTPUT_DIR/log.txt`` like detectron2's (:func:`setup_fcos_logger`).

    Exact resume needs the stream of :meth:`build_train_loader`; a subclass that customises the
    loader keeps it by passing its mapper on (a loader built otherwise, e.g. with detectron2's
    ``build_detection_train_loader``, trains, but ``--resume`` does not continue its stream, and
    the trainer warns so)::

        class Trainer(FCOSTrainer):
            @classmethod
            def build_train_loader(cls, cfg):
                return super().build_train_loader(cfg, mapper=MyMapper(cfg))

    fcos_d2's checkpointer and the stream's checkpointing are set up in :meth:`build_hooks`
    (where detectron2's construction lets a subclass act before the hooks take the
    checkpointer): a subclass that overrides ``build_hooks`` calls ``super().build_hooks()``.
    """

    def __init__(self, cfg):
        if not logging.getLogger("fcos_d2").handlers:  # a script without train_net.py's setup
            setup_fcos_logger(cfg.OUTPUT_DIR)
        check_amp(cfg.SOLVER.AMP.ENABLED, cfg.MODEL.DEVICE, "SOLVER.AMP.ENABLED")
        # Float results (and so training runs) differ in their last bits with the CPU's kernels.
        logger.info(f"Machine: {describe_cpu()}")
        if comm.get_world_size() > 1 and cfg.MODEL.DEVICE == "cpu":
            self._init_cpu_processes(cfg)
        else:
            super().__init__(cfg)

    def _init_cpu_processes(self, cfg) -> None:
        # DefaultTrainer.__init__'s steps, except the DDP wrapper: detectron2's gives DDP the
        # local GPU index, which DistributedDataParallel refuses for a model on the CPU.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_command_logger("detectron2")
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        loop = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = loop(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def build_hooks(self):
        # Called at the end of construction, before the hooks take hold of the checkpointer:
        # fcos_d2's (atomic writes, resume fall-back) replaces detectron2's, with the stream.
        self.checkpointer = FCOSCheckpointer(
            self._trainer.model, self.cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        data_loader = self._trainer.data_loader
        self.data_sampler = checkpoint_stream(self.checkpointer, data_loader)
        if self.data_sampler is None:
            logger.warning(
                f"The training data loader ({type(data_loader).__name__}) is not fcos_d2's "
                "resumable stream: --resume restores weights, optimizer and iteration, but not the "
                "batches and augmentations an uninterrupted run would have seen. For exact resume "
                "with a custom mapper, return `super().build_train_loader(cfg, mapper=...)` from "
                "build_train_loader (see FCOSTrainer.build_train_loader)."
            )
        return super().build_hooks()

    def resume_or_load(self, resume: bool = True) -> None:
        super().resume_or_load(resume=resume)
        if self.data_sampler is not None:
            self.data_sampler.skip(self.start_iter)  # one batch per finished iteration

    @classmethod
    def build_train_loader(
        cls, cfg, mapper: Optional[Callable[[Dict], Dict]] = None
    ) -> Iterable[List[Dict]]:
        """
        The training stream that ``--resume`` continues exactly (its ``batch_sampler`` is a
        :class:`ResumableBatchSampler`, saved in checkpoints as ``data_sampler``), over the
        records of ``cfg.DATASETS.TRAIN`` after fcos_d2's bad-data policy (invalid boxes dropped
        with a warning naming them, :func:`~fcos_d2.data.mapper.drop_invalid_annotations`).

        Args:
            mapper: maps a record (a detectron2 dataset dict, a copy it may change) to the model's
                input dict, like detectron2's ``DatasetMapper``; default
                ``FCOSDatasetMapper(cfg, is_train=True)``. It must return a dict for every record
                (not None: drop unusable records before training). Each call runs with python's
                ``random``, numpy's ``np.random`` and torch's CPU RNG seeded from the stream
                position, so augmentations drawing from them (all of detectron2's
                ``T.Augmentation``s) repeat exactly on resume and for any
                ``DATALOADER.NUM_WORKERS``; a generator the mapper owns (``np.random.default_rng``,
                ``torch.Generator``, ``random.Random``) is not reseeded.

        ``DATALOADER.SAMPLER_TRAIN``: "TrainingSampler", "RepeatFactorTrainingSampler" (class
        imbalance: ``DATALOADER.REPEAT_THRESHOLD``, ``REPEAT_SQRT``) and
        "RandomSubsetTrainingSampler" (``DATALOADER.RANDOM_SUBSET_RATIO``) sample as detectron2's
        do, in the stream that resumes exactly (detectron2 has no other training sampler).
        """
        records = training_records(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
            num_classes=cfg.MODEL.FCOS.NUM_CLASSES,
        )
        if mapper is None:
            mapper = FCOSDatasetMapper(cfg, is_train=True)
        return resumable_stream(
            records,
            mapper,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            seed=cfg.SEED,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            **sampler_arguments(
                records,
                cfg.DATALOADER.SAMPLER_TRAIN,
                repeat_threshold=cfg.DATALOADER.REPEAT_THRESHOLD,
                repeat_sqrt=cfg.DATALOADER.get("REPEAT_SQRT", True),
                subset_ratio=cfg.DATALOADER.get("RANDOM_SUBSET_RATIO", None),
            ),
        )

    @classmethod
    def build_optimizer(cls, cfg, model):
        """``SOLVER.OPTIMIZER``'s optimizer (:func:`fcos_d2.solver.build_optimizer`)."""
        return build_optimizer(cfg, model)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=FCOSDatasetMapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return DatasetEvaluators([FCOSCOCOEvaluator(dataset_name, output_dir=output_folder)])
