"""fcos_d2's messages reach the run's log.txt in detectron2's format; a training stream that
--resume cannot continue exactly is named once, and a custom mapper passed to
FCOSTrainer.build_train_loader keeps exact resume."""

import importlib.util
import json
import logging
import os
import random
import re

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import build_detection_train_loader
from detectron2.engine import default_argument_parser

from fcos_d2.data.mapper import FCOSDatasetMapper
from fcos_d2.engine import FCOSTrainer, ResumableBatchSampler, hold_fcos_messages
from tests.common_utils import REPO, registered_dataset, tiny_cfg, tiny_dataset, tiny_training_cfg

NOT_RESUMABLE = "is not fcos_d2's resumable stream"


def _d2_line(name: str, level: str, message: str) -> str:
    """A line of detectron2's log file format ('[%(asctime)s] %(name)s %(levelname)s: ...')."""
    return rf"^\[\d\d/\d\d \d\d:\d\d:\d\d\] {re.escape(name)} {level}: {re.escape(message)}"


def _log(out: str) -> str:
    with open(os.path.join(out, "log.txt")) as f:
        return f.read()


@pytest.fixture
def fresh_fcos_logger():
    """The "fcos_d2" logger as in a new process (set up by nobody), restored afterwards."""
    root = logging.getLogger("fcos_d2")
    saved = list(root.handlers), root.level, root.propagate
    for handler in saved[0]:
        root.removeHandler(handler)
    root.setLevel(logging.NOTSET)
    root.propagate = True
    yield root
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])
    root.propagate = saved[2]


