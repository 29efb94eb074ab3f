"""Exact resume: an interrupted and resumed run ends where an uninterrupted one does."""

import os

import pytest
import torch

import fcos_d2.engine.trainer as trainer_module
from fcos_d2.data.mapper import FCOSDatasetMapper
from fcos_d2.engine import FCOSTrainer
from tests.common_utils import CrashAfter, tiny_dataset, tiny_training_cfg

N_ITER = 4  # interrupted after 2


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


@pytest.fixture
def reliability_tiny(tmp_path):
    with tiny_dataset(str(tmp_path), "reliability_tiny") as name:
        yield name


def _train(cfg, resume=False, crash_at=None):
    torch.manual_seed(cfg.SEED)  # default_setup's seeding, for the model's initial weights
    trainer = FCOSTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    if crash_at is not None:
        trainer.register_hooks([CrashAfter(crash_at)])
    trainer.train()
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _cfg(out, sampler):
    cfg = tiny_training_cfg("reliability_tiny", out)
    # threshold 1: every class is rarer than that, so images repeat sqrt(1 / f_c) times
    cfg.DATALOADER.SAMPLER_TRAIN, cfg.DATALOADER.REPEAT_THRESHOLD = sampler, 1.0
    return cfg


@pytest.mark.parametrize("sampler", ["TrainingSampler", "RepeatFactorTrainingSampler"])
def test_resumed_run_sees_the_same_batches_and_ends_with_the_same_weights(
    tmp_path, recorded, reliability_tiny, sampler
):
    full = _train(_cfg(str(tmp_path / "full"), sampler))
    full_reads = list(recorded)
    assert len(full_reads) == 2 * N_ITER

    recorded.clear()
    out = str(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        _train(_cfg(out, sampler), crash_at=N_ITER // 2 - 1)
    assert open(os.path.join(out, "last_checkpoint")).read() == f"model_{N_ITER // 2 - 1:07d}.pth"
    recorded.clear()
    resumed = _train(_cfg(out, sampler), resume=True)

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
