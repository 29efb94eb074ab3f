#!/usr/bin/env bash
# Downloads, into DIR, the wheels fcos_d2 needs beside an installed PyTorch, for a machine that
# has PyTorch (e.g. a CUDA build) but cannot reach PyPI:
#
#   scripts/offline_wheels.sh DIR [PYTHON_VERSION [HAVE]]    (here, with network)
#   bash DIR/install.sh [PYTHON]                             (there; then run from the clone)
#
# PYTHON_VERSION is the other machine's (default: this one's). HAVE, a file with the packages the
# other machine already has (`python3 -m pip list --format=freeze` there), leaves those out; pip
# there keeps the installed ones wherever they satisfy the requirements. torch and torchvision
# are never downloaded (the machine's own builds stay), nor the optional extras.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:?usage: scripts/offline_wheels.sh DIR [PYTHON_VERSION [HAVE]]}"
version="${2:-$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}"
have="${3:-/dev/null}"
mkdir -p "$dir"
name_of() { sed -E 's/[ =<>~!;@\[].*//' | tr 'A-Z_.' 'a-z--'; }  # PEP 503 names

# requirements.txt's runtime entries (not the test and style tools, not OpenCV, which the
# environment chooses), and omegaconf's parser, published as source only
reqs="$dir/requirements.txt"
grep -vE '^(#|$|pytest|isort|opencv)' requirements.txt > "$reqs"
echo "antlr4-python3-runtime==4.9.3" >> "$reqs"
pip_quiet() { python3 -m pip "$@" -q --disable-pip-version-check 2> >(grep -v '^WARNING' >&2); }
binary() {
    pip_quiet download --only-binary=:all: --python-version "$version" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$dir" "$@"
}
# a package published as source only (fvcore, iopath, antlr4's runtime: pure Python) is built
# into a wheel here, which any CPython 3 installs
while read -r spec; do
    binary --no-deps "$spec" 2>/dev/null || pip_quiet wheel --no-deps -w "$dir" "$spec"
done < "$reqs"
binary --find-links "$dir" -r "$reqs"  # what they need in turn, for that Python

# detectron2: the wheel scripts/setup.sh installs; it asks for numpy<2, which its code does not
# need, so install.sh installs it without its requirements
scripts/detectron2_wheel.sh "$dir" 2> >(grep -v '^WARNING' >&2) > /dev/null

installed="$(name_of < "$have" | sort -u)"
for w in "$dir"/*.whl; do
    if grep -qx "$(basename "$w" | cut -d- -f1 | name_of)" <<<"$installed"; then
        rm "$w"
    fi
done
names="$(name_of < "$reqs" | tr '\n' ' ')"
rm "$reqs"
cat > "$dir/install.sh" <<INSTALL
#!/usr/bin/env bash
# fcos_d2's requirements from the wheels in this folder, keeping installed packages that satisfy
# them: bash install.sh [PYTHON]
set -euo pipefail
here="\$(cd "\$(dirname "\$0")" && pwd)"
py="\${1:-python3}"
"\$py" -m pip install -q --no-index --no-deps "\$here"/sal_detectron2-*.whl
"\$py" -m pip install -q --no-index --find-links "\$here" $names
"\$py" -c "import detectron2, fvcore, pycocotools; print('[install] detectron2', detectron2.__version__)"
INSTALL
echo "[offline_wheels] $(ls "$dir"/*.whl | wc -l) wheels ($(du -sh "$dir" | cut -f1)) for CPython $version in $dir; install there with: bash $dir/install.sh"
