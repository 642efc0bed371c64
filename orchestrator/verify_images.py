"""Decode every image under a folder once, in parallel, and list the unreadable ones.

    python -m orchestrator.verify_images ROOT [--workers N]

Exit status: 0 when every image decodes, 1 when some do not (each listed as `PATH: reason`), 2 when
ROOT is not a folder. The work is `orchestrator.data_tools.decode_check`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from orchestrator.data_tools import verify_folder


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestrator.verify_images", description=__doc__.splitlines()[0])
    p.add_argument("root", help="a folder of images, e.g. an imagefolder data.root (train/ and val/)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: every core)")
    args = p.parse_args(argv)
    return verify_folder(args.root, args.workers)


if __name__ == "__main__":
    sys.exit(main())
