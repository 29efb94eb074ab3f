"""python -m fcos_d2.demo on a folder, a single image and a video, with a model trained here."""

import json
import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

from fcos_d2.data import dataset_metadata
from fcos_d2.data.shapes import generate_split
from fcos_d2.demo import main
from fcos_d2.export.predictor import ExportedPredictor
from fcos_d2.export.writers import export_model
from fcos_d2.predictor import Predictor
from tests.common_utils import REPO, registered_dataset, tiny_cfg
from tests.train_helpers import train_on_dataset

pytestmark = pytest.mark.slow  # trains a model, exports it, runs the demo command

THRESH = 0.2
DATASET = "fcos_demo_test_shapes"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny FCOS trained for 40 iterations on 3 generated images, saved with its config."""
    root = tmp_path_factory.mktemp("demo")
    json_file = generate_split(
        str(root), "train", 3, seed=3, image_size=(81, 99), max_shapes=3, size_range=(20, 50)
    )
    with registered_dataset(DATASET, json_file, root / "train"):
        cfg = tiny_cfg()
        cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 96, 128
        cfg.DATASETS.TEST = (DATASET,)
        model = train_on_dataset(cfg, DATASET, iterations=40)
        DetectionCheckpointer(model, save_dir=str(root)).save("model_final")
        config = root / "config.yaml"
        config.write_text(cfg.dump())
        yield {
            "root": root,
            "cfg": cfg,
            "config": str(config),
            "weights": str(root / "model_final.pth"),
            "images": sorted(str(p) for p in (root / "train").iterdir()),
            "json": json.loads(open(json_file).read()),
            "json_file": json_file,
        }


@pytest.fixture
def demo_log():
    """The demo's log records (detectron2's logger set-up does not propagate to caplog)."""
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("fcos_d2.demo")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _demo(trained, *args, weights=None):
    opts = ["MODEL.WEIGHTS", trained["weights"] if weights is None else weights]
    argv = ["--config-file", trained["config"], "--confidence-threshold", str(THRESH)]
    return main([*argv, *args, "--opts", *opts])


def _predictor(trained):
    cfg = trained["cfg"].clone()
    cfg.MODEL.WEIGHTS = trained["weights"]
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = THRESH
    return Predictor(cfg)


def _expected(instances, category_of_class):
    """(category id, XYWH box, score) per detection, worked out from the predictor's output."""
    rows = []
    for (x0, y0, x1, y1), s, c in zip(
        instances.pred_boxes.tensor.tolist(),
        instances.scores.tolist(),
        instances.pred_classes.tolist(),
    ):
        rows.append((category_of_class[c], [x0, y0, x1 - x0, y1 - y0], s))
    return rows


def _assert_same_detections(records, expected):
    assert len(records) == len(expected)
    got = sorted(((r["category_id"], r["bbox"], r["score"]) for r in records), key=lambda r: r[2])
    expected = sorted(expected, key=lambda r: r[2])
    for (cat, box, score), (cat_e, box_e, score_e) in zip(got, expected):
        assert cat == cat_e
        np.testing.assert_allclose(box, box_e, atol=1e-3)
        assert abs(score - score_e) < 1e-6


def test_folder_drawn_at_input_size_and_json_boxes_are_the_predictors(trained, tmp_path):
    out, json_path = tmp_path / "vis", tmp_path / "dets.json"
    folder = os.path.dirname(trained["images"][0])
    assert _demo(trained, "--input", folder, "--output", str(out), "--json", str(json_path)) == 0
    records = json.loads(json_path.read_text())
    assert len(records) > 0
    # The shapes json numbers its categories 1, 2, 3 for classes 0, 1, 2.
    category_of_class = {0: 1, 1: 2, 2: 3}
    image_id = {im["file_name"]: im["id"] for im in trained["json"]["images"]}
    predictor = _predictor(trained)
    for path in trained["images"]:
        image = cv2.imread(path)
        drawn = cv2.imread(str(out / os.path.basename(path)))
        assert drawn is not None and drawn.shape == image.shape
        mine = [r for r in records if r["file_name"] == path]
        assert all(r["image_id"] == image_id[os.path.basename(path)] for r in mine)
        expected = _expected(predictor(image)["instances"], category_of_class)
        _assert_same_detections(mine, expected)


def test_single_image_to_an_output_file(trained, tmp_path):
    path = trained["images"][1]
    out = tmp_path / "drawn.jpg"
    assert _demo(trained, "--input", path, "--output", str(out)) == 0
    assert cv2.imread(str(out)).shape == cv2.imread(path).shape


