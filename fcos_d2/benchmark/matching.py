"""Location-to-target matching: time and peak extra memory, each in a fresh process."""

import multiprocessing as mp
import os
import threading
import time
import warnings
from typing import Dict, List

import torch
from detectron2.structures import Boxes, Instances

from .harness import DEFAULT_CONFIG, build_models, timeit

__all__ = ["bench_matching"]


def _match_once(config: str, which: str, m: int, size, device) -> Dict:
    """Run in a child process on the CPU: time and peak extra RSS of one matching call."""
    torch.set_num_threads(1)
    cfg, ours, d2 = build_models(config, device)
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
        with warnings.catch_warnings():  # detectron2's own torch.meshgrid call, not ours
            warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
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


def bench_matching(size, device, config: str = DEFAULT_CONFIG) -> List[Dict]:
    """Each measurement in a fresh process, so that peak memory is that call's alone."""
    ctx = mp.get_context("spawn")
    rows = []
    for m in (0, 10, 100, 1000, 5000):
        for which in ("d2 built-in", "fcos_d2"):
            queue = ctx.Queue()
            proc = ctx.Process(target=_match_child, args=((config, which, m, size, device), queue))
            proc.start()
            result = queue.get()
            proc.join()
            rows.append({"what": f"matching M={m}", "mode": which, **result})
    return rows
