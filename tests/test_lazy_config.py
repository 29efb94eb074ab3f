"""
LazyConfig (Python) configs against the YAML recipes they mirror: the same model (state-dict
keys and shapes, losses and detections for the same weights), the same schedule and data
settings, checkpoints across the two, and training through fcos_d2's lazy trainer with exact
resume.
"""

import os

import pytest
import torch
from detectron2.config import instantiate
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler
from detectron2.utils.events import EventStorage

import fcos_d2
from fcos_d2.checkpoint import FCOSCheckpointer
from fcos_d2.data.mapper import FCOSDatasetMapper
from fcos_d2.engine import FCOSLazyTrainer
from tests.common_utils import (
    REPO,
    CrashAfter,
    randomize_head,
    registered_dataset,
    tiny_batch,
    tiny_dataset,
)

CONFIGS = os.path.join(REPO, "configs")
PAIRS = [
    ("lazy/fcos_R18_shapes_demo.py", "demo/FCOS_R18_shapes_demo.yaml"),
    ("lazy/fcos_R_50_FPN_1x.py", "FCOS_R_50_FPN_1x.yaml"),
    ("lazy/fcos_MS_R_50_FPN_2x.py", "FCOS_MS_R_50_FPN_2x.yaml"),
]

TIMM_PAIRS = [
    (f"lazy/timm/fcos_{name}_FPN_1x.py", f"timm/FCOS_{name}_FPN_1x.yaml")
    for name in ("ese_vovnet39b", "convnext_tiny", "efficientnet_b3")
]


def _pair(lazy, yaml):
    """The two configs; timm's pretrained weights off (nothing can be downloaded here)."""
    timm = "timm/" in yaml
    lazy_opts = ["model.backbone.bottom_up.pretrained=False"] if timm else []
    lazy_cfg = fcos_d2.load_config(os.path.join(CONFIGS, lazy), lazy_opts)
    yaml_opts = ["MODEL.DEVICE", "cpu"] + (["MODEL.TIMM.PRETRAINED", "False"] if timm else [])
    return lazy_cfg, fcos_d2.load_config(os.path.join(CONFIGS, yaml), yaml_opts)


@pytest.mark.parametrize("lazy,yaml", PAIRS + TIMM_PAIRS)
def test_lazy_and_yaml_recipes_build_the_same_state_dict_keys_shapes_and_frozen_params(lazy, yaml):
    if "timm/" in yaml:
        pytest.importorskip("timm")
    lazy_cfg, yaml_cfg = _pair(lazy, yaml)
    lazy_model, yaml_model = instantiate(lazy_cfg.model), build_model(yaml_cfg)
    lazy_shapes = {k: v.shape for k, v in lazy_model.state_dict().items()}
    assert lazy_shapes == {k: v.shape for k, v in yaml_model.state_dict().items()}
    frozen = {n for n, p in yaml_model.named_parameters() if not p.requires_grad}
    assert {n for n, p in lazy_model.named_parameters() if not p.requires_grad} == frozen
    if "R_50" in yaml:  # FREEZE_AT 2: the stem and res2 (worked out from detectron2's ResNet)
        assert frozen and all(n.startswith(("backbone.bottom_up.stem", "backbone.bottom_up.res2"))
                              for n in frozen)  # fmt: skip


