"""``fcos-d2 convert``: an FCOS checkpoint between another implementation's key layout and
fcos_d2's (only names change; ``MODEL.WEIGHTS`` also reads the foreign files directly)."""

import argparse
import os

from .common import CommandError, add_output_argument

HELP = "convert a checkpoint between AdelaiDet / detectron2 / original FCOS layouts and fcos_d2's"
EXAMPLES = [
    "fcos-d2 convert FCOS_R_50_1x.pth --from adelaidet --output weights/",
    "fcos-d2 convert output/demo/model_final.pth --to d2 --output out/d2",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..checkpoint.layouts import LAYOUTS, RENAMED_LAYOUTS

    choices = LAYOUTS + tuple(RENAMED_LAYOUTS)  # old spellings still accepted
    parser.add_argument("input", metavar="INPUT", help="the checkpoint to convert")
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from", dest="from_fmt", choices=choices, help="INPUT's layout")
    direction.add_argument("--to", dest="to_fmt", choices=choices, help="the layout to write")
    add_output_argument(parser, required=True, help="folder for the converted file (same name)")


def run(args: argparse.Namespace) -> int:
    from ..checkpoint.convert import convert_file

    if not os.path.isfile(args.input):
        raise CommandError(f"INPUT {args.input!r}: no such file")
    os.makedirs(args.output, exist_ok=True)
    out = os.path.join(args.output, os.path.basename(args.input))
    if os.path.abspath(out) == os.path.abspath(args.input):
        raise CommandError(f"--output {args.output!r} holds INPUT itself: give another folder")
    try:
        found = convert_file(args.input, out, args.from_fmt, args.to_fmt)
    except SystemExit as e:  # convert_file's one-line refusals
        raise CommandError(str(e).replace("fcos_d2.checkpoint.convert: ", "")) from None
    print(f"converted {found} checkpoint {args.input} -> {out}")
    return 0
