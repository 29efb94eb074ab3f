"""
The conventions every ``fcos-d2`` command shares, in one place:

- ``--config-file`` takes a YAML or Python (LazyConfig) file, or the name of a config that ships
  with fcos_d2 (``demo/FCOS_R18_shapes_demo.yaml``, see ``fcos_d2.model_zoo``);
- ``--weights`` and ``--device`` set the weights and device of either kind of config;
- overrides come last: ``KEY VALUE`` pairs for YAML, ``key=value`` for Python configs;
- ``--output`` is always a folder the command writes;
- a user's mistake is a :class:`CommandError`, printed as one line on stderr, exit status 2.
"""

import argparse
import logging
import os
import warnings
from typing import Optional, Sequence

from omegaconf import DictConfig

from ..config import (
    AnyConfig,
    check_fcos_config,
    inference_settings,
    load_config,
    set_device,
    set_weights,
)
from ..utils.errors import CommandError

__all__ = [
    "CommandError",
    "add_config_arguments",
    "check_datasets",
    "add_slice_arguments",
    "check_model_source",
    "sliced",
    "first_line",
    "add_overrides",
    "add_output_argument",
    "check_config_datasets",
    "load_command_config",
    "quiet_third_party",
    "resolve_config_file",
]


def quiet_third_party() -> None:
    """Silence warnings of third-party code that users cannot act on (this process only)."""
    for message, category in (
        (r"`torch\.jit\.script` is deprecated", FutureWarning),
        (r"pkg_resources is deprecated", UserWarning),
        (r"torch\.meshgrid: in an upcoming release", UserWarning),
        (r".*TypedStorage is deprecated", UserWarning),
    ):
        warnings.filterwarnings("ignore", message, category)
    # torch's note that a CPU-only machine has no CUDA runtime, printed when detectron2's
    # engine is imported
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)


def add_config_arguments(
    parser: argparse.ArgumentParser,
    *,
    required: bool = True,
    weights: bool = True,
    device: bool = True,
) -> None:
    """``--config-file`` (and ``--weights``, ``--device``)."""
    parser.add_argument(
        "--config-file",
        metavar="FILE",
        required=required,
        help="YAML or Python config, or the name of one shipped with fcos_d2 "
        "(e.g. demo/FCOS_R18_shapes_demo.yaml)",
    )
    if weights:
        parser.add_argument(
            "--weights",
            metavar="FILE",
            help="checkpoint to load (MODEL.WEIGHTS / train.init_checkpoint); fcos_d2, "
            "AdelaiDet, detectron2 and original FCOS layouts",
        )
    if device:
        parser.add_argument(
            "--device", metavar="D", help="cpu, cuda, cuda:1 ... (MODEL.DEVICE / train.device)"
        )


def add_output_argument(parser: argparse.ArgumentParser, *, required: bool, help: str) -> None:
    parser.add_argument("--output", metavar="DIR", required=required, help=help)


def add_overrides(parser: argparse.ArgumentParser) -> None:
    """The config overrides, last on the line."""
    parser.add_argument(
        "opts",
        metavar="OVERRIDES",
        nargs=argparse.REMAINDER,
        help="config overrides, last: KEY VALUE ... for YAML configs (SOLVER.MAX_ITER 100), "
        "key=value ... for Python configs (train.max_iter=100)",
    )


def resolve_config_file(name: str) -> str:
    """A path as given when it exists; else the fcos_d2 config of that name."""
    if os.path.isfile(name):
        return name
    from ..model_zoo import get_config_file

    try:
        return get_config_file(name)
    except ValueError:
        raise CommandError(
            f"--config-file {name!r}: no such file, nor a config shipped with fcos_d2 "
            "(fcos_d2.model_zoo.list_configs() names them)"
        ) from None


def check_datasets(
    names: Sequence[str],
    option: str = "--dataset",
    cfg: Optional[AnyConfig] = None,
    classes: Optional[Sequence[str]] = None,
) -> None:
    """A one-line error naming datasets that are not registered. Dataset specs (``coco:...``,
    ``voc:...``, ``yolo:...``) are registered here, their classes matched by name to
    ``classes`` or to those of ``cfg``'s first training dataset (the model's)."""
    from detectron2.data import DatasetCatalog

    from ..data import register_dataset_specs

    train = inference_settings(cfg).train_datasets if cfg is not None else ()
    register_dataset_specs(names, classes_from=train[0] if train else None, classes=classes)
    unknown = [n for n in names if n not in DatasetCatalog.list()]
    if unknown:
        own = [n for n in sorted(DatasetCatalog.list()) if not n.startswith(_BUILTIN_PREFIXES)]
        raise CommandError(
            f"{option} {unknown[0]!r} is not a registered dataset; registered: "
            + ", ".join(own)
            + " (and detectron2's built-in COCO, LVIS, VOC, Cityscapes and ADE20K names), or "
            "a spec: coco:ANNOTATIONS.json:IMAGE_DIR, voc:ROOT:SPLIT, yolo:DATA.yaml:SPLIT"
        )


