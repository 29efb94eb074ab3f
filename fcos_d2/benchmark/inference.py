"""End-to-end latency per speed mode, the conv-bound floor, and post-processing alone."""

import functools
from typing import Dict, List

import torch
from detectron2.structures import Instances

from .floors import FLOOR, float_conv_rate, model_gmacs, native_bfloat16
from .harness import timeit, timeit_interleaved, variant

__all__ = [
    "COMPILED",
    "DEFAULT",
    "ONE_BY_ONE",
    "bench_end_to_end",
    "compiled",
    "conv_ceiling",
    "bench_postprocess",
]

DEFAULT = "fcos_d2 float32 channels_last + folded BN + fused blocks (default)"
COMPILED = "fcos_d2 torch.compile (default + Inductor, freezing)"
# A batch's images through the default model one call each, timed in the batch's rounds: what
# batching is compared with (min of a few long calls against min of many short ones would favour
# the short ones on a machine whose slow spells last seconds).
ONE_BY_ONE = "fcos_d2 default, the same images one call each"


def _same_detections(a: Instances, b: Instances) -> bool:
    return (
        len(a) == len(b)
        and torch.equal(a.pred_classes, b.pred_classes)
        and torch.allclose(a.scores, b.scores, atol=1e-5, rtol=0)
        and torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-3, rtol=0)
    )


def compiled(cfg, ours) -> torch.nn.Module:
    """
    A copy of ``ours`` whose backbone and head run as one ``torch.compile`` graph (``fullgraph``:
    a graph break is an error, not a silent split), compiled once per input shape on first use
    (static shapes: the benchmark's few batch sizes each get their own kernels). Inductor
    compiles it with ``freezing``, which inference at fixed weights allows: the weights become
    constants of the graph, and what is computed from them alone (the folded frozen-BN weights)
    is computed once at compile time.
    """
    model = variant(cfg, ours)
    model._backbone_and_head = torch.compile(
        model._backbone_and_head, options={"freezing": True}, fullgraph=True, dynamic=False
    )
    return model


def _inference_modes(
    cfg, ours, d2, device, with_compile: bool = False
) -> Dict[str, torch.nn.Module]:
    """The compared models: each fcos_d2 speed setting on top of the previous one (bfloat16 on
    GPUs and on CPUs with bfloat16 units only), and with ``with_compile`` the default compiled."""
    modes = {
        "d2 built-in (float32)": d2,
        "fcos_d2 float32 NCHW": variant(cfg, ours, CHANNELS_LAST=False, FOLD_FROZEN_BN=False),
        "fcos_d2 float32 channels_last": variant(cfg, ours, FOLD_FROZEN_BN=False),
        "fcos_d2 float32 channels_last + folded BN": variant(cfg, ours, FUSE_RESNET_BLOCKS=False),
        DEFAULT: ours,
    }
    if native_bfloat16() or device != "cpu":
        modes["fcos_d2 bfloat16 (default + INFERENCE_DTYPE)"] = variant(
            cfg, ours, INFERENCE_DTYPE="bfloat16"
        )
    if with_compile:
        modes[COMPILED] = compiled(cfg, ours)
    return modes


def bench_end_to_end(
    cfg, ours, d2, device, size, iters, batches=(1, 4), with_compile: bool = False
) -> List[Dict]:
    """Latency per batch size and mode, with achieved GFLOP/s and a detections check; with
    ``with_compile`` also the default model under ``torch.compile`` (its compilation happens in the
    checks and warm-up before timing)."""
    modes = _inference_modes(cfg, ours, d2, device, with_compile)
    # The floor's conv rate is measured before and after each batch's rounds and the best kept,
    # as the models' times are the best of their rounds: one measurement of about a second moved
    # by up to 17% between runs on a shared machine, more than a goal's margin.
    rates = [conv_ceiling(ours, size, device)]
    gmacs_per_image = model_gmacs(ours, size, device)
    rows, floors = [], []
    gen = torch.Generator().manual_seed(0)
    for batch in batches:
        images = [
            {"image": (torch.rand(3, *size, generator=gen) * 255).to(device)} for _ in range(batch)
        ]
        gmacs = gmacs_per_image * batch
        with torch.no_grad():
            reference = d2(images)
            same = {
                name: all(
                    _same_detections(r["instances"], o["instances"])
                    for r, o in zip(reference, model(images))
                )
                for name, model in modes.items()
            }
            runs = {name: functools.partial(model, images) for name, model in modes.items()}
            if batch > 1:
                runs[ONE_BY_ONE] = lambda: [ours([image]) for image in images]
            times = timeit_interleaved(runs, iters, device)
        rates.append(conv_ceiling(ours, size, device))
        for name, t in times.items():
            row = {"what": f"end-to-end batch {batch}", "mode": name, **t}
            row["gflops_per_s"] = 2 * gmacs / t["min_s"]
            if name in same:
                row["same_detections_as_d2"] = same[name]
            rows.append(row)
        floors.append({"what": f"end-to-end batch {batch}", "mode": FLOOR, "gmacs": gmacs})
        rows.append(floors[-1])
    for row in floors:  # known once every batch has been timed
        row["min_s"] = row["median_s"] = 2 * row.pop("gmacs") / max(rates)
        row["gflops_per_s"] = max(rates)
    return rows


def conv_ceiling(model, size, device, iters: int = 5) -> float:
    """
    GFLOP/s of the network's most common layer alone: one 256->256 3x3 conv on a P3-sized map
    in the model's layout. Backbone + head FLOPs at this rate, with nothing else, is the
    "conv-bound floor" of a float32 forward on this machine.
    """
    fmt = torch.channels_last if model.channels_last else torch.contiguous_format
    channels = model.head.cls_logits.in_channels
    return float_conv_rate(channels, size, torch.float32, fmt, device, iters)


def _head_outputs(ours, size, device, candidates=3000):
    """Head-shaped outputs with about ``candidates`` (location, class) pairs above threshold."""
    gen = torch.Generator().manual_seed(1)
    k = ours.num_classes
    shapes = [(-(-size[0] // s), -(-size[1] // s)) for s in ours.strides]
    total = sum(h * w for h, w in shapes) * k
    logits, reg, ctr = [], [], []
    for h, w in shapes:
        cls = torch.full((1, k, h, w), -8.0)
        hot = torch.rand(1, k, h, w, generator=gen) < candidates / total
        cls[hot] = torch.randn(int(hot.sum()), generator=gen) + 1.0
        logits.append(cls.to(device))
        reg.append((torch.rand(1, 4, h, w, generator=gen) * 8).to(device))
        ctr.append(torch.randn(1, 1, h, w, generator=gen).to(device))
    features = [x.new_zeros(1, 1, *x.shape[-2:]) for x in logits]
    return features, (logits, reg, ctr)


def bench_postprocess(ours, d2, size, device, iters) -> List[Dict]:
    from detectron2.structures import ImageList

    features, preds = _head_outputs(ours, size, device)
    images = ImageList(torch.zeros(1, 3, *size, device=device), [tuple(size)])
    rows = []
    runs = max(iters, 10)
    for name, model in (("d2 built-in", d2), ("fcos_d2", ours)):
        # d2 applies sigmoid_ in place: every call gets its own copy, made before timing
        copies = [tuple([p.clone() for p in lv] for lv in preds) for _ in range(runs + 2)]

        def run():
            return model.forward_inference(images, features, copies.pop())

        with torch.no_grad():
            n = len(run()[0])
            rows.append(
                {
                    "what": "post-processing",
                    "mode": name,
                    "detections": n,
                    **timeit(run, runs, device),
                }
            )
    return rows
