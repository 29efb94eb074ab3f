"""
Whole-detector export (ONNX from torch.export in ONNX Runtime, an AOTInductor package,
TorchScript) against the eager model, on image sizes other than the one exported, including an image where nothing passes the threshold
(see export_helpers for how random weights get detections, and D = 0).
"""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

import fcos_d2
from fcos_d2.data.shapes import generate_split
from fcos_d2.export.compare import matched_fractions
from fcos_d2.export.graph import DeployFCOS
from fcos_d2.export.writers import export_model, trace, write_onnx
from tests.common_utils import registered_dataset
from tests.export_helpers import DEMO, R50, load_test_config, mean_image, random_model, shapes_image

pytestmark = pytest.mark.slow  # exports and runs ONNX / TorchScript graphs


def eager(model, image):
    with torch.no_grad():
        return DeployFCOS(model)(image)


def assert_same_detections(expected, got, what):
    fa, fb = matched_fractions(expected, got)
    n = (len(expected[0]), len(got[0]))
    # every detection, both ways (measured in the native and the AVX2 mode)
    assert fa == fb == 1.0, f"{what}: matched {fa:.3f} / {fb:.3f} of {n}"


def onnx_runner(path):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert names == ["boxes", "scores", "classes"]

    def run(image):
        out = session.run(None, {"image": image.numpy()})
        assert (out[0].dtype, out[1].dtype, out[2].dtype) == (np.float32, np.float32, np.int64)
        return tuple(torch.from_numpy(o) for o in out)

    return run


def check_parity(model, cfg, run, sizes, what):
    """Exported ``run`` vs eager on shapes images of ``sizes`` and one mean image (D = 0)."""
    counts = []
    for i, (h, w) in enumerate(sizes):
        expected = eager(model, shapes_image(h, w, seed=i))
        got = run(shapes_image(h, w, seed=i))
        assert 0 < len(expected[0]) <= cfg.TEST.DETECTIONS_PER_IMAGE
        boxes, scores = got[0], got[1]
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert (scores[:-1] >= scores[1:]).all()
        assert_same_detections(expected, got, f"{what} {h}x{w}")
        counts.append(len(expected[0]))
    h, w = sizes[0][1], sizes[0][0]  # another size again
    empty = mean_image(cfg, h, w)
    assert len(eager(model, empty)[0]) == 0  # the D = 0 case really is one
    got = run(empty)
    assert [tuple(t.shape) for t in got] == [(0, 4), (0,), (0,)]
    return counts


@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    """The demo config, random weights saved as a checkpoint, exported by export_model."""
    out = tmp_path_factory.mktemp("demo_export")
    # A registered dataset of the demo's kind (datasets/ is not in a fresh clone): export.json
    # takes the class names from it.
    json_file = generate_split(
        str(out), "val", 2, seed=5, image_size=(96, 128), max_shapes=2, size_range=(16, 48)
    )
    name = "fcos_export_test_shapes"
    with registered_dataset(name, json_file, out / "val"):
        cfg = load_test_config(
            DEMO, "DATASETS.TRAIN", f"('{name}',)", "DATASETS.TEST", f"('{name}',)"
        )
        model = random_model(cfg, cls_std=0.2)
        weights = str(out / "weights.pth")
        torch.save({"model": model.state_dict()}, weights)
        cfg.MODEL.WEIGHTS = weights
        formats = ("onnx", "aoti", "torchscript")
        infos = {fmt: export_model(cfg, fmt, str(out / fmt)) for fmt in formats}
        yield cfg, model, out, infos


# Sizes the demo model sees after resizing (short side 224, long side <= 320), none equal to the
# traced one (224 x 301), odd ones included.
DEMO_SIZES = [(224, 299), (177, 320), (224, 224)]


def test_demo_onnx_in_onnxruntime_matches_eager(demo_export):
    cfg, model, out, _ = demo_export
    counts = check_parity(
        model, cfg, onnx_runner(str(out / "onnx" / "model.onnx")), DEMO_SIZES, "onnx"
    )
    assert max(counts) >= 10


def test_demo_torchscript_matches_eager(demo_export):
    cfg, model, out, _ = demo_export
    module = torch.jit.load(str(out / "torchscript" / "model.ts"))

    def run(image):
        with torch.no_grad():
            return module(image)

    check_parity(model, cfg, run, DEMO_SIZES, "torchscript")


