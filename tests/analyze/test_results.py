"""
``python -m fcos_d2.analyze results`` on a hand-built image whose answers are worked out by hand:
AP against detectron2's ``COCOEvaluator``, per-class AP, F1 thresholds against hand-computed F1
curves, the error breakdown, the thresholds file and its reader's errors.
"""

import json
import os

import numpy as np
import pytest
import torch
from detectron2.evaluation import COCOEvaluator
from detectron2.structures import Boxes, Instances

from fcos_d2.analyze.__main__ import main
from fcos_d2.analyze.results import analyse_results, coco_ground_truth
from fcos_d2.analyze.thresholds import best_f1_threshold
from fcos_d2.config import read_class_thresholds
from tests.common_utils import coco_dict_dataset

DEMO_CFG = os.path.join(
    os.path.dirname(__file__), "..", "..", "configs", "demo", "FCOS_R18_shapes_demo.yaml"
)


def test_best_f1_threshold_against_a_hand_computed_curve():
    # kept:   1     2     3     4     5
    # P:      1     1/2   2/3   3/4   3/5
    # R:      1/4   1/4   2/4   3/4   3/4
    # F1:     .400  .333  .571  .750  .667   -> best after the 4th: threshold 0.6
    p = best_f1_threshold(np.array([0.9, 0.8, 0.7, 0.6, 0.5]), np.array([1, 0, 1, 1, 0]), 4)
    assert p.threshold == 0.6 and p.reason is None
    assert (p.precision, p.recall) == (0.75, 0.75) and abs(p.f1 - 0.75) < 1e-12


def test_equal_scores_are_kept_or_dropped_together():
    # cutting between the two 0.7s (F1 1.0) is impossible with a threshold: keeping both gives
    # P 2/3, R 1, F1 0.8 > the 0.667 of keeping the 0.9 alone
    p = best_f1_threshold(np.array([0.7, 0.9, 0.7]), np.array([True, True, False]), 2)
    assert p.threshold == 0.7 and abs(p.precision - 2 / 3) < 1e-12 and abs(p.f1 - 0.8) < 1e-12


def test_equal_f1_prefers_the_higher_threshold():
    # keep 1: P 1, R 1/2, F1 2/3; keep 2: 1/2, 1/2, 1/2; keep 3: 1/3, 1/2, 2/5;
    # keep 4: P 1/2, R 1, F1 2/3 again -> the higher threshold, 0.9
    p = best_f1_threshold(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 0, 1]), 2)
    assert p.threshold == 0.9 and p.recall == 0.5


def test_classes_whose_detections_are_all_wrong_drop_them():
    # F1 is 0 at every threshold: no threshold can help, and every detection seen was wrong
    p = best_f1_threshold(np.array([0.9, 0.3]), np.array([False, False]), 2)
    assert (p.threshold, p.reason) == (1.0, "no true positive")
    p = best_f1_threshold(np.array([0.9]), np.array([False]), 0)
    assert p.threshold == 1.0 and p.reason.startswith("no ground truth")
    p = best_f1_threshold(np.array([]), np.array([], bool), 0)
    assert (p.threshold, p.reason) == (0.0, "no ground truth, no detection")


# One 100 x 100 image, boxes XYWH: A (class "a") at [0, 0, 10, 10], B ("b") at [50, 50, 10, 10].
# Detections (class, box, score) and what each is, by hand:
#   a [0, 0, 10, 10] .9    true positive (A)
#   a [0, 0, 10, 10] .8    duplicate (IoU 1 with A, taken)
#   a [50, 50, 10, 10] .7  classification (IoU 1 with B, other class)
#   a [56, 50, 10, 10] .6  both (IoU 40 / 160 = .25 with B, other class; 0 with A)
#   a [80, 0, 10, 10] .5   background
#   b [55, 50, 10, 10] .4  localisation (IoU 50 / 150 = .33 with B)
# B is missed. AP: a 100 (its best detection is exact), b 0 -> 50; thresholds: a .9 (F1 1),
# b 1.0 (no true positive: its one detection was wrong). At the thresholds: the .9 is kept.
GT = {
    "images": [{"id": 1, "file_name": "1.jpg", "width": 100, "height": 100}],
    "annotations": [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [0, 0, 10, 10],
            "area": 100,
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 2,
            "bbox": [50, 50, 10, 10],
            "area": 100,
            "iscrowd": 0,
        },
    ],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
}
DETS = [
    (0, [0, 0, 10, 10], 0.9),
    (0, [0, 0, 10, 10], 0.8),
    (0, [50, 50, 10, 10], 0.7),
    (0, [56, 50, 10, 10], 0.6),
    (0, [80, 0, 10, 10], 0.5),
    (1, [55, 50, 10, 10], 0.4),
]
NAME = "fcos_analyze_results_test"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """The hand-built dataset registered, and COCOEvaluator's AP and results file for DETS."""
    root = tmp_path_factory.mktemp("analyze_results")
    with coco_dict_dataset(NAME, GT, root):
        evaluator = COCOEvaluator(NAME, tasks=("bbox",), output_dir=str(root / "inference"))
        evaluator.reset()
        xyxy = [[x, y, x + w, y + h] for _, (x, y, w, h), _ in DETS]
        instances = Instances(
            (100, 100),
            pred_boxes=Boxes(torch.tensor(xyxy, dtype=torch.float32)),
            scores=torch.tensor([s for *_, s in DETS]),
            pred_classes=torch.tensor([c for c, *_ in DETS]),
        )
        evaluator.process([{"image_id": 1}], [{"instances": instances}])
        ap = evaluator.evaluate()["bbox"]
        yield root, ap, str(root / "inference" / "coco_instances_results.json")


