"""
Side-by-side benchmark of fcos_d2 and detectron2's built-in FCOS carrying the same weights.

    python -m fcos_d2.benchmark [--device cpu|cuda] [--size 800 1216] [--iters 3] [--json F]

Everything printed is measured in this run; results also go to OUTPUT/benchmark.{json,png}.
"""

import argparse
import copy
import functools
import json
import multiprocessing as mp
import os
import statistics
import threading
import time
from typing import Callable, Dict, List

import torch
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.meta_arch.fcos import FCOS as D2FCOS
from detectron2.modeling.meta_arch.fcos import FCOSHead as D2FCOSHead
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from .benchmark_report import machine_info, print_profile, print_report, summarize, write_chart
from .checkpoint import from_native
from .config_loader import load_config

__all__ = ["build_models", "timeit", "timeit_interleaved", "conv_ceiling", "main"]

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(_REPO, "configs", "compat", "D2-Builtin-FCOS_R_50_FPN_1x.yaml")


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


def build_models(config: str, device: str, opts=()):
    """fcos_d2 (from ``config``) and detectron2's built-in FCOS with the same (random) weights."""
    cfg = load_config(config, ["MODEL.DEVICE", device, "MODEL.WEIGHTS", "", *opts])
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
    state = {k: v for k, v in from_native(ours.state_dict(), "d2").items() if "scales" not in k}
    d2.load_state_dict(state, strict=True)
    return cfg, ours, d2.to(device).eval()


def _variant(cfg, ours, **fcos_keys):
    """A copy of ``ours`` with other MODEL.FCOS speed settings and the same weights."""
    cfg = cfg.clone()
    cfg.defrost()
    for key, value in fcos_keys.items():
        cfg.MODEL.FCOS[key] = value
    model = build_model(cfg).eval()
    model.load_state_dict(ours.state_dict())
    return model


def _same_detections(a: Instances, b: Instances) -> bool:
    return (
        len(a) == len(b)
        and torch.equal(a.pred_classes, b.pred_classes)
        and torch.allclose(a.scores, b.scores, atol=1e-5, rtol=0)
        and torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-3, rtol=0)
    )


