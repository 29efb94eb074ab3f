"""train_net.py as users run it: a few iterations, then --eval-only, as subprocesses."""

import os
import subprocess
import sys

import pytest

from fcos_d2.data.shapes import generate_shapes_dataset
from tests.common_utils import REPO

pytestmark = pytest.mark.slow  # train_net.py trained and evaluated in subprocesses

CFG = os.path.join(REPO, "configs", "demo", "FCOS_R18_shapes_demo.yaml")
SMALL = [
    "SOLVER.IMS_PER_BATCH",
    "2",
    "MODEL.FPN.OUT_CHANNELS",
    "32",
    "DATALOADER.NUM_WORKERS",
    "0",
    "INPUT.MIN_SIZE_TRAIN",
    "(128,)",
    "INPUT.MIN_SIZE_TEST",
    "128",
]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2data")
    generate_shapes_dataset(str(root / "shapes"), num_train=6, num_val=3, seed=5)
    return str(root)


def _run(datasets, *args, config_file=CFG):
    env = dict(os.environ, DETECTRON2_DATASETS=datasets, PYTHONWARNINGS="ignore")
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", config_file, *args]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_train_then_eval_only(datasets, tmp_path):
    out = str(tmp_path / "out")
    res = _run(datasets, *SMALL, "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", out)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "iter: 2" in res.stderr + res.stdout
    weights = os.path.join(out, "model_final.pth")
    assert os.path.exists(weights)
    assert os.path.exists(os.path.join(out, "inference", "coco_instances_results.json"))
    res = _run(datasets, "--eval-only", *SMALL, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", out)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "copypaste: Task: bbox" in res.stderr + res.stdout


def test_num_classes_smaller_than_dataset_fails_before_training(datasets, tmp_path):
    res = _run(datasets, *SMALL, "MODEL.FCOS.NUM_CLASSES", "2", "OUTPUT_DIR", str(tmp_path))
    assert res.returncode != 0
    assert "MODEL.FCOS.NUM_CLASSES=2 is smaller than the 3 categories" in res.stderr
    assert "iter: 0" not in res.stderr


def test_unknown_key_fails(datasets, tmp_path):
    res = _run(datasets, "MODEL.FCOS.NOT_A_KEY", "1", "OUTPUT_DIR", str(tmp_path))
    assert res.returncode != 0 and "MODEL.FCOS.NOT_A_KEY" in res.stderr


ADET_DEMO = """_BASE_: "{base}"
MODEL:
  META_ARCHITECTURE: "OneStageDetector"
  PROPOSAL_GENERATOR:
    NAME: "FCOS"
  FCOS:
    NMS_TH: 0.5
    INFERENCE_TH_TEST: 0.1
    TOP_LEVELS: 0
"""


def test_adelaidet_yaml_through_train_net(datasets, tmp_path):
    cfg = tmp_path / "adet.yaml"
    cfg.write_text(ADET_DEMO.format(base=CFG))
    out = str(tmp_path / "out")
    res = _run(datasets, *SMALL, "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", out, config_file=str(cfg))
    assert res.returncode == 0, res.stderr[-3000:]
    saved = (tmp_path / "out" / "config.yaml").read_text()  # written by default_setup
    assert "META_ARCHITECTURE: FCOS" in saved
    assert "NMS_THRESH_TEST: 0.5" in saved and "SCORE_THRESH_TEST: 0.1" in saved
