"""python -m fcos_d2.benchmark.backbones: the rows it reports."""

import pytest

from fcos_d2.benchmark.backbones import bench_backbones, main

pytestmark = pytest.mark.slow  # benchmark: times whole backbones


def test_backbone_rows_count_parameters_and_macs_that_grow_with_the_image_area():
    pytest.importorskip("timm")
    name = "timm/FCOS_efficientnet_b3_FPN_1x.yaml"
    small, large = (bench_backbones([name], size, "cpu", 1)[0] for size in ((64, 96), (128, 192)))
    assert small["backbone"] == "timm efficientnet_b3"
    # EfficientNet-B3's features (timm's 12.23M less its 1536x1000 classifier: 10.7M), the
    # 256-channel FPN with P6/P7 (about 3M) and the 4+4-conv head (about 4.7M): 15-25M, for
    # any image size
    assert 15 < small["params_M"] == large["params_M"] < 25
    assert small["backbone_fpn_params_M"] < small["params_M"]
    # convolutions: multiply-adds proportional to the area (4x), up to the padding to 128
    assert 3.0 < large["gmacs"] / small["gmacs"] < 4.5
    assert 0 < small["min_s"] <= small["median_s"]


def test_backbones_command_prints_a_markdown_row_per_config(capsys):
    configs = ["FCOS_R_50_FPN_1x.yaml", "demo/FCOS_R18_shapes_demo.yaml"]
    main(["--configs", *configs, "--size", "64", "96", "--iters", "1"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| `")]
    assert out.startswith("machine: ") and len(rows) == 2
    assert rows[0].startswith("| `FCOS_R_50_FPN_1x.yaml` | ResNet-50 |")
    assert rows[1].startswith("| `demo/FCOS_R18_shapes_demo.yaml` | ResNet-18 |")