class _Network(torch.nn.Module):
    """Backbone + head of an FCOS model on a normalised image tensor (for FLOP counting)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        features = self.model.backbone(x)
        outputs = self.model.head([features[f] for f in self.model.head_in_features])
        return tuple(t for level in outputs for t in level)


def _gmacs(model, size, device) -> float:
    """Multiply-adds (G) of backbone + head on one (padded) image, counted by fvcore."""
    from fvcore.nn import FlopCountAnalysis  # counts one multiply-add as one "flop"

    d = model.backbone.size_divisibility or 1
    shape = [-(-size[0] // d) * d, -(-size[1] // d) * d]
    counter = FlopCountAnalysis(_Network(model), (torch.zeros(1, 3, *shape, device=device),))
    counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return counter.total() / 1e9


def bench_end_to_end(cfg, ours, d2, device, size, iters) -> List[Dict]:
    """Latency per batch size and mode, with achieved GFLOP/s and a detections check."""
    # Each speed setting on top of the previous one, so each is measured on its own.
    modes = {
        "d2 built-in (float32)": d2,
        "fcos_d2 float32 NCHW": _variant(cfg, ours, CHANNELS_LAST=False, FOLD_FROZEN_BN=False),
        "fcos_d2 float32 channels_last": _variant(cfg, ours, FOLD_FROZEN_BN=False),
        "fcos_d2 float32 channels_last + folded BN (default)": ours,
        "fcos_d2 bfloat16 (default + INFERENCE_DTYPE)": _variant(
            cfg, ours, INFERENCE_DTYPE="bfloat16"
        ),
    }
    ceiling = conv_ceiling(ours, size, device)
    rows = []
    gen = torch.Generator().manual_seed(0)
    for batch in (1, 4):
        images = [
            {"image": (torch.rand(3, *size, generator=gen) * 255).to(device)} for _ in range(batch)
        ]
        gmacs = _gmacs(ours, size, device) * batch
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
            times = timeit_interleaved(runs, iters, device)
        for name, t in times.items():
            rows.append(
                {
                    "what": f"end-to-end batch {batch}",
                    "mode": name,
                    **t,
                    "gflops_per_s": 2 * gmacs / t["min_s"],
                    "same_detections_as_d2": same[name],
                }
            )
        floor = 2 * gmacs / ceiling
        rows.append(
            {
                "what": f"end-to-end batch {batch}",
                "mode": "conv-bound floor (float32)",
                "min_s": floor,
                "median_s": floor,
                "gflops_per_s": ceiling,
            }
        )
    return rows


def conv_ceiling(model, size, device, iters: int = 5) -> float:
    """
    GFLOP/s of the network's most common layer alone: one 256->256 3x3 conv on a P3-sized map
    in the model's layout. Backbone + head FLOPs at this rate, with nothing else, is the
    "conv-bound floor" of a float32 forward on this machine.
    """
    channels = model.head.cls_logits.in_channels
    fmt = torch.channels_last if model.channels_last else torch.contiguous_format
    x = torch.randn(1, channels, -(-size[0] // 8), -(-size[1] // 8), device=device)
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1).to(device, memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    with torch.no_grad():
        t = timeit(lambda: conv(x), iters, device)
    macs = channels * channels * 9 * x.shape[2] * x.shape[3]
    return 2 * macs / t["min_s"] / 1e9


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


def _match_once(which: str, m: int, size, device) -> Dict:
    """Run in a child process on the CPU: time and peak extra RSS of one matching call."""
    torch.set_num_threads(1)
    cfg, ours, d2 = build_models(DEFAULT_CONFIG, device)
    gen = torch.Generator().manual_seed(m)
    xy = torch.rand(m, 2, generator=gen) * torch.tensor([size[1], size[0]]) * 0.8
    wh = torch.rand(m, 2, generator=gen) * 300 + 4
    inst = Instances(
        tuple(size),
        gt_boxes=Boxes(torch.cat([xy, xy + wh], 1).to(device)),
        gt_classes=torch.zeros(m, dtype=torch.long, device=device),
    )
    features = [
        torch.zeros(1, 1, -(-size[0] // s), -(-size[1] // s), device=device) for s in ours.strides
    ]
    if which == "fcos_d2":
        sizes = [tuple(f.shape[-2:]) for f in features]
        fn = lambda: ours.label_locations(sizes, [inst])  # noqa: E731
    else:
        anchors = d2.anchor_generator(features)
        fn = lambda: d2.label_anchors(anchors, [inst])  # noqa: E731
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        t = timeit(fn, 3, device, warmup=0)
        return {**t, "peak_extra_mib": (torch.cuda.max_memory_allocated() - before) / 2**20}
    with _RssSampler() as rss:
        t = timeit(fn, 3, device, warmup=0)
    return {**t, "peak_extra_mib": rss.peak_extra_mib}


class _RssSampler:
    """Peak growth of the process's resident memory during a block, sampled every 0.5 ms."""

    def __enter__(self):
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._start = self._rss()
        self._peak = self._start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._rss())
            time.sleep(0.0005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_extra_mib = (max(self._peak, self._rss()) - self._start) / 2**20


def _match_child(args, queue):
    queue.put(_match_once(*args))


def bench_matching(size, device) -> List[Dict]:
    """Each measurement in a fresh process, so that peak memory is that call's alone."""
    ctx = mp.get_context("spawn")
    rows = []
    for m in (0, 10, 100, 1000, 5000):
        for which in ("d2 built-in", "fcos_d2"):
            queue = ctx.Queue()
            proc = ctx.Process(target=_match_child, args=((which, m, size, device), queue))
            proc.start()
            result = queue.get()
            proc.join()
            rows.append({"what": f"matching M={m}", "mode": which, **result})
    return rows


def training_batch() -> List[Dict]:
    """Two images with short side 512 and two boxes each (the training benchmark's batch)."""
    gen = torch.Generator().manual_seed(2)
    batch = []
    for h, w in ((512, 683), (512, 768)):
        inst = Instances(
            (h, w),
            gt_boxes=Boxes(torch.tensor([[30.0, 40, 300, 400], [200, 100, 260, 180]])),
            gt_classes=torch.tensor([1, 7]),
        )
        batch.append({"image": torch.rand(3, h, w, generator=gen) * 255, "instances": inst})
    return batch


def bench_train(cfg, ours, d2, device, iters) -> List[Dict]:
    """One iteration (forward, backward, SGD step), batch 2, short side 512."""
    batch = training_batch()
    models = {
        "d2 built-in": d2,
        "fcos_d2 float32 (default)": ours,
        "fcos_d2 bfloat16 (TRAIN_DTYPE)": _variant(cfg, ours, TRAIN_DTYPE="bfloat16"),
    }
    steps = {name: _train_step(model, batch) for name, model in models.items()}
    with EventStorage():
        times = timeit_interleaved(steps, iters, device)
    return [{"what": "training iteration", "mode": name, **t} for name, t in times.items()]


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


def main(argv=None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1216], metavar=("H", "W"))
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--output", default="output/benchmark")
    parser.add_argument("--json", default=None, help="JSON path (default OUTPUT/benchmark.json)")
    parser.add_argument(
        "--profile", action="store_true", help="only profile fcos_d2's default model (~1 min)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    cfg, ours, d2 = build_models(args.config, args.device)
    if args.profile:
        rows = profile_default(ours, args.size, args.device, training_batch())
        print_profile(rows)
        return {"machine": machine_info(args.device), "profile": rows}
    rows = bench_end_to_end(cfg, ours, d2, args.device, args.size, args.iters)
    rows += bench_postprocess(ours, d2, args.size, args.device, args.iters)
    rows += bench_matching(args.size, args.device)
    rows += bench_train(cfg, ours, d2, args.device, args.iters)
    result = {
        "machine": machine_info(args.device),
        "size": args.size,
        "rows": rows,
        "goals": summarize(rows),
    }
    os.makedirs(args.output, exist_ok=True)
    with open(args.json or os.path.join(args.output, "benchmark.json"), "w") as f:
        json.dump(result, f, indent=1)
    write_chart(rows, os.path.join(args.output, "benchmark.png"))
    print_report(result)
    print(f"\nwrote {args.output}/benchmark.json and benchmark.png")
    return result


if __name__ == "__main__":
    main()
