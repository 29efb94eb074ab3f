"""
``python -m fcos_d2.analyze data``: best possible recall, ambiguous samples and level usage of a
config's matching on its training datasets, at each training scale, for the config's
``SIZES_OF_INTEREST`` and alternatives side by side. Sizes come from the annotations: no image
is read.
"""

import math
import os
from dataclasses import dataclass, replace
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog, get_detection_dataset_dicts
from detectron2.data.transforms import ResizeShortestEdge
from detectron2.structures import BoxMode
from tqdm import tqdm

from ..config import check_fcos_config
from ..data.mapper import annotation_ids, drop_invalid_annotations
from ..modeling.core import FCOSMatcher, build_fcos_core
from ..modeling.targets import level_size_ranges
from .matching import REASONS, analyse_matching, centre_sizes, level_sizes

__all__ = [
    "ImageBoxes",
    "training_scales",
    "load_image_boxes",
    "resize_boxes",
    "analyse_data",
    "DataSetup",
    "data_setup",
    "format_data_report",
    "plot_data_report",
]

_FIRST_NOT_RECALLED = 20  # listed one by one in the report; the rest are counted by reason


@dataclass(frozen=True)
class ImageBoxes:
    """One image's boxes as matching sees them before resizing: (H, W), XYXY (M, 4) float32,
    contiguous classes (M,), and (record, annotation) of each box to name it in reports."""

    file_name: str
    image_size: Tuple[int, int]
    boxes: np.ndarray
    classes: np.ndarray
    sources: Tuple[Tuple[Dict[str, Any], Dict[str, Any]], ...]


@dataclass(frozen=True)
class DataSetup:
    """What the analysis needs of a config: its matcher, the levels' names and strides, the
    backbone's size divisibility, the training scales and the maximum size."""

    matcher: FCOSMatcher
    level_names: Tuple[str, ...]
    size_divisibility: int
    scales: Tuple[int, ...]
    max_size: int


def training_scales(cfg: CfgNode) -> Tuple[int, ...]:
    """The short-side sizes training resizes to: each of ``INPUT.MIN_SIZE_TRAIN`` in "choice"
    mode, the two ends of the range in "range" mode."""
    sizes = [int(s) for s in cfg.INPUT.MIN_SIZE_TRAIN]
    mode = cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
    if mode == "range":
        if len(sizes) != 2:
            raise ValueError(
                f"INPUT.MIN_SIZE_TRAIN={sizes} with MIN_SIZE_TRAIN_SAMPLING='range' needs 2 values"
            )
        return tuple(sorted(set(sizes)))
    if mode != "choice":
        raise ValueError(f"INPUT.MIN_SIZE_TRAIN_SAMPLING={mode!r} is not 'choice' or 'range'")
    return tuple(dict.fromkeys(sizes))


def data_setup(cfg: CfgNode) -> DataSetup:
    """The matcher training builds from ``cfg`` (the strides of the backbone it builds, with
    random weights), the backbone's size divisibility and the training scales."""
    from detectron2.modeling import build_backbone

    backbone = build_backbone(cfg)
    shapes = backbone.output_shape()
    check_fcos_config(cfg, list(shapes))  # the model build's own check (IN_FEATURES, levels)
    names = tuple(cfg.MODEL.FCOS.IN_FEATURES)
    strides = [shapes[n].stride for n in names]
    core = build_fcos_core(cfg, strides, cfg.MODEL.FCOS.NUM_CLASSES, with_postprocess=False)
    return DataSetup(
        matcher=core.matcher,
        level_names=names,
        size_divisibility=int(backbone.size_divisibility),
        scales=training_scales(cfg),
        max_size=int(cfg.INPUT.MAX_SIZE_TRAIN),
    )


