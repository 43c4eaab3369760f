"""`python -m linli.devstack run`: the local stack (see stack.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .stack import run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m linli.devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="start the local stack with demo data")
    run_p.add_argument("--data-dir", default=".linli", type=Path)
    run_p.add_argument("--no-demo", action="store_true")
    run_p.add_argument(
        "--no-actors", action="store_true", help="do not simulate partners and volunteers"
    )
    args = parser.parse_args(argv)
    return run(
        args.data_dir.absolute(),
        demo_data=not args.no_demo,
        actors=not (args.no_actors or args.no_demo),
    )


if __name__ == "__main__":
    sys.exit(main())