def _write_video(trained, path, frames=5, size=(112, 96)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(cv2.resize(cv2.imread(trained["images"][i % 3]), size))
    writer.release()


def _read_video(path):
    video = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = video.read()
        if not ok:
            return frames
        frames.append(frame)


def test_video_drawn_with_its_frame_count_and_size(trained, tmp_path):
    video = tmp_path / "clip.avi"
    _write_video(trained, video)
    out, json_path = tmp_path / "out", tmp_path / "video.json"
    args = ["--video-input", str(video), "--output", str(out), "--json", str(json_path)]
    assert _demo(trained, *args) == 0
    frames = _read_video(out / "clip.mp4")
    assert len(frames) == 5
    assert all(f.shape == (96, 112, 3) for f in frames)
    records = json.loads(json_path.read_text())
    assert {r["frame"] for r in records} <= set(range(5)) and records
    first = _read_video(video)[0]
    expected = _expected(_predictor(trained)(first)["instances"], {0: 1, 1: 2, 2: 3})
    _assert_same_detections([r for r in records if r["frame"] == 0], expected)


def test_exported_model_through_the_demo(trained, tmp_path, capsys):
    cfg = trained["cfg"].clone()
    cfg.MODEL.WEIGHTS = trained["weights"]
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = THRESH
    export_dir = str(tmp_path / "export")
    export_model(cfg, "torchscript", export_dir)
    out, json_path = tmp_path / "vis", tmp_path / "dets.json"
    folder = os.path.dirname(trained["images"][0])
    argv = ["--exported", export_dir, "--config-file", trained["config"], "--input", folder]
    assert main([*argv, "--output", str(out), "--json", str(json_path)]) == 0
    records = json.loads(json_path.read_text())
    exported, eager = ExportedPredictor(export_dir), _predictor(trained)
    for path in trained["images"]:
        image = cv2.imread(path)
        assert cv2.imread(str(out / os.path.basename(path))).shape == image.shape
        mine = [r for r in records if r["file_name"] == path]
        expected = _expected(exported(image)["instances"], {0: 1, 1: 2, 2: 3})
        _assert_same_detections(mine, expected)
        assert len(mine) == len(eager(image)["instances"])
    # The threshold is part of the exported graph: asking for another one is refused.
    capsys.readouterr()
    assert main([*argv, "--confidence-threshold", "0.9"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exported with MODEL.FCOS.SCORE_THRESH_TEST 0.2" in err


def test_class_names_of_a_registered_coco_dataset_not_loaded_yet(trained):
    name = DATASET + "_not_loaded"
    with registered_dataset(name, trained["json_file"], trained["root"] / "train"):
        assert dataset_metadata(name).thing_classes == ["circle", "square", "triangle"]


def test_unreadable_image_is_named_skipped_and_fails_the_run(trained, tmp_path, demo_log):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    out = tmp_path / "out"
    args = ["--input", trained["images"][0], str(broken), str(tmp_path / "none*.jpg")]
    assert _demo(trained, *args, "--output", str(out)) == 1
    assert os.path.exists(out / os.path.basename(trained["images"][0]))
    assert not os.path.exists(out / "broken.png")
    assert any(str(broken) in m and "cannot read image" in m for m in demo_log)
    assert any("none*.jpg" in m for m in demo_log)


def test_unopenable_video_is_named(trained, tmp_path, demo_log):
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"\x00" * 100)
    for video in (bad, tmp_path / "missing.mp4"):
        assert _demo(trained, "--video-input", str(video), "--output", str(tmp_path)) == 1
        assert any(f"cannot open video {str(video)!r}" in m for m in demo_log)


def test_missing_weights_is_a_one_line_error(trained, tmp_path, capsys):
    missing = str(tmp_path / "nope.pth")
    assert _demo(trained, "--input", trained["images"][0], weights=missing) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.pth" in err
    assert _demo(trained, "--input", trained["images"][0], weights="") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "MODEL.WEIGHTS" in err


def test_missing_config_is_a_one_line_error_from_the_command_line(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "fcos_d2.demo", "--config-file", str(tmp_path / "no.yaml")]
    res = subprocess.run(
        [*cmd, "--input", "x.jpg"], env=env, cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"fcos_d2.demo: error: config file {str(tmp_path / 'no.yaml')!r} not found"
    ]


def test_confidence_threshold_sets_the_fcos_score_threshold(trained, tmp_path):
    path = trained["images"][0]
    counts = []
    for thresh in ("0.05", "0.9"):
        json_path = tmp_path / f"{thresh}.json"
        argv = ["--config-file", trained["config"], "--confidence-threshold", thresh]
        argv += ["--input", path, "--json", str(json_path), "--opts", "MODEL.WEIGHTS"]
        assert main([*argv, trained["weights"]]) == 0
        counts.append(len(json.loads(json_path.read_text())))
    cfg = trained["cfg"].clone()
    cfg.MODEL.WEIGHTS = trained["weights"]
    with torch.no_grad():
        cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.9
        high = len(Predictor(cfg)(cv2.imread(path))["instances"])
    assert counts[1] == high < counts[0]


def _widest_gap_middle(scores):
    if len(scores) < 2:
        return 0.0
    s = scores.sort(descending=True).values
    i = int((s[:-1] - s[1:]).argmax())
    return float((s[i] + s[i + 1]) / 2)


def test_class_thresholds_file_filters_demo_predictor_and_export_identically(trained, tmp_path):
    images = [cv2.imread(p) for p in trained["images"]]
    plain = [_predictor(trained)(im)["instances"] for im in images]
    scores = torch.cat([p.scores for p in plain])
    classes = torch.cat([p.pred_classes for p in plain])
    # per class, the middle of the widest gap between its detections' scores: some are dropped,
    # some kept, none near the threshold (exported graphs' scores differ in the last bits)
    names = dataset_metadata(DATASET).thing_classes
    chosen = [_widest_gap_middle(scores[classes == k]) for k in range(3)]
    path = tmp_path / "class_thresholds.json"
    path.write_text(json.dumps({"classes": names, "thresholds": dict(zip(names, chosen))}))
    # what the rule says: keep score >= threshold of the class
    expected = [p[p.scores >= torch.tensor(chosen)[p.pred_classes]] for p in plain]
    kept = sum(len(e) for e in expected)
    assert 0 < kept < len(scores)

    cfg = trained["cfg"].clone()
    cfg.MODEL.WEIGHTS = trained["weights"]
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = THRESH
    cfg.MODEL.FCOS.CLASS_THRESHOLDS_FILE = str(path)
    predictor = Predictor(cfg)
    for im, e in zip(images, expected):
        got = predictor(im)["instances"]
        assert torch.equal(got.scores, e.scores) and torch.equal(got.pred_classes, e.pred_classes)
        assert torch.equal(got.pred_boxes.tensor, e.pred_boxes.tensor)

    json_path = tmp_path / "dets.json"
    assert (
        _demo(
            trained,
            "--input",
            *trained["images"],
            "--class-thresholds",
            str(path),
            "--json",
            str(json_path),
        )
        == 0
    )
    records = json.loads(json_path.read_text())
    for p, e in zip(trained["images"], expected):
        mine = [r for r in records if r["file_name"] == p]
        _assert_same_detections(mine, _expected(e, {0: 1, 1: 2, 2: 3}))

    built_in, plain_dir = str(tmp_path / "with"), str(tmp_path / "without")
    info = export_model(cfg, "onnx", built_in)
    assert info["class_thresholds"]["values"] == chosen
    cfg.MODEL.FCOS.CLASS_THRESHOLDS_FILE = ""
    export_model(cfg, "onnx", plain_dir)
    for exported in (ExportedPredictor(built_in), ExportedPredictor(plain_dir, None, str(path))):
        for im, e in zip(images, expected):
            _assert_same_detections(
                [
                    {"category_id": c, "bbox": b, "score": s}
                    for c, b, s in _expected(exported(im)["instances"], {0: 1, 1: 2, 2: 3})
                ],
                _expected(e, {0: 1, 1: 2, 2: 3}),
            )


def test_analyze_results_from_weights_and_from_the_export_agree(trained, tmp_path):
    from fcos_d2.analyze.__main__ import main as analyze

    weights_dir, export_dir, exported_dir = tmp_path / "w", tmp_path / "export", tmp_path / "e"
    base = ["results", "--config-file", trained["config"], "--dataset", DATASET]
    opts = ["MODEL.WEIGHTS", trained["weights"], "MODEL.FCOS.SCORE_THRESH_TEST", str(THRESH)]
    assert analyze([*base, "--output", str(weights_dir), *opts]) == 0
    cfg = trained["cfg"].clone()
    cfg.MODEL.WEIGHTS = trained["weights"]
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = THRESH
    export_model(cfg, "onnx", str(export_dir))
    assert analyze([*base, "--output", str(exported_dir), "--exported", str(export_dir)]) == 0
    by_weights = json.loads((weights_dir / "results_analysis.json").read_text())
    by_export = json.loads((exported_dir / "results_analysis.json").read_text())
    assert by_weights["bbox"]["AP"] > 10  # the tiny model finds its training images' objects
    assert by_weights["bbox"]["AP"] == pytest.approx(by_export["bbox"]["AP"], abs=1e-3)
    thresholds = json.loads((weights_dir / "class_thresholds.json").read_text())
    assert thresholds["classes"] == dataset_metadata(DATASET).thing_classes