def load_image_boxes(dataset_names: Sequence[str]) -> Tuple[List[ImageBoxes], List[str]]:
    """
    The non-crowd boxes of the datasets' records, after fcos_d2's bad-data policy (invalid
    boxes dropped, as training drops them; images without boxes kept), with the COCO files
    they came from (to name annotations).
    """
    records = get_detection_dataset_dicts(list(dataset_names), filter_empty=False)
    json_files = [MetadataCatalog.get(n).get("json_file", None) for n in dataset_names]
    json_files = [f for f in json_files if f and os.path.isfile(f)]
    records = drop_invalid_annotations(records, filter_empty=False, json_files=json_files)
    images = []
    for record in records:
        anns = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
        boxes = [
            BoxMode.convert(list(a["bbox"]), a.get("bbox_mode", BoxMode.XYXY_ABS), BoxMode.XYXY_ABS)
            for a in anns
        ]
        images.append(
            ImageBoxes(
                file_name=str(record.get("file_name", "")),
                image_size=(int(record["height"]), int(record["width"])),
                boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                classes=np.asarray([a["category_id"] for a in anns], dtype=np.int64),
                sources=tuple((record, a) for a in anns),
            )
        )
    return images, json_files


def resize_boxes(
    boxes: np.ndarray, image_size: Tuple[int, int], short: int, max_size: int
) -> Tuple[Tuple[int, int], np.ndarray, np.ndarray]:
    """
    The training mapper's resize of an (H, W) image's (M, 4) XYXY boxes to short side ``short``
    (detectron2's ``ResizeShortestEdge`` rule with ``max_size``), clipped to the resized image:
    the new (h, w), the boxes, and (M,) bool of those left non-empty (the mapper drops the
    others).
    """
    h, w = image_size
    new_h, new_w = ResizeShortestEdge.get_output_shape(h, w, short, max_size)
    scale = np.array([new_w / w, new_h / h, new_w / w, new_h / h], dtype=np.float32)
    out = boxes * scale
    out = np.minimum(np.maximum(out, 0), np.array([new_w, new_h, new_w, new_h], np.float32))
    keep = (out[:, 2] - out[:, 0] > 1e-5) & (out[:, 3] - out[:, 1] > 1e-5)
    return (new_h, new_w), out, keep


class _Tally:
    """Sums of one (sizes of interest, scale) run over the images."""

    def __init__(self, num_levels: int):
        self.boxes = self.recalled = self.ambiguous = self.different = 0
        self.level_positives = np.zeros(num_levels, np.int64)
        self.level_boxes = np.zeros(num_levels, np.int64)
        self.by_reason = {r: 0 for r in REASONS[1:]}
        self.first: List[Tuple[ImageBoxes, int, str, Tuple[float, float]]] = []

    def add(self, image: ImageBoxes, kept_index: np.ndarray, boxes: np.ndarray, match) -> None:
        reasons = match.reasons.numpy()
        self.boxes += len(reasons)
        self.recalled += int((reasons == 0).sum())
        self.ambiguous += match.ambiguous
        self.different += match.ambiguous_different_class
        self.level_positives += match.level_positives.numpy()
        self.level_boxes += match.level_boxes.numpy()
        for j in np.nonzero(reasons)[0]:
            reason = REASONS[reasons[j]]
            self.by_reason[reason] += 1
            if len(self.first) < _FIRST_NOT_RECALLED:
                b = boxes[j]
                size = (float(b[2] - b[0]), float(b[3] - b[1]))
                self.first.append((image, int(kept_index[j]), reason, size))

    def sources(self) -> List[Tuple[Dict[str, Any], Dict[str, Any]]]:
        """(record, annotation) of each box listed in ``first``."""
        return [im.sources[j] for im, j, _, _ in self.first]

    def report(self, setup: DataSetup, ids: Sequence[Any]) -> Dict[str, Any]:
        """The counts and fractions, with ``ids``: the annotation ids of ``first``."""
        positives = int(self.level_positives.sum())
        return {
            "boxes": self.boxes,
            "recalled": self.recalled,
            "bpr": self.recalled / self.boxes if self.boxes else math.nan,
            "positives": positives,
            "ambiguous": self.ambiguous,
            "ambiguous_fraction": self.ambiguous / positives if positives else math.nan,
            "ambiguous_fraction_different_class": (
                self.different / positives if positives else math.nan
            ),
            "levels": [
                {
                    "level": name,
                    "stride": stride,
                    "size_range": list(size_range),
                    "positives": int(p),
                    "boxes": int(b),
                }
                for name, stride, size_range, p, b in zip(
                    setup.level_names,
                    setup.matcher.strides,
                    setup.matcher.size_ranges,
                    self.level_positives,
                    self.level_boxes,
                )
            ],
            "not_recalled": {
                "count": self.boxes - self.recalled,
                "by_reason": dict(self.by_reason),
                "first": [
                    {
                        "annotation_id": ann_id,
                        "image": image.file_name,
                        "size": [round(size[0], 2), round(size[1], 2)],
                        "reason": reason,
                    }
                    for (image, _, reason, size), ann_id in zip(self.first, ids)
                ],
            },
        }


