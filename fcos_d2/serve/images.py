"""Request bodies to images: the size is read from the file's header and checked before any
pixel is decoded (a small file claiming a huge image allocates nothing); the pixels are decoded
by OpenCV as ``cv2.imread`` decodes a file, so a served image gives the detections of the same
file read from disk."""

import io
import warnings

import numpy as np

__all__ = ["BadImage", "MAX_PIXELS", "decode_image"]

# Decoded images of more pixels are refused (8000 x 5000 = 40 megapixels, 120 MB as BGR).
MAX_PIXELS = 40_000_000

_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF", "MPO")


class BadImage(ValueError):
    """A request body that is not a usable image; the message is one line."""


def _header(body: bytes):
    """(format, width, height) from the file's header (PIL reads no pixels here)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL's notes on odd metadata: the pixels decide
            with Image.open(io.BytesIO(body)) as image:
                return image.format, image.size[0], image.size[1]
    except UnidentifiedImageError:
        raise BadImage("the body is not an image file (JPEG, PNG, BMP, WebP or TIFF)") from None
    except Image.DecompressionBombError:
        raise BadImage("the image's header claims more pixels than the limit") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise BadImage(f"the image's header cannot be read: {str(e).splitlines()[0]}") from None


def _complete(fmt: str, body: bytes) -> bool:
    """Whether the file is whole: OpenCV decodes a cut JPEG or PNG with its missing part grey,
    without an error, so their end markers are checked; other formats are decoded by PIL."""
    if fmt in ("JPEG", "MPO"):
        return b"\xff\xd9" in body[-64:]
    if fmt == "PNG":
        return b"IEND" in body[-32:]
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(body)) as image:
                image.load()
    except (OSError, ValueError, SyntaxError):
        return False
    return True


def decode_image(body: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """
    The (H, W, 3) BGR uint8 image encoded in ``body`` (JPEG, PNG, BMP, WebP, TIFF; the first
    frame of a multi-page file), decoded as ``cv2.imread`` decodes. :class:`BadImage` for an
    empty body, bytes that are not an image, a header claiming more than ``max_pixels``
    (before decoding) and a truncated file.
    """
    import cv2

    if not body:
        raise BadImage("empty body: send the encoded image file as the request body")
    fmt, width, height = _header(body)
    if fmt not in _FORMATS:
        raise BadImage(f"image format {fmt} is not one of JPEG, PNG, BMP, WebP, TIFF")
    if width * height > max_pixels:
        raise BadImage(f"image of {width} x {height} pixels: more than the limit of {max_pixels}")
    if not _complete(fmt, body):
        raise BadImage(f"the {fmt} file is truncated")
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BadImage(f"the {fmt} file cannot be decoded")
    return image
