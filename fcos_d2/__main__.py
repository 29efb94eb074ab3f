"""``python -m fcos_d2 COMMAND ...``: the ``fcos-d2`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
