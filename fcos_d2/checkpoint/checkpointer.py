"""
A ``DetectionCheckpointer`` that writes files atomically, names the file in every read error,
falls back to the newest readable checkpoint on ``--resume``, converts foreign key layouts before
shape matching, and (``strict=True``) refuses a checkpoint that does not fill the whole model.
"""

import glob
import logging
import os
import uuid
from typing import IO, Any, Callable, Dict, List, Optional

import torch
from detectron2.checkpoint import DetectionCheckpointer
from torch import nn

from .model_hook import native_state_dict

__all__ = [
    "CheckpointReadError",
    "IncompleteCheckpointError",
    "FCOSCheckpointer",
    "load_for_inference",
    "atomic_write",
]

logger = logging.getLogger(__name__)


class CheckpointReadError(RuntimeError):
    """A checkpoint file exists but cannot be read (truncated, empty, not a checkpoint)."""


class IncompleteCheckpointError(RuntimeError):
    """A checkpoint leaves model tensors unloaded, or holds tensors the model has no place for."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def atomic_write(path: str, write: Callable[[IO], None], mode: str = "wb") -> None:
    """
    Call ``write(f)`` on a temporary file next to ``path``, flush and fsync it, then rename it to
    ``path``: readers see the old file or the complete new one, never a partial one. Temporary
    files that a killed earlier write left for the same path are removed first.
    """
    directory, base = os.path.split(os.path.abspath(path))
    for stale in glob.glob(os.path.join(directory, f".{glob.escape(base)}.*.tmp")):
        os.remove(stale)
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # usual umask permissions
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


class FCOSCheckpointer(DetectionCheckpointer):
    """
    ``DetectionCheckpointer`` (same constructor, plus ``strict``) with:

    - ``save``/``tag_last_checkpoint`` writing a temporary file in the same directory, flushing,
      fsyncing and renaming it, so a kill at any moment leaves either the old or the new file;
    - read errors raised as ``CheckpointReadError`` whose message names the file;
    - ``resume_or_load(resume=True)`` falling back, with a warning naming both files, to the
      newest readable ``*.pth`` of ``save_dir`` when the one ``last_checkpoint`` names is broken;
    - foreign layouts (AdelaiDet, detectron2, maskrcnn-benchmark) accepted through the hook
      fcos_d2's models install (:mod:`fcos_d2.checkpoint.model_hook`), which skips a tensor of
      another shape with a warning naming it;
    - ``strict=True``: ``IncompleteCheckpointError`` naming the keys when any model tensor was
      not loaded (missing or of another shape) or the checkpoint has tensors the model lacks.
      Use it for evaluation and inference; training (fine-tuning) keeps ``strict=False``.
    """

    def __init__(self, model: nn.Module, save_dir: str = "", *, strict: bool = False, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.strict = strict

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        os.makedirs(self.save_dir, exist_ok=True)  # a run set up without default_setup's mkdir
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename), mode="w")

    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        if path and "://" not in path and not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
        if not path and self.strict:
            raise IncompleteCheckpointError(
                "no weights given (MODEL.WEIGHTS is empty; a Python config: train.init_checkpoint):"
                " refusing to evaluate a model whose tensors are all random"
            )
        try:
            return super().load(path, checkpointables)
        finally:
            self._parsed_url_during_load = None  # detectron2 leaves it set when a load fails

    def _load_file(self, filename: str) -> Dict[str, Any]:
        try:
            loaded = super()._load_file(filename)
        except Exception as e:
            raise CheckpointReadError(
                f"cannot read checkpoint file {filename!r} (truncated, empty or not a "
                f"checkpoint): {_first_line(e)}"
            ) from e
        if not isinstance(loaded.get("model"), dict):
            raise CheckpointReadError(f"checkpoint file {filename!r} holds no state dict")
        return loaded

    def _load_model(self, checkpoint: Dict[str, Any]):
        if self.strict:
            incompatible = super()._load_model(checkpoint)
            _refuse_incomplete(incompatible)
            return incompatible
        # Fine-tuning onto other classes: the class logits of another class count stay as the
        # model initialised them, reported in one line rather than as three warnings.
        checkpoint["model"] = native_state_dict(checkpoint["model"])
        model_state = self.model.state_dict()
        theirs = {}
        for key in [k for k in checkpoint["model"] if k.endswith(_CLASS_LOGITS)]:
            value = checkpoint["model"][key]
            if key in model_state and tuple(value.shape) != tuple(model_state[key].shape):
                theirs[key] = checkpoint["model"].pop(key).shape[0]
        incompatible = super()._load_model(checkpoint)
        fresh = [k for k in incompatible.missing_keys if k in theirs]
        if fresh:  # only the logits of another class count (not a checkpoint without any)
            for key in fresh:
                incompatible.missing_keys.remove(key)
            _log_reinitialised(fresh, model_state, sorted(set(theirs.values())))
        return incompatible

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        if not (resume and self.has_checkpoint()):
            return self.load(path, checkpointables=[])
        last = self.get_checkpoint_file()
        try:
            return self.load(last)
        except (CheckpointReadError, FileNotFoundError) as error:
            for candidate in self._readable_candidates(exclude=last):
                logger.warning(
                    f"cannot resume from {last!r} ({error}); resuming from the newest readable "
                    f"checkpoint {candidate!r} instead"
                )
                return self.load(candidate)
            raise

    def _readable_candidates(self, exclude: str):
        """Other checkpoints of save_dir, newest first, that torch can read."""
        files = [
            f
            for f in self.get_all_checkpoint_files()
            if os.path.abspath(f) != os.path.abspath(exclude)
        ]
        for path in sorted(files, key=lambda f: (os.path.getmtime(f), f), reverse=True):
            try:
                self._torch_load(path)
            except Exception:
                continue
            yield path


# the class logits (the head's last classification conv): re-initialised when fine-tuning
_CLASS_LOGITS = ("cls_logits.weight", "cls_logits.bias")


def _log_reinitialised(keys: List[str], model_state: Dict[str, Any], theirs: List[int]) -> None:
    bias = next((model_state[k] for k in keys if k.endswith(".bias")), None)
    weight = next(model_state[k] for k in keys)
    classes = int(weight.shape[0])
    prior = ""
    if bias is not None and bias.numel():
        b = float(bias.flatten()[0])
        prior = f", bias {b:.4f} = the prior probability {torch.sigmoid(torch.tensor(b)):.4g}"
    before = f" (the checkpoint has {', '.join(map(str, theirs))})" if theirs else ""
    logger.info(
        f"Fine-tuning: {', '.join(sorted(keys))} re-initialised for the model's {classes} "
        f"classes{before}: weights normal with std 0.01{prior}; every other tensor loaded"
    )


def _names(items, limit: int = 20) -> str:
    items = list(items)
    more = f" ... ({len(items)} in all)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _refuse_incomplete(incompatible) -> None:
    problems = []
    if incompatible.incorrect_shapes:
        shapes = _names(
            f"{k} {tuple(c)} vs {tuple(m)}" for k, c, m in incompatible.incorrect_shapes
        )
        problems.append(f"tensors of another shape (checkpoint vs model): {shapes}")
    wrong = {k for k, _, _ in incompatible.incorrect_shapes}
    # BatchNorm's step counter is not a weight (checkpoints of FrozenBN models lack it)
    missing = [
        k
        for k in incompatible.missing_keys
        if k not in wrong and not k.endswith("num_batches_tracked")
    ]
    if missing:
        problems.append(f"model tensors missing from the checkpoint: {_names(missing)}")
    if incompatible.unexpected_keys:
        unexpected = _names(incompatible.unexpected_keys)
        problems.append(f"checkpoint tensors the model has no place for: {unexpected}")
    if problems:
        raise IncompleteCheckpointError(
            "the checkpoint does not fit the model built from the config, refusing to run it "
            "with partly random weights; " + "; ".join(problems)
        )


def load_for_inference(model: nn.Module, path: str) -> Dict[str, Any]:
    """
    Load ``path`` into ``model`` for evaluation/inference: every model tensor must come from the
    checkpoint and every checkpoint tensor must fit the model, else ``IncompleteCheckpointError``
    naming the keys; an unreadable file raises ``CheckpointReadError`` naming it.
    """
    return FCOSCheckpointer(model, strict=True).load(path)
