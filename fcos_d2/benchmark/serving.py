"""
Serving rows of the benchmark (``fcos-d2 benchmark --serving``): throughput and p50 / p99
latency of ``fcos-d2 serve`` on loopback at 1, 4 and 16 concurrent clients, for
``--max-batch-size 1`` and the default, against the model's own offline figures on the same
machine (the best batched throughput of ``Predictor.predict_batch`` and one image's latency).
The load generator is bounded in requests and in time.
"""

import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["load", "serving_rows", "offline_figures"]

CLIENTS = (1, 4, 16)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _cpu_seconds(pid: Optional[int]) -> float:
    """CPU time (user + system) used so far by process ``pid`` and all its descendants (the
    service: the command, its Ray and Ray's workers); 0 without ``pid``."""
    if pid is None:
        return 0.0
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def load(
    host: str,
    port: int,
    bodies: Sequence[bytes],
    clients: int,
    requests: int,
    seconds: float,
    server_pid: Optional[int] = None,
) -> Dict[str, float]:
    """``clients`` threads, each with a kept-alive connection, POST ``bodies`` in turn to
    /v1/detect until ``requests`` answers in all or ``seconds`` have passed; throughput
    (answers per second), p50 and p99 latency (ms), the count of non-200 answers, and the CPU
    time per answer of the load generator and of the service (process ``server_pid`` and its
    descendants), in ms: where the machine's time went."""
    latencies: List[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    sent = [0]

    def client(c: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=max(60.0, seconds))
        k = c
        while time.monotonic() < deadline:
            with lock:
                if sent[0] >= requests:
                    break
                sent[0] += 1
            body = bodies[k % len(bodies)]
            k += 1
            start = time.perf_counter()
            try:
                conn.request(
                    "POST", "/v1/detect", body, {"Content-Type": "application/octet-stream"}
                )
                res = conn.getresponse()
                res.read()
                failed = res.status != 200
            except OSError:  # a reset or a timeout: an error, and a new connection
                failed = True
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=max(60.0, seconds))
            took = time.perf_counter() - start
            with lock:
                latencies.append(took)
                errors[0] += failed
        conn.close()

    begin, client_cpu, service_cpu = (
        time.perf_counter(),
        time.process_time(),
        _cpu_seconds(server_pid),
    )
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - begin
    count = max(1, len(latencies))
    return {
        "requests": len(latencies),
        "errors": errors[0],
        "throughput": len(latencies) / wall if wall else 0.0,
        "p50_ms": 1000 * _percentile(latencies, 0.5) if latencies else float("nan"),
        "p99_ms": 1000 * _percentile(latencies, 0.99) if latencies else float("nan"),
        "client_cpu_ms": 1000 * (time.process_time() - client_cpu) / count,
        "service_cpu_ms": 1000 * (_cpu_seconds(server_pid) - service_cpu) / count,
    }