@pytest.mark.parametrize("lazy,yaml", PAIRS + TIMM_PAIRS)
def test_lazy_and_yaml_recipes_have_the_same_schedule_optimizer_and_data_settings(lazy, yaml):
    lazy_cfg, yaml_cfg = _pair(lazy, yaml)
    solver, inp = yaml_cfg.SOLVER, yaml_cfg.INPUT
    assert lazy_cfg.train.max_iter == solver.MAX_ITER
    assert lazy_cfg.optimizer.lr == solver.BASE_LR
    assert lazy_cfg.optimizer.weight_decay == solver.WEIGHT_DECAY
    if solver.OPTIMIZER == "SGD":
        assert lazy_cfg.optimizer.momentum == solver.MOMENTUM
    else:  # fcos_d2.solver's AdamW: betas 0.9 / 0.999
        assert tuple(lazy_cfg.optimizer.betas) == (0.9, 0.999)
    assert lazy_cfg.train.init_checkpoint == ("" if "timm/" in yaml else yaml_cfg.MODEL.WEIGHTS)
    assert lazy_cfg.train.checkpointer.period == solver.CHECKPOINT_PERIOD
    assert lazy_cfg.train.eval_period == yaml_cfg.TEST.EVAL_PERIOD
    assert lazy_cfg.train.seed == yaml_cfg.SEED
    model = torch.nn.Linear(2, 2)
    lazy_cfg.optimizer.params.model = model
    lazy_opt = instantiate(lazy_cfg.optimizer)
    assert type(lazy_opt) is type(fcos_d2.solver.build_optimizer(yaml_cfg, model))
    yaml_sched = build_lr_scheduler(yaml_cfg, torch.optim.SGD(model.parameters(), lr=1.0))
    lazy_mult = instantiate(lazy_cfg.lr_multiplier)
    max_iter = solver.MAX_ITER
    checked = {0, 1, solver.WARMUP_ITERS - 1, solver.WARMUP_ITERS, max_iter - 1}
    checked |= {s + d for s in solver.STEPS for d in (-1, 0)}
    for it in sorted(checked):
        assert lazy_mult(it / max_iter) == pytest.approx(yaml_sched._multiplier(it / max_iter))
    train = lazy_cfg.dataloader.train
    resize, flip = train.mapper.augmentations
    assert tuple(resize.short_edge_length) == tuple(inp.MIN_SIZE_TRAIN)
    assert resize.max_size == inp.MAX_SIZE_TRAIN and flip.horizontal
    assert train.total_batch_size == solver.IMS_PER_BATCH
    assert train.num_workers == yaml_cfg.DATALOADER.NUM_WORKERS
    assert resize.sample_style == inp.MIN_SIZE_TRAIN_SAMPLING
    assert (train.dataset_names,) == tuple(yaml_cfg.DATASETS.TRAIN)
    test_resize = lazy_cfg.dataloader.test.mapper.augmentations[0]
    assert (test_resize.short_edge_length, test_resize.max_size) == (
        inp.MIN_SIZE_TEST,
        inp.MAX_SIZE_TEST,
    )
    assert (lazy_cfg.dataloader.test.dataset.names,) == tuple(yaml_cfg.DATASETS.TEST)
    assert lazy_cfg.dataloader.test.mapper.image_format == inp.FORMAT == lazy_cfg.model.input_format
    assert list(lazy_cfg.model.pixel_mean) == list(yaml_cfg.MODEL.PIXEL_MEAN)


def _same_weights(lazy_cfg, yaml_cfg, seed=0):
    torch.manual_seed(seed)
    yaml_model = randomize_head(build_model(yaml_cfg), cls_bias=0.0, box_bias=1.0)
    lazy_model = instantiate(lazy_cfg.model)
    incompatible = lazy_model.load_state_dict(yaml_model.state_dict())
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    return lazy_model, yaml_model


@pytest.mark.parametrize("lazy,yaml", PAIRS[:2] + TIMM_PAIRS[2:])
def test_lazy_and_yaml_models_give_the_same_losses_for_the_same_weights(lazy, yaml):
    if "timm/" in yaml:
        pytest.importorskip("timm")
    # the YAML model folds its frozen BN and runs channels_last, the lazy one does not
    lazy_model, yaml_model = _same_weights(*_pair(lazy, yaml))
    batch = tiny_batch()[:3]
    if "demo" not in yaml:
        for d in batch:
            d["instances"].gt_classes = d["instances"].gt_classes * 20  # of 80 classes
    with EventStorage():
        losses = [m.train()(batch) for m in (lazy_model, yaml_model)]
    assert (
        losses[0].keys() == losses[1].keys() == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    )
    for k in losses[0]:
        assert losses[0][k].item() == pytest.approx(losses[1][k].item(), rel=1e-4), k


def test_lazy_and_yaml_demo_models_give_the_same_detections_for_the_same_weights():
    lazy_model, yaml_model = _same_weights(*_pair(*PAIRS[0]))
    images = [d["image"] for d in tiny_batch()[:2]]
    images.append(torch.randint(0, 256, (3, 97, 131), generator=torch.Generator().manual_seed(1)))
    inputs = [{"image": im.float()} for im in images]
    with torch.no_grad():
        out = [m.eval()(inputs) for m in (lazy_model, yaml_model)]
    for a, b in zip(*out):
        a, b = a["instances"], b["instances"]
        assert len(a) == len(b) > 0
        assert torch.equal(a.pred_classes, b.pred_classes)
        assert torch.allclose(a.scores, b.scores, atol=1e-5)
        assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-3)


