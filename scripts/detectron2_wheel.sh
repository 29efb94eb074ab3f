#!/usr/bin/env bash
# Downloads detectron2's PyPI wheel (sal-detectron2) into DIR with PYTHON's pip and prints its
# path. The wheel is tagged cp310 but its Python code runs on any CPython 3 (its _C extension is
# only loaded on 3.10, and detectron2 works without it), so it is renamed py3-none-any.
#   scripts/detectron2_wheel.sh DIR [PYTHON]
set -euo pipefail
dir="${1:?usage: scripts/detectron2_wheel.sh DIR [PYTHON]}"
py="${2:-python3}"
"$py" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.10 -d "$dir" sal-detectron2==0.7.2
src="$(ls "$dir"/sal_detectron2-*-cp310-none-any.whl)"
dst="${src/-cp310-none-any/-py3-none-any}"
mv -f "$src" "$dst"
echo "$dst"
