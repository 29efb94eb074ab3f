"""The serving benchmark's load generator (bounded in requests, errors counted) against a
loopback HTTP server of the standard library, and its goals worked out by hand."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fcos_d2.benchmark.serving import load, serving_goals


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # kept-alive connections, as the load generator uses
    seen = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Handler.seen.append(body)
        status = 500 if body == b"bad" else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.seen = []
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_load_sends_exactly_the_requests_asked_for_and_counts_errors(http_server):
    figures = load("127.0.0.1", http_server, [b"ok", b"ok", b"bad"], 4, 30, seconds=60)
    assert figures["requests"] == 30 == len(_Handler.seen)
    # each client k sends bodies k, k+1, ... in turn: every third body overall is b"bad"
    assert figures["errors"] == _Handler.seen.count(b"bad") > 0
    assert figures["p99_ms"] >= figures["p50_ms"] > 0


def test_load_stops_at_its_time_limit(http_server):
    figures = load("127.0.0.1", http_server, [b"ok"], 2, 10**9, seconds=0.5)
    assert 0 < figures["requests"] < 10**9


def _rows(default16, one16, default1_p50, p99):
    return [
        {"model": "m", "mode": "offline (Predictor)", "best_images_per_s": 10.0,
         "single_p50_ms": 50.0},
        {"model": "m", "mode": "serve default", "clients": 16, "throughput": default16,
         "p50_ms": 100.0, "p99_ms": p99},
        {"model": "m", "mode": "serve --max-batch-size 1", "clients": 16, "throughput": one16,
         "p50_ms": 100.0, "p99_ms": 150.0},
        {"model": "m", "mode": "serve default", "clients": 1, "throughput": 5.0,
         "p50_ms": default1_p50, "p99_ms": 80.0},
    ]  # fmt: skip


def test_goals_are_the_ratios_worked_out_by_hand():
    goals = {g["goal"].split(" ")[0] + str(i): g for i, g in enumerate(serving_goals(
        _rows(default16=9.5, one16=9.0, default1_p50=60.0, p99=190.0)))}  # fmt: skip
    values = [(g["value"], g["met"]) for g in goals.values()]
    # 9.5 / 10; 9.5 / 9.0; 60 - 50 ms; 190 / 100
    assert values == [(0.95, True), (1.056, True), (10.0, True), (1.9, True)]
    missed = serving_goals(_rows(default16=8.0, one16=9.0, default1_p50=70.0, p99=210.0))
    assert [(g["value"], g["met"]) for g in missed] == [
        (0.8, False),
        (0.889, False),
        (20.0, False),
        (2.1, False),
    ]
