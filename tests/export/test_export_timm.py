"""
Each shipped timm config (configs/timm/, random weights: timm's pretrained ones cannot be
downloaded here) builds the whole FCOS, exports to ONNX through export_model (its MODEL.WEIGHTS
loaded, nothing downloaded) with the eager model's detections (test_export's parity check), and
trains one step.
"""

import glob
import os

import pytest
import torch
from detectron2.utils.events import EventStorage

from fcos_d2.export.writers import export_model
from fcos_d2.solver import build_optimizer
from tests.common_utils import REPO, tiny_batch, with_saved_weights
from tests.export.test_export import check_parity, onnx_runner
from tests.export_helpers import load_test_config, random_model

pytestmark = pytest.mark.slow  # exports every timm config to ONNX

pytest.importorskip("timm")

TIMM_CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "timm", "*.yaml")))
# The backbone as shipped; a smaller FPN and head than shipped, to keep the export fast.
SMALL = [
    "MODEL.TIMM.PRETRAINED",
    "False",
    "MODEL.FPN.OUT_CHANNELS",
    "64",
    "MODEL.FCOS.NUM_CLS_CONVS",
    "1",
    "MODEL.FCOS.NUM_BOX_CONVS",
    "1",
    "MODEL.FCOS.NUM_CLASSES",
    "3",
    "INPUT.MIN_SIZE_TEST",
    "128",
    "INPUT.MAX_SIZE_TEST",
    "200",
]


@pytest.mark.parametrize("path", TIMM_CONFIGS, ids=os.path.basename)
def test_timm_config_exports_to_onnx_with_eager_detections_and_trains_a_step(
    path, tmp_path, monkeypatch
):
    cfg = load_test_config(path, *SMALL)
    model = random_model(cfg, cls_std=0.1)
    # As shipped (PRETRAINED True): the weights of MODEL.WEIGHTS replace timm's, which are then
    # not fetched, so an offline machine exports a trained model.
    shipped = with_saved_weights(cfg, model, tmp_path)
    shipped.MODEL.TIMM.PRETRAINED = True
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = export_model(shipped, "onnx", str(tmp_path / "onnx"))
    assert info["input"]["format"] == "RGB"  # timm's ImageNet weights take RGB
    runner = onnx_runner(str(tmp_path / "onnx" / "model.onnx"))
    name = os.path.basename(path)
    counts = check_parity(model, cfg, runner, [(128, 193), (161, 129)], name)
    assert max(counts) >= 5

    model.train()
    optimizer = build_optimizer(cfg, model)  # the config's own (AdamW for ConvNeXt)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    with EventStorage():
        losses = model(tiny_batch()[:2])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    optimizer.step()
    after = dict(model.named_parameters())
    assert all(torch.isfinite(p).all() for p in after.values())
    assert not torch.equal(after["head.cls_logits.weight"], trainable["head.cls_logits.weight"])
