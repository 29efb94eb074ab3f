"""
``fcos-d2 serve``: an HTTP detection service. :mod:`.images` (request bodies to images, size
checked before decoding) and :mod:`.model` (the model and its answers) need no serving
framework; :mod:`.app` runs them on Ray Serve (``pip install 'fcos_d2[serve]'``).
"""

from .images import MAX_PIXELS, BadImage, decode_image
from .model import ModelSource, ServedModel, answer

__all__ = ["MAX_PIXELS", "BadImage", "ModelSource", "ServedModel", "answer", "decode_image"]
