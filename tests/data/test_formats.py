"""Datasets by name: COCO, Pascal VOC and YOLO files written here by hand, read through their
specs (boxes worked out from each format's convention), class names matched across datasets,
malformed lines named, and the same boxes in the three formats giving the same AP."""

import json
import logging
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from fcos_d2.data import check_dataset_classes, register_dataset_specs
from fcos_d2.data.formats import (
    DatasetSpec,
    is_dataset_spec,
    register_dataset_spec,
    unregister_dataset_spec,
)
from fcos_d2.data.formats.write import write_dataset
from fcos_d2.evaluation import FCOSCOCOEvaluator


@pytest.fixture
def specs():
    """Names registered in a test are removed after it."""
    names = []
    yield names
    for name in names:
        unregister_dataset_spec(name)


def _image(path, width, height):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, np.full((height, width, 3), 127, np.uint8))


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _boxes(record):
    return [(a["category_id"], [round(v, 4) for v in a["bbox"]]) for a in record["annotations"]]


# --- YOLO ----------------------------------------------------------------------------------------


def _yolo(root, names="[cat, dog]"):
    """3 train images of 50 x 40 (one without a label file), 1 val image."""
    for split, stems in (("train", ("a", "b", "c")), ("val", ("d",))):
        for stem in stems:
            _image(os.path.join(root, "images", split, f"{stem}.png"), 50, 40)
    # cx 0.5 cy 0.5 w 0.2 h 0.25 of 50 x 40: [20, 15, 30, 25]; the second touches the left edge
    _write(
        os.path.join(root, "labels", "train", "a.txt"), "0 0.5 0.5 0.2 0.25\n1 0.1 0.5 0.2 0.5\n"
    )
    # a polygon: its enclosing box [5, 4, 15, 16]
    _write(os.path.join(root, "labels", "train", "b.txt"), "1 0.1 0.1 0.3 0.1 0.3 0.4\n")
    _write(os.path.join(root, "labels", "val", "d.txt"), "1 0.5 0.5 1 1\n")
    data = os.path.join(root, "data.yaml")
    _write(data, f"path: .\ntrain: images/train\nval: images/val\nnames: {names}\n")
    return data


def test_yolo_spec_reads_normalised_boxes_polygons_and_images_without_labels(tmp_path, specs):
    data = _yolo(str(tmp_path))
    name = f"yolo:{data}:train"
    specs.append(name)
    register_dataset_specs([name])
    records = DatasetCatalog.get(name)
    assert [os.path.basename(r["file_name"]) for r in records] == ["a.png", "b.png", "c.png"]
    assert [(r["width"], r["height"]) for r in records] == [(50, 40)] * 3
    assert _boxes(records[0]) == [(0, [20.0, 15.0, 30.0, 25.0]), (1, [0.0, 10.0, 10.0, 30.0])]
    assert _boxes(records[1]) == [(1, [5.0, 4.0, 15.0, 16.0])]
    assert records[2]["annotations"] == []
    assert MetadataCatalog.get(name).thing_classes == ["cat", "dog"]


def test_yolo_names_as_a_mapping_give_the_same_classes_as_a_list(tmp_path):
    listed = _yolo(str(tmp_path / "l"), "[cat, dog]")
    mapped = _yolo(str(tmp_path / "m"), "{0: cat, 1: dog}")
    assert DatasetSpec.parse(f"yolo:{listed}:val").classes() == ["cat", "dog"]
    assert DatasetSpec.parse(f"yolo:{mapped}:val").classes() == ["cat", "dog"]


def test_yolo_malformed_lines_are_dropped_and_named_with_file_and_line(tmp_path, specs, caplog):
    data = _yolo(str(tmp_path))
    labels = os.path.join(str(tmp_path), "labels", "train", "c.txt")
    _write(labels, "0 0.5 0.5 0.2 0.2\n2 0.5 0.5 0.1 0.1\n0 0.5 0.5\n\n0 x 0.5 0.1 0.1\n")
    name = f"yolo:{data}:train"
    specs.append(name)
    register_dataset_spec(name)
    with caplog.at_level(logging.WARNING, logger="fcos_d2"):
        records = DatasetCatalog.get(name)
    assert _boxes(records[2]) == [(0, [20.0, 16.0, 30.0, 24.0])]  # line 1 kept
    text = caplog.text
    assert f"{labels}:2: class 2 is not one of 0..1" in text
    assert f"{labels}:3: 3 values" in text
    assert f"{labels}:5: not numbers" in text
    assert "dropped 3 malformed" in text