def test_demo_aoti_package_matches_eager(demo_export):
    from torch._inductor import aoti_load_package

    cfg, model, out, infos = demo_export
    package = aoti_load_package(str(out / "aoti" / "model.pt2"))

    def run(image):
        with torch.no_grad():
            return package(image)

    counts = check_parity(model, cfg, run, DEMO_SIZES, "aoti")
    assert max(counts) >= 10
    assert infos["aoti"]["file"] == "model.pt2" and infos["aoti"]["runtime"] == "aotinductor"


def test_onnx_comes_from_torch_export_with_module_named_nodes(demo_export):
    import onnx

    cfg, _, out, infos = demo_export
    proto = onnx.load(str(out / "onnx" / "model.onnx"))
    assert infos["onnx"]["opset"] == 18 and infos["onnx"]["onnx_exporter"] == "torch.export"
    assert proto.opset_import[0].version == 18
    names = [n.name for n in proto.graph.node]
    # the exporter's scope metadata (torch.export-based exporter) turned into module paths
    convs = [n.name for n in proto.graph.node if n.op_type == "Conv"]
    levels = len(cfg.MODEL.FCOS.IN_FEATURES)  # the head's class conv runs once per level
    assert sum(c.startswith("/model/head/cls_logits/") for c in convs) == levels == 3
    assert any(n.startswith("/model/backbone/bottom_up/stem/") for n in names)
    assert any(n.op_type == "NonMaxSuppression" for n in proto.graph.node)


def test_aoti_package_of_another_cpu_is_refused_in_one_line(demo_export, tmp_path):
    import shutil

    from fcos_d2.export.predictor import ExportedPredictor

    copy = tmp_path / "aoti"
    shutil.copytree(demo_export[2] / "aoti", copy)
    info = json.loads((copy / "export.json").read_text())
    info["vector_isa"] = "neon"  # an ISA no x86 CPU runs
    (copy / "export.json").write_text(json.dumps(info))
    with pytest.raises(RuntimeError, match="compiled for neon and this CPU runs") as e:
        ExportedPredictor(str(copy))
    assert len(str(e.value).splitlines()) == 1


def test_aoti_predictor_names_an_image_side_outside_the_exported_range(demo_export):
    from fcos_d2.export.predictor import ExportedPredictor

    info = demo_export[3]["aoti"]
    # the demo's levels go to stride 32: from the 64 floor up
    assert info["input"]["side_range"] == [64, 8192]
    predictor = ExportedPredictor(str(demo_export[2] / "aoti"))
    with pytest.raises(ValueError, match="sides from 64 to 8192 .* is 63 x 100") as e:
        predictor.run_resized(np.zeros((3, 63, 100), np.uint8))
    assert len(str(e.value).splitlines()) == 1
    assert predictor.run_resized(np.zeros((3, 64, 100), np.uint8)).image_size == (64, 100)


def test_export_json_records_what_a_runtime_needs(demo_export):
    cfg, _, out, _ = demo_export
    with open(out / "onnx" / "export.json") as f:
        info = json.load(f)
    assert info["format"] == "onnx" and info["file"] == "model.onnx"
    assert info["input"]["format"] == "BGR" and info["input"]["dtype"] == "uint8"
    assert info["resize"] == {"min_size_test": 224, "max_size_test": 320}  # the demo YAML's
    assert info["class_names"] == ["circle", "square", "triangle"]  # fcos_d2.data.shapes
    assert info["score_thresh"] == 0.05 and info["detections_per_image"] == 100
    assert info["fcos_d2_version"] == fcos_d2.__version__
    assert "FCOS_R18" not in info["config"] and "NUM_CLASSES: 3" in info["config"]
    assert tuple(info["trace_size"]) not in DEMO_SIZES


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_r50_fpn_random_weights_export_matches_eager(tmp_path, fmt):
    """The default R-50-FPN (five levels, GN head, folded FrozenBN, channels_last) at small
    image sizes, down to a side of 128 whose P7 is one location (below the range torch.export's
    program was made for: the ONNX graph, without its shape checks, holds there too)."""
    cfg = load_test_config(R50, "MODEL.WEIGHTS", "")
    model = random_model(cfg, cls_std=0.02)
    deploy = DeployFCOS(model)
    sample = shapes_image(150, 211, seed=7)
    if fmt == "onnx":
        path = str(tmp_path / "model.onnx")
        # one program for every size from 129 (the P7 level two locations high or wide) up
        assert write_onnx(deploy, sample, path) == "torch.export"
        run = onnx_runner(path)
    else:
        module = trace(deploy, sample)

        def run(image):
            with torch.no_grad():
                return module(image)

    counts = check_parity(model, cfg, run, [(128, 193), (161, 129), (200, 136)], f"R-50 {fmt}")
    assert max(counts) >= 10


