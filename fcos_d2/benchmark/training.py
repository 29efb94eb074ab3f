"""One training iteration per model, and a profile of fcos_d2's default model."""

import copy
import time
from typing import Callable, Dict, List

import torch
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from ..layers import channels_last_helps
from .floors import FLOOR, float_conv_rate, native_bfloat16, step_gflop
from .harness import timeit_interleaved, variant

__all__ = ["DIRECT", "training_batch", "bench_train", "profile_default"]

# the default model without Winograd convolutions (what MODEL.FCOS.WINOGRAD changes on a CPU)
DIRECT = "fcos_d2 direct 3x3 convolutions, float32 (WINOGRAD False)"


def training_batch(num_classes: int = 80) -> List[Dict]:
    """Two images with short side 512 and two boxes each (the training benchmark's batch), of
    classes that exist in a model of ``num_classes``."""
    gen = torch.Generator().manual_seed(2)
    batch = []
    for h, w in ((512, 683), (512, 768)):
        inst = Instances(
            (h, w),
            gt_boxes=Boxes(torch.tensor([[30.0, 40, 300, 400], [200, 100, 260, 180]])),
            gt_classes=torch.tensor([1, 7]) % num_classes,
        )
        batch.append({"image": torch.rand(3, h, w, generator=gen) * 255, "instances": inst})
    return batch


def bench_train(cfg, ours, d2, device, iters) -> List[Dict]:
    """One iteration (forward, backward, SGD step), batch 2, short side 512 (bfloat16 on GPUs
    and on CPUs with bfloat16 units only; without Winograd convolutions on CPUs)."""
    batch = training_batch(ours.num_classes)
    models = {"d2 built-in": d2, "fcos_d2 float32 (default)": ours}
    if device == "cpu" and ours.winograd:
        models[DIRECT] = variant(cfg, ours, WINOGRAD=False)
    if native_bfloat16() or device != "cpu":
        models["fcos_d2 bfloat16 (TRAIN_DTYPE)"] = variant(cfg, ours, TRAIN_DTYPE="bfloat16")
    steps = {name: _train_step(model, batch) for name, model in models.items()}
    with EventStorage():
        times = timeit_interleaved(steps, iters, device)
        floor = _training_floor(ours, batch, device)
    rows = [{"what": "training iteration", "mode": name, **t} for name, t in times.items()]
    for row in rows:
        row["floor_ratio"] = row["min_s"] / floor["min_s"]
    return rows + [floor]


def _training_floor(ours, batch, device) -> Dict:
    """
    The float32 conv-bound floor of one training iteration: its convolution and matrix-product
    FLOPs (forward and the gradients it computes) at the rate of one 256 -> 256 3x3 forward conv
    in the layout fcos_d2 trains in here. Both models run the same arithmetic with direct
    convolutions, so a time over this floor is what either spends beyond it; Winograd
    convolutions (CPU, ``MODEL.FCOS.WINOGRAD``) do fewer multiplications and can go below it.
    """
    direct = copy.deepcopy(ours)
    direct.winograd = False  # the direct convolutions' arithmetic, which the built-in runs too
    gflop = step_gflop(_train_step(direct, batch))
    layout = (
        torch.channels_last
        if ours.channels_last and channels_last_helps(torch.device(device).type, training=True)
        else torch.contiguous_format
    )
    channels = ours.head.cls_logits.in_channels
    rate = float_conv_rate(channels, (512, 683), memory_format=layout, device=device)
    seconds = gflop / rate
    return {
        "what": "training iteration",
        "mode": FLOOR,
        "min_s": seconds,
        "median_s": seconds,
        "gflops_per_s": rate,
    }


def _train_step(model: torch.nn.Module, batch) -> Callable[[], None]:
    """A copy of ``model`` in training mode with its own SGD, as one callable step."""
    model = copy.deepcopy(model).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def profile_default(ours, size, device, batch_train) -> List[Dict]:
    """
    Where the time of fcos_d2's default model goes (torch.profiler, operators' own time): one
    float32 inference at batch 1 and one training step, after a warm-up of each.
    """
    from torch.profiler import profile

    gen = torch.Generator().manual_seed(0)
    images = [{"image": (torch.rand(3, *size, generator=gen) * 255).to(device)}]
    runs = {
        "inference batch 1": lambda: ours(images),
        "training step": _train_step(ours, batch_train),
    }
    rows = []
    for name, fn in runs.items():
        with EventStorage(), torch.set_grad_enabled(name == "training step"):
            fn()
            start = time.perf_counter()
            with profile() as prof:
                fn()
            total = time.perf_counter() - start
        ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        conv = sum(e.self_cpu_time_total for e in ops if "conv" in e.key) / 1e6
        top = [[e.key, e.count, e.self_cpu_time_total / 1e6] for e in ops[:8]]
        rows.append({"what": name, "total_s": total, "convolution_s": conv, "top_ops": top})
    return rows
