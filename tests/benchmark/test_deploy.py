"""bench_deploy: every mode timed, exported ones compared with eager, their files removed after."""

import os
import tempfile

import pytest
import torch
from common_utils import randomize_head, register_tiny_dataset
from conftest import tiny_cfg
from detectron2.modeling import build_model

from fcos_d2.benchmark import deploy

pytest.importorskip("onnxruntime")


def test_deploy_rows_match_eager_and_leave_no_exported_files(tmp_path, monkeypatch):
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = randomize_head(build_model(cfg).eval(), cls_bias=0.0, box_bias=2.0)
    images = tmp_path / "images"
    images.mkdir()
    register_tiny_dataset(str(images), "deploy_bench_calibration")
    exports = tmp_path / "exports"
    exports.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(exports))  # where temporary folders go
    rows = deploy.bench_deploy(
        cfg,
        model,
        lambda batch: model(batch),
        (67, 93),
        iters=1,
        calibration_dataset="deploy_bench_calibration",
        calibration_images=2,
    )
    by_mode = {r["deploy_mode"]: r for r in rows if "deploy_mode" in r}
    assert set(by_mode) == set(deploy.available_modes())  # every mode this machine runs, timed
    assert by_mode["onnxruntime float32"]["detections"] > 0
    assert by_mode["onnxruntime float32"]["matched_to_eager"] == 1.0  # float32 graph = eager
    assert 0 < by_mode["onnxruntime int8"]["detections"]
    assert os.listdir(exports) == []  # the exported files went with their folder