def test_a_checkpoint_of_one_config_system_loads_strictly_into_the_other(tmp_path):
    lazy_cfg, yaml_cfg = _pair(*PAIRS[0])
    torch.manual_seed(3)
    yaml_model, lazy_model = build_model(yaml_cfg), instantiate(lazy_cfg.model)
    FCOSCheckpointer(yaml_model, str(tmp_path / "yaml")).save("model")
    FCOSCheckpointer(lazy_model, strict=True).load(str(tmp_path / "yaml" / "model.pth"))
    FCOSCheckpointer(lazy_model, str(tmp_path / "lazy")).save("model")
    back = build_model(yaml_cfg)
    FCOSCheckpointer(back, strict=True).load(str(tmp_path / "lazy" / "model.pth"))
    for k, v in yaml_model.state_dict().items():
        assert torch.equal(lazy_model.state_dict()[k], v) and torch.equal(back.state_dict()[k], v)


def _lazy_training_cfg(out, seen):
    class Recording(FCOSDatasetMapper):
        def __call__(self, record):
            result = super().__call__(record)
            seen.append((os.path.basename(record["file_name"]), tuple(result["image"].shape)))
            return result

    cfg = fcos_d2.load_config(
        os.path.join(CONFIGS, PAIRS[0][0]),
        [
            "dataloader.train.dataset_names=lazy_tiny",
            "dataloader.train.total_batch_size=2",
            "dataloader.train.num_workers=0",
            "dataloader.train.mapper.augmentations.0.short_edge_length=[32,40,48]",
            "dataloader.train.mapper.augmentations.0.max_size=64",
            "train.max_iter=4",
            "train.checkpointer.period=2",
            "train.seed=7",
            f"train.output_dir={out}",
        ],
    )
    cfg.dataloader.train.mapper._target_ = Recording
    del cfg.dataloader.evaluator  # no evaluation at the end
    return cfg


@pytest.fixture
def lazy_tiny(tmp_path):
    """The dataset _lazy_training_cfg trains on."""
    with tiny_dataset(str(tmp_path), "lazy_tiny") as name:
        yield name


def _train(cfg, resume=False, crash_at=None):
    torch.manual_seed(7)
    trainer = FCOSLazyTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    if crash_at is not None:
        trainer.register_hooks([CrashAfter(crash_at)])
    trainer.train()
    return {k: v.detach().clone() for k, v in trainer._trainer.model.state_dict().items()}