def _with_sizes(setup: DataSetup, sizes_of_interest: Sequence[float]) -> DataSetup:
    ranges = level_size_ranges(list(sizes_of_interest), len(setup.level_names))
    matcher = replace(setup.matcher, size_ranges=tuple((float(a), float(b)) for a, b in ranges))
    return replace(setup, matcher=matcher)


def analyse_data(
    images: Sequence[ImageBoxes],
    setup: DataSetup,
    alternatives: Sequence[Sequence[float]] = (),
    json_files: Sequence[str] = (),
    progress: bool = False,
) -> Tuple[Dict[str, Any], Dict[int, np.ndarray]]:
    """
    The report of ``python -m fcos_d2.analyze data``: for the setup's size ranges and each
    alternative list of ``SIZES_OF_INTEREST``, per training scale, the counts and fractions of
    :class:`_Tally` (``boxes``, ``recalled``, ``bpr``, ``positives``, ``ambiguous``,
    ``ambiguous_fraction``, ``ambiguous_fraction_different_class``, ``levels``,
    ``not_recalled``); and per scale the boxes' centre sizes (for :func:`plot_data_report`).
    """
    num_levels = len(setup.level_names)
    setups = [setup] + [_with_sizes(setup, soi) for soi in alternatives]
    tallies = [[_Tally(num_levels) for _ in setup.scales] for _ in setups]
    sizes: List[List[np.ndarray]] = [[] for _ in setup.scales]
    grids: Dict[Tuple[int, Tuple[int, int]], Any] = {}
    device = torch.device("cpu")
    for image in tqdm(
        images, desc="analyse data", unit="image", disable=not progress, mininterval=2.0
    ):
        for s, short in enumerate(setup.scales):
            size, boxes, keep = resize_boxes(image.boxes, image.image_size, short, setup.max_size)
            kept_index = np.nonzero(keep)[0]
            boxes_t = torch.from_numpy(boxes[keep])
            classes_t = torch.from_numpy(image.classes[keep])
            sizes[s].append(centre_sizes(boxes_t).numpy())
            shape = tuple(level_sizes(size, setup.matcher.strides, setup.size_divisibility))
            for k, one in enumerate(setups):
                key = (k, shape)
                if key not in grids:
                    grids[key] = one.matcher.grid(shape, device)
                match = analyse_matching(one.matcher, grids[key], boxes_t, classes_t)
                tallies[k][s].add(image, kept_index, boxes[keep], match)
    # one look-up (one read of the COCO files) for the listed boxes of every run and scale
    listed = [[t.sources() for t in per_scale] for per_scale in tallies]
    flat = [pair for row in listed for pairs in row for pair in pairs]
    found = iter(annotation_ids(flat, json_files))
    ids = [[[next(found) for _ in pairs] for pairs in row] for row in listed]
    runs = []
    for k, (one, per_scale) in enumerate(zip(setups, tallies)):
        soi = [lo for lo, _ in one.matcher.size_ranges[1:]]
        runs.append(
            {
                "sizes_of_interest": soi,
                "scales": [
                    {"scale": short, **tally.report(one, ids[k][s])}
                    for s, (short, tally) in enumerate(zip(setup.scales, per_scale))
                ],
            }
        )
    report = {
        "images": len(images),
        "levels": list(setup.level_names),
        "strides": list(setup.matcher.strides),
        "center_sampling_radius": setup.matcher.center_sampling_radius,
        "max_size": setup.max_size,
        "runs": runs,
    }
    return report, {short: np.concatenate(s) for short, s in zip(setup.scales, sizes)}


