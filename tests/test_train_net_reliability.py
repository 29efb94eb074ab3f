"""train_net.py as users run it: damaged or mismatched --eval-only weights, CPU multi-process."""

import os
import subprocess
import sys

import pytest
import torch
from detectron2.modeling import build_model

import fcos_d2
from fcos_d2.data.shapes import generate_shapes_dataset
from tests.common_utils import REPO

pytestmark = pytest.mark.slow  # train_net.py in subprocesses, some on two processes

CFG = os.path.join(REPO, "configs", "demo", "FCOS_R18_shapes_demo.yaml")
SMALL = [
    "SOLVER.IMS_PER_BATCH", "2", "MODEL.FPN.OUT_CHANNELS", "32", "DATALOADER.NUM_WORKERS", "0",
    "INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "96", "INPUT.MIN_SIZE_TEST", "64",
    "MODEL.RESNETS.NORM", "GN",
]  # fmt: skip


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("d2data")
    generate_shapes_dataset(str(root / "shapes"), num_train=4, num_val=2, seed=5)
    return str(root)


def _run(datasets, *args):
    env = dict(os.environ, DETECTRON2_DATASETS=datasets, PYTHONWARNINGS="ignore")
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", CFG, *args]
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def _last_line(text):
    return [line for line in text.splitlines() if line.strip()][-1]


def test_eval_only_with_a_truncated_weights_file_names_it_on_the_last_line(datasets, tmp_path):
    path = str(tmp_path / "cut.pth")
    torch.save({"model": {"w": torch.zeros(1000)}}, path)
    with open(path, "r+b") as f:
        f.truncate(2000)
    res = _run(datasets, "--eval-only", *SMALL, "MODEL.WEIGHTS", path, "OUTPUT_DIR", str(tmp_path))
    assert res.returncode != 0
    assert path in _last_line(res.stderr)


def test_eval_only_refuses_a_checkpoint_of_another_architecture(datasets, tmp_path):
    # a checkpoint of the demo model with one conv per tower instead of the config's two
    cfg = fcos_d2.load_config(CFG, SMALL + ["MODEL.FCOS.NUM_CLS_CONVS", "1"])
    cfg.MODEL.FCOS.NUM_BOX_CONVS = 1
    weights = str(tmp_path / "one_conv.pth")
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    res = _run(
        datasets, "--eval-only", *SMALL, "MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(tmp_path)
    )
    assert res.returncode != 0
    assert "head.cls_tower.3.weight" in _last_line(res.stderr)
    assert "copypaste" not in res.stdout + res.stderr  # no evaluation ran


def test_two_cpu_processes_train(datasets, tmp_path):
    out = str(tmp_path / "ddp")
    res = _run(
        datasets, "--num-gpus", "2", *SMALL, "MODEL.DEVICE", "cpu", "SOLVER.MAX_ITER", "2",
        "TEST.EVAL_PERIOD", "0", "DATASETS.TEST", "()", "OUTPUT_DIR", out,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "iter: 1" in res.stderr + res.stdout
    assert os.path.exists(os.path.join(out, "model_final.pth"))