def test_yolo_missing_split_is_an_error_naming_the_splits_there(tmp_path):
    data = _yolo(str(tmp_path))
    with pytest.raises(ValueError, match="no split 'test' .*train, val"):
        register_dataset_spec(f"yolo:{data}:test")


# --- VOC -----------------------------------------------------------------------------------------

_XML = """<annotation>
  <size><width>60</width><height>45</height><depth>3</depth></size>
  <object>
    <name>dog</name>
    <bndbox><xmin>11</xmin><ymin>21</ymin><xmax>30</xmax><ymax>40</ymax></bndbox>
  </object>
  <object>
    <name>cat</name>
    <difficult>1</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>60</xmax><ymax>45</ymax></bndbox>
  </object>
  <object>
    <name>cat</name>
  </object>
</annotation>
"""


def _voc(root, labels=None):
    _image(os.path.join(root, "JPEGImages", "img1.png"), 60, 45)
    _image(os.path.join(root, "JPEGImages", "img2.jpg"), 33, 21)
    _write(os.path.join(root, "Annotations", "img1.xml"), _XML)
    _write(os.path.join(root, "Annotations", "img2.xml"), "<annotation>\n</annotation>\n")
    _write(os.path.join(root, "ImageSets", "Main", "train.txt"), "img1\nimg2\n")
    if labels:
        _write(os.path.join(root, "labels.txt"), "".join(f"{n}\n" for n in labels))
    return root


def test_voc_spec_reads_one_based_pixels_any_suffix_and_difficult_as_crowd(tmp_path, specs, caplog):
    root = _voc(str(tmp_path))
    name = f"voc:{root}:train"
    specs.append(name)
    register_dataset_spec(name)
    with caplog.at_level(logging.WARNING, logger="fcos_d2"):
        records = DatasetCatalog.get(name)
    assert MetadataCatalog.get(name).thing_classes == ["cat", "dog"]  # sorted names of the XMLs
    assert [os.path.basename(r["file_name"]) for r in records] == ["img1.png", "img2.jpg"]
    # VOC xmin 11 .. xmax 30 (1-based, inclusive) is [10, 30) in 0-based corners
    assert _boxes(records[0]) == [(1, [10.0, 20.0, 30.0, 40.0]), (0, [0.0, 0.0, 60.0, 45.0])]
    assert [a["iscrowd"] for a in records[0]["annotations"]] == [0, 1]
    # img2's XML has no <size>: its size comes from the image file
    assert (records[1]["width"], records[1]["height"], records[1]["annotations"]) == (33, 21, [])
    # the third <object> (line 12 of the file) has no box: dropped and named
    xml = os.path.join(root, "Annotations", "img1.xml")
    assert f"{xml}:12: <object> 'cat' without <bndbox>" in caplog.text


def test_voc_labels_file_sets_the_class_order(tmp_path):
    root = _voc(str(tmp_path), labels=["dog", "cat", "bird"])
    assert DatasetSpec.parse(f"voc:{root}:train").classes() == ["dog", "cat", "bird"]


def test_voc_annotation_that_does_not_parse_leaves_its_image_out_with_a_warning(
    tmp_path, specs, caplog
):
    root = _voc(str(tmp_path))
    _write(os.path.join(root, "Annotations", "img2.xml"), "<annotation>\n<object>\n</annotation>\n")
    name = f"voc:{root}:train"
    specs.append(name)
    register_dataset_spec(name)
    with caplog.at_level(logging.WARNING, logger="fcos_d2"):
        records = DatasetCatalog.get(name)
    assert [os.path.basename(r["file_name"]) for r in records] == ["img1.png"]
    assert "img2.xml:3: not valid XML" in caplog.text and "image 'img2' left out" in caplog.text


# --- COCO and matching -----------------------------------------------------------------------


def _coco(root, categories):
    _image(os.path.join(root, "images", "x.png"), 40, 30)
    data = {
        "images": [{"id": 7, "file_name": "x.png", "width": 40, "height": 30}],
        "annotations": [
            {
                "id": 1,
                "image_id": 7,
                "category_id": categories[-1]["id"],
                "bbox": [2, 3, 10, 5],
                "area": 50,
                "iscrowd": 0,
            }
        ],
        "categories": categories,
    }
    path = os.path.join(root, "ann.json")
    _write(path, json.dumps(data))
    return f"coco:{path}:{os.path.join(root, 'images')}"


