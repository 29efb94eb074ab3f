"""
Convert FCOS checkpoints between other implementations' key layouts and fcos_d2's.

    python -m fcos_d2.checkpoint.convert --from adelaidet IN.pth OUT.pth     # foreign -> fcos_d2
    python -m fcos_d2.checkpoint.convert --to d2 IN.pth OUT.pth              # fcos_d2 -> foreign

Only key names change. ``MODEL.WEIGHTS`` also accepts the foreign files directly.
"""

import argparse
import sys
import warnings

import torch

from .layouts import (
    LAYOUTS,
    RENAMED_LAYOUTS,
    canonical_layout,
    detect_layout,
    from_native,
    to_native,
)

__all__ = ["convert_file"]


def _load_state_dict(path: str):
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise SystemExit(f"fcos_d2.checkpoint.convert: no such file: {path}")
    except Exception as e:  # not a torch file (pickle, zip or tensor errors)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SystemExit(
            f"fcos_d2.checkpoint.convert: cannot read {path} as a checkpoint: {reason}"
        )
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise SystemExit(
            f"fcos_d2.checkpoint.convert: {path} holds no state dict (nor one under 'model')"
        )
    return state


def convert_file(src: str, dst: str, from_fmt: str = None, to_fmt: str = None) -> str:
    """Convert ``src`` to ``dst`` (saved as ``{"model": state_dict}``); return the source format."""
    state = _load_state_dict(src)
    found = detect_layout(state)
    from_fmt = canonical_layout(from_fmt) if from_fmt else None
    to_fmt = canonical_layout(to_fmt) if to_fmt else None
    expected = from_fmt or "native"
    if found != expected:
        raise SystemExit(
            f"fcos_d2.checkpoint.convert: {src} looks like a {found} checkpoint, not {expected}"
        )
    out = to_native(state, from_fmt) if from_fmt else from_native(state, to_fmt)
    torch.save({"model": out, "__author__": "fcos_d2.checkpoint.convert"}, dst)
    return found


def main(argv=None) -> None:
    """Deprecated: ``fcos-d2 convert`` (this form goes in the next release)."""
    warnings.warn(
        "python -m fcos_d2.checkpoint.convert is deprecated: use fcos-d2 convert",
        DeprecationWarning,
    )
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    choices = LAYOUTS + tuple(RENAMED_LAYOUTS)  # old spellings still accepted, with a warning
    group.add_argument("--from", dest="from_fmt", choices=choices, help="source layout")
    group.add_argument("--to", dest="to_fmt", choices=choices, help="target layout")
    parser.add_argument("input")
    parser.add_argument("output")
    args = parser.parse_args(argv)
    for old in {args.from_fmt, args.to_fmt} & set(RENAMED_LAYOUTS):
        print(
            f"fcos_d2.checkpoint.convert: layout {old!r} is deprecated, use "
            f"{RENAMED_LAYOUTS[old]!r}",
            file=sys.stderr,
        )
    found = convert_file(args.input, args.output, args.from_fmt, args.to_fmt)
    print(f"converted {found} checkpoint {args.input} -> {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
