"""``python -m fcos_d2.analyze data``: training scales, the mapper's resize, two scales, the
alternatives, the files it writes and its one-line errors."""

import json
import os

import numpy as np
import pytest

from fcos_d2.analyze.__main__ import main
from fcos_d2.analyze.data import (
    DataSetup,
    ImageBoxes,
    analyse_data,
    resize_boxes,
    training_scales,
)
from fcos_d2.analyze.matching import REASONS
from fcos_d2.modeling.core import FCOSMatcher

DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "demo")
DEMO_CFG = os.path.join(DEMO, "FCOS_R18_shapes_demo.yaml")


def test_training_scales_of_choice_and_range_modes(cfg):
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = (640, 672, 704), "choice"
    assert training_scales(cfg) == (640, 672, 704)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = (640, 800), "range"
    assert training_scales(cfg) == (640, 800)


def test_resize_follows_the_shortest_edge_rule_with_the_cap():
    boxes = np.array([[10, 20, 30, 40]], np.float32)
    # 100 x 200 to short side 300: 300 x 600, boxes x3
    size, out, keep = resize_boxes(boxes, (100, 200), 300, 1000)
    assert size == (300, 600) and out.tolist() == [[30, 60, 90, 120]] and keep.tolist() == [True]
    # 100 x 400 to 300 would be 300 x 1200 > 1000: scale 1000 / 400 = 2.5 -> 250 x 1000
    size, out, _ = resize_boxes(boxes, (100, 400), 300, 1000)
    assert size == (250, 1000) and out.tolist() == [[25, 50, 75, 100]]


def test_resize_clips_to_the_image_and_drops_boxes_left_empty():
    boxes = np.array([[-5, 10, 20, 30], [120, 10, 130, 20]], np.float32)  # 2nd outside 100 wide
    size, out, keep = resize_boxes(boxes, (100, 100), 100, 1000)
    assert out[0].tolist() == [0, 10, 20, 30] and keep.tolist() == [True, False]


def _setup(scales):
    m = FCOSMatcher(
        strides=(8,),
        size_ranges=((-1.0, float("inf")),),
        center_sampling_radius=0.0,
        legacy_areas=False,
    )
    return DataSetup(m, ("p3",), 32, tuple(scales), 1000)


def test_a_small_box_is_recalled_at_the_larger_scale_only():
    # 3 x 3 at the origin of a 100 x 100 image: at scale 100 no location (4, 4) inside; at 300
    # it is 9 x 9 and (4, 4) is inside
    image = ImageBoxes(
        "a.png", (100, 100), np.array([[0, 0, 3, 3]], np.float32), np.array([0]), (({}, {"id": 7}),)
    )
    report, sizes = analyse_data([image], _setup([100, 300]))
    (run,) = report["runs"]
    small, large = run["scales"]
    assert (small["scale"], small["recalled"], small["bpr"]) == (100, 0, 0.0)
    assert small["not_recalled"]["by_reason"]["smaller_than_stride"] == 1
    assert small["not_recalled"]["first"] == [
        {"annotation_id": 7, "image": "a.png", "size": [3.0, 3.0], "reason": "smaller_than_stride"}
    ]
    assert (large["scale"], large["recalled"], large["bpr"]) == (300, 1, 1.0)
    assert sizes[100].tolist() == [1.5] and sizes[300].tolist() == [4.5]


def test_alternatives_are_reported_side_by_side():
    # two levels, strides 8 / 16; a 40 x 40 box at (20, 20) of a 64 x 64 image (centre size 20):
    # with the boundary 64 it is P3's (locations 36, 44 of its centre region 40 +- 12, largest
    # distance 24 at most); with the boundary 8 it is P4's (24, 40, 56 of 40 +- 24, 20 at 40)
    m = FCOSMatcher(
        strides=(8, 16),
        size_ranges=((-1.0, 64.0), (64.0, float("inf"))),
        center_sampling_radius=1.5,
        legacy_areas=False,
    )
    setup = DataSetup(m, ("p3", "p4"), 32, (64,), 1000)
    image = ImageBoxes(
        "b.png", (64, 64), np.array([[20, 20, 60, 60]], np.float32), np.array([1]), (({}, {}),)
    )
    report, _ = analyse_data([image], setup, alternatives=[[8.0]])
    own, alt = report["runs"]
    assert own["sizes_of_interest"] == [64.0] and alt["sizes_of_interest"] == [8.0]
    assert [lv["boxes"] for lv in own["scales"][0]["levels"]] == [1, 0]
    assert [lv["boxes"] for lv in alt["scales"][0]["levels"]] == [0, 1]