@pytest.fixture
def nan_box_dataset(tmp_path):
    """A COCO json dataset: one 60x90 image, a valid box and box id 9001 with a NaN corner."""
    cv2.imwrite(str(tmp_path / "ok.png"), np.full((60, 90, 3), 90, np.uint8))
    ann = {"image_id": 5, "category_id": 1, "iscrowd": 0, "area": 400}
    coco = {
        "images": [{"id": 5, "file_name": "ok.png", "height": 60, "width": 90}],
        "annotations": [
            dict(ann, id=1, bbox=[10, 10, 20, 20]),
            dict(ann, id=9001, bbox=[float("nan"), 10, 40, 40]),
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "train.json").write_text(json.dumps(coco))  # NaN as json.dump writes it
    name = "reliability_logging_nan_box"
    with registered_dataset(name, tmp_path / "train.json", tmp_path):
        yield name


@pytest.fixture
def tiny_logging_dataset(tmp_path):
    with tiny_dataset(str(tmp_path), "reliability_logging_tiny") as name:
        yield name


def _one_iteration_cfg(dataset: str, out: str):
    cfg = tiny_cfg()
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (dataset,), ()
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (60,), 96
    cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS = 1, 0
    cfg.SOLVER.MAX_ITER, cfg.TEST.EVAL_PERIOD = 1, 0
    cfg.OUTPUT_DIR = out
    return cfg


def _train_net():
    spec = importlib.util.spec_from_file_location("train_net", os.path.join(REPO, "train_net.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DROPPED = "Dropped 1 invalid box annotation(s)"


def test_train_net_writes_the_dropped_box_warning_to_log_txt(nan_box_dataset, tmp_path):
    out = str(tmp_path / "out")
    config = tmp_path / "config.yaml"
    config.write_text(_one_iteration_cfg(nan_box_dataset, out).dump())
    args = default_argument_parser().parse_args(["--config-file", str(config)])
    _train_net().main(args)
    log = _log(out)
    assert re.search(_d2_line("fcos_d2.data.mapper", "WARNING", DROPPED), log, re.M), log
    assert "annotation id 9001 in" in log and "ok.png" in log and "NaN" in log
    assert log.count(DROPPED) == 1
    assert "Starting training from iteration 0" in log  # detectron2's messages: the same file
    assert NOT_RESUMABLE not in log


def test_train_net_setup_writes_the_config_translation_messages_to_log_txt(
    tmp_path, fresh_fcos_logger
):
    # an AdelaiDet config with a key that fcos_d2 has no equivalent for
    adelaidet = "MODEL:\n  META_ARCHITECTURE: OneStageDetector\n  FCOS:\n    YIELD_PROPOSAL: True\n"
    (tmp_path / "adet.yaml").write_text(adelaidet)
    out = str(tmp_path / "out")
    argv = ["--config-file", str(tmp_path / "adet.yaml"), "OUTPUT_DIR", out]
    _train_net().setup(default_argument_parser().parse_args(argv))
    log = _log(out)
    translated = f"Translated AdelaiDet config {tmp_path / 'adet.yaml'} to fcos_d2 keys."
    assert re.search(_d2_line("fcos_d2.config.loader", "INFO", translated), log, re.M), log
    dropped = "no fcos_d2 equivalent for MODEL.FCOS.YIELD_PROPOSAL=True"
    assert re.search(rf"fcos_d2.config.loader WARNING: .*{re.escape(dropped)}", log), log
    assert log.count(dropped) == 1


def test_held_messages_are_logged_as_before_when_nothing_is_set_up(fresh_fcos_logger, caplog):
    with caplog.at_level(logging.WARNING):
        with hold_fcos_messages():
            logging.getLogger("fcos_d2.config.loader").warning("held back")
            assert "held back" not in caplog.text
        assert caplog.text.count("held back") == 1
    assert fresh_fcos_logger.propagate and fresh_fcos_logger.level == logging.NOTSET


def test_a_trainer_outside_train_net_writes_fcos_d2_messages_to_output_dir(
    nan_box_dataset, tmp_path, fresh_fcos_logger
):
    out = str(tmp_path / "out")
    FCOSTrainer(_one_iteration_cfg(nan_box_dataset, out))  # no default_setup, no train_net.setup
    assert re.search(_d2_line("fcos_d2.data.mapper", "WARNING", DROPPED), _log(out), re.M)


class DetectronLoader(FCOSTrainer):
    """detectron2's usual customisation: its own loader."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=FCOSDatasetMapper(cfg, is_train=True))


def test_a_loader_that_cannot_resume_exactly_is_named_once(
    tmp_path, fresh_fcos_logger, tiny_logging_dataset
):
    out = str(tmp_path / "out")
    trainer = DetectronLoader(tiny_training_cfg(tiny_logging_dataset, out))
    assert "data_sampler" not in trainer.checkpointer.checkpointables
    trainer.resume_or_load(resume=False)
    log = _log(out)
    assert log.count(NOT_RESUMABLE) == 1 and "--resume" in log
    assert "super().build_train_loader(cfg, mapper=...)" in log
    assert re.search(r"fcos_d2.engine.trainer WARNING: The training data loader", log)


def test_repeat_factor_sampling_is_checkpointed_as_the_resumable_stream_without_a_warning(
    tmp_path, fresh_fcos_logger, tiny_logging_dataset
):
    out = str(tmp_path / "out")
    cfg = tiny_training_cfg(tiny_logging_dataset, out)
    cfg.DATALOADER.SAMPLER_TRAIN = "RepeatFactorTrainingSampler"
    trainer = FCOSTrainer(cfg)
    assert "data_sampler" in trainer.checkpointer.checkpointables
    assert NOT_RESUMABLE not in _log(out)


class Jittering:
    """A user's mapper: FCOS's (detectron2 augmentations, numpy's RNG), plus draws of its own
    from python's, numpy's and torch's global RNGs."""

    def __init__(self, cfg):
        self.fcos = FCOSDatasetMapper(cfg, is_train=True)

    def __call__(self, record):
        out = self.fcos(record)
        out["jitter"] = (random.random(), float(np.random.rand()), float(torch.rand(())))
        return out


class CustomMapper(FCOSTrainer):
    @classmethod
    def build_train_loader(cls, cfg):
        return super().build_train_loader(cfg, mapper=Jittering(cfg))


def _summary(batch):
    return [(d["image_id"], tuple(d["image"].shape), d["jitter"]) for d in batch]


def test_a_custom_mapper_passed_on_resumes_exactly(
    tmp_path, fresh_fcos_logger, tiny_logging_dataset
):
    out = str(tmp_path / "out")
    cfg = tiny_training_cfg(tiny_logging_dataset, out)
    cfg.SEED = -1  # each trainer draws its own stream seed: the resumed one must load it
    first = CustomMapper(cfg)
    assert isinstance(first.data_sampler, ResumableBatchSampler)
    assert first.checkpointer.checkpointables["data_sampler"] is first.data_sampler
    batches = [_summary(b) for _, b in zip(range(4), first.data_loader)]
    assert len({shape for b in batches for _, shape, _ in b}) > 1  # augmentation did vary
    first.iter = 1  # as the checkpoint hook after iteration 1 (of 0..3) saves it
    first.checkpointer.save("model_0000001", iteration=1)

    resumed = CustomMapper(cfg)
    assert resumed.data_sampler.seed != first.data_sampler.seed
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    assert [_summary(b) for _, b in zip(range(2), resumed.data_loader)] == batches[2:]
    assert NOT_RESUMABLE not in _log(out)
