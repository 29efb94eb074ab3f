"""
detectron2's own deployment paths on an fcos_d2 model, as detectron2 tests them on RetinaNet
(tests/test_export_torchscript.py, tests/test_export_onnx.py, tools/deploy/export_model.py's
tracing mode): TracingAdapter + torch.jit.trace (with its trace check, which fails when weights
are frozen into the graph as constants), the traced module on other images and sizes, save and
load, dump_torchscript_IR, and TracingAdapter + ONNX export run in ONNX Runtime.
"""

import onnxruntime as ort
import pytest
import torch
from detectron2.export import TracingAdapter, dump_torchscript_IR

from fcos_d2.export.compare import matched_fractions
from tests.export_helpers import DEMO, load_test_config, random_model, shapes_image

pytestmark = pytest.mark.slow  # traces, scripts and exports to ONNX


def _fields(instances):
    return instances.pred_boxes.tensor, instances.scores, instances.pred_classes


def _eager(model, image):
    with torch.no_grad():
        return _fields(model([{"image": image}])[0]["instances"])


def _assert_same(expected, got, what):
    fa, fb = matched_fractions(expected, got)
    assert len(expected[0]) > 0, what
    assert fa >= 0.98 and fb >= 0.98, f"{what}: matched {fa:.3f} / {fb:.3f}"


def _model():
    return random_model(load_test_config(DEMO), cls_std=0.2)


def test_tracing_adapter_trace_serves_other_sizes(tmp_path):
    model = _model()
    image = shapes_image(224, 299, seed=0).float()  # export_model.py feeds float images
    adapter = TracingAdapter(model, [{"image": image}])  # inference=None: the model's forward
    adapter.eval()
    with torch.no_grad():
        # check_trace (the default) re-traces and compares graphs: it fails if cached folded
        # weights get into the graph as constants.
        traced = torch.jit.trace(adapter, (shapes_image(177, 263, seed=5).float(),))
    path = str(tmp_path / "model.ts")
    torch.jit.save(traced, path)
    traced = torch.jit.load(path)
    dump_torchscript_IR(traced, str(tmp_path))  # what export_model.py writes next to model.ts
    assert (tmp_path / "model_ts_code.txt").stat().st_size > 0
    for i, (h, w) in enumerate([(224, 299), (160, 320), (224, 224)]):
        image = shapes_image(h, w, seed=10 + i).float()
        with torch.no_grad():
            out = adapter.outputs_schema(traced(image))[0]["instances"]
        assert tuple(int(s) for s in out.image_size) == (h, w)
        _assert_same(_eager(model, image), _fields(out), f"traced {h}x{w}")


def test_traced_module_follows_new_weights():
    """Weights stay parameters of the traced module (no folded copies baked in as constants):
    loading other weights into the traced module changes its detections like the eager model's."""
    model = _model()
    adapter = TracingAdapter(model, [{"image": shapes_image(200, 240, seed=1).float()}])
    adapter.eval()
    with torch.no_grad():
        traced = torch.jit.trace(adapter, adapter.flattened_inputs)
    other = random_model(load_test_config(DEMO), cls_std=0.2)
    with torch.no_grad():
        for p in other.backbone.parameters():
            p.mul_(0.5)
        model.load_state_dict(other.state_dict())  # the traced module shares these tensors
    image = shapes_image(192, 256, seed=3).float()
    with torch.no_grad():
        out = adapter.outputs_schema(traced(image))[0]["instances"]
    _assert_same(_eager(other, image), _fields(out), "after new weights")


def test_tracing_adapter_onnx_export_runs_in_onnxruntime(tmp_path):
    """export_model.py's ONNX branch (TorchScript-based exporter, no dynamic axes, so the same
    size as the sample), run on another image of that size."""
    model = _model()
    sample = shapes_image(224, 288, seed=0).float()
    adapter = TracingAdapter(model, [{"image": sample}])
    adapter.eval()  # the exporter puts back the adapter's mode, on the model too
    path = str(tmp_path / "model.onnx")
    with torch.no_grad():
        torch.onnx.export(adapter, (sample,), path, dynamo=False, opset_version=17)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    image = shapes_image(224, 288, seed=4).float()
    outputs = session.run(None, {session.get_inputs()[0].name: image.numpy()})
    out = adapter.outputs_schema(tuple(torch.from_numpy(o) for o in outputs))[0]["instances"]
    _assert_same(_eager(model, image), _fields(out), "onnx")


def test_scripting_with_instances_serves_any_size(tmp_path):
    # What detectron2's tests/test_export_torchscript.py and export_model.py's scripting mode do.
    from detectron2.export import scripting_with_instances
    from detectron2.structures import Boxes

    model = _model()
    fields = {"pred_boxes": Boxes, "scores": torch.Tensor, "pred_classes": torch.Tensor}
    scripted = scripting_with_instances(model, fields)
    path = str(tmp_path / "model.ts")
    torch.jit.save(scripted, path)
    scripted = torch.jit.load(path)
    for i, (h, w) in enumerate([(224, 299), (161, 317), (96, 128)]):
        image = shapes_image(h, w, seed=20 + i).float()
        with torch.no_grad():
            # Scripted, forward returns the detections before detector_postprocess: boxes in
            # the coordinates of the image given, unclipped.
            out = scripted([{"image": image}])[0]
        assert tuple(int(s) for s in out.image_size) == (h, w)
        with torch.no_grad():
            expected = model.inference([{"image": image}], do_postprocess=False)[0]
        _assert_same(_fields(expected), _fields(out), f"scripted {h}x{w}")