def offline_figures(
    config_file: str, opts: Sequence[str], images: Sequence[np.ndarray], batch_sizes=(1, 4, 8)
) -> Dict[str, float]:
    """The model's own figures in this process: images per second at each batch size (the
    best of them), and one image's p50 latency (ms) through ``Predictor``."""
    import torch

    from ..config import load_config
    from ..predictor import Predictor

    torch.set_num_threads(os.cpu_count() or 1)
    predictor = Predictor(load_config(config_file, list(opts)))
    predictor(images[0])  # warm-up
    single = []
    cpu = time.process_time()
    for k in range(max(5, len(images))):
        start = time.perf_counter()
        predictor(images[k % len(images)])
        single.append(time.perf_counter() - start)
    out = {
        "single_p50_ms": 1000 * statistics.median(single),
        "single_cpu_ms": 1000 * (time.process_time() - cpu) / len(single),
    }
    for b in batch_sizes:
        batch = [images[0]] * b  # one size: one forward pass
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            predictor.predict_batch(batch)
            best = min(best, time.perf_counter() - start)
        out[f"batch{b}_images_per_s"] = b / best
    out["best_images_per_s"] = max(out[f"batch{b}_images_per_s"] for b in batch_sizes)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(
    config_file: str, opts: Sequence[str], extra: Sequence[str]
) -> Tuple[subprocess.Popen, int]:
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fcos_d2", "serve", "--config-file", config_file,
         "--port", str(port), *extra, *opts],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"fcos-d2 serve stopped: {log.read()[-2000:].decode()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=5) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            pass
        time.sleep(1)
    proc.kill()
    raise RuntimeError("fcos-d2 serve did not become healthy in 300 s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def _encoded(images: Sequence[np.ndarray]) -> List[bytes]:
    return [cv2.imencode(".png", image)[1].tobytes() for image in images]


def serving_rows(
    name: str,
    config_file: str,
    opts: Sequence[str],
    images: Sequence[np.ndarray],
    requests: int,
    seconds: float,
    progress=None,
) -> List[Dict]:
    """The rows of one model: offline figures, then the service with ``--max-batch-size 1``
    and with the default, at each of :data:`CLIENTS` concurrent clients."""
    offline = offline_figures(config_file, opts, images)
    rows = [{"model": name, "mode": "offline (Predictor)", **offline}]
    bodies = _encoded(images)
    for label, extra in (("--max-batch-size 1", ["--max-batch-size", "1"]), ("default", [])):
        proc, port = _start(config_file, opts, extra)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/model", timeout=30) as r:
                import json

                batch = json.loads(r.read())["max_batch_size"]
            load("127.0.0.1", port, bodies, 2, 4, seconds)  # warm-up
            for clients in CLIENTS:
                figures = load("127.0.0.1", port, bodies, clients, requests, seconds, proc.pid)
                row = {"model": name, "mode": f"serve {label}", "batch": batch,
                       "clients": clients, **figures}  # fmt: skip
                if progress:
                    progress(row)
                rows.append(row)
        finally:
            _stop(proc)
    return rows


def serving_goals(rows: Sequence[Dict]) -> List[Dict]:
    """The serving goals per model: throughput at 16 clients with the default >= 0.9 x the
    offline best and >= the --max-batch-size 1 one; p50 at 1 client over Predictor's <= 15 ms
    (the demo model); p99 <= 2 x p50 at 16 clients."""
    goals = []
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        offline = next(r for r in mine if r["mode"].startswith("offline"))
        at = {(r["mode"], r.get("clients")): r for r in mine}
        default16 = at.get(("serve default", 16))
        one16 = at.get(("serve --max-batch-size 1", 16))
        default1 = at.get(("serve default", 1))
        if not (default16 and one16 and default1):
            continue
        ratio = default16["throughput"] / offline["best_images_per_s"]
        goals.append({"model": model, "goal": "throughput at 16 clients >= 0.9 x offline best",
                      "value": round(ratio, 3), "met": ratio >= 0.9})  # fmt: skip
        goals.append({"model": model,
                      "goal": "default >= --max-batch-size 1 at 16 clients (within 3 %: noise)",
                      "value": round(default16["throughput"] / one16["throughput"], 3),
                      "met": default16["throughput"] >= 0.97 * one16["throughput"]})  # fmt: skip
        added = default1["p50_ms"] - offline["single_p50_ms"]
        goals.append({"model": model, "goal": "p50 added over Predictor (1 client) <= 15 ms",
                      "value": round(added, 1), "met": added <= 15})  # fmt: skip
        spread = default16["p99_ms"] / default16["p50_ms"]
        goals.append({"model": model, "goal": "p99 <= 2 x p50 at 16 clients",
                      "value": round(spread, 2), "met": spread <= 2})  # fmt: skip
    return goals


def images_for(size: Optional[Tuple[int, int]], folder: Optional[str], count: int = 8):
    """``count`` images: the files of ``folder`` (mixed sizes) where given and present, else
    random ones of ``size``."""
    if folder and os.path.isdir(folder):
        paths = sorted(os.path.join(folder, f) for f in os.listdir(folder))[:count]
        return [cv2.imread(p) for p in paths]
    rng = np.random.default_rng(0)
    h, w = size
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(count)]


def run_serving(args) -> Dict:
    """``fcos-d2 benchmark --serving``: the rows and goals of the demo model (its trained
    weights where ``--demo-weights`` names them, on the shapes validation images) and of the
    benchmark's config (random weights, images of ``--size``)."""
    from ..model_zoo import get_config_file
    from .harness import DEFAULT_CONFIG

    rows: List[Dict] = []

    def show(row: Dict) -> None:
        print(
            f"[benchmark] {row['model']} {row['mode']} (batch {row['batch']}), "
            f"{row['clients']} clients: {row['throughput']:.2f} images/s, "
            f"p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms; CPU per request: "
            f"service {row['service_cpu_ms']:.0f} ms, load generator {row['client_cpu_ms']:.0f} ms",
            file=sys.stderr,
            flush=True,
        )

    with tempfile.TemporaryDirectory() as tmp:
        models = []
        demo = get_config_file("demo/FCOS_R18_shapes_demo.yaml")
        if args.demo_weights and os.path.isfile(args.demo_weights):
            demo_opts = ["MODEL.WEIGHTS", os.path.abspath(args.demo_weights)]
        else:
            demo_opts = ["MODEL.WEIGHTS", _random_weights(demo, tmp, "demo")]
        folder = os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "shapes", "val")
        models.append(("demo (R-18, 224 px)", demo, demo_opts, images_for((224, 288), folder)))
        config = args.config or DEFAULT_CONFIG
        path = config if os.path.isfile(config) else get_config_file(config)
        size = tuple(args.size)
        opts = ["MODEL.WEIGHTS", _random_weights(path, tmp, "r50"), "MODEL.DEVICE", args.device]
        opts += ["INPUT.MIN_SIZE_TEST", str(min(size)), "INPUT.MAX_SIZE_TEST", str(max(size))]
        name = f"{os.path.basename(path)} ({size[0]}x{size[1]})"
        models.append((name, path, opts, images_for(size, None, 4)))
        for name, path, opts, images in models:
            print(f"[benchmark] serving {name} ...", file=sys.stderr, flush=True)
            rows += serving_rows(
                name, path, opts, images, args.serving_requests, args.serving_seconds, show
            )
    return {"rows": rows, "goals": serving_goals(rows)}


def _random_weights(config_file: str, folder: str, name: str) -> str:
    """Weights of a model of ``config_file`` as built (seeded): speed does not depend on them."""
    import torch
    from detectron2.modeling import build_model

    from ..config import load_config

    cfg = load_config(config_file, ["MODEL.WEIGHTS", "", "MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    path = os.path.join(folder, f"{name}.pth")
    torch.save({"model": build_model(cfg).state_dict()}, path)
    return path
