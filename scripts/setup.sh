#!/usr/bin/env bash
# Creates .venv/ (if missing) with torch, detectron2 and fcos_d2's requirements. Idempotent: a
# stamp records what was installed, so a second run returns at once. Never reaches GitHub.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PY="$VENV/bin/python"
TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
STAMP="$VENV/.fcos_d2-setup"
WANT="$(cat requirements.txt setup.py scripts/setup.sh scripts/detectron2_wheel.sh \
    | sha256sum | cut -d' ' -f1)"

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
    echo "[setup] installing detectron2 from its PyPI wheel (scripts/detectron2_wheel.sh)"
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    pip_install --no-deps "$(scripts/detectron2_wheel.sh "$tmp" "$PY")"
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
