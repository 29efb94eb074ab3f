"""bench_deploy: every mode timed, exported ones compared with eager, their files removed after."""

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
