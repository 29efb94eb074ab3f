"""The ``fcos-d2`` command line: one convention for every command, one-line errors, and the
commands run end to end as a new user would (in fresh processes)."""

import json
import os
import shlex
import subprocess
import sys

import pytest
import torch

from fcos_d2.cli import COMMANDS, build_parser, command_module, main
from tests.common_utils import REPO

DEMO = "demo/FCOS_R18_shapes_demo.yaml"


def _run_main(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_examples_that_parse(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert "examples:" in capsys.readouterr().out
    examples = command_module(name).EXAMPLES
    assert examples
    for line in examples:
        words = shlex.split(line)
        assert words[:2] == ["fcos-d2", name]
        build_parser().parse_args(words[1:])  # SystemExit (status 2) if it does not parse


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"    {name}" in out


@pytest.mark.parametrize(
    "argv, named",
    [
        (["train", "--config-file", "no/such.yaml"], "no/such.yaml"),
        (["train", "--config-file", DEMO, "MODEL.FCOS.NO_SUCH_KEY", "1"], "MODEL.FCOS.NO_SUCH_KEY"),
        (["train", "--config-file", DEMO, "MODEL.FCOS.NUM_CLASSES", "0"], "NUM_CLASSES=0"),
        (["train", "--config-file", DEMO, "SOLVER.MAX_ITER"], "KEY VALUE"),
        (["train", "--config-file", "lazy/fcos_R18_shapes_demo.py", "train.nope=1"], "train.nope"),
        (["train", "--config-file", "lazy/fcos_R18_shapes_demo.py", "SOLVER.MAX_ITER", "1"], "="),
        (["train", "--config-file", DEMO, "SOLVER.MAX_ITER", "1", "--resume"], "--resume"),
        (["evaluate", "--exported", "out", "--dataset", "no_such_set"], "no_such_set"),
        (["evaluate", "--weights", "w.pth"], "--config-file"),
        (["serve", "--port", "8123"], "--exported DIR"),
        (["serve", "--exported", "out", "--weights", "w.pth"], "--weights"),
        (["serve", "--config-file", DEMO, "--replicas", "0"], "--replicas 0"),
        (
            [
                "predict",
                "--config-file",
                DEMO,
                "--weights",
                "nope.pth",
                "--input",
                "a.jpg",
                "--output",
                "o",
            ],
            "nope.pth",
        ),
        (
            [
                "predict",
                "--config-file",
                DEMO,
                "--input",
                "a.jpg",
                "--output",
                "o",
                "--score-threshold",
                "1.5",
            ],
            "1.5",
        ),
        (
            [
                "export",
                "--config-file",
                DEMO,
                "--format",
                "onnx",
                "--output",
                "o",
                "MODEL.FCOS.X",
                "1",
            ],
            "MODEL.FCOS.X",
        ),
        (
            ["analyze", "data", "--config-file", DEMO, "--output", "o", "--dataset", "nope"],
            "'nope'",
        ),
        (["convert", "no_such.pth", "--from", "adelaidet", "--output", "o"], "no_such.pth"),
        (["export", "--config-file", DEMO, "--format", "onnx", "--output", "o"], "--weights"),
        (["evaluate", "--config-file", DEMO, "DATASETS.TEST", '("nope_val",)'], "nope_val"),
        (["train", "--config-file", DEMO, "--device", "nodevice"], "nodevice"),
        (["evaluate", "--exported", "o", "--dataset", "shapes_val", "--device", "cpu"], "--device"),
        (
            [
                "predict",
                "--config-file",
                DEMO,
                "--input",
                "MODEL.FCOS.NMS_THRESH_TEST",
                "0.5",
                "--output",
                "o",
            ],
            "MODEL.FCOS.NMS_THRESH_TEST",
        ),
        (
            ["analyze", "data", "--config-file", "lazy/fcos_R18_shapes_demo.py", "--output", "o"],
            "YAML",
        ),
    ],
)
def test_a_users_mistake_is_one_line_naming_it_with_status_2(
    argv, named, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # nothing is written where the tests run
    status, _, err = _run_main(capsys, *argv)
    lines = err.strip().splitlines()
    assert status == 2
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fcos-d2 {argv[0]}: error: ")
    assert named in lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_a_cuda_config_on_a_machine_without_cuda_names_the_device_option(capsys):
    status, _, err = _run_main(capsys, "evaluate", "--config-file", "FCOS_R_50_FPN_1x.yaml")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "'cuda'" in err and "--device cpu" in err


def test_a_file_that_is_not_a_checkpoint_is_refused_in_one_line(capsys, tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    status, _, err = _run_main(
        capsys, "convert", str(path), "--from", "d2", "--output", str(tmp_path / "o")
    )
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "cannot read" in err and "notes.pth" in err


def test_a_bad_option_is_argparses_usage_error_with_status_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--config-file", DEMO, "--output", "o"])  # neither input given
    assert exit_.value.code == 2
    assert "--input" in capsys.readouterr().err


def _fcos(args, env, cwd, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "fcos_d2", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )


def _quiet(stderr: str) -> bool:
    return "Warning" not in stderr and "warnings.warn" not in stderr


def test_help_starts_without_third_party_warnings(tmp_path):
    res = _fcos(["predict", "--help"], dict(os.environ), tmp_path, timeout=120)
    assert res.returncode == 0 and "examples:" in res.stdout
    assert res.stderr == ""


@pytest.mark.slow
def test_a_new_users_commands_from_data_to_export(tmp_path):
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "datasets")}
    env["PYTHONPATH"] = REPO
    run = lambda *args: _fcos(args, env, tmp_path)  # noqa: E731
    res = run("data", "shapes", "--output", "datasets/shapes", "--num-train", "8", "--num-val", "3")
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(tmp_path / "datasets/shapes/val")) == sorted(
        im["file_name"] for im in json.load(open(tmp_path / "datasets/shapes/val.json"))["images"]
    )

    short = ["SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.STEPS", "(1,)"]
    short += ["SOLVER.WARMUP_ITERS", "1", "DATALOADER.NUM_WORKERS", "0"]
    res = run("train", "--config-file", DEMO, "--output", "out", *short)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _quiet(res.stderr), res.stderr[-3000:]
    weights = tmp_path / "out/model_final.pth"
    assert weights.is_file()

    res = run("evaluate", "--config-file", DEMO, "--weights", str(weights), "--output", "ev")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "ev/inference/coco_instances_results.json").is_file()

    res = run(
        "predict", "--config-file", DEMO, "--weights", str(weights), "--input",
        "datasets/shapes/val", "--output", "pred", "--score-threshold", "0.0",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    detections = json.load(open(tmp_path / "pred/detections.json"))
    val = sorted(os.listdir(tmp_path / "datasets/shapes/val"))
    assert sorted(f for f in os.listdir(tmp_path / "pred") if f.endswith(".png")) == val
    # the same detections as fcos_d2.Predictor on one of the images
    _same_as_predictor(tmp_path, weights, val[0], detections)

    res = run("visualize", "--config-file", DEMO, "--weights", str(weights), "--output", "out")
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(os.listdir(tmp_path / "out/vis")) == 3

    res = run("export", "--config-file", DEMO, "--weights", str(weights), "--format", "onnx",
              "--output", "onnx")  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["format"] == "onnx"
    res = run("evaluate", "--exported", "onnx", "--dataset", "shapes_val", "--output", "ev_onnx")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "ev_onnx/coco_instances_results.json").is_file()

    # the previous release's module form still works, with a deprecation warning
    res = subprocess.run(
        [sys.executable, "-m", "fcos_d2.demo", "--config-file", os.path.join(REPO, "configs", DEMO),
         "--input", "datasets/shapes/val", "--output", "old", "--opts", "MODEL.WEIGHTS",
         str(weights)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "DeprecationWarning" in res.stderr and "fcos-d2 predict" in res.stderr


def _same_as_predictor(root, weights, image_name, detections):
    import cv2

    import fcos_d2
    from fcos_d2 import model_zoo

    cfg = model_zoo.get_config(DEMO, ["MODEL.WEIGHTS", str(weights)])
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.0
    path = os.path.join(root, "datasets/shapes/val", image_name)
    instances = fcos_d2.Predictor(cfg)(cv2.imread(path))["instances"]
    mine = [d for d in detections if d["file_name"].endswith(image_name)]
    assert len(mine) == len(instances) > 0
    boxes = instances.pred_boxes.tensor.tolist()
    for d, box, score in zip(mine, boxes, instances.scores.tolist()):
        x0, y0, x1, y1 = box
        assert d["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=1e-3)
        assert d["score"] == pytest.approx(score, abs=1e-5)
