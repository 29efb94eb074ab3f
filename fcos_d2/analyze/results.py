"""
``python -m fcos_d2.analyze results``: COCO AP as ``COCOEvaluator`` computes it (pycocotools'
``COCOeval``), per-class AP, each class's best-F1 score threshold at IoU 0.5, precision-recall
curves and a breakdown of errors, from a results file, a model or an exported graph.

Error breakdown (fcos_d2's own; tidecv needs segmentation in the ground truth, opencv-python and
pandas): every detection that is not a true positive of COCO's matching at IoU 0.5 is, in this
order, a *duplicate* (IoU >= 0.5 with a box of its class that a better detection took),
a *classification* error (IoU >= 0.5 with a box of another class), a *localisation* error
(best IoU with a box of its class in [0.1, 0.5)), *both* (best IoU with a box of another class
in [0.1, 0.5)) or *background*; *missed* counts the boxes no true positive took. Detections
COCO ignores (on crowd regions) are not counted.
"""

import contextlib
import io
import json
import math
import os
from collections import defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tqdm import tqdm

from ..data import coco_json_file, register_dataset_specs
from ..utils.jsonio import write_json
from .thresholds import best_f1_threshold, write_class_thresholds

__all__ = [
    "ERROR_TYPES",
    "coco_ground_truth",
    "ResultsAnalysis",
    "analyse_results",
    "detection_outcomes",
    "error_breakdown",
    "format_results_report",
    "plot_results",
    "run_results",
]

ERROR_TYPES = ("duplicate", "classification", "localisation", "both", "background", "missed")
RECALL_POINTS = np.linspace(0, 1, 101)  # COCOeval's recall thresholds (the precision array's R)
_FG_IOU, _BG_IOU = 0.5, 0.1


def coco_ground_truth(dataset: str, cache_dir: str) -> Tuple[COCO, List[str], List[int]]:
    """The dataset's ground truth as pycocotools sees it in ``COCOEvaluator`` (its COCO file, or
    one converted into ``cache_dir``), its ``thing_classes`` and their dataset ids, in the
    model's class order."""
    DatasetCatalog.get(dataset)  # loading a COCO file fills the metadata
    meta = MetadataCatalog.get(dataset)
    json_file = coco_json_file(dataset, cache_dir)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(json_file)
    names = list(meta.thing_classes)
    id_map = meta.get("thing_dataset_id_to_contiguous_id", None)
    if id_map:
        ids = [k for k, _ in sorted(id_map.items(), key=lambda kv: kv[1])]
    else:
        ids = list(range(len(names)))
    return coco, names, ids


class ResultsAnalysis:
    """What :func:`analyse_results` found: ``summary`` (AP ... APl, in %), per class
    ``per_class`` (AP, AP50, detections, ground truth) and ``thresholds`` (:class:`F1Point`),
    ``errors`` at all detections and at the thresholds, and the COCOeval precision array."""

    def __init__(self, summary, per_class, thresholds, errors, precision):
        self.summary = summary
        self.per_class = per_class
        self.thresholds = thresholds
        self.errors = errors
        self.precision = precision  # (T, R, K) at area "all", 100 detections

    def to_json(self) -> Dict[str, Any]:
        return {
            "bbox": self.summary,
            "per_class": {
                name: {**stats, "f1_threshold": vars(self.thresholds[name])}
                for name, stats in self.per_class.items()
            },
            "errors": self.errors,
            "error_types": list(ERROR_TYPES),
        }


def _evaluate(coco_gt: COCO, results: List[Dict[str, Any]]) -> Optional[COCOeval]:
    if not results:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def _matches_at_iou50(evaluator: COCOeval) -> Tuple[Dict[int, int], List[int]]:
    """COCO's matching at IoU 0.5 (area "all", 100 detections): per detection id the id of the
    ground-truth box it took (0: none, a false positive; -1: ignored, on a crowd region), and
    the ids of the boxes that count (not crowd)."""
    all_area = evaluator.params.areaRng[0]
    det_match: Dict[int, int] = {}
    gt_ids: List[int] = []
    for e in evaluator.evalImgs:
        if e is None or e["aRng"] != all_area:
            continue
        for d, m, ign in zip(e["dtIds"], e["dtMatches"][0], e["dtIgnore"][0]):
            det_match[d] = -1 if ign else int(m)
        gt_ids.extend(g for g, ign in zip(e["gtIds"], e["gtIgnore"]) if not ign)
    return det_match, gt_ids


