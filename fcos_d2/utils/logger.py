"""detectron2's loggers for fcos_d2's commands, writing to the ``sys.stdout`` of the moment.

detectron2's ``setup_logger`` is cached on its arguments and binds its console handler to the
``sys.stdout`` of the first call. A command's ``main(argv)`` called a second time in one process
(a notebook, a test, ``contextlib.redirect_stdout``) would then log to the first call's stream,
or fail with "I/O operation on closed file" once that stream is closed.
"""

import contextlib
import logging
import os
import sys
from typing import Iterator, Optional

from detectron2.utils.logger import setup_logger

__all__ = ["quiet_quantization_tools", "quiet_stdout", "setup_command_logger"]


class _CurrentStdout:
    """A stream that writes to whatever ``sys.stdout`` is when it writes."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


_STDOUT = _CurrentStdout()


def setup_command_logger(
    name: str, output: Optional[str] = None, distributed_rank: int = 0
) -> logging.Logger:
    """detectron2's ``setup_logger(output, distributed_rank, name=name)`` (its format, its file
    ``output/log.txt``), with the console handler following ``sys.stdout``."""
    logger = setup_logger(output, distributed_rank, name=name)
    for handler in logger.handlers:
        # the console handler is a plain StreamHandler on the sys.stdout of its creation
        if type(handler) is logging.StreamHandler and handler.stream is sys.stdout:
            handler.setStream(_STDOUT)
    return logger


# Messages of the quantization tools that users cannot act on: ONNX Runtime's advice to run its
# pre-processing script (logged on the root logger) and NNCF's per-step INFO lines.
_TOOL_NOISE = ("Please consider to run pre-processing", "Please consider pre-processing")


class _DropToolNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TOOL_NOISE)


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Inside the block, what is written to ``sys.stdout`` goes nowhere (tools that print
    their steps or draw progress bars there)."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield


@contextlib.contextmanager
def quiet_quantization_tools() -> Iterator[None]:
    """Inside the block: NNCF logs warnings only and draws no progress bars (on stdout),
    ONNX Runtime's pre-processing advice is dropped, and a root handler that a tool's
    ``logging.warning`` call installs is removed after it (it would print every library's
    records afterwards)."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    nncf = logging.getLogger("nncf")
    level = nncf.level
    noise = _DropToolNoise()
    nncf.setLevel(logging.WARNING)
    root.addFilter(noise)
    try:
        with quiet_stdout():
            yield
    finally:
        root.removeFilter(noise)
        nncf.setLevel(level)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