def test_coco_spec_orders_classes_by_category_id(tmp_path, specs):
    name = _coco(str(tmp_path), [{"id": 5, "name": "b"}, {"id": 2, "name": "a"}])
    specs.append(name)
    register_dataset_spec(name)
    records = DatasetCatalog.get(name)
    assert MetadataCatalog.get(name).thing_classes == ["a", "b"]
    assert _boxes(records[0]) == [(0, [2.0, 3.0, 10.0, 5.0])]  # id 2 ("a"), XYWH as in COCO
    assert MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id == {2: 0, 5: 1}


def test_test_dataset_classes_are_matched_to_the_training_classes_by_name(tmp_path, specs):
    train = f"yolo:{_yolo(str(tmp_path / 't'), '[cat, dog]')}:train"
    test = f"yolo:{_yolo(str(tmp_path / 'v'), '[dog, cat]')}:val"  # the other order
    coco = _coco(str(tmp_path / "c"), [{"id": 1, "name": "dog"}])  # a class absent: fine
    specs.extend([train, test, coco])
    register_dataset_specs([train, test, coco], classes_from=train)
    for name in (test, coco):
        assert MetadataCatalog.get(name).thing_classes == ["cat", "dog"]
    # val's only box is class 1 of its own file ("cat"): class 0 of the training classes
    assert _boxes(DatasetCatalog.get(test)[0]) == [(0, [0.0, 0.0, 50.0, 40.0])]
    assert [a["category_id"] for a in DatasetCatalog.get(coco)[0]["annotations"]] == [1]
    # lacking "cat", the file's ids cannot map onto every class (detectron2's evaluator needs
    # that): its ground truth is converted for evaluation instead of read as it is
    assert MetadataCatalog.get(coco).get("json_file", None) is None


def test_a_class_the_training_data_lacks_is_an_error_naming_it(tmp_path, specs):
    train = f"yolo:{_yolo(str(tmp_path / 't'), '[cat, dog]')}:train"
    test = f"yolo:{_yolo(str(tmp_path / 'v'), '[cat, bird]')}:val"
    specs.extend([train, test])
    with pytest.raises(ValueError, match="class 'bird', which the training data"):
        register_dataset_specs([train, test], classes_from=train)


def test_num_classes_that_disagree_with_a_spec_is_an_error_naming_both(tmp_path, specs):
    name = f"yolo:{_yolo(str(tmp_path))}:train"
    specs.append(name)
    register_dataset_specs([name])
    with pytest.raises(ValueError, match=r"NUM_CLASSES=80 but dataset .* has 2 classes"):
        check_dataset_classes([name], 80)
    check_dataset_classes([name], 2)


def test_names_that_are_not_specs_are_left_alone():
    assert not is_dataset_spec("coco_2017_val") and not is_dataset_spec("json:a:b")
    assert is_dataset_spec("voc:/data/VOC2007:test")
    register_dataset_specs(["shapes_val", "my:own"])  # nothing to do, no error
    assert "my:own" not in DatasetCatalog.list()


def test_missing_files_are_one_line_errors_naming_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.yaml"):
        register_dataset_spec(f"yolo:{tmp_path}/nothere.yaml:train")
    with pytest.raises(FileNotFoundError, match="ImageSets.Main.val.txt' does not exist"):
        register_dataset_spec(f"voc:{_voc(str(tmp_path))}:val")


# --- the same boxes in the three formats ---------------------------------------------------------


