"""The resumable data stream: skipping reads nothing, batches do not depend on the number of
loader workers, the seed travels in the checkpoint, processes share the stream."""

import itertools
import logging
import os

import cv2
import numpy as np
import pytest
from detectron2.structures import BoxMode

from fcos_d2.data.mapper import FCOSDatasetMapper
from fcos_d2.engine import ResumableBatchSampler, build_resumable_loader
from tests.common_utils import registered_dataset, tiny_cfg


def _records(root, num=6):
    rng = np.random.RandomState(1)
    out = []
    for i in range(num):
        h, w = (45, 71) if i % 2 else (67, 39)
        path = os.path.join(root, f"{i}.png")
        cv2.imwrite(path, rng.randint(0, 255, (h, w, 3), dtype=np.uint8))
        ann = {"id": i, "bbox": [3, 4, 20, 15], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}
        out.append(
            {"file_name": path, "image_id": i, "height": h, "width": w, "annotations": [ann]}
        )
    return out


def _mapper():
    cfg = tiny_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (24, 32, 40), 64
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    return FCOSDatasetMapper(cfg, is_train=True)


class Counting:
    def __init__(self, mapper):
        self.mapper, self.calls = mapper, 0

    def __call__(self, record):
        self.calls += 1
        return self.mapper(record)


def _summary(batch):
    return [(d["image_id"], d["image"].shape, d["image"].float().sum().item()) for d in batch]


def test_skipped_batches_are_not_read_and_the_next_one_is_the_same(tmp_path):
    records = _records(str(tmp_path))
    full = build_resumable_loader(records, _mapper(), total_batch_size=2, seed=4)
    expected = [_summary(b) for b in itertools.islice(full, 5)]
    counting = Counting(_mapper())
    resumed = build_resumable_loader(records, counting, total_batch_size=2, seed=4)
    resumed.batch_sampler.skip(4)
    assert _summary(next(iter(resumed))) == expected[4]
    assert counting.calls == 2  # only the two images of batch 4 were read


def test_batches_do_not_depend_on_the_number_of_loader_workers(tmp_path):
    records = _records(str(tmp_path))
    batches = {}
    for workers in (0, 2):
        loader = build_resumable_loader(
            records, _mapper(), total_batch_size=2, seed=4, num_workers=workers
        )
        batches[workers] = [_summary(b) for b in itertools.islice(loader, 4)]
    assert batches[0] == batches[2]
    sizes = {shape for b in batches[0] for _, shape, _ in b}
    assert len(sizes) > 1  # random resizing happened


def test_the_seed_is_restored_from_the_state_dict():
    saved = ResumableBatchSampler(10, 2, seed=11, rank=0, world_size=1)
    other = ResumableBatchSampler(10, 2, seed=99, rank=0, world_size=1)
    other.load_state_dict(saved.state_dict())
    other.skip(3)
    assert list(itertools.islice(other, 4)) == list(itertools.islice(saved, 7))[3:]


def test_processes_split_each_epoch_without_overlap():
    size = 7  # not a multiple of the process count
    ranks = [ResumableBatchSampler(size, 1, seed=2, rank=r, world_size=2) for r in range(2)]
    single = ResumableBatchSampler(size, 1, seed=2, rank=0, world_size=1)
    taken = [b[0] for r in ranks for b in itertools.islice(r, size)]  # 2 epochs in all
    assert sorted(taken) == sorted(b[0] for b in itertools.islice(single, 2 * size))
    first_epoch = [b[0][1] for b in itertools.islice(single, size)]
    assert sorted(first_epoch) == list(range(size))


def test_aspect_ratio_groups_are_never_mixed_in_a_batch():
    groups = [0, 1, 1, 0, 1, 0, 0, 1, 1]
    sampler = ResumableBatchSampler(len(groups), 3, seed=0, group_ids=groups, rank=0, world_size=1)
    for batch in itertools.islice(sampler, 12):
        assert len({groups[i] for _, i in batch}) == 1


