"""Timing, and the two models under comparison built with the same weights."""

import statistics
import time
from typing import Callable, Dict, List

import torch
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.meta_arch.fcos import FCOS as D2FCOS
from detectron2.modeling.meta_arch.fcos import FCOSHead as D2FCOSHead

from ..checkpoint import from_native
from ..config import load_config
from ..model_zoo import get_config_file

__all__ = [
    "DEFAULT_CONFIG",
    "timeit",
    "timeit_interleaved",
    "build_models",
    "load_into_builtin",
    "variant",
    "in_fresh_process",
]

DEFAULT_CONFIG = get_config_file("compat/D2-Builtin-FCOS_R_50_FPN_1x.yaml")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timeit_interleaved(
    fns: Dict[str, Callable[[], object]], iters: int, device: str, warmup: int = 1
) -> Dict[str, Dict]:
    """
    Min and median seconds of each function over ``iters`` rounds after ``warmup`` rounds.
    Each round runs every function once, in turn, so that a slow spell of a shared machine
    falls on all of them rather than on whichever was being measured then.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {n: {"min_s": min(t), "median_s": statistics.median(t)} for n, t in times.items()}


def timeit(fn: Callable[[], object], iters: int, device: str, warmup: int = 1) -> Dict:
    """Min and median seconds of ``fn`` over ``iters`` runs after ``warmup`` runs."""
    return timeit_interleaved({"fn": fn}, iters, device, warmup)["fn"]


# Overrides of a benchmark's random-weight model: no checkpoint, no timm download.
RANDOM_WEIGHTS = ("MODEL.WEIGHTS", "", "MODEL.TIMM.PRETRAINED", "False")


def build_models(config: str, device: str, opts=()):
    """fcos_d2 (from ``config``) and detectron2's built-in FCOS with the same (random) weights."""
    cfg = load_config(config, ["MODEL.DEVICE", device, *RANDOM_WEIGHTS, *opts])
    torch.manual_seed(0)
    ours = build_model(cfg).eval()
    with torch.no_grad():  # a random head that detects something: realistic post-processing
        ours.head.cls_logits.bias.fill_(-3.0)
    shapes = [ours.backbone.output_shape()[f] for f in ours.head_in_features]
    f = cfg.MODEL.FCOS
    head = D2FCOSHead(
        input_shape=shapes,
        conv_dims=[shapes[0].channels] * f.NUM_CLS_CONVS,
        num_classes=f.NUM_CLASSES,
        norm=f.NORM,
        prior_prob=f.PRIOR_PROB,
    )
    # detectron2's own (unfolded, NCHW) backbone with our weights: a deepcopy would hand it our
    # channels_last weights and folded FrozenBN convs.
    backbone = build_backbone(cfg)
    backbone.load_state_dict(ours.backbone.state_dict())
    d2 = D2FCOS(
        backbone=backbone,
        head=head,
        head_in_features=ours.head_in_features,
        num_classes=f.NUM_CLASSES,
        pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD,
        test_score_thresh=0.2,
        test_nms_thresh=f.NMS_THRESH_TEST,
    )
    load_into_builtin(d2, ours)
    return cfg, ours, d2.to(device).eval()


def load_into_builtin(d2: D2FCOS, ours: torch.nn.Module) -> None:
    """``ours``'s current weights into detectron2's model (its head has no per-level scales)."""
    state = {k: v for k, v in from_native(ours.state_dict(), "d2").items() if "scales" not in k}
    d2.load_state_dict(state, strict=True)


def variant(cfg, ours, **fcos_keys):
    """A copy of ``ours`` with other MODEL.FCOS speed settings and the same weights."""
    cfg = cfg.clone()
    cfg.defrost()
    for key, value in fcos_keys.items():
        cfg.MODEL.FCOS[key] = value
    model = build_model(cfg).eval()
    model.load_state_dict(ours.state_dict())
    return model


def _run_and_send(connection, fn: Callable, args) -> None:
    import traceback

    try:
        connection.send((True, fn(*args)))
    except BaseException:  # reported in the parent, with the child's traceback
        connection.send((False, traceback.format_exc()))
    finally:
        connection.close()


def in_fresh_process(fn: Callable, *args):
    """``fn(*args)`` in a new (spawned, non-daemonic: it may start data-loader workers) Python
    process, its result returned: measurements that load several runtimes stay out of each
    other's way (a run that had timed the R-50 graphs in ONNX Runtime and OpenVINO and then
    evaluated the demo model's OpenVINO int8 graph crashed with a segmentation fault; each part
    alone did not)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_run_and_send, args=(send, fn, args))
    process.start()
    send.close()
    try:
        ok, result = receive.recv()
    except EOFError:
        ok, result = False, "the process ended without a result"
    process.join()
    if not ok:
        raise RuntimeError(
            f"{fn.__name__} failed in its process (exit code {process.exitcode}): {result}"
        )
    return result
