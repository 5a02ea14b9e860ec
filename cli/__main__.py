"""Entry point of the ``fibers`` console script (also ``python -m cli``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from rich.console import Console

from cli._bench import add_bench_arguments


class _Parser(argparse.ArgumentParser):
    """Argument errors are one line on stderr and exit status 2, with no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fibers", description="Fibers: durable multi-party flows as sequential Python."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    demo = commands.add_parser(
        "demo",
        help="a live trade between two banks that survives a node crash",
        description="Trade commercial paper for cash between two banks on an embedded network, "
        "watch it live, crash the buyer's node mid-trade and restart it from its storage.",
    )
    demo.add_argument("--trades", type=_positive, default=1, metavar="N",
                      help="run N trades concurrently (default 1)")
    demo.add_argument("--no-crash", action="store_true", help="do not crash the buyer's node")
    demo.add_argument("--plain", action="store_true",
                      help="plain lines instead of live trees (automatic when not a terminal)")
    demo.add_argument("--dir", type=Path, default=None, metavar="PATH",
                      help="run directory for the nodes' storage (default: a fresh one)")
    shell = commands.add_parser(
        "shell",
        help="operate nodes from a shell: start, watch, inspect and kill flows; query vaults",
        description="A shell on a node: start flows by name with typed arguments, watch them "
        "live, inspect and kill them, query the vault and the network map.",
    )
    shell.add_argument("--embedded", action="store_true",
                       help="run the demo's network (Notary, SellerBank, BuyerBank) in this "
                       "process and operate it")
    shell.add_argument("--connect", default=None, metavar="DIR/NAME|URL",
                       help="operate a node in another process over its RPC: its node "
                       "directory (address and operator credentials from there), or its "
                       "https:// URL with --user (password from FIBERS_RPC_PASSWORD or a "
                       "prompt)")
    shell.add_argument("--user", default=None, metavar="NAME",
                       help="the RPC user, with --connect URL")
    shell.add_argument("--ca", type=Path, default=None, metavar="FILE",
                       help="the network's CA certificate, with --connect URL (default: the "
                       "system's CAs)")
    shell.add_argument("--node", default="BuyerBank", metavar="NAME",
                       help="the node to operate first (default BuyerBank)")
    shell.add_argument("--dir", type=Path, default=None, metavar="PATH",
                       help="run directory for the nodes' storage and the shell's history "
                       "(default: a fresh one, history in ~/.fibers_history)")
    shell.add_argument("--pace", type=float, default=0.05, metavar="SECONDS",
                       help="pause between two network events while watching (default 0.05)")
    shell.add_argument("--debug", action="store_true",
                       help="show the traceback of a failing command")
    bench = commands.add_parser(
        "bench",
        help="benchmark scenarios, each beside its baseline measured in the same run",
        description="Measure Fibers beside its baselines and peers in one run; print the ratios.",
    )
    add_bench_arguments(bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status."""
    args = _parser().parse_args(argv)
    console = Console()
    if args.command == "demo":
        from cli._trade_demo import DemoOptions, run_trade_demo

        if args.dir is not None and args.dir.exists() and any(args.dir.iterdir()):
            print(f"fibers: error: --dir {args.dir} is not empty; give a new or empty directory",
                  file=sys.stderr)
            return 2
        live = console.is_terminal and not args.plain
        options = DemoOptions(trades=args.trades, crash=not args.no_crash, live=live,
                              base_dir=args.dir)
        return run_trade_demo(console, options)
    if args.command == "shell":
        from cli._repl import ShellOptions, run_shell

        if args.embedded and args.connect is not None:
            print("fibers: error: give --embedded or --connect, not both", file=sys.stderr)
            return 2
        return run_shell(console, ShellOptions(embedded=args.embedded, connect=args.connect,
                                               user=args.user, ca=args.ca, node=args.node,
                                               base_dir=args.dir, debug=args.debug,
                                               pace=args.pace))
    if args.command == "bench":
        from cli._bench import BenchOptions, run_bench

        return run_bench(console, BenchOptions.from_namespace(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