def test_repeat_factors_repeat_each_image_floor_or_ceil_times_and_on_average_r():
    factors = [1.0, 2.5, 1.0, 0.0, 3.0]
    sampler = ResumableBatchSampler(5, 1, seed=3, rank=0, world_size=1, repeat_factors=factors)
    counts = []
    for epoch in range(400):
        order = sampler._epoch(epoch, sampler._factors())
        counts.append([order.count(i) for i in range(5)])
        assert counts[-1][0] == counts[-1][2] == 1 and counts[-1][3] == 0 and counts[-1][4] == 3
        assert counts[-1][1] in (2, 3)
    mean = np.mean([c[1] for c in counts])
    assert abs(mean - 2.5) < 0.1  # 400 coin flips: standard error 0.025


def test_random_subset_keeps_int_s_times_ratio_images_every_epoch_the_same_ones():
    sampler = ResumableBatchSampler(10, 1, seed=5, rank=0, world_size=1, subset_ratio=0.35)
    kept = [sorted(set(sampler._epoch(e, sampler._factors()))) for e in range(3)]
    assert len(kept[0]) == 3 and kept[0] == kept[1] == kept[2]


def test_repeat_factor_stream_resumes_with_the_same_batches_and_warns_on_other_factors(caplog):
    factors = [1.0, 2.2, 1.0, 1.7, 1.0, 1.0, 3.4]
    full = ResumableBatchSampler(7, 2, seed=9, rank=0, world_size=1, repeat_factors=factors)
    expected = list(itertools.islice(full, 20))  # several epochs of varying length
    resumed = ResumableBatchSampler(7, 2, seed=1, rank=0, world_size=1, repeat_factors=factors)
    resumed.load_state_dict(full.state_dict())
    resumed.skip(13)
    assert list(itertools.islice(resumed, 7)) == expected[13:]
    other = ResumableBatchSampler(7, 2, seed=1, rank=0, world_size=1)
    with caplog.at_level(logging.WARNING):
        other.load_state_dict(full.state_dict())
    assert "repeat_factors" in caplog.text and "not with the batches" in caplog.text


def test_repeat_factor_sampler_uses_detectron2s_factors_in_the_resumable_stream(tmp_path):
    from detectron2.data.samplers import RepeatFactorTrainingSampler

    from fcos_d2.engine import FCOSTrainer

    records = _records(str(tmp_path))
    for i, record in enumerate(records):  # class 1 in one image of 6: rare
        record["annotations"][0]["category_id"] = 1 if i == 2 else 0
    name = "reliability_repeat_factor"
    cfg = tiny_cfg()
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATALOADER.SAMPLER_TRAIN, cfg.DATALOADER.REPEAT_THRESHOLD = (
        "RepeatFactorTrainingSampler",
        0.5,
    )
    cfg.DATALOADER.NUM_WORKERS, cfg.SOLVER.IMS_PER_BATCH = 0, 2
    with registered_dataset(name, records=records, thing_classes=["a", "b", "c"]):
        loader = FCOSTrainer.build_train_loader(cfg)
    sampler = loader.batch_sampler
    assert isinstance(sampler, ResumableBatchSampler)
    # r_c = max(1, sqrt(t / f_c)): class 1 in 1/6 of the images, t = 0.5: sqrt(3) = 1.732
    assert sampler.repeat_factors.tolist() == pytest.approx([1, 1, 3**0.5, 1, 1, 1])
    d2 = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(records, 0.5)
    assert sampler.repeat_factors.tolist() == pytest.approx(d2.tolist())
    assert len(next(iter(loader))) == 2


def test_an_unknown_training_sampler_is_an_error_naming_it(tmp_path):
    from fcos_d2.engine import FCOSTrainer

    name = "reliability_unknown_sampler"
    cfg = tiny_cfg()
    cfg.DATASETS.TRAIN, cfg.DATALOADER.SAMPLER_TRAIN = (name,), "BalancedSampler"
    with registered_dataset(name, records=_records(str(tmp_path)), thing_classes=["a", "b", "c"]):
        with pytest.raises(ValueError, match="sampler 'BalancedSampler' is not one of"):
            FCOSTrainer.build_train_loader(cfg)
