"""
int8 (static PTQ, QDQ, ONNX Runtime) of a trained model: it still finds the objects.

The model is test_learning's (the ``overfit_model`` fixture: trained in the test on 6 synthetic
images, seed 0) and is evaluated on those same images (a model this small and this briefly
trained does not generalise; the check is that quantization keeps what float32 finds),
calibrated on them too. ``-s`` prints the three APs.
"""

import pytest

from fcos_d2.export.evaluate import evaluate_exported
from fcos_d2.export.writers import export_model
from tests.common_utils import with_saved_weights
from tests.train_helpers import evaluate_on_dataset

pytestmark = pytest.mark.slow  # trains a model (overfit_model) and quantizes it


def test_int8_model_still_finds_the_objects(tmp_path, overfit_model):
    cfg, name, model = overfit_model("float32", 0)
    cfg = with_saved_weights(cfg, model, tmp_path)

    eager = evaluate_on_dataset(model, cfg, name)
    assert eager["AP50"] >= 85, eager  # the float model finds the objects (test_learning)

    export_model(cfg, "onnx", str(tmp_path / "fp32"))
    info = export_model(
        cfg, "onnx", str(tmp_path / "int8"), quantize="int8", calibration_dataset=name
    )
    assert info["precision"] == "int8" and info["quantization"]["calibration_images"] == 6
    fp32 = evaluate_exported(str(tmp_path / "fp32"), name)["bbox"]
    int8 = evaluate_exported(str(tmp_path / "int8"), name)["bbox"]
    print(
        f"\nbbox AP / AP50: eager {eager['AP']:.2f} / {eager['AP50']:.2f}, exported float32 "
        f"{fp32['AP']:.2f} / {fp32['AP50']:.2f}, int8 {int8['AP']:.2f} / {int8['AP50']:.2f}"
    )
    assert abs(fp32["AP"] - eager["AP"]) <= 0.1, (fp32, eager)
    # Each of the 14 boxes is worth ~7 AP50; int8 may lose one of the borderline ones.
    assert int8["AP50"] >= fp32["AP50"] - 10, (int8, fp32)
