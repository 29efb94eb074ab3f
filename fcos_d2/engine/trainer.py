"""
``FCOSTrainer``: detectron2's ``DefaultTrainer`` with an exactly resumable data stream, atomic
checkpoints, multi-process training on the CPU and the bad-data policy of
``fcos_d2.data.mapper``.
"""

import logging
import os
import weakref

from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import AMPTrainer, DefaultTrainer, SimpleTrainer, TrainerBase
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..data import check_num_classes
from ..data.mapper import FCOSDatasetMapper, drop_invalid_annotations
from .checkpointer import FCOSCheckpointer
from .ddp import create_ddp_model
from .sampler import ResumableBatchSampler, build_resumable_loader

__all__ = ["FCOSTrainer"]

logger = logging.getLogger(__name__)


class FCOSTrainer(DefaultTrainer):
    """
    ``DefaultTrainer`` whose ``--resume`` continues with the batches and augmentations an
    uninterrupted run would have used (the data stream's seed is saved in each checkpoint as
    ``data_sampler``; the position is the iteration), whose checkpoints are written atomically,
    and whose model is wrapped in DDP without device ids when it lives on the CPU.
    """

    def __init__(self, cfg):
        # DefaultTrainer.__init__ with fcos_d2's DDP wrapper and checkpointer.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False)
        loop = AMPTrainer if cfg.SOLVER.AMP.ENABLED else SimpleTrainer
        self._trainer = loop(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = FCOSCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
        self.data_sampler = getattr(data_loader, "batch_sampler", None)
        if isinstance(self.data_sampler, ResumableBatchSampler):
            self.checkpointer.add_checkpointable("data_sampler", self.data_sampler)
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True) -> None:
        super().resume_or_load(resume=resume)
        if isinstance(self.data_sampler, ResumableBatchSampler):
            self.data_sampler.skip(self.start_iter)  # one batch per finished iteration

    @classmethod
    def build_train_loader(cls, cfg):
        records = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
        check_num_classes(cfg)  # datasets are loaded now, so their categories are known
        json_files = [MetadataCatalog.get(n).get("json_file", None) for n in cfg.DATASETS.TRAIN]
        records = drop_invalid_annotations(
            records,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            json_files=[f for f in json_files if f and os.path.isfile(f)],
        )
        mapper = FCOSDatasetMapper(cfg, is_train=True)
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            logger.warning(
                f"DATALOADER.SAMPLER_TRAIN={cfg.DATALOADER.SAMPLER_TRAIN}: using detectron2's "
                "loader; --resume will not continue with the same batches"
            )
            return build_detection_train_loader(cfg, mapper=mapper, dataset=records)
        seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        return build_resumable_loader(
            records,
            mapper,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            seed=seed,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=FCOSDatasetMapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return DatasetEvaluators([COCOEvaluator(dataset_name, output_dir=output_folder)])