def check_config_datasets(cfg: AnyConfig, train: bool = False) -> None:
    """One-line error for a test (and with ``train``, training) dataset of ``cfg`` that is not
    registered (after registering its dataset specs, see ``register_config_datasets``)."""
    from ..data import register_config_datasets

    register_config_datasets(cfg, train=train)
    settings = inference_settings(cfg)
    check_datasets(settings.test_datasets, "test dataset")
    if train:
        check_datasets(settings.train_datasets, "training dataset")


# Names of the datasets detectron2 registers itself (detectron2.data.datasets.builtin).
_BUILTIN_PREFIXES = ("coco_", "keypoints_coco_", "lvis_", "cityscapes_", "voc_", "ade20k_")


def _check_device(device: str) -> None:
    import torch

    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise CommandError(f"device {device!r} is not one torch knows (cpu, cuda, cuda:1 ...)")
    if kind == "cuda" and not torch.cuda.is_available():
        raise CommandError(
            f"the config runs on {device!r} (MODEL.DEVICE / train.device) but this machine has "
            "no CUDA device: add --device cpu"
        )


def first_line(error: BaseException) -> str:
    """The message of ``error`` as one line (its first), for the one-line errors."""
    text = str(error).strip().strip('"').strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_command_config(args: argparse.Namespace, check_device: bool = True) -> AnyConfig:
    """The config of ``--config-file`` with ``OVERRIDES``, ``--weights`` and ``--device``; every
    mistake in them is a one-line :class:`CommandError`."""
    path = resolve_config_file(args.config_file)
    opts = list(getattr(args, "opts", None) or [])
    try:
        cfg = load_config(path, opts)
        weights = getattr(args, "weights", None)
        if weights:
            if "://" not in weights and not os.path.isfile(weights):
                raise CommandError(f"--weights {weights!r}: no such file")
            set_weights(cfg, weights)
        if getattr(args, "device", None):
            set_device(cfg, args.device)
        if not isinstance(cfg, DictConfig):
            check_fcos_config(cfg)  # before any model or process is built
        if check_device:
            _check_device(inference_settings(cfg).device)
        # the config's dataset specs, classes matched to the training data's (the model's)
        from ..data import register_config_datasets

        register_config_datasets(cfg, train=False)
    except CommandError:
        raise
    except (ValueError, KeyError, AssertionError, OSError) as e:
        # AssertionError: yacs's "Non-existent key" for a mistyped override
        raise CommandError(f"config {args.config_file}: {first_line(e)}") from None
    return cfg


def add_slice_arguments(parser: argparse.ArgumentParser) -> None:
    """``--slice H W`` and ``--overlap F``: sliced inference (fcos_d2.slicing)."""
    parser.add_argument(
        "--slice",
        nargs=2,
        type=int,
        metavar=("H", "W"),
        help="run on overlapping tiles of H x W pixels (and the whole image), detections merged: "
        "for small objects in large images",
    )
    parser.add_argument(
        "--overlap",
        type=float,
        default=0.2,
        metavar="F",
        help="with --slice: the tiles' overlap, a fraction of the tile (default 0.2)",
    )


def sliced(predictor, args: argparse.Namespace):
    """``predictor`` run on tiles when ``--slice`` was given (a one-line error for bad
    values), else as it is."""
    if not getattr(args, "slice", None):
        return predictor
    from ..slicing import SlicedPredictor, SliceSettings

    try:
        return SlicedPredictor(predictor, SliceSettings(*args.slice, overlap=args.overlap))
    except ValueError as e:
        raise CommandError(f"--slice/--overlap: {e}") from None


def check_model_source(args: argparse.Namespace) -> None:
    """A one-line error unless exactly one of ``--config-file`` and ``--exported`` is given,
    and an exported model without ``--weights``, ``--device`` or overrides (the export holds
    them)."""
    if bool(args.config_file) == bool(args.exported):
        raise CommandError("give --config-file (with --weights) or --exported DIR")
    if args.exported and (args.weights or args.device or args.opts):
        raise CommandError("--exported takes no --weights, --device or overrides")
