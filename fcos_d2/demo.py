"""
Run a trained FCOS on images, folders, globs or a video; draw the detections and optionally
write them as COCO-format results.

    python -m fcos_d2.demo --config-file CFG --input a.jpg photos/ "more/*.png" --output OUT/ \
        [--confidence-threshold 0.5] [--class-thresholds thresholds.json] [--json dets.json] \
        --opts MODEL.WEIGHTS model.pth
    python -m fcos_d2.demo --config-file CFG --video-input clip.mp4 --output OUT/ --opts ...
    python -m fcos_d2.demo --exported EXPORT_DIR --input ... (a directory from fcos_d2.export)

The exit status is 0 when every input was processed, 1 when some input could not be read
(each is named and skipped), 2 for a usage or set-up error (one line).
"""

import argparse
import glob
import json
import logging
import os
import sys
import time
import warnings
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from detectron2.data.catalog import Metadata
from detectron2.data.detection_utils import read_image
from detectron2.structures import Instances
from detectron2.utils.video_visualizer import VideoVisualizer
from detectron2.utils.visualizer import ColorMode, Visualizer
from tqdm import tqdm

import fcos_d2

from .checkpoint import CheckpointReadError, IncompleteCheckpointError
from .config import AnyConfig, inference_settings, set_class_thresholds, set_score_thresh
from .data import dataset_metadata, register_shapes
from .predictor import Predictor
from .utils import setup_command_logger
from .utils.errors import CommandError

__all__ = [
    "DemoError",
    "coco_results",
    "dataset_ids",
    "dataset_metadata",
    "expand_inputs",
    "get_parser",
    "main",
    "run_on_images",
    "run_on_video",
    "setup_cfg",
]

logger = logging.getLogger("fcos_d2.demo")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Writers that the OpenCV wheels (FFmpeg backend) open everywhere; other extensions get mp4v.
VIDEO_CODECS = {".avi": "MJPG", ".mp4": "mp4v", ".mkv": "mp4v"}


DEFAULT_THRESHOLD = 0.5


# The command line's one error type (the name of the previous release).
DemoError = CommandError


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fcos_d2.demo", description="fcos_d2 demo: detect objects, draw them"
    )
    parser.add_argument(
        "--config-file",
        metavar="FILE",
        help="config file (with --exported: only its DATASETS.TEST metadata is used)",
    )
    parser.add_argument(
        "--exported", metavar="DIR", help="run the model exported to DIR by fcos_d2.export"
    )
    parser.add_argument(
        "--input", nargs="+", help="image files, folders (their images) or quoted glob patterns"
    )
    parser.add_argument("--video-input", help="a video file")
    parser.add_argument(
        "--output",
        help="folder for the drawn images / video (created if missing), or a file name for a "
        "single input; without it nothing is drawn",
    )
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        help="minimum class probability of a detection (sets MODEL.FCOS.SCORE_THRESH_TEST; "
        f"default {DEFAULT_THRESHOLD}; an exported model keeps the threshold it was exported with)",
    )
    parser.add_argument(
        "--class-thresholds",
        metavar="FILE",
        help="per-class score thresholds (python -m fcos_d2.analyze results writes them; sets "
        "MODEL.FCOS.CLASS_THRESHOLDS_FILE, and then --confidence-threshold defaults to the "
        "config's SCORE_THRESH_TEST; with --exported they filter the graph's detections)",
    )
    parser.add_argument(
        "--json", metavar="PATH", help="also write the detections as COCO-format results"
    )
    parser.add_argument(
        "--opts",
        default=[],
        nargs=argparse.REMAINDER,
        help="config overrides: KEY VALUE ... (YAML), key=value ... (Python configs)",
    )
    return parser


def setup_cfg(args: argparse.Namespace) -> AnyConfig:
    """The config (a YAML CfgNode or a Python LazyConfig); a missing config file or a bad
    threshold is a :class:`DemoError`."""
    if not os.path.isfile(args.config_file):
        raise DemoError(f"config file {args.config_file!r} not found")
    try:
        cfg = fcos_d2.load_config(args.config_file, list(args.opts))
    except (ValueError, KeyError) as e:  # a bad override (YAML or Python), named
        raise DemoError(str(e).strip().strip('"')) from None
    threshold = args.confidence_threshold
    if threshold is None:
        # with per-class thresholds, those decide; the candidates are the config's
        configured = inference_settings(cfg).score_thresh
        threshold = configured if args.class_thresholds else DEFAULT_THRESHOLD
    if not 0.0 <= threshold < 1.0:
        raise DemoError(f"--confidence-threshold {threshold} is not in [0, 1)")
    # FCOS thresholds the class probability itself (not the reported score, which is
    # sqrt(probability x centre-ness)), as AdelaiDet's demo does.
    set_score_thresh(cfg, threshold)
    if args.class_thresholds:
        set_class_thresholds(cfg, args.class_thresholds)
    # empty or missing weights (or, with --exported, none needed): the predictor's strict
    # loading names them
    return cfg