@pytest.mark.slow
def test_lazy_trainer_resumes_with_the_same_batches_and_ends_with_the_same_weights(
    tmp_path, lazy_tiny
):
    seen = []
    full = _train(_lazy_training_cfg(str(tmp_path / "full"), seen))
    full_reads = list(seen)
    assert len(full_reads) == 2 * 4
    out = str(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        _train(_lazy_training_cfg(out, []), crash_at=1)
    assert open(os.path.join(out, "last_checkpoint")).read() == "model_0000001.pth"
    seen.clear()
    resumed = _train(_lazy_training_cfg(out, seen), resume=True)
    assert seen == full_reads[4:]  # iterations 2 and 3 read the same images at the same sizes
    assert len({size for _, size in full_reads}) > 1  # augmentation did vary
    start = torch.load(os.path.join(out, "model_0000001.pth"), weights_only=False)["model"]
    assert any(not torch.allclose(v, full[k]) for k, v in start.items())
    for k in full:
        assert torch.allclose(full[k], resumed[k], rtol=1e-5, atol=1e-6), k


def test_python_config_overrides_must_be_key_value():
    path = os.path.join(CONFIGS, PAIRS[0][0])
    with pytest.raises(ValueError, match="key=value"):
        fcos_d2.load_config(path, ["SOLVER.MAX_ITER", "3"])
    with pytest.raises(ValueError, match="no key .train.no_such_key.x"):
        fcos_d2.load_config(path, ["train.no_such_key.x=3"])
    cfg = fcos_d2.load_config(path, ["+train.extra=3", "train.max_iter=9"])
    assert (cfg.train.extra, cfg.train.max_iter) == (3, 9)


@pytest.mark.slow
def test_train_net_trains_a_python_config_on_two_cpu_processes_then_evaluates_it(tmp_path):
    import subprocess
    import sys

    from fcos_d2.data.shapes import generate_shapes_dataset

    generate_shapes_dataset(str(tmp_path / "shapes"), num_train=4, num_val=2, seed=5)
    env = dict(os.environ, DETECTRON2_DATASETS=str(tmp_path), PYTHONWARNINGS="ignore")
    small = [
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
        "dataloader.train.mapper.augmentations.0.short_edge_length=[64]",
        "dataloader.test.mapper.augmentations.0.short_edge_length=64",
    ]

    def run(*args):
        cmd = [sys.executable, "train_net.py", "--config-file", os.path.join(CONFIGS, PAIRS[0][0])]
        res = subprocess.run(
            cmd + list(args) + small, env=env, cwd=REPO, capture_output=True, text=True, timeout=300
        )
        assert res.returncode == 0, res.stderr[-3000:]
        return res.stdout + res.stderr

    out = str(tmp_path / "out")
    log = run("--num-gpus", "2", "train.max_iter=2", f"train.output_dir={out}")
    assert "iter: 1" in log and "copypaste: AP,AP50" in log  # trained, then evaluated
    weights = os.path.join(out, "model_final.pth")
    assert os.path.exists(weights) and os.path.exists(os.path.join(out, "config.yaml"))
    log = run("--eval-only", f"train.init_checkpoint={weights}", f"train.output_dir={tmp_path}/e")
    assert f"Loading from {weights}" in log and "copypaste: AP,AP50" in log
    assert "iter: 0" not in log  # evaluated, not trained


def test_predictor_and_demo_on_a_python_config_give_the_yaml_configs_detections(tmp_path, capsys):
    import json

    import cv2
    import numpy as np

    from fcos_d2 import Predictor
    from fcos_d2.demo import main as demo

    lazy_cfg, yaml_cfg = _pair(*PAIRS[0])
    torch.manual_seed(0)
    model = randomize_head(build_model(yaml_cfg), cls_bias=0.0, box_bias=1.0)
    weights = str(tmp_path / "model.pth")
    torch.save({"model": model.state_dict()}, weights)
    yaml_cfg.MODEL.WEIGHTS, lazy_cfg.train.init_checkpoint = weights, weights
    image = np.random.default_rng(0).integers(0, 256, (97, 131, 3), dtype=np.uint8)
    a, b = Predictor(lazy_cfg)(image)["instances"], Predictor(yaml_cfg)(image)["instances"]
    assert len(a) == len(b) > 0 and torch.equal(a.pred_classes, b.pred_classes)
    assert a.image_size == (97, 131)  # boxes in the input image's coordinates
    assert torch.allclose(a.scores, b.scores, atol=1e-5)
    assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-3)

    path = str(tmp_path / "image.png")
    cv2.imwrite(path, image)
    outputs = []
    for config, opts in (
        (PAIRS[0][0], [f"train.init_checkpoint={weights}"]),
        (PAIRS[0][1], ["MODEL.WEIGHTS", weights]),
    ):
        out = str(tmp_path / f"{len(outputs)}.json")
        argv = ["--config-file", os.path.join(CONFIGS, config), "--input", path, "--json", out]
        assert demo(argv + ["--confidence-threshold", "0.3", "--opts", *opts]) == 0
        outputs.append(json.load(open(out)))
    assert len(outputs[0]) == len(outputs[1]) > 0
    for x, y in zip(*outputs):
        assert x["category_id"] == y["category_id"]
        assert x["score"] == pytest.approx(y["score"], abs=1e-5)
        assert x["bbox"] == pytest.approx(y["bbox"], abs=1e-3)


@pytest.mark.parametrize("kind", ["lazy", "yaml"])
def test_amp_training_on_the_cpu_is_a_one_line_error_naming_the_key(kind, tmp_path):
    from fcos_d2.engine import FCOSTrainer

    lazy_cfg, yaml_cfg = _pair(*PAIRS[0])
    if kind == "lazy":
        lazy_cfg.train.amp.enabled = True
        with pytest.raises(ValueError, match=r"train.amp.enabled=True needs CUDA"):
            FCOSLazyTrainer(lazy_cfg)
    else:
        yaml_cfg.SOLVER.AMP.ENABLED, yaml_cfg.OUTPUT_DIR = True, str(tmp_path)
        with pytest.raises(ValueError, match=r"SOLVER.AMP.ENABLED=True needs CUDA"):
            FCOSTrainer(yaml_cfg)


