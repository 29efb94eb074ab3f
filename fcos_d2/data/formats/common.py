"""What the annotation readers share: the bad-line report, image sizes from file headers and the
record layout (detectron2 dataset dicts with absolute XYXY boxes)."""

import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from detectron2.structures import BoxMode

__all__ = ["BadLines", "image_size", "box_record", "IMAGE_SUFFIXES"]

logger = logging.getLogger("fcos_d2.data.formats")

# the image files OpenCV and PIL both read (the YOLO layout lists images by suffix)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class BadLines:
    """
    Collects the annotation lines or elements a reader drops (file, line, why) and reports them
    in one warning at the end: the first few one per line, then a count, so that ``log.txt``
    names each file and line without flooding it.
    """

    SHOWN = 20

    def __init__(self, dataset: str):
        self.dataset = dataset
        self.items: List[Tuple[str, Optional[int], str]] = []

    def add(self, path: str, line: Optional[int], why: str) -> None:
        self.items.append((path, line, why))

    def report(self) -> None:
        if not self.items:
            return
        shown = [
            f"  {path}{'' if line is None else f':{line}'}: {why}"
            for path, line, why in self.items[: self.SHOWN]
        ]
        more = len(self.items) - len(shown)
        logger.warning(
            f"dataset {self.dataset!r}: dropped {len(self.items)} malformed annotation(s):\n"
            + "\n".join(shown)
            + (f"\n  ... and {more} more" if more else "")
        )


def image_size(path: str) -> Tuple[int, int]:
    """(height, width) of the image file ``path`` from its header (the pixels are not decoded);
    a one-line error naming the file if it is missing or not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF rotation by 90 degrees:
                width, height = height, width  # detectron2's read_image applies it
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path!r} does not exist") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"image {path!r} cannot be read: {e}") from None
    return height, width


def box_record(
    file_name: str,
    image_id: Any,
    height: int,
    width: int,
    boxes: Sequence[Tuple[Sequence[float], int, int]],
) -> Dict[str, Any]:
    """A detectron2 dataset dict; ``boxes``: (XYXY absolute box, contiguous class, iscrowd)."""
    return {
        "file_name": os.path.abspath(file_name),
        "image_id": image_id,
        "height": int(height),
        "width": int(width),
        "annotations": [
            {
                "bbox": [float(v) for v in box],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": int(category),
                "iscrowd": int(crowd),
            }
            for box, category, crowd in boxes
        ],
    }
