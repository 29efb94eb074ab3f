"""
The OpenVINO export (``--format openvino``): the graph contract against eager on image sizes
other than the traced one (D = 0 included), and float32 / bfloat16 / NNCF int8 AP of a model
trained in the test (as test_export_int8 does for ONNX Runtime).
"""

import pytest
import torch

from fcos_d2.export.evaluate import evaluate_exported
from fcos_d2.export.predictor import ExportedPredictor
from fcos_d2.export.writers import export_model
from tests.common_utils import with_saved_weights
from tests.export.test_export import DEMO_SIZES, check_parity
from tests.export_helpers import DEMO, load_test_config, random_model
from tests.train_helpers import evaluate_on_dataset

pytestmark = pytest.mark.slow  # exports to OpenVINO; trains a model (overfit_model)

openvino = pytest.importorskip("openvino")  # the 'openvino' extra; make setup installs it

from fcos_d2.export.openvino import openvino_cpu_problem, openvino_runner  # noqa: E402

# Under an emulated smaller CPU (ONEDNN_MAX_CPU_ISA=AVX2 on an AVX-512 machine) OpenVINO's CPU
# plugin dies with a segmentation fault; a real AVX2 CPU has no cap set and runs these tests.
if openvino_cpu_problem():
    pytest.skip(openvino_cpu_problem(), allow_module_level=True)


def _has_bf16() -> bool:
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_openvino_float32_matches_eager_on_other_sizes(tmp_path):
    cfg = load_test_config(DEMO)
    model = random_model(cfg, cls_std=0.2)
    weights = str(tmp_path / "weights.pth")
    torch.save({"model": model.state_dict()}, weights)
    cfg.MODEL.WEIGHTS = weights
    info = export_model(cfg, "openvino", str(tmp_path / "ov"))
    assert (info["format"], info["runtime"], info["precision"]) == (
        "openvino",
        "openvino",
        "float32",
    )
    assert (tmp_path / "ov" / "model.xml").exists() and (tmp_path / "ov" / "model.bin").exists()
    assert not (tmp_path / "ov" / "model_float32.onnx").exists()
    run = openvino_runner(str(tmp_path / "ov" / "model.xml"), "fp32")

    def as_tensors(image):
        out = run(image.numpy())
        return tuple(torch.from_numpy(o) for o in out)

    counts = check_parity(model, cfg, as_tensors, DEMO_SIZES, "openvino fp32")
    assert sum(counts) > 0
    # the predictor picks the runtime from export.json
    assert ExportedPredictor(str(tmp_path / "ov")).info["openvino_precision"] == "fp32"


def test_precision_is_an_openvino_option(tmp_path):
    cfg = load_test_config(DEMO)
    with pytest.raises(ValueError, match="--precision bf16 needs --format openvino"):
        export_model(cfg, "onnx", str(tmp_path), precision="bf16")
    with pytest.raises(ValueError, match="for OpenVINO use --precision int8"):
        export_model(cfg, "openvino", str(tmp_path), quantize="int8")


def test_openvino_precisions_keep_the_trained_models_ap(tmp_path, overfit_model):
    cfg, name, model = overfit_model("float32", 0)
    cfg = with_saved_weights(cfg, model, tmp_path)
    eager = evaluate_on_dataset(model, cfg, name)
    assert eager["AP50"] >= 85, eager
    results = {}
    precisions = ["fp32", "int8"] + (["bf16"] if _has_bf16() else [])
    for precision in precisions:
        out = str(tmp_path / precision)
        info = export_model(cfg, "openvino", out, precision=precision, calibration_dataset=name)
        assert info["openvino_precision"] == precision
        results[precision] = evaluate_exported(out, name)["bbox"]
    print({p: (round(r["AP"], 2), round(r["AP50"], 2)) for p, r in results.items()}, eager["AP"])
    assert abs(results["fp32"]["AP"] - eager["AP"]) <= 0.1, (results["fp32"], eager)
    # Each of the 14 boxes is worth ~7 AP50: reduced precision may lose one borderline box.
    for precision in precisions[1:]:
        assert results[precision]["AP50"] >= results["fp32"]["AP50"] - 10, (precision, results)


def test_an_isa_cap_openvino_crashes_under_is_refused_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    with pytest.raises(RuntimeError, match="ONEDNN_MAX_CPU_ISA=AVX2: OpenVINO's CPU plugin"):
        openvino_runner(str(tmp_path / "model.xml"), "fp32")