@pytest.fixture
def bad_boxes_dataset():
    from detectron2.structures import BoxMode

    good = {"id": 1, "bbox": [2, 2, 10, 10], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}
    bad = {"id": 2, "bbox": [5, 5, 0, 8], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}
    record = {"file_name": "x.png", "image_id": 7, "height": 40, "width": 50}
    records = [dict(record, annotations=[good, bad])]
    with registered_dataset("lazy_bad_boxes", records=records, thing_classes=["a"]) as name:
        yield name


def test_python_configs_training_stream_drops_invalid_boxes_naming_them(bad_boxes_dataset, caplog):
    from fcos_d2.engine import build_fcos_train_loader

    with caplog.at_level("WARNING"):
        loader = build_fcos_train_loader(
            dataset_names=bad_boxes_dataset, mapper=lambda r: r, total_batch_size=1, seed=0
        )
    kept = loader.dataset.records[0]["annotations"]
    assert [a["id"] for a in kept] == [1]  # the zero-width box dropped, the other kept
    assert "annotation id 2 in 'x.png'" in caplog.text and "width 0" in caplog.text


def test_python_configs_training_stream_refuses_more_classes_than_the_model(bad_boxes_dataset):
    from fcos_d2.engine import build_fcos_train_loader

    match = r"dataloader.train.num_classes=0 is smaller than the 1 categories"
    with pytest.raises(ValueError, match=match):
        build_fcos_train_loader(
            dataset_names=bad_boxes_dataset, mapper=lambda r: r, total_batch_size=1, seed=0,
            num_classes=0,
        )  # fmt: skip


def test_lazy_trainer_leaves_the_config_without_the_model(tmp_path, lazy_tiny):
    cfg = _lazy_training_cfg(str(tmp_path / "out"), [])
    FCOSLazyTrainer(cfg)
    assert "model" not in cfg.optimizer.params  # detectron2's convention, on a copy


def test_mismatched_channel_orders_of_data_and_model_are_a_one_line_error(tmp_path):
    cfg = _lazy_training_cfg(str(tmp_path), [])
    cfg.dataloader.train.mapper.image_format = "RGB"  # the test mapper follows it; model: BGR
    with pytest.raises(ValueError, match=r"dataloader.train.mapper.image_format='RGB' is not mod"):
        FCOSLazyTrainer(cfg)


def test_malformed_python_override_is_a_one_line_error(tmp_path, capsys):
    from fcos_d2.demo import main as demo

    path = os.path.join(CONFIGS, PAIRS[0][0])
    with pytest.raises(ValueError, match=r"train.max_iter=\[1,2.*no viable alternative") as e:
        fcos_d2.load_config(path, ["train.max_iter=[1,2"])
    assert "\n" not in str(e.value)
    argv = ["--config-file", path, "--input", "x.png", "--opts", "MODEL.WEIGHTS", "w.pth"]
    assert demo(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "key=value" in err and "MODEL.WEIGHTS" in err


@pytest.mark.parametrize(
    "override,match",
    [
        ("model.core.postprocess.score_thresh=5", r"score_thresh=5 must be in \[0, 1\)"),
        ("model.head.prior_prob=0", r"prior_prob=0 must be in \(0, 1\)"),
        ("model.core.box_loss_type=l1", r"box_loss_type='l1' is not one of"),
        ("model.inference_dtype=float64", r"inference_dtype='float64' is not one of"),
        ("model.head_in_features=[p3,p4,p9]", r"head_in_features \['p9'\] are not among"),
        ("model.backbone.out_channels=32", r"the head takes 3 levels of 64 channels.*\[32\]"),
        ("+model.core.strides=[8,16,64]", r"core for strides \(8, 16, 64\)"),
    ],
)
def test_bad_values_of_a_python_model_config_are_one_line_errors(override, match):
    cfg = fcos_d2.load_config(os.path.join(CONFIGS, PAIRS[0][0]), [override])
    with pytest.raises(ValueError, match=match) as e:
        instantiate(cfg.model)
    assert "\n" not in str(e.value)