def _analysis(evaluated):
    root, _, results_file = evaluated
    coco, names, ids = coco_ground_truth(NAME, str(root))
    results = json.loads(open(results_file).read())
    return analyse_results(coco, results, names, ids)


def test_ap_is_cocoevaluators_and_per_class_ap_is_worked_out(evaluated):
    _, ap, _ = evaluated
    analysis = _analysis(evaluated)
    assert abs(ap["AP"] - 50.0) < 1e-6  # the hand answer, through detectron2
    for key in ("AP", "AP50", "AP75"):
        assert abs(analysis.summary[key] - ap[key]) < 1e-9
    # both boxes are small: no medium or large box, NaN as COCOEvaluator reports it (not -100)
    for key in ("APm", "APl"):
        assert ap[key] != ap[key] and analysis.summary[key] != analysis.summary[key]
    assert analysis.per_class["a"]["AP"] == pytest.approx(100.0)
    assert analysis.per_class["b"]["AP"] == 0.0
    assert analysis.per_class["a"]["ground_truth"] == 1
    assert analysis.per_class["a"]["detections"] == 5


def test_thresholds_and_error_breakdown_are_worked_out(evaluated):
    analysis = _analysis(evaluated)
    a, b = analysis.thresholds["a"], analysis.thresholds["b"]
    # scores went through float32 (detectron2's Instances)
    assert (a.threshold, a.precision, a.recall, a.f1) == (pytest.approx(0.9), 1.0, 1.0, 1.0)
    assert (b.threshold, b.reason) == (1.0, "no true positive")
    every = analysis.errors["all_detections"]
    assert {
        k: every[k]
        for k in (
            "detections",
            "true_positives",
            "duplicate",
            "classification",
            "localisation",
            "both",
            "background",
            "missed",
        )
    } == {
        "detections": 6,
        "true_positives": 1,
        "duplicate": 1,
        "classification": 1,
        "localisation": 1,
        "both": 1,
        "background": 1,
        "missed": 1,
    }
    kept = analysis.errors["at_class_thresholds"]
    assert (kept["detections"], kept["true_positives"]) == (1, 1)
    assert sum(kept[t] for t in ("duplicate", "classification", "localisation", "both")) == 0
    assert kept["background"] == 0
    assert kept["missed"] == 1 and kept["precision"] == 1.0 and kept["recall"] == 0.5


def test_cli_writes_a_thresholds_file_the_model_reads(evaluated, tmp_path, capsys):
    _, _, results_file = evaluated
    rc = main(
        [
            "results",
            "--config-file",
            DEMO_CFG,
            "--dataset",
            NAME,
            "--predictions",
            results_file,
            "--output",
            str(tmp_path),
            "MODEL.FCOS.NUM_CLASSES",
            "2",
        ]
    )
    assert rc == 0
    values = read_class_thresholds(str(tmp_path / "class_thresholds.json"), 2)
    assert values == [pytest.approx(0.9), 1.0]
    report = json.loads((tmp_path / "results_analysis.json").read_text())
    assert report["per_class"]["a"]["f1_threshold"]["threshold"] == pytest.approx(0.9)
    for picture in ("pr_curves.png", "class_ap.png", "errors.png"):
        assert (tmp_path / picture).stat().st_size > 0
    assert "AP 50.00" in capsys.readouterr().out


def test_cli_without_a_model_or_results_is_a_one_line_error(evaluated, tmp_path, capsys):
    rc = main(["results", "--config-file", DEMO_CFG, "--dataset", NAME, "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "MODEL.WEIGHTS" in err and len(err.splitlines()) == 1


def _write(tmp_path, data):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return str(path)


@pytest.mark.parametrize(
    "data, message",
    [
        ("{not json", "not readable JSON"),
        ({"classes": ["a", "b"]}, "no 'thresholds'"),
        ({"classes": ["a"], "thresholds": {"a": 0.5}}, "lists 1 'classes'"),
        ({"classes": ["a", "b"], "thresholds": {"a": 0.5}}, "no threshold for class(es) ['b']"),
        ({"classes": ["a", "b"], "thresholds": {"a": 0.5, "b": 1.5}}, "1.5 of class 'b'"),
        ({"classes": ["a", "b"], "thresholds": {"a": 0.5, "b": 0.1, "c": 0.2}}, "['c'] not in"),
    ],
)
def test_thresholds_file_errors_name_the_file(tmp_path, data, message):
    path = _write(tmp_path, data)
    with pytest.raises(ValueError) as e:
        read_class_thresholds(path, 2)
    assert message in str(e.value) and path in str(e.value)


def test_missing_thresholds_file_is_named_with_its_key(cfg, tmp_path):
    from detectron2.modeling import build_model

    cfg.MODEL.FCOS.CLASS_THRESHOLDS_FILE = str(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="MODEL.FCOS.CLASS_THRESHOLDS_FILE: .*missing.json"):
        build_model(cfg)


def test_no_detections_at_all_counts_every_box_missed(evaluated):
    root, _, _ = evaluated
    coco, names, ids = coco_ground_truth(NAME, str(root))
    analysis = analyse_results(coco, [], names, ids)
    assert analysis.summary["AP"] == 0.0
    every = analysis.errors["all_detections"]
    assert (every["detections"], every["missed"], every["ground_truth"]) == (0, 2, 2)
    assert every["recall"] == 0.0
    assert analysis.thresholds["a"].reason == "no true positive"