def detection_outcomes(
    coco_gt: COCO,
    results: Sequence[Dict[str, Any]],
    det_match: Dict[int, int],
    progress: bool = False,
) -> List[Optional[str]]:
    """
    Per detection of ``results`` (COCO results; detection i has id i + 1, as ``COCO.loadRes``
    numbers them): "true_positive", one of the error types (module docstring) or None (not
    counted: ignored by COCO, or beyond its 100 per image and class), with ``det_match`` from
    COCO's matching of all of ``results``.
    """
    outcomes: List[Optional[str]] = [None] * len(results)
    by_image: Dict[Any, List[int]] = defaultdict(list)
    for i, r in enumerate(results):
        by_image[r["image_id"]].append(i)
    for image_id, indices in tqdm(
        by_image.items(), desc="errors", disable=not progress, mininterval=2.0
    ):
        gts = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[image_id]))
        dts = [results[i] for i in indices]
        iou = _ious(dts, gts)  # (D, G)
        gt_cls = np.array([g["category_id"] for g in gts])
        crowd = np.array([bool(g.get("iscrowd", 0)) for g in gts], dtype=bool)
        for row, (i, d) in enumerate(zip(indices, dts)):
            match = det_match.get(i + 1, -1)
            if match > 0:
                outcomes[i] = "true_positive"
            elif match == 0:
                outcomes[i] = _error_type(iou[row], gt_cls == d["category_id"], crowd)
    return outcomes


def error_breakdown(
    outcomes: Sequence[Optional[str]],
    det_match: Dict[int, int],
    gt_ids: Sequence[int],
    keep: Optional[Sequence[bool]] = None,
) -> Dict[str, int]:
    """
    Counts of the ``outcomes`` (:func:`detection_outcomes`) of the detections ``keep`` selects
    (all by default), and ``missed``: the boxes of ``gt_ids`` no kept true positive took. COCO
    matches greedily by score, so the matches of the kept detections are the same with or
    without the others.
    """
    counts = {"detections": 0, "true_positives": 0, **{t: 0 for t in ERROR_TYPES}}
    taken = set()
    for i, outcome in enumerate(outcomes):
        if outcome is None or (keep is not None and not keep[i]):
            continue
        counts["detections"] += 1
        if outcome == "true_positive":
            counts["true_positives"] += 1
            taken.add(det_match[i + 1])
        else:
            counts[outcome] += 1
    counts["missed"] = sum(1 for g in gt_ids if g not in taken)
    counts["ground_truth"] = len(gt_ids)
    return counts


def _ious(dts, gts) -> np.ndarray:
    if not dts or not gts:
        return np.zeros((len(dts), len(gts)))
    d = [r["bbox"] for r in dts]
    g = [a["bbox"] for a in gts]
    crowd = [int(a.get("iscrowd", 0)) for a in gts]
    return np.asarray(mask_utils.iou(d, g, crowd)).reshape(len(dts), len(gts))


def _error_type(iou_row: np.ndarray, same_class: np.ndarray, crowd: np.ndarray) -> str:
    real = ~crowd
    best_same = iou_row[same_class & real].max(initial=0.0)
    best_other = iou_row[~same_class & real].max(initial=0.0)
    if best_same >= _FG_IOU:
        return "duplicate"
    if best_other >= _FG_IOU:
        return "classification"
    if best_same >= _BG_IOU:
        return "localisation"
    if best_other >= _BG_IOU:
        return "both"
    return "background"


