"""The demo's last step: reading detectron2's metrics.json."""

import json

from fcos_d2.visualize import last_bbox_metrics


def test_last_bbox_metrics(tmp_path):
    lines = [
        {"iteration": 9, "total_loss": 1.0},
        {"iteration": 19, "bbox/AP": 40.0},
        {"iteration": 29, "bbox/AP": 55.5, "bbox/AP50": 80.25},
        {"iteration": 30, "lr": 0.1},
    ]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(x) for x in lines))
    assert last_bbox_metrics(str(tmp_path)) == {"AP": 55.5, "AP50": 80.25}
    assert last_bbox_metrics(str(tmp_path / "missing")) is None
