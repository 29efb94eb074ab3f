"""FCOSCOCOEvaluator: faster-coco-eval gives pycocotools' AP, per class too, and the same
results file."""

import json

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from fcos_d2.evaluation import FCOSCOCOEvaluator
from tests.common_utils import coco_dict_dataset

pytest.importorskip("faster_coco_eval")  # the 'eval' extra; make setup installs it

NAME = "fcos_evaluation_test"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """20 images, 1-6 boxes of 3 classes (category ids 1, 3, 7: not contiguous), 2 crowd."""
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(1, 21):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 150})
        for _ in range(rng.integers(1, 7)):
            x, y = rng.uniform(0, 150), rng.uniform(0, 100)
            w, h = rng.uniform(4, 50), rng.uniform(4, 50)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(rng.choice([1, 3, 7])),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(len(anns) in (5, 17)),
                }
            )
    data = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": c, "name": n} for c, n in ((1, "a"), (3, "b"), (7, "c"))],
    }
    root = tmp_path_factory.mktemp("evaluation")
    with coco_dict_dataset(NAME, data, root):
        yield data, root


def _outputs(data):
    """Per image: the boxes jittered, some with the wrong class, plus random false positives."""
    rng = np.random.default_rng(1)
    contiguous = {1: 0, 3: 1, 7: 2}
    outputs = []
    for im in data["images"]:
        boxes, scores, classes = [], [], []
        for a in (a for a in data["annotations"] if a["image_id"] == im["id"]):
            x, y, w, h = np.array(a["bbox"]) + rng.normal(0, 2, 4)
            boxes.append([x, y, x + abs(w), y + abs(h)])
            scores.append(rng.uniform(0.2, 1))
            wrong = rng.uniform() < 0.2
            classes.append(rng.integers(0, 3) if wrong else contiguous[a["category_id"]])
        for _ in range(5):
            x, y = rng.uniform(0, 180, 2)
            boxes.append([x, y, x + 15, y + 12])
            scores.append(rng.uniform(0.05, 0.6))
            classes.append(rng.integers(0, 3))
        inst = Instances(
            (150, 200),
            pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32)),
            scores=torch.tensor(scores, dtype=torch.float32),
            pred_classes=torch.tensor(classes),
        )
        outputs.append(({"image_id": im["id"]}, {"instances": inst}))
    return outputs


def _evaluate(data, out_dir, faster):
    evaluator = FCOSCOCOEvaluator(
        NAME, tasks=("bbox",), output_dir=str(out_dir), use_faster_coco_eval=faster
    )
    evaluator.reset()
    for inp, out in _outputs(data):
        evaluator.process([inp], [out])
    return evaluator.backend, evaluator.evaluate()["bbox"]


def test_faster_coco_eval_gives_pycocotools_ap(dataset, tmp_path):
    data, _ = dataset
    backend_f, faster = _evaluate(data, tmp_path / "f", True)
    backend_p, official = _evaluate(data, tmp_path / "p", False)
    assert (backend_f, backend_p) == ("faster-coco-eval", "pycocotools")
    assert set(faster) == set(official) and "AP-a" in faster
    assert 10 < official["AP"] < 90  # a result with something to get right
    for key, value in official.items():  # NaN where the data has no box of that kind
        assert (value != value and faster[key] != faster[key]) or abs(faster[key] - value) <= 1e-4
    assert sum(v == v for v in official.values()) >= 8
    assert json.loads((tmp_path / "f" / "coco_instances_results.json").read_text()) == json.loads(
        (tmp_path / "p" / "coco_instances_results.json").read_text()
    )