def _percent(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.2f}"


def format_data_report(report: Dict[str, Any]) -> str:
    """The report as readable tables: one row per (sizes of interest, scale), then the levels
    and the boxes that are not recalled."""
    from tabulate import tabulate

    rows, levels, missed = [], [], []
    for run in report["runs"]:
        soi = str([int(v) if float(v).is_integer() else v for v in run["sizes_of_interest"]])
        for sc in run["scales"]:
            rows.append(
                [
                    soi,
                    sc["scale"],
                    sc["boxes"],
                    sc["recalled"],
                    _percent(sc["bpr"]),
                    sc["positives"],
                    _percent(sc["ambiguous_fraction"]),
                    _percent(sc["ambiguous_fraction_different_class"]),
                    " ".join(f"{r}={n}" for r, n in sc["not_recalled"]["by_reason"].items() if n),
                ]
            )
            levels.append(
                [soi, sc["scale"]] + [f"{lv['positives']} / {lv['boxes']}" for lv in sc["levels"]]
            )
            missed.extend(
                [soi, sc["scale"], m["annotation_id"], m["image"], m["size"], m["reason"]]
                for m in sc["not_recalled"]["first"]
            )
    out = [
        f"{report['images']} images, levels {report['levels']} (strides {report['strides']}), "
        f"centre sampling radius {report['center_sampling_radius']}",
        tabulate(
            rows,
            headers=[
                "sizes of interest",
                "scale",
                "boxes",
                "recalled",
                "BPR %",
                "positives",
                "ambiguous %",
                "amb. diff. class %",
                "not recalled",
            ],
            tablefmt="github",
        ),
        "",
        "positives / boxes assigned, per level:",
        tabulate(
            levels, headers=["sizes of interest", "scale"] + report["levels"], tablefmt="github"
        ),
    ]
    if missed:
        out += [
            "",
            f"not recalled (the first {_FIRST_NOT_RECALLED} of each row):",
            tabulate(
                missed,
                headers=["sizes of interest", "scale", "annotation", "image", "w, h", "reason"],
                tablefmt="github",
            ),
        ]
    return "\n".join(out)


def plot_data_report(
    report: Dict[str, Any], centre_sizes: Dict[int, np.ndarray], path: str
) -> None:
    """Histogram of the boxes' centre sizes (max of l, t, r, b at the centre, in pixels of the
    resized image, one curve per scale) with the level boundaries, one panel per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = report["runs"]
    fig, axes = plt.subplots(len(runs), 1, figsize=(8, 2.8 * len(runs)), squeeze=False)
    all_sizes = [v for v in centre_sizes.values() if len(v)]
    top = max((float(v.max()) for v in all_sizes), default=1.0)
    bins = np.logspace(0, math.log10(max(top, 2.0)) + 0.05, 60)
    for ax, run in zip(axes[:, 0], runs):
        for short, values in centre_sizes.items():
            if len(values):
                ax.hist(values, bins=bins, histtype="step", label=f"scale {short}")
        for bound in run["sizes_of_interest"]:
            ax.axvline(bound, color="k", linestyle="--", linewidth=1)
        bpr = ", ".join(f"{sc['scale']}: {_percent(sc['bpr'])}" for sc in run["scales"])
        ax.set_title(f"SIZES_OF_INTEREST {run['sizes_of_interest']}  (BPR % {bpr})", fontsize=9)
        ax.set_xscale("log")
        ax.set_ylabel("boxes")
        ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel("max(l, t, r, b) at the box centre (pixels)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
