# COCO 2017 loaders as the YAML recipes have them (configs/Base-FCOS.yaml): short side 800,
# long side at most 1333, horizontal flips; fcos_d2's resumable stream with its bad-data policy
# for training, fcos_d2's COCOEvaluator for evaluation.
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, get_detection_dataset_dicts
from omegaconf import OmegaConf

from fcos_d2.data.mapper import FCOSDatasetMapper
from fcos_d2.engine.loader import build_fcos_train_loader
from fcos_d2.evaluation import FCOSCOCOEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_fcos_train_loader)(
    dataset_names="coco_2017_train",
    mapper=L(FCOSDatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=(800,), max_size=1333, sample_style="choice"),
            L(T.RandomFlip)(horizontal=True),
        ],
        image_format="BGR",
    ),
    total_batch_size=16,
    num_workers=4,
    seed=-1,  # < 0: drawn once and shared by the processes (the YAML SEED's meaning)
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(FCOSDatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=800, max_size=1333)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(FCOSCOCOEvaluator)(dataset_name="${..test.dataset.names}")
