"""
``fcos-d2 serve`` in a process of its own on loopback, driven by a client written with the
standard library only: the HTTP contract (detections equal to fcos_d2.Predictor's), bad requests,
concurrent load with batching, memory over many requests, a killed replica, and a clean stop.
Every request and wait is bounded in time.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from tests.common_utils import REPO, png_header, randomize_head, tiny_cfg, with_saved_weights

pytestmark = pytest.mark.slow

STARTUP_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, body=None, method=None, timeout=60):
    """(status, parsed JSON or None, raw body) of one HTTP request."""
    req = urllib.request.Request(url, data=body, method=method or ("POST" if body else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            status, raw = res.status, res.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw), raw
    except ValueError:
        return status, None, raw


def _write_dataset(root):
    """A YOLO data file naming the classes a, b, c (the served model's test dataset), and
    images of mixed sizes and formats to send."""
    os.makedirs(os.path.join(root, "images", "val"), exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w, suffix) in enumerate([(61, 83, ".png"), (90, 47, ".jpg"), (64, 64, ".png"),
                                        (37, 120, ".bmp")]):  # fmt: skip
        path = os.path.join(root, "images", "val", f"{i}{suffix}")
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image[h // 4 : h // 2, w // 4 : w // 2] = 255
        cv2.imwrite(path, image)
        paths.append(path)
    with open(os.path.join(root, "data.yaml"), "w") as f:
        f.write("val: images/val\nnames: [a, b, c]\n")
    return f"yolo:{os.path.join(root, 'data.yaml')}:val", paths


class Server:
    def __init__(self, root, *extra, env=None):
        spec, self.images = _write_dataset(str(root))
        cfg = tiny_cfg()
        cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 128
        cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.05
        cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (), (spec,)
        torch.manual_seed(0)
        model = randomize_head(build_model(cfg), cls_bias=-1.0, cls_std=0.05, box_bias=1.0)
        self.cfg = with_saved_weights(cfg, model, root)
        self.config_file = os.path.join(str(root), "served.yaml")
        with open(self.config_file, "w") as f:
            f.write(self.cfg.dump())
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": REPO, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        self.log = open(os.path.join(str(root), "serve.log"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fcos_d2", "serve", "--config-file", self.config_file,
             "--port", str(port), *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=str(root),
        )  # fmt: skip
        self.root = root
        try:
            self.wait_healthy(STARTUP_S)
        except BaseException:
            self.proc.kill()  # never left running after a failed start
            self.proc.wait(30)
            raise

    def output(self) -> str:
        self.log.flush()
        return open(self.log.name).read()[-4000:]

    def wait_healthy(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if request(self.url + "/v1/health", timeout=5)[0] == 200:
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(1)
        raise AssertionError(f"not healthy after {seconds} s:\n{self.output()}")

    def stop(self, seconds=60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(seconds)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
                raise AssertionError(f"no clean stop within {seconds} s:\n{self.output()}")
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("serve"), "--max-batch-size", "8", "--batch-wait-ms", "20")
    yield srv
    srv.stop()


def _detect(server, path, query=""):
    with open(path, "rb") as f:
        return request(f"{server.url}/v1/detect{query}", f.read())


def test_health_and_model_info(server):
    assert request(server.url + "/v1/health")[:2] == (200, {"status": "ok"})
    status, info, _ = request(server.url + "/v1/model")
    assert status == 200
    assert info["classes"] == ["a", "b", "c"]
    assert info["runtime"] == "pytorch (cpu)" and info["precision"] == "float32"
    assert "NUM_CLASSES: 3" in info["config"] and info["max_batch_size"] == 8


def test_detections_equal_the_predictors(server):
    import fcos_d2

    predictor = fcos_d2.Predictor(server.cfg)
    for path in server.images:
        status, got, _ = _detect(server, path)
        assert status == 200
        image = cv2.imread(path)
        assert (got["height"], got["width"]) == image.shape[:2]
        expected = predictor(image)["instances"]
        order = expected.scores.argsort(descending=True)
        assert len(got["detections"]) == len(expected) > 0
        for d, i in zip(got["detections"], order.tolist()):
            k = int(expected.pred_classes[i])
            assert d["category_id"] == k and d["category"] == "abc"[k]
            assert d["score"] == pytest.approx(float(expected.scores[i]), abs=1e-4)
            box = expected.pred_boxes.tensor[i].tolist()
            assert d["bbox"] == pytest.approx(box, abs=0.01)
        scores = [d["score"] for d in got["detections"]]
        assert scores == sorted(scores, reverse=True)
    # score_threshold keeps the detections at or above it
    status, some, _ = _detect(server, server.images[0], "?score_threshold=0.3")
    _, every, _ = _detect(server, server.images[0])
    assert status == 200 and some["detections"] == [
        d for d in every["detections"] if d["score"] >= 0.3
    ]


def test_bad_requests_are_4xx_with_a_one_line_error_and_disturb_nothing(server):
    png = open(server.images[0], "rb").read()
    cases = [
        ("POST", "/v1/detect", b"", 400),
        ("POST", "/v1/detect", b"not an image at all", 400),
        ("POST", "/v1/detect", png[: len(png) // 2], 400),
        ("POST", "/v1/detect", png_header(60000, 60000), 400),
        ("POST", "/v1/detect?score_threshold=abc", png, 400),
        ("POST", "/v1/detect?score_threshold=1.5", png, 400),
        ("GET", "/v1/detect", None, 405),
        ("DELETE", "/v1/health", None, 405),
        ("GET", "/v2/detect", None, 404),
    ]
    for method, path, body, expected in cases:
        status, parsed, raw = request(server.url + path, body, method=method)
        assert status == expected, (method, path, raw[:300])
        assert set(parsed) == {"error"} and "\n" not in parsed["error"], raw[:300]
    one_pixel = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes()
    status, got, _ = request(server.url + "/v1/detect", one_pixel)
    assert status == 200 and (got["width"], got["height"]) == (1, 1)
    assert _detect(server, server.images[1])[0] == 200


def test_concurrent_load_answers_every_request_with_its_own_image(server):
    reference = [_detect(server, p)[1] for p in server.images]
    bodies = [open(p, "rb").read() for p in server.images]

    def client(c):
        out = []
        for r in range(25):
            k = (c + r) % len(bodies)
            status, got, _ = request(server.url + "/v1/detect", bodies[k], timeout=120)
            out.append((k, status, got))
        return out

    with ThreadPoolExecutor(8) as pool:
        answers = [a for chunk in pool.map(client, range(8)) for a in chunk]
    assert len(answers) == 200
    for k, status, got in answers:
        assert status == 200
        assert (got["width"], got["height"]) == (reference[k]["width"], reference[k]["height"])
        assert len(got["detections"]) == len(reference[k]["detections"])
        for d, e in zip(got["detections"], reference[k]["detections"]):
            assert d["category_id"] == e["category_id"]
            assert d["score"] == pytest.approx(e["score"], abs=1e-4)
            assert d["bbox"] == pytest.approx(e["bbox"], abs=0.01)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    return kb / 1024


def test_memory_stays_flat_over_1000_requests(server):
    pid = request(server.url + "/v1/model")[1]["replica"]
    bodies = [open(p, "rb").read() for p in server.images]

    def send(n):
        return request(server.url + "/v1/detect", bodies[n % len(bodies)], timeout=120)[0]

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(send, range(200))) == {200}  # warm-up: caches, allocator pools
        before = _rss_mb(pid)
        assert set(pool.map(send, range(1000))) == {200}
        after = _rss_mb(pid)
    # 1000 requests; a leak of one decoded image (~15 KB) each would be 15 MB
    assert after - before < 10, (before, after)


def test_a_killed_replica_is_restarted_and_no_request_hangs(server):
    pid = request(server.url + "/v1/model")[1]["replica"]
    body = open(server.images[0], "rb").read()

    def send(_):
        start = time.monotonic()
        status, parsed, _ = request(server.url + "/v1/detect", body, timeout=90)
        return status, parsed, time.monotonic() - start

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(send, i) for i in range(40)]
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        results = [f.result(timeout=120) for f in futures]
    for status, parsed, seconds in results:
        assert seconds < 90
        assert status == 200 or (status >= 500 and parsed and "error" in parsed), (status, parsed)
    server.wait_healthy(120)
    assert request(server.url + "/v1/model")[1]["replica"] != pid
    assert _detect(server, server.images[0])[0] == 200


def test_sigterm_stops_the_service_cleanly(server):
    assert server.stop() == 0
    with pytest.raises(OSError):
        request(server.url + "/v1/health", timeout=5)


def _ray(*args, cwd, env):
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    return subprocess.run([ray, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_two_ray_nodes_serve_replicas_from_both(tmp_path):
    """``ray start --head`` and ``ray start --address`` on this machine (one CPU each, on
    loopback), then ``fcos-d2 serve --ray-address ... --replicas 2``: one replica per node."""
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    env["PYTHONPATH"] = REPO
    common = ["--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    head = _ray("start", "--head", "--port", str(port), "--include-dashboard", "false", *common,
                cwd=tmp_path, env=env)  # fmt: skip
    assert head.returncode == 0, head.stderr[-2000:]
    try:
        worker = _ray("start", "--address", f"127.0.0.1:{port}", *common, cwd=tmp_path, env=env)
        assert worker.returncode == 0, worker.stderr[-2000:]
        address = f"127.0.0.1:{port}"
        server = Server(tmp_path, "--ray-address", address, "--replicas", "2", env=env)
        try:
            nodes = _answering_nodes(server.url + "/v1/model", answers=30)
            assert len(nodes) == 2
            assert _detect(server, server.images[0])[0] == 200
        finally:
            assert server.stop() == 0
    finally:
        _stop_cluster(port)


def _answering_nodes(url: str, answers: int, seconds: float = STARTUP_S) -> set:
    """The Ray nodes of ``answers`` 200 answers of ``/v1/model``. The service is healthy once
    one replica has loaded its model; another may still be loading and answers 503 ("the model
    is loading") until then: that answer, and no other, is waited out, for ``seconds`` at most."""
    nodes, deadline = [], time.time() + seconds
    while len(nodes) < answers:
        status, body, raw = request(url)
        if status == 200:
            nodes.append(body["node"])
            continue
        assert status == 503 and b"loading" in raw, (status, raw[:300])
        assert time.time() < deadline, f"a replica still loading after {seconds} s"
        time.sleep(0.5)
    return set(nodes)


def _stop_cluster(port: int) -> None:
    """Kill this test's Ray processes only (``ray stop`` would end every Ray of the machine):
    those whose arguments name its GCS port, with their children."""
    import psutil

    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        args = proc.info["cmdline"] or []
        if any(a.endswith((f":{port}", f"={port}")) for a in args):
            mine.append(proc)
    for proc in list(mine):
        try:
            mine += proc.children(recursive=True)
        except psutil.Error:
            pass
    for proc in mine:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(mine, timeout=30)
