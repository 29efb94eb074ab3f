"""bench_deploy: every mode timed, exported ones compared with eager, their files removed after."""

import math
import os

import pytest

from fcos_d2.benchmark.harness import in_fresh_process

pytestmark = pytest.mark.slow  # benchmark: exports and times every runtime

pytest.importorskip("onnxruntime")


def _bench_in(folder: str):
    """bench_deploy of a tiny model with its temporary folders under ``folder`` -> (rows, modes,
    what is left there). Run in a fresh process, as the benchmark runs its runtimes: OpenVINO
    loaded beside a data loader's SIGCHLD handler crashed a later fork of the pytest process."""
    import tempfile

    import torch
    from detectron2.modeling import build_model

    from fcos_d2.benchmark import deploy
    from tests.common_utils import randomize_head, tiny_cfg, tiny_dataset

    images, exports = os.path.join(folder, "images"), os.path.join(folder, "exports")
    os.makedirs(images)
    os.makedirs(exports)
    tempfile.tempdir = exports  # where temporary folders go
    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = randomize_head(build_model(cfg).eval(), cls_bias=0.0, box_bias=2.0)
    with tiny_dataset(images, "deploy_bench_calibration"):
        rows = deploy.bench_deploy(
            cfg,
            model,
            lambda batch: model(batch),
            (67, 93),
            iters=1,
            calibration_dataset="deploy_bench_calibration",
            calibration_images=2,
        )
    return rows, deploy.available_modes(), os.listdir(exports)


def test_deploy_rows_match_eager_and_leave_no_exported_files(tmp_path):
    rows, modes, left = in_fresh_process(_bench_in, str(tmp_path))
    by_mode = {r["deploy_mode"]: r for r in rows if "deploy_mode" in r}
    assert set(by_mode) == set(modes) >= {"eager float32", "onnxruntime float32"}  # all timed
    assert by_mode["onnxruntime float32"]["detections"] > 0
    assert by_mode["onnxruntime float32"]["matched_to_eager"] == 1.0  # float32 graph = eager
    assert by_mode["onnxruntime int8"]["detections"] > 0
    if "aoti float32" in modes:  # a C++ compiler is there
        assert by_mode["aoti float32"]["matched_to_eager"] == 1.0
    # the exported files went with their folder; Inductor's compile cache (torchinductor_USER
    # under the temporary folder) is meant to outlive a run
    assert [name for name in left if not name.startswith("torchinductor_")] == []


def _profile_in(folder: str):
    """profile_openvino_int8 of a tiny model, in a fresh process (as _bench_in)."""
    import torch
    from detectron2.modeling import build_model

    from fcos_d2.benchmark import deploy
    from tests.common_utils import randomize_head, tiny_cfg, tiny_dataset

    cfg = tiny_cfg()
    torch.manual_seed(0)
    model = randomize_head(build_model(cfg).eval(), cls_bias=0.0, box_bias=2.0)
    with tiny_dataset(folder, "profile_calibration"):
        return deploy.available_modes(), deploy.profile_openvino_int8(
            cfg, model, (67, 93), "profile_calibration", calibration_images=2
        )


def test_openvino_int8_profile_shows_int8_backbone_convs_and_float32_predictors(tmp_path):
    modes, row = in_fresh_process(_profile_in, str(tmp_path))
    if "openvino int8" not in modes:
        assert row is None
        pytest.skip("OpenVINO int8 does not run here (not installed, or refused under an ISA cap)")
    kinds = {kind: seconds for kind, _, seconds in row["by_kind"]}
    convs = [k for k in kinds if k.startswith("Convolution")]
    # the quantized graph's convolutions run int8 kernels, the head's three predictors stay
    # float32 (kept out of quantization): both kinds of kernel appear, by name
    assert any(k.lower().endswith("_i8") for k in convs), convs
    assert any(k.lower().endswith("_f32") for k in convs), convs
    assert math.isclose(row["convolution_s"], sum(kinds[k] for k in convs))
    assert 0 < row["convolution_s"] <= sum(kinds.values())
    assert row["total_s"] > 0 and row["floor_s"] > 0