class _WidthBranch(torch.nn.Module):
    """A graph whose code takes another branch for wide images: no one torch.export program
    serves every size."""

    def __init__(self):
        super().__init__()
        self.model = torch.nn.Module()
        self.model.strides = [8, 16, 32]

    def forward(self, image):
        x = image.float()
        if x.shape[2] > 300:
            x = x * 2
        boxes = x.mean(0).reshape(-1, 4)[:3]
        return boxes, boxes[:, 0], boxes[:, 1].long()


def test_graph_torch_export_cannot_make_size_generic_goes_through_the_traced_exporter(
    tmp_path, caplog
):
    path = str(tmp_path / "model.onnx")
    assert write_onnx(_WidthBranch(), torch.ones(3, 64, 100, dtype=torch.uint8), path) == (
        "torchscript"
    )
    assert "torch.export cannot make one graph for every image size" in caplog.text
    # the trace serves other sizes (with the branch of the traced one)
    boxes, scores, classes = ort.InferenceSession(path).run(
        None, {"image": np.full((3, 70, 90), 3, np.uint8)}
    )
    assert boxes.shape == (3, 4) and (boxes == 3).all() and classes.dtype == np.int64


@pytest.mark.parametrize("fmt", ["onnx", "aoti", "torchscript"])
def test_exported_predictor_gives_default_predictor_detections(demo_export, fmt):
    """BGR (H, W, 3) image of an odd size in, detections in its coordinates out, as detectron2's
    DefaultPredictor with the same weights gives them (resizing done by both)."""
    from detectron2.engine import DefaultPredictor

    from fcos_d2.export.predictor import ExportedPredictor

    cfg, _, out, _ = demo_export
    image = shapes_image(263, 397, seed=21).permute(1, 2, 0).numpy()  # resized to 212 x 320
    expected = DefaultPredictor(cfg)(image)["instances"]
    got = ExportedPredictor(str(out / fmt))(image)["instances"]
    assert got.image_size == (263, 397) and len(expected) > 0
    fields = lambda x: (x.pred_boxes.tensor, x.scores, x.pred_classes)  # noqa: E731
    assert_same_detections(fields(expected), fields(got), f"predictor {fmt}")


def test_exported_predictor_rejects_wrong_channels_and_dtype(demo_export):
    from fcos_d2.export.predictor import ExportedPredictor

    predictor = ExportedPredictor(str(demo_export[2] / "onnx"))
    with pytest.raises(ValueError, match="4 channels"):
        predictor(np.zeros((20, 30, 4), np.uint8))
    with pytest.raises(ValueError, match="int32"):
        predictor(np.zeros((20, 30, 3), np.int32))


def test_unknown_format_lists_the_choices(capsys):
    from fcos_d2.export.__main__ import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--config-file", DEMO, "--format", "tflite", "--output", "x"])
    assert "choose from onnx, aoti, openvino, torchscript" in capsys.readouterr().err.replace(
        "'", ""
    )


def test_config_the_graph_cannot_express_names_the_key(tmp_path):
    cfg = load_test_config(DEMO, "MODEL.FCOS.INFERENCE_DTYPE", "bfloat16")
    with pytest.raises(ValueError, match="MODEL.FCOS.INFERENCE_DTYPE='bfloat16'"):
        export_model(cfg, "onnx", str(tmp_path))


def test_unregistered_calibration_dataset_is_named(tmp_path):
    cfg = load_test_config(DEMO)
    with pytest.raises(KeyError, match="'no_such_dataset' is not registered"):
        export_model(
            cfg, "onnx", str(tmp_path), quantize="int8", calibration_dataset="no_such_dataset"
        )
    with pytest.raises(ValueError, match="needs --format onnx"):
        export_model(cfg, "torchscript", str(tmp_path), quantize="int8")


def test_import_fcos_d2_does_not_need_the_export_extra():
    import subprocess
    import sys

    code = (
        "import sys, fcos_d2, fcos_d2.modeling; "
        "bad = [m for m in ('onnx', 'onnxruntime', 'onnxscript', 'fcos_d2.export') "
        "if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_export_command_errors_are_one_line(tmp_path, capsys):
    from fcos_d2.export.__main__ import main

    argv = [
        "--config-file",
        DEMO,
        "--format",
        "onnx",
        "--precision",
        "bf16",
        "--output",
        str(tmp_path),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--precision bf16 needs --format openvino" in err
