"""Bad data: invalid boxes are dropped with a warning naming them, never rewritten; unreadable
images stop with an error naming the file."""

import json
import logging
import math
import os

import cv2
import numpy as np
import pytest
from detectron2.structures import BoxMode

from fcos_d2.data.mapper import FCOSDatasetMapper, drop_invalid_annotations
from fcos_d2.engine import FCOSTrainer
from tests.common_utils import registered_dataset, tiny_cfg

XYWH = BoxMode.XYWH_ABS


def _ann(ann_id, bbox, mode=XYWH):
    return {"id": ann_id, "bbox": bbox, "bbox_mode": mode, "category_id": 0, "iscrowd": 0}


def _record(name, anns, h=100, w=200):
    return {"file_name": name, "image_id": name, "height": h, "width": w, "annotations": anns}


def test_invalid_boxes_are_dropped_and_each_is_named(caplog):
    good = _ann(1, [10, 10, 30, 20])
    partly_outside = _ann(2, [190, 90, 30, 30])  # valid: training clips it
    records = [
        _record(
            "a.jpg",
            [
                good,
                _ann(11, [120, 50, -40, 30]),  # negative width: not turned into [80, 50, 120, 80]
                _ann(12, [math.nan, 5, 10, 10]),
                _ann(13, [5, 5, 0, 10]),  # zero area
                _ann(14, [40, 40, 20, 40], BoxMode.XYXY_ABS),  # x1 < x0
                partly_outside,
            ],
        ),
        _record("b.jpg", [_ann(21, [250, 10, 20, 20])]),  # entirely right of the 200-px image
        _record("c.jpg", [_ann(31, [0, 0, 5, 5])]),
    ]
    with caplog.at_level(logging.WARNING):
        out = drop_invalid_annotations(records, filter_empty=True)
    assert [r["file_name"] for r in out] == ["a.jpg", "c.jpg"]  # b.jpg had no valid box left
    assert out[0]["annotations"] == [good, partly_outside]
    assert out[0]["annotations"][0]["bbox"] == [10, 10, 30, 20]
    assert out[1] is records[2]  # untouched records are passed on as they are
    for ann_id, name in [(11, "a.jpg"), (12, "a.jpg"), (13, "a.jpg"), (14, "a.jpg"), (21, "b.jpg")]:
        assert f"annotation id {ann_id} in '{name}'" in caplog.text
    assert "Dropped 5 invalid box annotation(s)" in caplog.text
    assert len(records[0]["annotations"]) == 6  # the input was not modified


def test_without_empty_filter_the_image_stays_as_background():
    out = drop_invalid_annotations(
        [_record("b.jpg", [_ann(21, [5, 5, -1, 3])])], filter_empty=False
    )
    assert len(out) == 1 and out[0]["annotations"] == []


def test_many_invalid_boxes_give_one_summary_with_a_count(caplog):
    records = [
        _record(f"{i}.jpg", [_ann(i, [1, 1, 0, 0]), _ann(100 + i, [1, 1, 4, 4])]) for i in range(25)
    ]
    with caplog.at_level(logging.WARNING):
        drop_invalid_annotations(records)
    assert "Dropped 25 invalid box annotation(s)" in caplog.text
    assert "and 15 more" in caplog.text
    assert caplog.text.count("annotation id") == 10


def test_training_batches_keep_the_valid_box_and_never_a_rewritten_one(tmp_path, caplog):
    path = str(tmp_path / "img.png")
    cv2.imwrite(path, np.full((100, 200, 3), 128, np.uint8))
    anns = [_ann(1, [10, 20, 30, 40]), _ann(2, [120, 50, -40, 30])]
    name = "reliability_bad_boxes"
    cfg = tiny_cfg()
    cfg.DATASETS.TRAIN = (name,)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (100,), 1000  # no resize
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS = 1, 0
    records = [_record(path, anns)]
    with registered_dataset(name, records=records, thing_classes=["a", "b", "c"]):
        with caplog.at_level(logging.WARNING):
            batch = next(iter(FCOSTrainer.build_train_loader(cfg)))
    boxes = batch[0]["instances"].gt_boxes.tensor.tolist()
    assert boxes == [[10.0, 20.0, 40.0, 60.0]]
    assert "annotation id 2 in" in caplog.text and "img.png" in caplog.text


def test_coco_json_annotation_ids_are_named(tmp_path, caplog):
    cv2.imwrite(str(tmp_path / "one.png"), np.full((60, 90, 3), 90, np.uint8))
    coco = {
        "images": [{"id": 5, "file_name": "one.png", "height": 60, "width": 90}],
        "annotations": [
            {"id": 7, "image_id": 5, "bbox": [10, 10, 20, 20], "category_id": 1, "iscrowd": 0,
             "area": 400},
            {"id": 8, "image_id": 5, "bbox": [60, 5, -40, 30], "category_id": 1, "iscrowd": 0,
             "area": 1200},
            {"id": 9, "image_id": 5, "bbox": [1, 1, 0, 0], "category_id": 1, "iscrowd": 0,
             "area": 0},
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }  # fmt: skip
    (tmp_path / "train.json").write_text(json.dumps(coco))
    name = "reliability_coco_bad"
    cfg = tiny_cfg()
    cfg.DATASETS.TRAIN = (name,)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (60,), 1000  # no resize
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS = 1, 0
    with registered_dataset(name, tmp_path / "train.json", tmp_path):
        with caplog.at_level(logging.WARNING):
            batch = next(iter(FCOSTrainer.build_train_loader(cfg)))
    assert batch[0]["instances"].gt_boxes.tensor.tolist() == [[10.0, 10.0, 30.0, 30.0]]
    assert "annotation id 8 in" in caplog.text and "annotation id 9 in" in caplog.text
    assert "one.png" in caplog.text


@pytest.mark.parametrize("damage", ["truncated", "not an image", "missing"])
def test_unreadable_image_error_names_the_file(tmp_path, damage):
    path = str(tmp_path / "photo.jpg")
    cv2.imwrite(path, np.random.RandomState(0).randint(0, 255, (60, 80, 3), np.uint8))
    data = open(path, "rb").read()
    if damage == "missing":
        os.remove(path)
    else:
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2] if damage == "truncated" else b"hello")
    mapper = FCOSDatasetMapper(tiny_cfg(), is_train=True)
    with pytest.raises(OSError, match="photo.jpg"):
        mapper(_record(path, [_ann(1, [1, 1, 10, 10])], h=60, w=80))
