"""
The training records and stream of both config systems: the datasets' records after fcos_d2's
bad-data policy, in the stream that ``--resume`` continues exactly. :class:`FCOSTrainer` (YAML)
and LazyConfig configs (``dataloader.train = L(build_fcos_train_loader)(...)``) use the same
functions.
"""

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from detectron2.data import MetadataCatalog, get_detection_dataset_dicts
from detectron2.utils import comm
from torch.utils.data import DataLoader

from ..data import check_dataset_classes, register_dataset_specs
from ..data.mapper import drop_invalid_annotations
from .sampler import ResumableBatchSampler, build_resumable_loader

__all__ = [
    "training_records",
    "build_fcos_train_loader",
    "resumable_stream",
    "checkpoint_stream",
    "sampler_arguments",
    "REPLAYED_SAMPLERS",
]

# detectron2's training samplers (DATALOADER.SAMPLER_TRAIN) the resumable stream replays exactly
REPLAYED_SAMPLERS = (
    "TrainingSampler",
    "RepeatFactorTrainingSampler",
    "RandomSubsetTrainingSampler",
)


def sampler_arguments(
    records: Sequence[Dict[str, Any]],
    sampler: str,
    *,
    repeat_threshold: float = 0.0,
    repeat_sqrt: bool = True,
    subset_ratio: Optional[float] = None,
) -> Dict[str, Any]:
    """
    The resumable stream's arguments that sample as detectron2's ``sampler`` does (one of
    :data:`REPLAYED_SAMPLERS`): for ``RepeatFactorTrainingSampler``, detectron2's own
    per-image repeat factors (``repeat_factors_from_category_frequency``) for class imbalance;
    for ``RandomSubsetTrainingSampler``, the subset ratio.
    """
    if sampler == "RepeatFactorTrainingSampler":
        from detectron2.data.samplers import RepeatFactorTrainingSampler

        factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            records, repeat_threshold, sqrt=repeat_sqrt
        )
        return {"repeat_factors": factors.tolist()}
    if sampler == "RandomSubsetTrainingSampler":
        if subset_ratio is None:
            raise ValueError(
                "DATALOADER.SAMPLER_TRAIN=RandomSubsetTrainingSampler needs "
                "DATALOADER.RANDOM_SUBSET_RATIO (the fraction of images kept)"
            )
        return {"subset_ratio": float(subset_ratio)}
    if sampler != "TrainingSampler":
        raise ValueError(f"sampler {sampler!r} is not one of {', '.join(REPLAYED_SAMPLERS)}")
    return {}


def training_records(
    dataset_names: Union[str, Sequence[str]],
    *,
    filter_empty: bool = True,
    proposal_files: Optional[Sequence[str]] = None,
    num_classes: Optional[int] = None,
    num_classes_key: str = "MODEL.FCOS.NUM_CLASSES",
) -> List[Dict[str, Any]]:
    """
    The records of ``dataset_names`` (detectron2's ``get_detection_dataset_dicts``) without their
    invalid box annotations (:func:`~fcos_d2.data.mapper.drop_invalid_annotations`, which names
    them); with ``num_classes``, a dataset of more categories is refused (naming
    ``num_classes_key``).
    """
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    register_dataset_specs(names, classes_from=names[0] if names else None)
    records = get_detection_dataset_dicts(
        names, filter_empty=filter_empty, proposal_files=proposal_files
    )
    if num_classes is not None:  # the datasets are loaded now, so their categories are known
        check_dataset_classes(names, num_classes, num_classes_key)
    json_files = [MetadataCatalog.get(n).get("json_file", None) for n in names]
    return drop_invalid_annotations(
        records,
        filter_empty=filter_empty,
        json_files=[f for f in json_files if f and os.path.isfile(f)],
    )


def build_fcos_train_loader(
    *,
    dataset_names: Union[str, Sequence[str]],
    mapper: Callable[[Dict], Dict],
    total_batch_size: int,
    num_workers: int = 0,
    seed: int = -1,
    aspect_ratio_grouping: bool = True,
    filter_empty: bool = True,
    num_classes: Optional[int] = None,
    sampler: str = "TrainingSampler",
    repeat_threshold: float = 0.0,
    repeat_sqrt: bool = True,
    subset_ratio: Optional[float] = None,
) -> DataLoader:
    """
    The exactly resumable training stream (:func:`~fcos_d2.engine.sampler.build_resumable_loader`)
    over :func:`training_records`; ``seed`` < 0: one drawn and shared by all processes.
    ``sampler`` and its settings: as detectron2's DATALOADER keys (:func:`sampler_arguments`).
    """
    records = training_records(
        dataset_names,
        filter_empty=filter_empty,
        num_classes=num_classes,
        num_classes_key="dataloader.train.num_classes",
    )
    return resumable_stream(
        records,
        mapper,
        total_batch_size=total_batch_size,
        seed=seed,
        num_workers=num_workers,
        aspect_ratio_grouping=aspect_ratio_grouping,
        **sampler_arguments(
            records,
            sampler,
            repeat_threshold=repeat_threshold,
            repeat_sqrt=repeat_sqrt,
            subset_ratio=subset_ratio,
        ),
    )


def resumable_stream(
    records: Sequence[Dict[str, Any]],
    mapper: Callable[[Dict], Dict],
    *,
    total_batch_size: int,
    seed: int,
    num_workers: int,
    aspect_ratio_grouping: bool,
    repeat_factors: Optional[Sequence[float]] = None,
    subset_ratio: Optional[float] = None,
) -> DataLoader:
    """:func:`~fcos_d2.engine.sampler.build_resumable_loader` with ``seed`` < 0 meaning one
    drawn and shared by all processes (detectron2's ``SEED`` rule)."""
    return build_resumable_loader(
        records,
        mapper,
        total_batch_size=total_batch_size,
        seed=seed if seed >= 0 else comm.shared_random_seed(),
        num_workers=num_workers,
        aspect_ratio_grouping=aspect_ratio_grouping,
        repeat_factors=repeat_factors,
        subset_ratio=subset_ratio,
    )


def checkpoint_stream(checkpointer: Any, data_loader: Any) -> Optional[ResumableBatchSampler]:
    """The loader's resumable sampler, registered with ``checkpointer`` as ``data_sampler``
    (its position goes into every checkpoint); None for another loader."""
    sampler = getattr(data_loader, "batch_sampler", None)
    if not isinstance(sampler, ResumableBatchSampler):
        return None
    checkpointer.add_checkpointable("data_sampler", sampler)
    return sampler