def analyse_results(
    coco_gt: COCO,
    results: List[Dict[str, Any]],
    class_names: Sequence[str],
    class_ids: Sequence[int],
    progress: bool = False,
) -> ResultsAnalysis:
    """The analysis of COCO-format ``results`` against ``coco_gt`` for the classes of the model
    (``class_names``, with their dataset ids ``class_ids``)."""
    evaluator = _evaluate(coco_gt, results)
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl")
    if evaluator is None:
        summary = {k: 0.0 for k in keys}
        precision = np.full((10, 101, len(class_names)), -1.0)
        det_match = {}
        gt_ids = [  # the boxes that count (COCO ignores crowd boxes)
            a["id"]
            for a in coco_gt.dataset["annotations"]
            if not a.get("iscrowd", 0) and not a.get("ignore", 0)
        ]
    else:
        # COCOeval's -1 (no box of that size) is NaN, as COCOEvaluator reports it
        summary = {k: float(100 * v) if v >= 0 else math.nan for k, v in zip(keys, evaluator.stats)}
        order = [evaluator.params.catIds.index(c) for c in class_ids]
        precision = evaluator.eval["precision"][:, :, order, 0, -1]  # (T, R, K)
        det_match, gt_ids = _matches_at_iou50(evaluator)
    scores, tps = defaultdict(list), defaultdict(list)
    for i, r in enumerate(results):
        match = det_match.get(i + 1, -1)  # absent: beyond COCO's 100 per image and class
        if match >= 0:
            scores[r["category_id"]].append(r["score"])
            tps[r["category_id"]].append(match > 0)
    gt_count: Dict[int, int] = defaultdict(int)
    counted = set(gt_ids)
    for ann in coco_gt.dataset["annotations"]:
        if ann["id"] in counted:
            gt_count[ann["category_id"]] += 1
    per_class, points = {}, {}
    for k, (name, cid) in enumerate(zip(class_names, class_ids)):
        p = precision[:, :, k]
        per_class[name] = {
            "AP": float(100 * p[p > -1].mean()) if (p > -1).any() else math.nan,
            "AP50": float(100 * p[0][p[0] > -1].mean()) if (p[0] > -1).any() else math.nan,
            "detections": len(scores[cid]),
            "ground_truth": gt_count[cid],
        }
        points[name] = best_f1_threshold(
            np.array(scores[cid]), np.array(tps[cid], bool), gt_count[cid]
        )
    thresholds = {cid: points[n].threshold for n, cid in zip(class_names, class_ids)}
    keep = [r["score"] >= thresholds.get(r["category_id"], 0.0) for r in results]
    outcomes = detection_outcomes(coco_gt, results, det_match, progress)  # IoUs computed once
    errors = {
        "all_detections": error_breakdown(outcomes, det_match, gt_ids),
        "at_class_thresholds": error_breakdown(outcomes, det_match, gt_ids, keep),
    }
    for e in errors.values():
        e["precision"] = e["true_positives"] / e["detections"] if e["detections"] else math.nan
        found = e["ground_truth"] - e["missed"]
        e["recall"] = found / e["ground_truth"] if e["ground_truth"] else math.nan
    return ResultsAnalysis(summary, per_class, points, errors, precision)


def format_results_report(analysis: ResultsAnalysis) -> str:
    """AP, the per-class table and the error breakdown as text."""
    from tabulate import tabulate

    s = analysis.summary
    lines = ["bbox: " + "  ".join(f"{k} {v:.2f}" for k, v in s.items()), ""]
    rows = [
        [
            name,
            f"{st['AP']:.2f}",
            f"{st['AP50']:.2f}",
            st["ground_truth"],
            st["detections"],
            f"{analysis.thresholds[name].threshold:.3f}",
            f"{analysis.thresholds[name].precision:.3f}",
            f"{analysis.thresholds[name].recall:.3f}",
            f"{analysis.thresholds[name].f1:.3f}",
        ]
        for name, st in analysis.per_class.items()
    ]
    headers = ["class", "AP", "AP50", "boxes", "detections", "F1 thr.", "P", "R", "F1"]
    lines.append(tabulate(rows, headers=headers, tablefmt="github"))
    lines += ["", "errors (IoU 0.5):"]
    keys = ["detections", "true_positives", *ERROR_TYPES, "precision", "recall"]
    rows = [
        [where] + [f"{e[k]:.3f}" if isinstance(e[k], float) else e[k] for k in keys]
        for where, e in analysis.errors.items()
    ]
    lines.append(tabulate(rows, headers=["detections kept"] + keys, tablefmt="github"))
    return "\n".join(lines)


