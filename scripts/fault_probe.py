"""
Fault probe: plants one fault at a time (an exact text replacement) in a copy of HEAD and runs the
unit tests of that module; a fault the tests let pass is printed MISSED.

    .venv/bin/python scripts/fault_probe.py [GROUP ...]

GROUP: targets, losses, post, head, pg (proposal generator), layers, memory (freed memory kept,
the benchmark's floor); all by default.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = tempfile.mkdtemp(prefix="fcos_d2_probe_")
subprocess.run(f"git -C {REPO} archive HEAD | tar -x -C {ROOT}", shell=True, check=True)
PY = sys.executable
_CORE = "tests/modeling/test_core.py tests/test_official_fcos.py"
# the unit tests of each group of faults
T = {
    "targets": "tests/modeling/test_targets.py " + _CORE,
    "losses": "tests/modeling/test_losses.py " + _CORE,
    "post": "tests/modeling/test_postprocess.py " + _CORE,
    "head": "tests/modeling/test_head.py tests/modeling/test_model_e2e.py tests/test_adelaidet.py",
    "pg": "tests/modeling/test_proposal_generator.py",
    "layers": "tests/layers tests/modeling/test_postprocess.py",
    "memory": "tests/utils/test_memory.py tests/benchmark/test_inference.py::"
    "test_floor_rows_use_the_best_conv_rate_measured_around_the_rounds",
}
F = [
    ("targets", "fcos_d2/modeling/targets.py", "shift = stride // 2", "shift = 0"),
    (
        "targets",
        "fcos_d2/modeling/targets.py",
        "(max_dist <= ranges[:, 1])",
        "(max_dist < ranges[:, 1])",
    ),
    (
        "targets",
        "fcos_d2/modeling/targets.py",
        "return ltrb.amin(dim=1) > 0, in_range",
        "return ltrb.amin(dim=1) >= 0, in_range",
    ),
    (
        "targets",
        "fcos_d2/modeling/targets.py",
        "half = grid.point_strides[loc_idx, None] * radius",
        "half = grid.point_strides[loc_idx, None] * radius * 2",
    ),
    (
        "targets",
        "fcos_d2/modeling/targets.py",
        "lo = torch.maximum(centers - half, b[:, :2])",
        "lo = centers - half",
    ),
    (
        "targets",
        "fcos_d2/modeling/targets.py",
        'torch.where(tied, box, num_boxes), "amin")',
        'torch.where(tied, box, -1), "amax")',
    ),
    (
        "targets",
        "fcos_d2/modeling/targets.py",
        'best.scatter_reduce(0, loc, pair_area, "amin")',
        'best.scatter_reduce(0, loc, torch.where(ok, -areas[box], math.inf), "amin")',
    ),
    (
        "targets",
        "fcos_d2/modeling/targets.py",
        "ltrb / grid.point_strides[:, None], 0.0)",
        "ltrb, 0.0)",
    ),
    ("targets", "fcos_d2/modeling/targets.py", "return torch.sqrt(ratio)", "return ratio"),
    (
        "targets",
        "fcos_d2/modeling/targets.py",
        "width = int(math.ceil(2 * radius)) + 3",
        "width = int(math.ceil(2 * radius)) + 1",
    ),  # equivalent: ceil(2r) + 1 cells suffice
    (
        "targets",
        "fcos_d2/modeling/targets.py",
        "width = int(math.ceil(2 * radius)) + 3",
        "width = int(math.ceil(2 * radius))",
    ),
    (
        "targets",
        "fcos_d2/modeling/targets.py",
        "offset = 1.0 if legacy_areas else 0.0",
        "offset = 0.0",
    ),
    (
        "losses",
        "fcos_d2/modeling/losses.py",
        "ious = (intersection + 1.0) / (union + 1.0)",
        "ious = intersection / union",
    ),
    (
        "losses",
        "fcos_d2/modeling/losses.py",
        "(enclosing - union) / enclosing",
        "(enclosing - intersection) / enclosing",
    ),
    ("losses", "fcos_d2/modeling/losses.py", "return -torch.log(ious)", "return 1.0 - ious"),
    ("losses", "fcos_d2/modeling/losses.py", "alpha=focal_alpha", "alpha=1 - focal_alpha"),
    (
        "losses",
        "fcos_d2/modeling/losses.py",
        "reduce_mean((labels != num_classes).sum()",
        "reduce_mean((labels >= 0).sum()",
    ),
    (
        "losses",
        "fcos_d2/modeling/losses.py",
        "(box_losses * ctr_targets).sum() / ctr_norm",
        "box_losses.sum() / ctr_norm",
    ),
    (
        "losses",
        "fcos_d2/modeling/losses.py",
        'losses["loss_fcos_ctr"] = bce / num_pos',
        'losses["loss_fcos_ctr"] = bce / ctr_norm',
    ),
    (
        "losses",
        "fcos_d2/modeling/losses.py",
        "ious = box_ious(pos_reg, pos_targets)[0].detach()",
        "ious = box_ious(pos_reg, pos_targets)[1].detach()",
    ),
    (
        "losses",
        "fcos_d2/modeling/losses.py",
        "ious = box_ious(pos_reg, pos_targets)[0].detach()",
        "ious = box_ious(pos_reg, pos_targets)[0]",
    ),
    (
        "losses",
        "fcos_d2/modeling/losses.py",
        "[..., :num_classes].to(logits.dtype)",
        "[..., 1:].to(logits.dtype)",
    ),
    (
        "post",
        "fcos_d2/modeling/postprocess.py",
        "scores_all.append(torch.sqrt(joint))",
        "scores_all.append(joint)",
    ),
    (
        "post",
        "fcos_d2/modeling/postprocess.py",
        "reg_l[:, loc_idx].t() * stride",
        "reg_l[:, loc_idx].t()",
    ),
    (
        "post",
        "fcos_d2/modeling/postprocess.py",
        "keep = (joint if thresh_with_ctr else cls) > score_thresh",
        "keep = (cls if thresh_with_ctr else joint) > score_thresh",
    ),
    (
        "post",
        "fcos_d2/modeling/postprocess.py",
        "[locations - distances[:, :2], locations + distances[:, 2:]]",
        "[locations - distances[:, 2:], locations + distances[:, :2]]",
    ),
    (
        "post",
        "fcos_d2/modeling/postprocess.py",
        "post.nms_thresh)[: post.max_detections]",
        "post.nms_thresh)[: post.max_detections - 1]",
    ),
    (
        "post",
        "fcos_d2/modeling/postprocess.py",
        "boxes[:, 0].clamp(0, width - 1)",
        "boxes[:, 0].clamp(0, width)",
    ),
    ("post", "fcos_d2/modeling/postprocess.py", "[0.0, 0.0, 1.0, 1.0]", "[0.0, 0.0, 0.0, 0.0]"),
    ("post", "fcos_d2/modeling/postprocess.py", "p = p * (1 - 1e-4)", "p = p * (1 + 1e-2)"),
    (
        "post",
        "fcos_d2/modeling/postprocess.py",
        "keep = results.scores >= thresholds[results.pred_classes]",
        "keep = results.scores > thresholds[results.pred_classes] + 1e-3",
    ),
    (
        "post",
        "fcos_d2/modeling/postprocess.py",
        "[width / results.image_size[1], height / results.image_size[0]] * 2",
        "[height / results.image_size[0], width / results.image_size[1]] * 2",
    ),
    ("head", "fcos_d2/modeling/head.py", "            if i == level:", "            if i == 0:"),
    ("head", "fcos_d2/modeling/head.py", "box_reg.append(torch.relu(reg))", "box_reg.append(reg)"),
    (
        "head",
        "fcos_d2/modeling/head.py",
        "ctrness.append(self.ctrness(box_x))",
        "ctrness.append(self.ctrness(cls_x))",
    ),
    (
        "head",
        "fcos_d2/modeling/head.py",
        "-math.log((1 - prior_prob) / prior_prob)",
        "math.log((1 - prior_prob) / prior_prob)",
    ),
    (
        "head",
        "fcos_d2/modeling/head.py",
        "return nn.GroupNorm(32, channels)",
        "return nn.GroupNorm(16, channels)",
    ),
    (
        "head",
        "fcos_d2/modeling/head.py",
        "if deformable and i == num_convs - 1:",
        "if deformable and i == 0:",
    ),
    ("head", "fcos_d2/modeling/head.py", "offset_mask[:, 18:].sigmoid()", "offset_mask[:, 18:]"),
    (
        "head",
        "fcos_d2/modeling/head.py",
        "reg = self.scales(reg, level)",
        "reg = self.scales(reg, 0)",
    ),
    ("pg", "fcos_d2/modeling/proposal_generator.py", "log_p = 0.5 * (", "log_p = 1.0 * ("),
    (
        "pg",
        "fcos_d2/modeling/proposal_generator.py",
        "dist = dist.gather(1, idx[..., None].expand(-1, -1, 4)) * stride",
        "dist = dist.gather(1, idx[..., None].expand(-1, -1, 4))",
    ),
    ("pg", "fcos_d2/modeling/proposal_generator.py", "value * self.loss_weight", "value"),
    (
        "pg",
        "fcos_d2/modeling/proposal_generator.py",
        "self.pre_nms_topk = {True: pre_nms_topk[0], False: pre_nms_topk[1]}",
        "self.pre_nms_topk = {True: pre_nms_topk[1], False: pre_nms_topk[0]}",
    ),
    (
        "layers",
        "fcos_d2/layers/nms.py",
        "keep[:, i + 1 :] &= ~(over[:, i, i + 1 :] & keep[:, i : i + 1])",
        "keep[:, i + 1 :] &= ~over[:, i, i + 1 :]",
    ),
    (
        "layers",
        "fcos_d2/layers/nms.py",
        "return boxes + (classes.to(boxes) * (2 * largest + 1))[:, None], largest",
        "return boxes, largest",
    ),
    (
        "layers",
        "fcos_d2/layers/nms.py",
        "return kept[scores[kept].argsort(descending=True)]",
        "return kept",
    ),
    (
        "layers",
        "fcos_d2/layers/graph.py",
        "count = torch.clamp(torch._shape_as_tensor(values)[0], max=k)",
        "count = torch.clamp(torch._shape_as_tensor(values)[0], max=k - 1)",
    ),
    ("layers", "fcos_d2/layers/graph.py", "if len(values) > k:", "if len(values) > k + 1:"),
    (
        "layers",
        "fcos_d2/layers/frozen_bn.py",
        "(norm.running_var + norm.eps).rsqrt()",
        "norm.running_var.rsqrt()",
    ),
    (
        "layers",
        "fcos_d2/layers/frozen_bn.py",
        "if torch.jit.is_scripting() or torch.jit.is_tracing() or compiling():",
        "if False:",
    ),
    ("layers", "fcos_d2/layers/winograd.py", "(0, 1, -1, 8, -8, 1)", "(0, 1, -1, 8, -8, 0)"),
    (
        "layers",
        "fcos_d2/layers/winograd.py",
        "(0, 0, 1, 4 * tw + 1 - w, 1, 4 * th + 1 - h)",
        "(0, 0, 1, 4 * tw + 1 - w, 0, 4 * th + 2 - h)",
    ),
    ("layers", "fcos_d2/layers/winograd.py", "return grad_v, grad_weight", "return grad_v, None"),
    (
        "layers",
        "fcos_d2/layers/winograd.py",
        "if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):",
        "if False:",
    ),
    (
        "layers",
        "fcos_d2/layers/winograd.py",
        "channels_last = _channels_last(x) or _channels_last(weight)",
        "channels_last = _channels_last(x)",
    ),
    (
        "layers",
        "fcos_d2/layers/winograd.py",
        "with torch.inference_mode(False), torch.no_grad():",
        "with torch.no_grad():",
    ),
    ("layers", "fcos_d2/layers/winograd.py", "    @once_differentiable", ""),
    (
        "layers",
        "fcos_d2/layers/winograd.py",
        "max(MIN_TILES, max(channels)",
        "max(4, max(channels)",
    ),
    (
        "layers",
        "fcos_d2/layers/fused_resnet.py",
        "x = _bottleneck(block, x, owns_input=i > 0)",
        "x = _bottleneck(block, x, owns_input=True)",
    ),
    ("layers", "fcos_d2/layers/fused_resnet.py", "or torch.is_grad_enabled():", "or False:"),
    (
        "layers",
        "fcos_d2/layers/fused_resnet.py",
        'conv.groups, "relu" if relu',
        'conv.groups, "relu" if True',
    ),
    (
        "layers",
        "fcos_d2/layers/fused_resnet.py",
        'if torch.is_autocast_enabled("cpu") or _get_current_function_mode_stack():',
        "if _get_current_function_mode_stack():",
    ),
    (
        "layers",
        "fcos_d2/layers/fused_resnet.py",
        "if not _AVAILABLE or not torch.backends.mkldnn.enabled or torch.jit.is_tracing():",
        "if not _AVAILABLE or torch.jit.is_tracing():",
    ),
    ("memory", "fcos_d2/utils/memory.py", "_M_MMAP_MAX = -4", "_M_MMAP_MAX = -3"),
    ("memory", "fcos_d2/utils/memory.py", "libc.mallopt(_M_MMAP_MAX, 0) == 1 and ", ""),
    ("memory", "fcos_d2/utils/memory.py", '.strip() == "0":', '.strip() == "off":'),
    ("memory", "fcos_d2/utils/memory.py", " and libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1", ""),
    ("memory", "fcos_d2/cli/__init__.py", "    keep_freed_memory()\n", ""),
    ("memory", "fcos_d2/cli/train.py", "    keep_freed_memory()\n", ""),
    ("memory", "fcos_d2/benchmark/inference.py", "/ max(rates)", "/ rates[0]"),
    (
        "memory",
        "fcos_d2/benchmark/inference.py",
        "rates.append(conv_ceiling(ours, size, device))",
        "pass",
    ),
]
only = sys.argv[1:]
for group, path, old, new in F:
    if only and group not in only:
        continue
    full = os.path.join(ROOT, path)
    src = open(full).read()
    assert src.count(old) == 1, (path, old, src.count(old))
    open(full, "w").write(src.replace(old, new))
    t0 = time.time()
    try:
        r = subprocess.run(
            f"{PY} -m pytest -x -q -p no:cacheprovider {T[group]}",
            shell=True,
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=ROOT),
            capture_output=True,
            text=True,
            timeout=600,
        )
        caught = r.returncode != 0
        last = [
            l for l in r.stdout.splitlines() if l.startswith("FAILED") or l.startswith("ERROR")
        ][:1]
    finally:
        open(full, "w").write(src)
    verdict = "CAUGHT" if caught else "MISSED"
    where = last[0][:90] if last else ""
    print(f"{verdict} {time.time() - t0:5.0f}s {group:7s} {old[:60]!r} -> {new[:40]!r} {where}")
    sys.stdout.flush()

shutil.rmtree(ROOT)
