"""Entry point of the ``fibers`` console script (also ``python -m cli``)."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fibers", description="Fibers: durable multi-party flows as sequential Python."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    commands.add_parser("demo", help="run the demo on an embedded in-memory network",
                        description="Run the demo on an embedded in-memory network.")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status."""
    args = _parser().parse_args(argv)
    console = Console()
    if args.command == "demo":
        from cli._demo import run_demo

        return run_demo(console)
    return 2


if __name__ == "__main__":
    sys.exit(main())
