"""
Backbones side by side: parameters, multiply-adds (fvcore) at one input size and the latency of
the whole detector (random weights, the configs' own settings), one row per config.

    python -m fcos_d2.benchmark.backbones [--configs timm/FCOS_convnext_tiny_FPN_1x.yaml ...]
        [--size 800 1216] [--iters 3] [--device cpu|cuda] [--json F]

Every number printed is measured in this run, on the machine named in its first line.
"""

import argparse
import warnings
from typing import Dict, List, Sequence

import torch
from detectron2.modeling import build_model

from ..config import load_config
from ..model_zoo import get_config_file
from ..utils import describe_cpu
from ..utils.jsonio import write_json
from .floors import model_gmacs
from .harness import RANDOM_WEIGHTS, timeit

__all__ = ["DEFAULT_CONFIGS", "bench_backbones", "main"]

DEFAULT_CONFIGS = (
    "FCOS_R_50_FPN_1x.yaml",
    "timm/FCOS_ese_vovnet39b_FPN_1x.yaml",
    "timm/FCOS_convnext_tiny_FPN_1x.yaml",
    "timm/FCOS_efficientnet_b3_FPN_1x.yaml",
)


def _backbone_name(cfg) -> str:
    if cfg.MODEL.BACKBONE.NAME == "build_fcos_timm_fpn_backbone":
        return f"timm {cfg.MODEL.TIMM.NAME}"
    return f"ResNet-{cfg.MODEL.RESNETS.DEPTH}"


def bench_backbones(
    configs: Sequence[str], size: Sequence[int], device: str, iters: int
) -> List[Dict]:
    """One row per config: backbone, parameters (M, whole detector and backbone + FPN),
    GMACs of backbone + head on one ``size`` image, and min / median seconds of one image
    through the detector (decoding and NMS included)."""
    rows = []
    for name in configs:
        cfg = load_config(get_config_file(name), ["MODEL.DEVICE", device, *RANDOM_WEIGHTS])
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        image = torch.randint(0, 256, (3, *size), dtype=torch.uint8).to(device).float()
        with torch.no_grad():
            latency = timeit(lambda: model([{"image": image}]), iters, device)
            gmacs = model_gmacs(model, size, device)
        rows.append(
            {
                "config": name,
                "backbone": _backbone_name(cfg),
                "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                "backbone_fpn_params_M": sum(p.numel() for p in model.backbone.parameters()) / 1e6,
                "gmacs": gmacs,
                "size": list(size),
                **latency,
            }
        )
    return rows


def main(argv=None) -> List[Dict]:
    """Deprecated: ``fcos-d2 benchmark --backbones`` (this form goes in the next release)."""
    warnings.warn(
        "python -m fcos_d2.benchmark.backbones is deprecated: use fcos-d2 benchmark --backbones",
        DeprecationWarning,
    )
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1216], metavar=("H", "W"))
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    return run_backbones(parser.parse_args(argv))


def run_backbones(args) -> List[Dict]:
    """Measure ``args.configs`` at ``args.size`` on ``args.device`` and print the table (and
    write ``args.json`` when given)."""
    machine = describe_cpu() if args.device == "cpu" else torch.cuda.get_device_name()
    print(f"machine: {machine}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = bench_backbones(args.configs, args.size, args.device, args.iters)
    h, w = args.size
    print(f"| config | backbone | params (M) | GMACs at {h}x{w} | latency min / median (s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| `{r['config']}` | {r['backbone']} | {r['params_M']:.1f} | {r['gmacs']:.0f} | "
            f"{r['min_s']:.2f} / {r['median_s']:.2f} |"
        )
    if args.json:
        write_json(args.json, {"machine": machine, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
