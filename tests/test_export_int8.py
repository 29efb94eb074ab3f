"""
int8 (static PTQ, QDQ, ONNX Runtime) of a trained model: it still finds the objects.

The model is trained in the test (test_learning's recipe) on 4 synthetic images and evaluated on
those same 4 images (a model this small and this briefly trained does not generalise; the check is
that quantization keeps what float32 finds), calibrated on them too. Measured (2026-11-26, this
test with -s): AP / AP50 79.97 / 100 for eager, exported float32 and int8 alike. (With the earlier
one-conv-per-tower model, full-range int8 weights gave AP50 88.8 on an AVX2-only CPU, see
fcos_d2.export.quantize.)
"""

import torch
from train_helpers import evaluate_on_dataset, overfit_setup, train_on_dataset

from fcos_d2.export.evaluate import evaluate_exported
from fcos_d2.export.writers import export_model


def test_int8_model_still_finds_the_objects(tmp_path):
    name = "fcos_int8_train"
    cfg = overfit_setup(str(tmp_path), name)  # test_learning's model and recipe: AP50 >= 90
    model = train_on_dataset(cfg, name, 250)
    weights = str(tmp_path / "model.pth")
    torch.save({"model": model.state_dict()}, weights)
    cfg.MODEL.WEIGHTS = weights

    eager = evaluate_on_dataset(model, cfg, name)
    assert eager["AP50"] >= 90, eager  # the float model finds the objects

    export_model(cfg, "onnx", str(tmp_path / "fp32"))
    info = export_model(
        cfg, "onnx", str(tmp_path / "int8"), quantize="int8", calibration_dataset=name
    )
    assert info["precision"] == "int8" and info["quantization"]["calibration_images"] == 4
    fp32 = evaluate_exported(str(tmp_path / "fp32"), name)["bbox"]
    int8 = evaluate_exported(str(tmp_path / "int8"), name)["bbox"]
    print(
        f"\nbbox AP / AP50: eager {eager['AP']:.2f} / {eager['AP50']:.2f}, exported float32 "
        f"{fp32['AP']:.2f} / {fp32['AP50']:.2f}, int8 {int8['AP']:.2f} / {int8['AP50']:.2f}"
    )
    assert abs(fp32["AP"] - eager["AP"]) <= 0.1, (fp32, eager)
    assert int8["AP50"] >= fp32["AP50"] - 5, (int8, fp32)
