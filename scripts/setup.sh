#!/usr/bin/env bash
# Creates .venv/ (if missing) with torch, detectron2 and fcos_d2's requirements. Idempotent: a
# stamp records what was installed, so a second run returns at once. Never reaches GitHub.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PY="$VENV/bin/python"
TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
D2_WHEEL=sal-detectron2==0.7.2
STAMP="$VENV/.fcos_d2-setup"
WANT="$(cat requirements.txt setup.py scripts/setup.sh | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
    exit 0
fi
[ -x "$PY" ] || "${PYTHON:-python3}" -m venv "$VENV"
pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }

# Keep a torch that is already there (e.g. a user's own CUDA build).
if ! "$PY" -c "import torch, torchvision" 2>/dev/null; then
    echo "[setup] installing $TORCH_SPEC"
    pip_install $TORCH_SPEC
fi

# Keep a detectron2 that is already there (e.g. the official build from GitHub).
if ! "$PY" -c "import detectron2" 2>/dev/null; then
    echo "[setup] installing detectron2 from the PyPI wheel $D2_WHEEL"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.10 -d "$tmp" "$D2_WHEEL"
    # The wheel is tagged cp310 but its Python code runs on any CPython 3; its _C extension
    # is only loaded on 3.10 and detectron2 works without it.
    src="$(ls "$tmp"/sal_detectron2-*.whl)"
    dst="$tmp/$(basename "$src" | sed 's/-cp310-none-any/-py3-none-any/')"
    [ "$src" = "$dst" ] || mv "$src" "$dst"
    pip_install --no-deps "$dst"
fi

echo "[setup] installing requirements and fcos_d2 (editable)"
pip_install -r requirements.txt
pip_install --no-deps --no-build-isolation -e .
echo "[setup] installing the extras: export (onnx, onnxruntime), openvino (openvino, nncf)," \
    "eval (faster-coco-eval), timm (timm backbones), serve (ray[serve])"
pip_install -e ".[export,openvino,eval,timm,serve]" --no-build-isolation
"$PY" -c "import fcos_d2, detectron2, torch; print('[setup] ok: torch', torch.__version__, \
'detectron2', detectron2.__version__)"
echo "$WANT" > "$STAMP"
