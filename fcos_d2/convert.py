"""Deprecated: ``python -m fcos_d2.checkpoint.convert`` (this alias goes in the next release)."""

import sys
import warnings

from .checkpoint.convert import convert_file, main

__all__ = ["convert_file", "main"]

warnings.warn(
    "fcos_d2.convert moved to fcos_d2.checkpoint.convert", DeprecationWarning, stacklevel=2
)

if __name__ == "__main__":
    print("fcos_d2.convert is deprecated: use fcos-d2 convert", file=sys.stderr)
    main()