def expand_inputs(patterns: Sequence[str]) -> Tuple[List[str], List[str]]:
    """
    Image files named by ``patterns`` (files, folders -> their image files, glob patterns),
    in order, each once; and the patterns that matched nothing.
    """
    files: List[str] = []
    unmatched: List[str] = []
    seen = set()
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = [
                os.path.join(pattern, f)
                for f in sorted(os.listdir(pattern))
                if f.lower().endswith(IMAGE_EXTENSIONS)
            ]
        elif os.path.exists(pattern):
            found = [pattern]
        else:
            found = sorted(glob.glob(os.path.expanduser(pattern)))
        if not found:
            unmatched.append(pattern)
        files.extend(f for f in found if f not in seen)
        seen.update(found)
    return files, unmatched


def _output_is_folder(output: str, num_inputs: int) -> bool:
    return num_inputs > 1 or os.path.isdir(output) or not os.path.splitext(output)[1]


def _output_path(output: str, input_path: str, folder: bool, extension: str = "") -> str:
    if not folder:
        return output
    name = os.path.basename(input_path)
    if extension:
        name = os.path.splitext(name)[0] + extension
    return os.path.join(output, name)


def coco_results(
    instances: Instances,
    category_ids: Dict[int, int],
    file_name: str,
    image_id: Optional[int] = None,
    frame: Optional[int] = None,
) -> List[Dict]:
    """
    One COCO result dict per detection: "file_name", "category_id" (the dataset's id of the
    predicted class, via ``category_ids``; the class index itself where that has none), "bbox"
    (XYWH), "score"; plus "image_id" and "frame" when given.
    """
    boxes = instances.pred_boxes.tensor.tolist()
    extra = {k: v for k, v in (("image_id", image_id), ("frame", frame)) if v is not None}
    return [
        {
            "file_name": file_name,
            **extra,
            "category_id": category_ids.get(c, c),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "score": s,
        }
        for (x0, y0, x1, y1), s, c in zip(
            boxes, instances.scores.tolist(), instances.pred_classes.tolist()
        )
    ]


def dataset_ids(metadata: Metadata) -> Tuple[Dict[int, int], Dict[str, int]]:
    """
    The test dataset's (class index -> category id, image file base name -> image id).
    Category ids come from ``thing_dataset_id_to_contiguous_id`` or else, as detectron2's
    ``load_coco_json`` numbers them (sorted ids), from the COCO json the metadata names.
    """
    category_ids = getattr(metadata, "thing_dataset_id_to_contiguous_id", None)
    category_ids = {v: k for k, v in category_ids.items()} if category_ids else {}
    json_file = getattr(metadata, "json_file", None)
    if not json_file or not os.path.isfile(json_file):
        return category_ids, {}
    with open(json_file) as f:
        coco = json.load(f)
    if not category_ids:
        category_ids = dict(enumerate(sorted(c["id"] for c in coco.get("categories", []))))
    images = {os.path.basename(im["file_name"]): im["id"] for im in coco.get("images", [])}
    return category_ids, images


def run_on_images(
    predictor: Callable,
    metadata: Metadata,
    paths: Sequence[str],
    output: Optional[str],
    results: Optional[List[Dict]],
) -> int:
    """Detect on each image, draw into ``output``; return how many could not be read."""
    folder = bool(output) and _output_is_folder(output, len(paths))
    if folder:
        os.makedirs(output, exist_ok=True)
    category_ids, image_ids = dataset_ids(metadata) if results is not None else ({}, {})
    failed = 0
    for path in tqdm(paths, disable=len(paths) < 2):
        try:
            image = read_image(path, format="BGR")
        except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
            logger.error(f"cannot read image {path!r}, skipped: {e}")
            failed += 1
            continue
        start = time.perf_counter()
        instances = predictor(image)["instances"].to("cpu")
        logger.info(f"{path}: {len(instances)} detections in {time.perf_counter() - start:.2f}s")
        if results is not None:
            image_id = image_ids.get(os.path.basename(path))
            results.extend(coco_results(instances, category_ids, path, image_id=image_id))
        if output:
            vis = Visualizer(image[:, :, ::-1], metadata, instance_mode=ColorMode.IMAGE)
            drawn = vis.draw_instance_predictions(instances).get_image()[:, :, ::-1]
            out_path = _output_path(output, path, folder)
            if not cv2.imwrite(out_path, drawn):
                raise DemoError(f"cannot write image {out_path!r}")
    return failed


def _frames(video: cv2.VideoCapture) -> Iterator[np.ndarray]:
    while True:
        ok, frame = video.read()
        if not ok:
            return
        yield frame


