"""A user's own data with no Python, in fresh processes: YOLO training data by spec (a malformed
label named in log.txt), evaluation on the same images as Pascal VOC, fine-tuning onto other
classes from a checkpoint (one log line), and sliced evaluation (eager and exported) and
prediction on mosaics."""

import json
import os

import pytest

from tests.cli.test_cli import DEMO, _fcos
from tests.common_utils import REPO

SHORT = ["SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.STEPS", "(1,)"]
SHORT += ["SOLVER.WARMUP_ITERS", "1", "DATALOADER.NUM_WORKERS", "0"]


@pytest.mark.slow
def test_own_data_by_spec_fine_tuning_and_slicing_without_python(tmp_path):
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "datasets"), "PYTHONPATH": REPO}
    run = lambda *args: _fcos(args, env, tmp_path)  # noqa: E731
    res = run("data", "shapes", "--output", "datasets/shapes", "--num-train", "6", "--num-val", "3")
    assert res.returncode == 0, res.stderr
    for split in ("train", "val"):
        for fmt in ("yolo", "voc"):
            res = run("data", "convert", "--dataset", f"shapes_{split}", "--format", fmt,
                      "--split", split, "--output", fmt)  # fmt: skip
            assert res.returncode == 0, res.stderr[-2000:]
    with open(tmp_path / "yolo/labels/train/000002.txt", "a") as f:
        f.write("7 0.5 0.5 0.1 0.1\n")  # class 7 of 3: named, dropped
    lines = open(tmp_path / "yolo/labels/train/000002.txt").read().splitlines()
    yolo, voc = "yolo:yolo/data.yaml", "voc:voc"

    # training on YOLO data, evaluated on the same validation images as VOC
    res = run("train", "--config-file", DEMO, "--output", "out", *SHORT,
              "DATASETS.TRAIN", f'("{yolo}:train",)', "DATASETS.TEST", f'("{voc}:val",)')  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    log = open(tmp_path / "out/log.txt").read()
    label_file = os.path.join("yolo", "labels", "train", "000002.txt")
    assert f"{label_file}:{len(lines)}: class 7 is not one of 0..2" in log
    weights = str(tmp_path / "out/model_final.pth")

    # evaluation on a VOC spec: its ground truth converted for COCO evaluation, 3 images
    # (the AP of one model on the three formats is compared in tests/data/test_formats.py)
    res = run("evaluate", "--config-file", DEMO, "--weights", weights, "--dataset", f"{voc}:val",
              "--output", "ev")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    ev = tmp_path / "ev" / "inference"
    (gt,) = [f for f in os.listdir(ev) if f.endswith("_coco_format.json")]
    assert len(json.load(open(ev / gt))["images"]) == 3

    # fine-tuning onto 4 classes: a VOC folder whose labels.txt names a fourth
    with open(tmp_path / "voc/labels.txt", "w") as f:
        f.write("circle\nsquare\ntriangle\nstar\n")
    res = run("train", "--config-file", DEMO, "--weights", weights, "--output", "ft", *SHORT,
              "DATASETS.TRAIN", f'("{voc}:train",)', "DATASETS.TEST", "()")  # fmt: skip
    assert res.returncode == 2 and "NUM_CLASSES=3 but dataset" in res.stderr  # one line
    assert "has 4 classes" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run("train", "--config-file", DEMO, "--weights", weights, "--output", "ft", *SHORT,
              "DATASETS.TRAIN", f'("{voc}:train",)', "DATASETS.TEST", "()",
              "MODEL.FCOS.NUM_CLASSES", "4")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    log = open(tmp_path / "ft/log.txt").read()
    assert "head.cls_logits.bias, head.cls_logits.weight re-initialised for the model's 4 " in log
    assert "(the checkpoint has 3)" in log

    # sliced evaluation and prediction on mosaics of the validation images
    res = run("data", "mosaic", "--dataset", "shapes_val", "--size", "512", "--grid", "2",
              "--output", "mosaic")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    mosaic = "coco:mosaic/val.json:mosaic/val"
    res = run("evaluate", "--config-file", DEMO, "--weights", weights, "--dataset", mosaic,
              "--slice", "256", "256", "--output", "ev_sliced")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "ev_sliced/coco_instances_results.json").is_file()
    res = run("export", "--config-file", DEMO, "--weights", weights, "--format", "onnx",
              "--output", "onnx", "--calibration-dataset", f"{yolo}:train")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    res = run("evaluate", "--exported", "onnx", "--dataset", mosaic, "--slice", "256", "256",
              "--output", "ev_onnx_sliced")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "ev_onnx_sliced/coco_instances_results.json").is_file()
    res = run("predict", "--config-file", DEMO, "--weights", weights, "--input", "mosaic/val",
              "--slice", "256", "256", "--overlap", "0.25", "--output", "pred")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    detections = json.load(open(tmp_path / "pred/detections.json"))
    assert {os.path.basename(d["file_name"]) for d in detections} <= {"000001.png"}