REPORT_KEYS = {
    "boxes",
    "recalled",
    "bpr",
    "positives",
    "ambiguous",
    "ambiguous_fraction",
    "ambiguous_fraction_different_class",
    "levels",
    "not_recalled",
}


@pytest.fixture(scope="module")
def coco_file(tmp_path_factory):
    # 2 images at the training size 224: a 64 x 64 box (P3 locations {28, 36}^2 of its
    # centre region 32 +- 12) overlapping a 20 x 20 box of another class at (30, 30) (P3
    # {36, 44}^2): (36, 36) is ambiguous and goes to the smaller box; a 2 x 2 box that holds no
    # location; a crowd box
    path = tmp_path_factory.mktemp("analyze_data") / "nested_boxes.json"
    data = {
        "images": [
            {"id": 1, "file_name": "1.jpg", "width": 224, "height": 224},
            {"id": 2, "file_name": "2.jpg", "width": 300, "height": 224},
        ],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [0, 0, 64, 64], "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 2, "bbox": [30, 30, 20, 20], "iscrowd": 0},
            {"id": 21, "image_id": 2, "category_id": 1, "bbox": [100, 100, 2, 2], "iscrowd": 0},
            {"id": 22, "image_id": 2, "category_id": 2, "bbox": [0, 0, 50, 50], "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
    }
    path.write_text(json.dumps(data))
    return str(path)


def test_cli_writes_the_report_and_the_picture(coco_file, tmp_path, capsys):
    rc = main(
        [
            "data",
            "--config-file",
            DEMO_CFG,
            "--coco-json",
            coco_file,
            "--output",
            str(tmp_path),
            "--sizes-of-interest",
            "[32, 64]",
            # the training size the expected values below are worked out for
            "INPUT.MIN_SIZE_TRAIN",
            "(224,)",
            "INPUT.MAX_SIZE_TRAIN",
            "320",
        ]
    )
    assert rc == 0
    report = json.loads((tmp_path / "data_analysis.json").read_text())
    assert (tmp_path / "data_analysis.png").stat().st_size > 0
    folder = os.path.basename(os.path.dirname(coco_file))
    assert report["datasets"] == [f"{folder}_nested_boxes"] and report["images"] == 2
    assert [r["sizes_of_interest"] for r in report["runs"]] == [[64.0, 128.0], [32.0, 64.0]]
    scale = report["runs"][0]["scales"][0]
    assert REPORT_KEYS <= set(scale)
    assert (scale["boxes"], scale["recalled"]) == (3, 2)
    (missed,) = scale["not_recalled"]["first"]
    assert missed["annotation_id"] == 21 and missed["reason"] == "smaller_than_stride"
    # positives: 3 of the large box, 4 of the small one; 1 of them ambiguous between classes
    assert (scale["positives"], scale["ambiguous"]) == (7, 1)
    assert scale["ambiguous_fraction_different_class"] == scale["ambiguous_fraction"] == 1 / 7
    assert [lv["positives"] for lv in scale["levels"]] == [7, 0, 0]
    out = capsys.readouterr().out
    assert "BPR %" in out and "[32, 64]" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sizes-of-interest", "[64]"], "needs 2 increasing positive numbers"),
        (["--sizes-of-interest", "[128, 64]"], "needs 2 increasing"),
        (["--sizes-of-interest", "sixty"], "is not a list of numbers"),
        (["--dataset", "no_such_dataset"], "not registered"),
        (["MODEL.NO_SUCH_KEY", "1"], "Non-existent key: MODEL.NO_SUCH_KEY"),
        (["MODEL.FCOS.NUM_CLASSES", "3", "--dataset", "x"], "--dataset after the overrides"),
    ],
)
def test_cli_errors_are_one_line(coco_file, tmp_path, capsys, extra, message):
    rc = main(["data", "--config-file", DEMO_CFG, "--output", str(tmp_path), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and len(err.splitlines()) == 1


def test_reasons_are_the_documented_ones():
    assert REASONS == (
        "recalled",
        "smaller_than_stride",
        "outside_ranges",
        "taken_by_smaller_boxes",
    )


def test_report_file_is_strict_json_with_the_open_range_as_null(coco_file, tmp_path):
    assert (
        main(
            ["data", "--config-file", DEMO_CFG, "--coco-json", coco_file, "--output", str(tmp_path)]
        )
        == 0
    )
    text = (tmp_path / "data_analysis.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    levels = json.loads(text)["runs"][0]["scales"][0]["levels"]
    assert [lv["size_range"] for lv in levels] == [[-1.0, 64.0], [64.0, 128.0], [128.0, None]]
