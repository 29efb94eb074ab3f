"""python -m fcos_d2.export on a Python (LazyConfig) config: the YAML recipe's export."""

import json
import os

import pytest

import fcos_d2
from fcos_d2.export.__main__ import main as export
from fcos_d2.export.predictor import ExportedPredictor
from tests.common_utils import with_saved_weights
from tests.export.test_export import assert_same_detections, eager, onnx_runner
from tests.export_helpers import DEMO, REPO, load_test_config, random_model, shapes_image

pytestmark = pytest.mark.slow  # exports to ONNX

LAZY_DEMO = os.path.join(REPO, "configs", "lazy", "fcos_R18_shapes_demo.py")


def test_python_config_exports_the_yaml_configs_graph_and_settings(tmp_path, capsys):
    yaml_cfg = load_test_config(DEMO)
    model = random_model(yaml_cfg, cls_std=0.05)
    yaml_cfg = with_saved_weights(yaml_cfg, model, tmp_path)
    mean = "[" + ",".join(str(m) for m in yaml_cfg.MODEL.PIXEL_MEAN) + "]"
    out = {kind: str(tmp_path / kind) for kind in ("lazy", "yaml")}
    argv = ["--format", "onnx", "--output"]
    lazy_opts = [f"train.init_checkpoint={yaml_cfg.MODEL.WEIGHTS}", f"model.pixel_mean={mean}"]
    assert export(["--config-file", LAZY_DEMO, *argv, out["lazy"], *lazy_opts]) == 0
    yaml_opts = ["MODEL.WEIGHTS", yaml_cfg.MODEL.WEIGHTS, "MODEL.PIXEL_MEAN", mean]
    assert export(["--config-file", DEMO, *argv, out["yaml"], *yaml_opts]) == 0
    capsys.readouterr()
    infos = {k: json.load(open(os.path.join(d, "export.json"))) for k, d in out.items()}
    for key in ("input", "resize", "num_classes", "score_thresh", "detections_per_image"):
        assert infos["lazy"][key] == infos["yaml"][key], key
    assert infos["lazy"]["resize"] == {"min_size_test": 224, "max_size_test": 320}
    assert "make_fcos_core" in infos["lazy"]["config"]  # the Python config, as code
    run = onnx_runner(os.path.join(out["lazy"], "model.onnx"))
    for i, (h, w) in enumerate([(128, 193), (161, 129)]):
        expected = eager(model, shapes_image(h, w, seed=i))
        assert len(expected[0]) > 0
        assert_same_detections(expected, run(shapes_image(h, w, seed=i)), f"lazy {h}x{w}")
    assert ExportedPredictor(out["lazy"]).input_format == "BGR"


def test_python_config_the_graph_cannot_express_names_the_key(tmp_path, capsys):
    argv = ["--config-file", LAZY_DEMO, "--format", "onnx", "--output", str(tmp_path)]
    assert export(argv + ["model.inference_dtype=bfloat16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.inference_dtype='bfloat16'" in err


def test_python_config_with_two_test_augmentations_is_refused_in_one_line(tmp_path):
    cfg = fcos_d2.load_config(LAZY_DEMO)
    flip = cfg.dataloader.train.mapper.augmentations[1]
    cfg.dataloader.test.mapper.augmentations.append(flip)
    from fcos_d2.export.writers import export_model

    with pytest.raises(ValueError, match="must be one ResizeShortestEdge"):
        export_model(cfg, "onnx", str(tmp_path))
    assert not os.path.exists(os.path.join(str(tmp_path), "export.json"))