def test_the_same_boxes_in_three_formats_give_the_same_ap(tmp_path, specs):
    """Two images with integer-pixel boxes written as COCO, VOC and YOLO (by the writer, whose
    lines are checked by hand below), evaluated with the same detections: a false positive
    (score 0.95) ranked above the one exact box (0.9), the second ground-truth box missed, so
    precision is 1/2 up to recall 1/2: AP = 0.5 x 51 of COCO's 101 recall points (25.248 %)."""
    _image(str(tmp_path / "src" / "p.png"), 64, 48)
    _image(str(tmp_path / "src" / "q.png"), 40, 40)
    records = [
        {
            "file_name": str(tmp_path / "src" / "p.png"),
            "image_id": 1,
            "height": 48,
            "width": 64,
            "annotations": [{"bbox": [8, 6, 40, 30], "bbox_mode": 0, "category_id": 0}],
        },
        {
            "file_name": str(tmp_path / "src" / "q.png"),
            "image_id": 2,
            "height": 40,
            "width": 40,
            "annotations": [{"bbox": [0, 0, 20, 40], "bbox_mode": 0, "category_id": 0}],
        },
    ]
    names = [
        write_dataset(records, ["thing"], f, str(tmp_path / f), "val")
        for f in ("coco", "voc", "yolo")
    ]
    with open(tmp_path / "yolo" / "labels" / "val" / "p.txt") as f:
        assert f.read() == "0 0.375000 0.375000 0.500000 0.500000\n"  # (8+40)/2/64 ...
    with open(tmp_path / "voc" / "Annotations" / "p.xml") as f:
        assert "<xmin>9</xmin><ymin>7</ymin><xmax>40</xmax><ymax>30</ymax>" in f.read()
    specs.extend(names)
    detections = {"p.png": [([8, 6, 40, 30], 0.9)], "q.png": [([20, 20, 40, 40], 0.95)]}
    aps = []
    for name in names:
        register_dataset_spec(name)
        evaluator = FCOSCOCOEvaluator(name, output_dir=str(tmp_path / "eval"), distributed=False)
        evaluator.reset()
        for record in DatasetCatalog.get(name):
            found = detections[os.path.basename(record["file_name"])]
            instances = Instances((record["height"], record["width"]))
            instances.pred_boxes = Boxes(torch.tensor([b for b, _ in found], dtype=torch.float32))
            instances.scores = torch.tensor([s for _, s in found])
            instances.pred_classes = torch.zeros(len(found), dtype=torch.int64)
            evaluator.process([{"image_id": record["image_id"]}], [{"instances": instances}])
        aps.append(evaluator.evaluate()["bbox"]["AP"])
    assert aps == pytest.approx([100 * 0.5 * 51 / 101] * 3, abs=1e-3)


def test_a_commands_dataset_option_is_matched_to_the_configs_training_classes(tmp_path, specs):
    from fcos_d2.cli.common import check_datasets
    from tests.common_utils import tiny_cfg

    train = f"yolo:{_yolo(str(tmp_path / 't'), '[cat, dog]')}:train"
    test = f"yolo:{_yolo(str(tmp_path / 'v'), '[dog, cat]')}:val"
    specs.extend([train, test])
    cfg = tiny_cfg(num_classes=2)
    cfg.DATASETS.TRAIN = (train,)
    check_datasets([test], cfg=cfg)
    assert MetadataCatalog.get(test).thing_classes == ["cat", "dog"]
    # an exported model's class names, when there is no config
    unregister_dataset_spec(test)
    check_datasets([test], classes=["dog", "cat", "bird"])
    assert MetadataCatalog.get(test).thing_classes == ["dog", "cat", "bird"]


def test_an_empty_split_and_a_bom_are_handled(tmp_path, specs):
    data = _yolo(str(tmp_path))
    os.makedirs(os.path.join(str(tmp_path), "images", "test"))
    with open(data, "a") as f:
        f.write("test: images/test\n")
    name = f"yolo:{data}:test"
    specs.append(name)
    register_dataset_spec(name)
    with pytest.raises(ValueError, match="split 'test' has no images"):
        DatasetCatalog.get(name)
    # a label file saved with a UTF-8 byte order mark keeps its first line
    _write(os.path.join(str(tmp_path), "labels", "train", "c.txt"), "\ufeff1 0.5 0.5 0.2 0.25\n")
    train = f"yolo:{data}:train"
    specs.append(train)
    register_dataset_spec(train)
    assert _boxes(DatasetCatalog.get(train)[2]) == [(1, [20.0, 15.0, 30.0, 25.0])]


def test_exif_rotation_swaps_the_size_as_detectron2_reads_the_image(tmp_path):
    from PIL import Image

    from fcos_d2.data.formats.common import image_size

    path = str(tmp_path / "rotated.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (40, 30)).save(path, exif=exif)
    from detectron2.data.detection_utils import read_image

    assert image_size(path) == read_image(path).shape[:2] == (40, 30)


def test_class_names_are_read_once_until_their_files_change(tmp_path, monkeypatch):
    import fcos_d2.data.formats.spec as spec_module

    root = _voc(str(tmp_path), labels=["dog", "cat"])
    calls = []
    real = spec_module.voc_classes
    monkeypatch.setattr(spec_module, "voc_classes", lambda r: calls.append(r) or real(r))
    spec = DatasetSpec.parse(f"voc:{root}:train")
    assert spec.classes() == spec.classes() == ["dog", "cat"] and len(calls) == 1
    labels = os.path.join(root, "labels.txt")
    _write(labels, "cat\ndog\n")
    os.utime(labels, (1, 1))  # another modification time, whatever the clock's resolution
    assert spec.classes() == ["cat", "dog"] and len(calls) == 2
