"""`python -m orchestrator.spec --reference [PATH]`: write the spec reference page (docs/spec-reference.md) from the
models that validate specs (`orchestrator.spec.reference`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from orchestrator.spec.reference import PAGE, write


def main(argv: Optional[list[str]] = None) -> int:
    """`python -m orchestrator.spec --reference [PATH]`: write the spec reference page (docs/spec-reference.md)."""
    parser = argparse.ArgumentParser(prog="python -m orchestrator.spec", description=main.__doc__)
    parser.add_argument("--reference", nargs="?", const=str(PAGE), metavar="PATH", required=True)
    args = parser.parse_args(argv)
    print(f"wrote {write(Path(args.reference))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