def run_on_video(
    predictor: Callable,
    metadata: Metadata,
    path: str,
    output: Optional[str],
    results: Optional[List[Dict]],
) -> int:
    """
    Detect on every frame, write the drawn video into ``output``; return the frame count, or
    -1 when the video cannot be opened (named in the log).
    """
    video = cv2.VideoCapture(path)
    if not video.isOpened():
        logger.error(f"cannot open video {path!r}")
        return -1
    width = int(video.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = video.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    writer = None
    if output:
        folder = _output_is_folder(output, 1)
        if folder:
            os.makedirs(output, exist_ok=True)
        out_path = _output_path(output, path, folder, extension=".mp4")
        codec = VIDEO_CODECS.get(os.path.splitext(out_path)[1].lower(), "mp4v")
        writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*codec), fps, (width, height))
        if not writer.isOpened():
            raise DemoError(f"cannot write video {out_path!r} with codec {codec}")
    visualizer = VideoVisualizer(metadata, ColorMode.IMAGE)
    category_ids = dataset_ids(metadata)[0] if results is not None else {}
    count = 0
    try:
        for count, frame in enumerate(tqdm(_frames(video), total=total or None), start=1):
            instances = predictor(frame)["instances"].to("cpu")
            if results is not None:
                results.extend(coco_results(instances, category_ids, path, frame=count - 1))
            if writer is not None:
                rgb = frame[:, :, ::-1]
                drawn = visualizer.draw_instance_predictions(rgb, instances).get_image()
                writer.write(np.ascontiguousarray(drawn[:, :, ::-1]))
    finally:
        video.release()
        if writer is not None:
            writer.release()
    logger.info(f"{path}: {count} frames")
    return count


def exported_predictor(
    directory: str, class_thresholds: Optional[str], threshold: Optional[float]
) -> Tuple[Callable, List[str]]:
    """The predictor of the model exported to ``directory``, and its class names; a
    ``threshold`` other than the exported one is a :class:`CommandError`."""
    from .export.predictor import ExportedPredictor  # optional dependencies (onnxruntime)

    try:
        predictor = ExportedPredictor(directory, class_thresholds=class_thresholds)
    except (ValueError, RuntimeError) as e:  # bad thresholds file; OpenVINO refusing this CPU
        raise DemoError(str(e)) from None
    exported_threshold = predictor.info.get("score_thresh")
    if threshold not in (None, exported_threshold):
        raise DemoError(
            f"score threshold {threshold}: the model in {directory!r} was exported with "
            f"MODEL.FCOS.SCORE_THRESH_TEST {exported_threshold}; export it again with the "
            "threshold you want"
        )
    return predictor, predictor.class_names or []


def _exported_predictor(args: argparse.Namespace) -> Tuple[Callable, Metadata]:
    """The exported model's predictor, and its class names as metadata."""
    predictor, names = exported_predictor(
        args.exported, args.class_thresholds, args.confidence_threshold
    )
    return predictor, Metadata(name=args.exported, thing_classes=names)


def _set_up(args: argparse.Namespace) -> Tuple[Callable, Metadata]:
    """The predictor and the dataset metadata (class names, ids) of the demo."""
    if not args.config_file and not args.exported:
        raise DemoError(
            "give --config-file (with weights in --opts MODEL.WEIGHTS, or train.init_checkpoint="
            " for a Python config) or --exported"
        )
    predictor = metadata = None
    if args.exported:
        predictor, metadata = _exported_predictor(args)
    if args.config_file:
        cfg = setup_cfg(args)
        try:
            predictor = predictor or Predictor(cfg)
        except ValueError as e:  # a bad MODEL.FCOS value or thresholds file, named
            raise DemoError(str(e)) from None
        name = inference_settings(cfg).test_dataset
        if name:
            metadata = dataset_metadata(name)
    return predictor, metadata or Metadata(name="__unused")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Deprecated: ``fcos-d2 predict`` (this form goes in the next release)."""
    warnings.warn("python -m fcos_d2.demo is deprecated: use fcos-d2 predict", DeprecationWarning)
    args = get_parser().parse_args(argv)
    setup_command_logger(name="fcos_d2")
    register_shapes(replace=False)  # the demo's own datasets, unless the user's are registered
    if bool(args.input) == bool(args.video_input):
        print("fcos_d2.demo: error: give either --input or --video-input", file=sys.stderr)
        return 2
    try:
        predictor, metadata = _set_up(args)
    except (
        DemoError,
        FileNotFoundError,
        ImportError,
        CheckpointReadError,
        IncompleteCheckpointError,
    ) as e:
        print(f"fcos_d2.demo: error: {e}", file=sys.stderr)
        return 2
    results: Optional[List[Dict]] = [] if args.json else None
    failed = 0
    try:
        if args.input:
            paths, unmatched = expand_inputs(args.input)
            for pattern in unmatched:
                logger.error(f"no image found for --input {pattern!r}")
            failed = len(unmatched)
            failed += run_on_images(predictor, metadata, paths, args.output, results)
        elif run_on_video(predictor, metadata, args.video_input, args.output, results) < 0:
            failed = 1
    except DemoError as e:
        print(f"fcos_d2.demo: error: {e}", file=sys.stderr)
        return 2
    if results is not None:
        with open(args.json, "w") as f:
            json.dump(results, f)
        logger.info(f"{len(results)} detections written to {args.json}")
    if failed:
        logger.error(f"{failed} input(s) could not be read or opened (named above)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
