"""
Plain-Python re-derivations of the FCOS rules of AdelaiDet and of the original FCOS
(maskrcnn-benchmark), written from their descriptions, for tests to compare fcos_d2 against.
"""

import math

import torch
import torch.nn.functional as F
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage
from torchvision.ops import sigmoid_focal_loss

RANGES = [(-1, 64), (64, 128), (128, math.inf)]


def reference_targets(
    h, w, strides, boxes, classes, num_classes, radius=1.5, area_plus_one=False, ranges=RANGES
):
    """
    Location-by-location targets written from the AdelaiDet rules, in plain Python: (label,
    stride-normalised (l, t, r, b)) per location, levels in turn, rows in (y, x) order.
    ``ranges``: inclusive (lo, hi) of the largest side distance per level.
    ``area_plus_one``: the original FCOS's min-area rule, maskrcnn-benchmark's box area
    (x1 - x0 + 1) * (y1 - y0 + 1).
    """
    labels, regs = [], []
    for level, s in enumerate(strides):
        for yi in range((h + s - 1) // s):
            for xi in range((w + s - 1) // s):
                x, y = xi * s + s // 2, yi * s + s // 2
                best, best_area = None, math.inf
                for m, (x0, y0, x1, y1) in enumerate(boxes):
                    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                    rx0, ry0 = max(cx - s * radius, x0), max(cy - s * radius, y0)
                    rx1, ry1 = min(cx + s * radius, x1), min(cy + s * radius, y1)
                    inside = min(x - rx0, y - ry0, rx1 - x, ry1 - y) > 0
                    dmax = max(x - x0, y - y0, x1 - x, y1 - y)
                    lo, hi = ranges[level]
                    area = (x1 - x0 + area_plus_one) * (y1 - y0 + area_plus_one)
                    if inside and lo <= dmax <= hi and area < best_area:
                        best, best_area = m, area
                if best is None:
                    labels.append(num_classes)
                    regs.append([0.0] * 4)
                else:
                    x0, y0, x1, y1 = boxes[best]
                    labels.append(classes[best])
                    regs.append([(x - x0) / s, (y - y0) / s, (x1 - x) / s, (y1 - y) / s])
    return labels, regs


def reference_losses(logits, reg, ctr, labels, regs):
    """AdelaiDet's loss formulas; logits (R, K), reg (R, 4), ctr (R,) over the whole batch."""
    labels, regs = torch.tensor(labels), torch.tensor(regs)
    k = logits.shape[1]
    pos = labels != k
    num_pos = max(float(pos.sum()), 1.0)
    target = torch.zeros_like(logits)
    target[pos, labels[pos]] = 1
    cls = sigmoid_focal_loss(logits, target, alpha=0.25, gamma=2.0, reduction="sum") / num_pos
    p, t = reg[pos], regs[pos]
    lr, tb = t[:, [0, 2]], t[:, [1, 3]]
    ctr_t = torch.sqrt((lr.min(1)[0] / lr.max(1)[0]) * (tb.min(1)[0] / tb.max(1)[0]))
    t_area, p_area = (t[:, 0] + t[:, 2]) * (t[:, 1] + t[:, 3]), (p[:, 0] + p[:, 2]) * (
        p[:, 1] + p[:, 3]
    )
    w_i = torch.min(p[:, 0], t[:, 0]) + torch.min(p[:, 2], t[:, 2])
    h_i = torch.min(p[:, 1], t[:, 1]) + torch.min(p[:, 3], t[:, 3])
    g_w = torch.max(p[:, 0], t[:, 0]) + torch.max(p[:, 2], t[:, 2])
    g_h = torch.max(p[:, 1], t[:, 1]) + torch.max(p[:, 3], t[:, 3])
    union = t_area + p_area - w_i * h_i
    ious = (w_i * h_i + 1) / (union + 1)
    gious = ious - (g_w * g_h + 1e-7 - union) / (g_w * g_h + 1e-7)
    loc = ((1 - gious) * ctr_t).sum() / max(float(ctr_t.sum()), 1e-6)
    ctr_loss = F.binary_cross_entropy_with_logits(ctr[pos], ctr_t, reduction="sum") / num_pos
    return {"loss_fcos_cls": cls, "loss_fcos_loc": loc, "loss_fcos_ctr": ctr_loss}


def _iou_plus_one(a, b):
    """IoU of two XYXY boxes counting both end pixels, as maskrcnn-benchmark's NMS does."""
    w = max(min(a[2], b[2]) - max(a[0], b[0]) + 1, 0.0)
    h = max(min(a[3], b[3]) - max(a[1], b[1]) + 1, 0.0)
    inter = w * h
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area_a + area_b - inter)


def official_detections(
    logits, box_reg, ctr, strides, image_size, thresh=0.05, topk=1000, nms=0.6, max_det=100
):
    """
    The original FCOS post-processing (maskrcnn-benchmark's FCOSPostProcessor with its
    ``ml_nms``) of one image, in plain Python. Per level i: logits (K, Hi, Wi), box_reg
    (4, Hi, Wi) in strides, ctr (Hi, Wi) logits. Candidates: sigmoid(cls) > thresh, at most
    ``topk`` per level by cls * ctr; box (x - l s, y - t s, x + r s, y + b s) clipped to
    [0, w - 1] x [0, h - 1]; score sqrt(cls * ctr); per-class greedy NMS (IoU with +1 areas
    > nms suppresses); if more than ``max_det`` remain, those scoring at least the
    ``max_det``-th best. Returns a list of (class, score, [x0, y0, x1, y1]).
    """
    h, w = image_size
    found = []
    for lg, rg, ct, s in zip(logits, box_reg, ctr, strides):
        level = []
        k, rows, cols = lg.shape
        for yi in range(rows):
            for xi in range(cols):
                x, y = xi * s + s // 2, yi * s + s // 2
                c = 1 / (1 + math.exp(-float(ct[yi, xi])))
                for cls in range(k):
                    p = 1 / (1 + math.exp(-float(lg[cls, yi, xi])))
                    if p > thresh:
                        d = [float(v) * s for v in rg[:, yi, xi]]
                        box = [x - d[0], y - d[1], x + d[2], y + d[3]]
                        box = [min(max(v, 0.0), (w - 1, h - 1)[j % 2]) for j, v in enumerate(box)]
                        level.append((cls, p * c, box))
        level.sort(key=lambda t: -t[1])
        found += level[:topk]
    kept = []
    for cls in {f[0] for f in found}:
        todo = sorted((f for f in found if f[0] == cls), key=lambda t: -t[1])
        while todo:
            best = todo.pop(0)
            kept.append(best)
            todo = [f for f in todo if _iou_plus_one(best[2], f[2]) <= nms]
    if len(kept) > max_det:
        cut = sorted(f[1] for f in kept)[len(kept) - max_det]
        kept = [f for f in kept if f[1] >= cut]
    return [(c, math.sqrt(p), box) for c, p, box in kept]


def matched_fraction(found, expected, score_tol=1e-4, box_tol=0.01):
    """
    Share of ``expected`` (class, score, box) detections that have a detection in ``found`` of
    the same class, score within ``score_tol`` and every coordinate within ``box_tol`` pixels
    (each ``found`` one used once, greedily by score).
    """
    free = list(found)
    hits = 0
    for cls, score, box in sorted(expected, key=lambda t: -t[1]):
        for i, (c, sc, bx) in enumerate(free):
            close = all(abs(a - b) <= box_tol for a, b in zip(box, bx))
            if c == cls and abs(sc - score) <= score_tol and close:
                hits += 1
                del free[i]
                break
    return hits / max(len(expected), 1)


def losses_and_reference(model, boxes, classes, h, w, strides=(8, 16, 32), area_plus_one=False):
    """
    ``model``'s training losses on a batch of two random h x w images, one with ``boxes`` /
    ``classes`` and one without boxes, and :func:`reference_losses` of the same head outputs
    with :func:`reference_targets`; returns (losses, reference losses, labels of image one).
    """
    images = []
    for bx, cl in ((boxes, classes), ([], [])):
        inst = Instances(
            (h, w),
            gt_boxes=Boxes(torch.tensor(bx).reshape(-1, 4)),
            gt_classes=torch.tensor(cl, dtype=torch.long),
        )
        images.append({"image": torch.rand(3, h, w) * 255, "instances": inst})
    captured = {}
    hook = model.head.register_forward_hook(lambda m, i, out: captured.setdefault("out", out))
    with EventStorage():
        losses = model(images)
    hook.remove()
    logits, reg, ctr = captured["out"]
    k = logits[0].shape[1]

    def flat(outputs, n):  # per image, levels concatenated, rows in (y, x) order
        return [
            torch.cat([o[i].permute(1, 2, 0).reshape(-1, n) for o in outputs]) for i in range(2)
        ]

    lab0, reg0 = reference_targets(h, w, strides, boxes, classes, k, area_plus_one=area_plus_one)
    lab1, reg1 = reference_targets(h, w, strides, [], [], k, area_plus_one=area_plus_one)
    ref = reference_losses(
        torch.cat(flat(logits, k)).detach(),
        torch.cat(flat(reg, 4)).detach(),
        torch.cat(flat(ctr, 1)).detach()[:, 0],
        lab0 + lab1,
        reg0 + reg1,
    )
    return losses, ref, lab0


def reference_candidates(h, w, strides, boxes, radius=1.5, ranges=RANGES):
    """
    Per location (levels in turn, rows in (y, x) order): the indices of the boxes whose rules
    it passes (centre region, size range), and the box the min-area rule gives it (or None).
    """
    out = []
    for level, s in enumerate(strides):
        for yi in range((h + s - 1) // s):
            for xi in range((w + s - 1) // s):
                x, y = xi * s + s // 2, yi * s + s // 2
                found = []
                for m, (x0, y0, x1, y1) in enumerate(boxes):
                    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                    if radius > 0:
                        rx0, ry0 = max(cx - s * radius, x0), max(cy - s * radius, y0)
                        rx1, ry1 = min(cx + s * radius, x1), min(cy + s * radius, y1)
                    else:
                        rx0, ry0, rx1, ry1 = x0, y0, x1, y1
                    inside = min(x - rx0, y - ry0, rx1 - x, ry1 - y) > 0
                    dmax = max(x - x0, y - y0, x1 - x, y1 - y)
                    lo, hi = ranges[level]
                    if inside and lo <= dmax <= hi:
                        found.append(m)
                areas = [(boxes[m][2] - boxes[m][0]) * (boxes[m][3] - boxes[m][1]) for m in found]
                winner = found[areas.index(min(areas))] if found else None
                out.append((found, winner))
    return out
