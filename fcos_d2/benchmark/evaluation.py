"""
COCO evaluation time at COCO val's scale (5,000 images x 100 detections): pycocotools' COCOeval
(what detectron2's COCOEvaluator runs without its compiled ops) against faster-coco-eval's
COCOeval_faster (what fcos_d2's FCOSCOCOEvaluator runs where it is installed), same AP.
"""

import contextlib
import io
import time
from typing import Dict, List

import numpy as np

from ..data.coco_like import coco_like_annotations
from ..evaluation import faster_cocoeval

__all__ = ["bench_coco_eval", "synthetic_results"]


def synthetic_results(gt: Dict, per_image: int, seed: int = 0) -> List[Dict]:
    """``per_image`` detections per image: each box jittered by 5 % of its size (a tenth with
    another class), the rest random boxes, scores uniform."""
    rng = np.random.default_rng(seed)
    by_image: Dict[int, List[Dict]] = {}
    for a in gt["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    classes = [c["id"] for c in gt["categories"]]
    results = []
    for im in gt["images"]:
        anns = by_image.get(im["id"], [])[:per_image]
        for a in anns:
            x, y, w, h = np.asarray(a["bbox"], dtype=np.float64)
            dx, dy, sw, sh = rng.normal(0, 0.05, 4)
            x, y, w, h = x + dx * w, y + dy * h, w * (1 + sw), h * (1 + sh)
            cat = a["category_id"] if rng.uniform() > 0.1 else int(rng.choice(classes))
            results.append(
                {
                    "image_id": im["id"],
                    "category_id": cat,
                    "bbox": [float(x), float(y), float(abs(w)), float(abs(h))],
                    "score": float(rng.uniform(0.3, 1)),
                }
            )
        for _ in range(per_image - len(anns)):
            w, h = rng.uniform(4, im["width"] / 2), rng.uniform(4, im["height"] / 2)
            results.append(
                {
                    "image_id": im["id"],
                    "category_id": int(rng.choice(classes)),
                    "bbox": [
                        float(rng.uniform(0, im["width"] - w)),
                        float(rng.uniform(0, im["height"] - h)),
                        float(w),
                        float(h),
                    ],
                    "score": float(rng.uniform(0.05, 0.5)),
                }
            )
    return results


def bench_coco_eval(images: int = 5000, per_image: int = 100) -> List[Dict]:
    """Rows "COCO evaluation": seconds (loadRes + evaluate + accumulate + summarize) and AP of
    pycocotools and, where installed, faster-coco-eval, on COCO-like ground truth."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_dict = coco_like_annotations(images, seed=1)
    results = synthetic_results(gt_dict, per_image)
    what = f"COCO evaluation ({images} images x {per_image} detections)"
    backends = {"pycocotools": COCOeval}
    faster = faster_cocoeval()
    if faster is not None:
        backends["faster-coco-eval"] = faster
    rows = []
    for name, cocoeval in backends.items():
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = gt_dict
            gt.createIndex()
            start = time.perf_counter()
            evaluator = cocoeval(gt, gt.loadRes(results), "bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            seconds = time.perf_counter() - start
        rows.append(
            {
                "what": what,
                "mode": name,
                "min_s": seconds,
                "median_s": seconds,
                "AP": float(100 * evaluator.stats[0]),
                "AP50": float(100 * evaluator.stats[1]),
            }
        )
    return rows
