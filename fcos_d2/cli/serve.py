"""``fcos-d2 serve``: the HTTP detection service (Ray Serve) of a trained or exported model;
blocks until SIGINT or SIGTERM, then stops the service (and the Ray it started)."""

import argparse
import os
import signal
import threading

from ..config import inference_settings
from .common import (
    CommandError,
    add_config_arguments,
    add_overrides,
    check_model_source,
    first_line,
    load_command_config,
)

HELP = "serve a trained or exported model over HTTP (Ray Serve, batching, replicas)"
EXAMPLES = [
    "fcos-d2 serve --config-file demo/FCOS_R18_shapes_demo.yaml "
    "--weights output/demo/model_final.pth",
    "fcos-d2 serve --exported out/onnx --port 8080 --replicas 2",
    "fcos-d2 serve --config-file configs/FCOS_R_50_FPN_1x.yaml --weights model.pth "
    "--ray-address 10.0.0.1:6379 --replicas 4 --host 0.0.0.0",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, required=False)
    parser.add_argument(
        "--exported", metavar="DIR", help="serve the model exported to DIR by fcos-d2 export"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument("--replicas", type=int, default=1, metavar="N", help="model copies")
    parser.add_argument(
        "--max-batch-size",
        type=int,
        metavar="B",
        help="concurrent requests per forward pass (default: measured on the device: 8 on a "
        "GPU; on a CPU, 8 only where it is faster per image than 1)",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        metavar="T",
        help="how long a batch waits for more requests (default 5)",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="join a running Ray cluster (ray start --head); default: a local Ray in this command",
    )
    parser.add_argument(
        "--cpus-per-replica",
        type=int,
        metavar="N",
        help="CPUs each replica reserves in Ray and torch threads it runs (default: this "
        "machine's CPUs / --replicas; with --ray-address, 1)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        metavar="N",
        help="refuse images of more pixels, read from the file header (default 40000000)",
    )
    add_overrides(parser)


def _source(args: argparse.Namespace):
    from ..serve.model import ModelSource

    check_model_source(args)
    if args.exported:
        if not os.path.isfile(os.path.join(args.exported, "export.json")):
            raise CommandError(f"--exported {args.exported!r}: no export.json (fcos-d2 export)")
        return ModelSource(exported=os.path.abspath(args.exported)), "cpu"
    # every mistake as one line here, not inside a replica
    device = inference_settings(load_command_config(args)).device
    from .common import resolve_config_file

    weights = args.weights
    if weights and "://" not in weights:
        weights = os.path.abspath(weights)
    # Ray shows a replica the GPU it reserved for it as cuda:0 (CUDA_VISIBLE_DEVICES)
    replica_device = "cuda" if device.startswith("cuda") else (args.device or "")
    source = ModelSource(
        config_file=os.path.abspath(resolve_config_file(args.config_file)),
        opts=tuple(args.opts or ()),
        weights=weights or "",
        device=replica_device,
    )
    return source, device


def _settings(args: argparse.Namespace, device: str):
    from ..serve.app import ServeSettings
    from ..serve.images import MAX_PIXELS

    for name in ("replicas", "max_batch_size", "port", "cpus_per_replica"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CommandError(f"--{name.replace('_', '-')} {value}: must be at least 1")
    if args.max_pixels is not None and args.max_pixels < 1:
        raise CommandError(f"--max-pixels {args.max_pixels}: must be at least 1")
    if args.batch_wait_ms < 0:
        raise CommandError(f"--batch-wait-ms {args.batch_wait_ms}: must be >= 0")
    cpus = args.cpus_per_replica
    if cpus is None:
        cpus = 1 if args.ray_address else max(1, (os.cpu_count() or 1) // args.replicas)
    return ServeSettings(
        replicas=args.replicas,
        max_batch_size=args.max_batch_size,
        batch_wait_ms=args.batch_wait_ms,
        max_pixels=args.max_pixels or MAX_PIXELS,
        cpus_per_replica=float(cpus),
        gpus_per_replica=1.0 if device.startswith("cuda") else 0.0,  # one GPU each
    )


def run(args: argparse.Namespace) -> int:
    source, device = _source(args)
    settings = _settings(args, device)
    try:
        import ray
        from ray import serve
    except ImportError:
        raise CommandError("serving needs Ray Serve: pip install 'fcos_d2[serve]'") from None
    from ..serve.app import build_app

    stop, started = threading.Event(), threading.Event()
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}}
    try:
        if args.ray_address:
            ray.init(address=args.ray_address, runtime_env=env, log_to_driver=False)
        else:
            # a local Ray of this command only; on loopback when the service is
            loopback = args.host in ("127.0.0.1", "localhost")
            local = {"_node_ip_address": "127.0.0.1"} if loopback else {}
            ray.init(
                address="local",
                include_dashboard=False,
                runtime_env=env,
                log_to_driver=False,
                **local,
            )
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"--ray-address {args.ray_address}" if args.ray_address else "a local Ray"
        raise CommandError(f"cannot start Ray ({where}): {first_line(e)}") from None

    def on_signal(*_):
        stop.set()
        if not started.is_set():  # still starting (e.g. waiting for resources): give up now
            raise KeyboardInterrupt

    # after ray.init, which sets its own
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    try:
        # one HTTP proxy, on the node of this command's Ray head: the address users call
        serve.start(http_options={"host": args.host, "port": args.port}, proxy_location="HeadOnly")
        serve.run(build_app(source, settings), name="fcos_d2", route_prefix="/")
        started.set()
        print(
            f"fcos-d2 serve: listening on http://{args.host}:{args.port} (Ctrl-C stops)", flush=True
        )
        while not stop.wait(0.5):
            pass
        print("fcos-d2 serve: stopping", flush=True)
    except KeyboardInterrupt:
        print("fcos-d2 serve: stopped while starting", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0
