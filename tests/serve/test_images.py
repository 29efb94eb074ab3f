"""Request bodies to images: every format OpenCV reads gives cv2.imread's pixels; empty,
non-image, truncated and oversized bodies are one-line errors, the size read from the header."""

import cv2
import numpy as np
import pytest

from fcos_d2.serve import BadImage, decode_image
from tests.common_utils import png_header


def _image():
    return np.random.default_rng(1).integers(0, 256, (29, 41, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".webp", ".tiff"])
def test_each_format_decodes_as_cv2_imread_does(suffix, tmp_path):
    ok, encoded = cv2.imencode(suffix, _image())
    path = str(tmp_path / f"x{suffix}")
    encoded.tofile(path)
    assert np.array_equal(decode_image(encoded.tobytes()), cv2.imread(path))


def test_a_one_pixel_image_is_valid():
    ok, encoded = cv2.imencode(".png", np.full((1, 1, 3), 9, np.uint8))
    assert decode_image(encoded.tobytes()).tolist() == [[[9, 9, 9]]]


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".webp", ".tiff"])
def test_a_truncated_file_is_refused(suffix):
    data = cv2.imencode(suffix, _image())[1].tobytes()
    with pytest.raises(BadImage):
        decode_image(data[: len(data) // 2])


def test_empty_and_non_image_bodies_are_named():
    with pytest.raises(BadImage, match="empty body"):
        decode_image(b"")
    with pytest.raises(BadImage, match="not an image file"):
        decode_image(b"GIF? no, just text")


def test_a_header_claiming_a_huge_image_is_refused_before_decoding():
    # 60000 x 60000 x 3 bytes would be 10.8 GB; the body is 57 bytes
    with pytest.raises(BadImage, match="limit"):
        decode_image(png_header(60000, 60000))
    with pytest.raises(BadImage, match="7000 x 7000 pixels: more than the limit of 40000000"):
        decode_image(png_header(7000, 7000))
    with pytest.raises(BadImage, match="more than the limit of 100"):
        decode_image(cv2.imencode(".png", _image())[1].tobytes(), max_pixels=100)
