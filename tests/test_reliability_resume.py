"""Exact resume: an interrupted and resumed run ends where an uninterrupted one does."""

import os

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import HookBase
from detectron2.structures import BoxMode

import fcos_d2.engine.trainer as trainer_module
from fcos_d2.data.mapper import FCOSDatasetMapper
from fcos_d2.engine import FCOSTrainer

N_ITER = 4  # interrupted after 2


def _register_tiny(root: str, name: str, num: int = 7) -> None:
    """``num`` random images of odd sizes, portrait and landscape, with 1-2 boxes each."""
    rng = np.random.RandomState(0)
    records = []
    for i in range(num):
        h, w = (53, 77) if i % 3 else (81, 49)
        image = rng.randint(0, 255, (h, w, 3), dtype=np.uint8)
        path = os.path.join(root, f"{i}.png")
        cv2.imwrite(path, image)
        anns = [
            {
                "id": 10 * i + k,
                "bbox": [5 + 7 * k, 6, 20, 25],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": (i + k) % 3,
                "iscrowd": 0,
            }
            for k in range(1 + i % 2)
        ]
        records.append(
            {"file_name": path, "image_id": i, "height": h, "width": w, "annotations": anns}
        )
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: [dict(r) for r in records])
    MetadataCatalog.get(name).thing_classes = ["a", "b", "c"]


def _cfg(dataset: str, out: str):
    cfg = tiny_cfg()
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (dataset,), ()
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (32, 40, 48), 64
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.WARMUP_ITERS = 2, 0.01, 2
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = N_ITER, (3,)
    cfg.SOLVER.CHECKPOINT_PERIOD = N_ITER // 2
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SEED = 7
    cfg.OUTPUT_DIR = out
    return cfg


class _Crash(HookBase):
    """Stops training by an exception after iteration ``at`` (like a kill after a checkpoint)."""

    def __init__(self, at):
        self.at = at

    def after_step(self):
        if self.trainer.iter == self.at:
            raise KeyboardInterrupt


@pytest.fixture
def recorded(monkeypatch):
    """File name and flip of every image the training mapper reads, in order."""
    seen = []

    class Recording(FCOSDatasetMapper):
        def __call__(self, record):
            out = super().__call__(record)
            seen.append((os.path.basename(record["file_name"]), tuple(out["image"].shape)))
            return out

    monkeypatch.setattr(trainer_module, "FCOSDatasetMapper", Recording)
    return seen


def _train(cfg, resume=False, crash_at=None):
    torch.manual_seed(cfg.SEED)  # default_setup's seeding, for the model's initial weights
    trainer = FCOSTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    if crash_at is not None:
        trainer.register_hooks([_Crash(crash_at)])
    trainer.train()
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_resumed_run_sees_the_same_batches_and_ends_with_the_same_weights(tmp_path, recorded):
    _register_tiny(str(tmp_path), "reliability_tiny")
    full = _train(_cfg("reliability_tiny", str(tmp_path / "full")))
    full_reads = list(recorded)
    assert len(full_reads) == 2 * N_ITER

    recorded.clear()
    out = str(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        _train(_cfg("reliability_tiny", out), crash_at=N_ITER // 2 - 1)
    assert open(os.path.join(out, "last_checkpoint")).read() == f"model_{N_ITER // 2 - 1:07d}.pth"
    recorded.clear()
    resumed = _train(_cfg("reliability_tiny", out), resume=True)

    # the resumed run read exactly the images of iterations 3..5 (none of the skipped ones),
    # at the same augmented sizes
    assert recorded == full_reads[N_ITER:]
    assert len({size for _, size in full_reads}) > 1  # augmentation did vary
    assert full.keys() == resumed.keys()
    moved = False
    for k in full:
        assert torch.allclose(full[k], resumed[k], rtol=1e-5, atol=1e-6), k
    start = torch.load(os.path.join(out, f"model_{N_ITER // 2 - 1:07d}.pth"), weights_only=False)
    for k, v in start["model"].items():
        moved = moved or not torch.allclose(v, full[k])
    assert moved  # the second half of training changed the weights
