"""The end-to-end rows' compiled mode on a tiny model: detectron2's detections, every batch."""

import pytest
import torch

from fcos_d2.benchmark.harness import build_models, load_into_builtin
from fcos_d2.benchmark.inference import COMPILED, ONE_BY_ONE, bench_end_to_end
from fcos_d2.layers import FrozenBNConv2d
from fcos_d2.model_zoo import get_config_file
from tests.common_utils import randomize_head


@pytest.mark.slow
def test_compiled_default_gives_the_builtin_detections_at_each_batch_size():
    # frozen BN, as the R-50 presets: its folded convs must trace as one graph too
    config = get_config_file("demo/FCOS_R18_shapes_demo.yaml")
    cfg, ours, d2 = build_models(config, "cpu", ["MODEL.RESNETS.NORM", "FrozenBN"])
    assert any(isinstance(m, FrozenBNConv2d) for m in ours.backbone.modules())
    load_into_builtin(d2, randomize_head(ours, cls_bias=0.0, cls_std=0.05, box_bias=2.0))
    size = (97, 131)  # odd: the padding to the backbone's divisibility is part of the graph
    gen = torch.Generator().manual_seed(0)
    image = {"image": torch.rand(3, *size, generator=gen) * 255}
    with torch.no_grad():
        assert len(d2([image])[0]["instances"]) > 0  # the check below compares detections
    rows = bench_end_to_end(cfg, ours, d2, "cpu", size, iters=1, batches=(1, 2), with_compile=True)
    compiled = {r["what"]: r for r in rows if r["mode"] == COMPILED}
    assert set(compiled) == {"end-to-end batch 1", "end-to-end batch 2"}
    for row in compiled.values():
        assert row["same_detections_as_d2"] is True
        assert row["min_s"] > 0
    # batching is timed against the same images one call each, in the batch's rounds only
    alone = [r["what"] for r in rows if r["mode"] == ONE_BY_ONE]
    assert alone == ["end-to-end batch 2"]


def test_floor_rows_use_the_best_conv_rate_measured_around_the_rounds(monkeypatch):
    """The conv rate is measured before the first batch and after each batch; a slow spell in
    one of the measurements must not lower the floor of any batch."""
    import fcos_d2.benchmark.inference as inference

    cfg, ours, d2 = build_models(get_config_file("demo/FCOS_R18_shapes_demo.yaml"), "cpu")
    measured = iter([100.0, 150.0, 120.0])  # GFLOP/s: before, after batch 1, after batch 2
    monkeypatch.setattr(inference, "conv_ceiling", lambda *args, **kwargs: next(measured))
    monkeypatch.setattr(inference, "model_gmacs", lambda *args: 3.0)  # G multiply-adds per image
    rows = bench_end_to_end(cfg, ours, d2, "cpu", (45, 61), iters=1, batches=(1, 2))
    floors = {r["what"]: r for r in rows if r["mode"] == "conv-bound floor (float32)"}
    # 2 FLOPs per multiply-add at the best rate, 150 GFLOP/s: 6 GFLOP per image
    assert floors["end-to-end batch 1"]["min_s"] == pytest.approx(6.0 / 150)
    assert floors["end-to-end batch 2"]["min_s"] == pytest.approx(12.0 / 150)
    assert floors["end-to-end batch 2"]["gflops_per_s"] == 150.0
    # each floor row follows its batch's timed rows
    whats = [r["what"] for r in rows]
    assert whats.index("end-to-end batch 2") > whats.index("end-to-end batch 1") + 1
    assert rows[whats.index("end-to-end batch 2") - 1]["mode"] == "conv-bound floor (float32)"