def plot_results(analysis: ResultsAnalysis, output_dir: str) -> List[str]:
    """pr_curves.png (per class, IoU 0.5 and 0.75), class_ap.png, errors.png; their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(analysis.per_class)
    paths = []
    cols = min(4, len(names))
    rows = int(math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for ax, (k, name) in zip(axes.flat, enumerate(names)):
        for t, label in ((0, "IoU 0.5"), (5, "IoU 0.75")):
            p = analysis.precision[t, :, k]
            ax.plot(RECALL_POINTS[p > -1], p[p > -1], label=label)
        point = analysis.thresholds[name]
        if point.reason is None:
            ax.plot([point.recall], [point.precision], "ko", label=f"F1 thr. {point.threshold:.2f}")
        ax.set_title(f"{name} (AP {analysis.per_class[name]['AP']:.1f})", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.legend(fontsize=7, loc="lower left")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    paths.append(os.path.join(output_dir, "pr_curves.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(names) + 2), 3))
    ax.bar(range(len(names)), [analysis.per_class[n]["AP"] for n in names])
    ax.set_xticks(range(len(names)), names, rotation=90 if len(names) > 8 else 0, fontsize=8)
    ax.set_ylabel("AP")
    fig.tight_layout()
    paths.append(os.path.join(output_dir, "class_ap.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3))
    width = 0.4
    for j, (where, e) in enumerate(analysis.errors.items()):
        xs = np.arange(len(ERROR_TYPES)) + (j - 0.5) * width
        ax.bar(xs, [e[t] for t in ERROR_TYPES], width, label=where.replace("_", " "))
    ax.set_xticks(range(len(ERROR_TYPES)), ERROR_TYPES, fontsize=8)
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(os.path.join(output_dir, "errors.png"))
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def _predict(args, cfg, dataset: str, inference_dir: str, error) -> str:
    """A results file of the model of ``cfg`` (or ``--exported``) on ``dataset``."""
    from detectron2.evaluation import inference_on_dataset

    from ..evaluation import FCOSCOCOEvaluator

    os.makedirs(inference_dir, exist_ok=True)
    if args.exported:
        from ..export.evaluate import evaluate_exported

        evaluate_exported(args.exported, dataset, inference_dir)
    else:
        if not cfg.MODEL.WEIGHTS:
            raise error("give MODEL.WEIGHTS, --predictions or --exported")
        from ..engine.trainer import FCOSTrainer
        from ..predictor import Predictor

        model = Predictor(cfg).model
        loader = FCOSTrainer.build_test_loader(cfg, dataset)
        evaluator = FCOSCOCOEvaluator(dataset, tasks=("bbox",), output_dir=inference_dir)
        inference_on_dataset(model, loader, evaluator)
    return os.path.join(inference_dir, "coco_instances_results.json")


def run_results(args, cfg, json_names: Sequence[str], error) -> None:
    """The ``results`` command (see ``python -m fcos_d2.analyze --help``)."""
    dataset = args.dataset or (json_names[0] if json_names else None)
    dataset = dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None)
    if dataset:
        train = cfg.DATASETS.TRAIN
        register_dataset_specs([dataset], classes_from=train[0] if train else None)
    if not dataset or dataset not in DatasetCatalog.list():
        raise error(f"--dataset {dataset!r} is not a registered dataset")
    os.makedirs(args.output, exist_ok=True)
    if args.predictions:
        if not os.path.isfile(args.predictions):
            raise error(f"--predictions {args.predictions!r}: no such file")
        path = args.predictions
    else:
        path = _predict(args, cfg, dataset, os.path.join(args.output, "inference"), error)
    with open(path) as f:
        results = json.load(f)
    coco_gt, names, ids = coco_ground_truth(dataset, args.output)
    unknown = sorted({r["category_id"] for r in results} - set(ids))
    if unknown:
        raise error(f"{path}: category ids {unknown} are not classes of {dataset!r}")
    analysis = analyse_results(coco_gt, results, names, ids, progress=True)
    thresholds_file = os.path.join(args.output, "class_thresholds.json")
    write_class_thresholds(
        thresholds_file,
        names,
        [analysis.thresholds[n] for n in names],
        {"dataset": dataset, "predictions": path},
    )
    write_json(
        os.path.join(args.output, "results_analysis.json"),
        {"dataset": dataset, "predictions": path, **analysis.to_json()},
    )
    pictures = plot_results(analysis, args.output)
    print(format_results_report(analysis))
    written = ", ".join(os.path.basename(p) for p in pictures)
    print(f"\nwrote {thresholds_file}, results_analysis.json, {written}")
