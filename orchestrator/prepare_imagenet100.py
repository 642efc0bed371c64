"""Build ImageNet-100 (the CMC class subset) from an ImageNet-1k folder tree by symlinking.

    python -m orchestrator.prepare_imagenet100 IMAGENET_ROOT OUT [--classes FILE] [--verify] [--resize 256]

Links `IMAGENET_ROOT/{train,val}/<wnid>` into `OUT/{train,val}/<wnid>` for the 100 listed classes,
so the `imagefolder` dataset reads OUT with no copy. Everything is checked before anything is
linked, and a rerun on a correct OUT is a no-op. `--verify` then decodes every image once, in
parallel, and lists the unreadable ones (exit status 1 when there are any). `--resize S` writes a
copy instead of links: every image as a JPEG (quality 90) with its short side at S px, for
`data.decode: gpu`; a rerun continues where it stopped, and unreadable images are listed (exit 1). The work is
`orchestrator.data_tools.imagenet100`.
"""

from __future__ import annotations

import argparse
import sys

from orchestrator.data_tools import prepare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.prepare_imagenet100", description=__doc__.splitlines()[0]
    )
    parser.add_argument("imagenet_root", help="ImageNet-1k folder holding train/<wnid>/ and val/<wnid>/")
    parser.add_argument("out", help="folder to create the ImageNet-100 links in (data.root of an imagefolder spec)")
    parser.add_argument("--classes", help="class list, one WordNet id a line (default: the packaged CMC list)")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="then decode every image once, in parallel, and list the unreadable ones (exit 1 if any)",
    )
    parser.add_argument("--workers", type=int, default=None, help="--verify, --resize: processes (default: every core)")
    parser.add_argument(
        "--resize",
        type=int,
        default=None,
        metavar="S",
        help="write a copy instead of links: JPEGs (quality 90) with the short side at S px, e.g. 256",
    )
    args = parser.parse_args(argv)
    return prepare(args.imagenet_root, args.out, args.classes, args.resize, args.verify, args.workers)


if __name__ == "__main__":
    sys.exit(main())
