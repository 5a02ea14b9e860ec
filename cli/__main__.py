"""Entry point of the ``fibers`` console script (also ``python -m cli``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

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
    demo.add_argument("--processes", action="store_true",
                      help="run each party as its own 'fibers node run' process over mutual "
                      "TLS, driven over RPC; the buyer's process is killed with SIGKILL")
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
    _add_network_commands(commands)
    bench = commands.add_parser(
        "bench",
        help="benchmark scenarios, each beside its baseline measured in the same run",
        description="Measure Fibers beside its baselines and peers in one run; print the ratios.",
    )
    add_bench_arguments(bench)
    return parser


def _add_network_commands(commands: Any) -> None:
    network = commands.add_parser(
        "network", help="make a network of node processes (bootstrap)",
        description="Make and manage a network of node processes.")
    network_commands = network.add_subparsers(dest="network_command", metavar="COMMAND",
                                               parser_class=_Parser)
    network_commands.required = True
    boot = network_commands.add_parser(
        "bootstrap", help="make one directory per node: config, TLS certificate, identity",
        description="Make DIR/NAME for the notary and every node: node.toml, a TLS key and "
        "certificate issued by the network's new root CA (DIR/ca), the node's identity key "
        "encrypted at rest in its storage, and the network map (network.json). Node i (the "
        "notary first) listens for peers on base port + 2i and for RPC on base port + 2i + 1. "
        "An existing network is never overwritten.")
    boot.add_argument("dir", type=Path, metavar="DIR")
    boot.add_argument("--notary", required=True, metavar="NAME", help="the notary's name")
    boot.add_argument("--non-validating", action="store_true",
                      help="the notary only checks that inputs are unspent")
    boot.add_argument("--node", action="append", required=True, metavar="NAME",
                      dest="nodes", help="a node's name (repeat for each node)")
    boot.add_argument("--host", default="127.0.0.1", help="the nodes' host (default 127.0.0.1)")
    boot.add_argument("--base-port", type=_positive, default=None, metavar="N",
                      help="the first port (default 10000)")
    node = commands.add_parser("node", help="run a node process",
                               description="Run a node from its directory.")
    node_commands = node.add_subparsers(dest="node_command", metavar="COMMAND",
                                        parser_class=_Parser)
    node_commands.required = True
    run = node_commands.add_parser(
        "run", help="run the node of DIR/NAME in the foreground",
        description="Run the node of a directory made by 'fibers network bootstrap' until "
        "SIGTERM or SIGINT; prints one line with 'ready' once it takes messages.")
    run.add_argument("dir", type=Path, metavar="DIR/NAME")


def _run_bootstrap(args: argparse.Namespace) -> int:
    from cli._bootstrap import DEFAULT_BASE_PORT, BootstrapError, BootstrapPlan, bootstrap

    plan = BootstrapPlan(args.dir, args.notary, not args.non_validating, tuple(args.nodes),
                         args.host, args.base_port or DEFAULT_BASE_PORT)
    try:
        entries = bootstrap(plan)
    except BootstrapError as exc:
        print(f"fibers: error: {exc}", file=sys.stderr)
        return 2
    for entry in entries:
        role = " (notary)" if entry.notary else ""
        print(f"{entry.name}{role}: {args.dir / entry.name}, p2p {entry.p2p}")
    return 0


def _run_node(args: argparse.Namespace) -> int:
    from cli._node_process import run_node

    return run_node(args.dir)


def _run_demo(args: argparse.Namespace, console: Console) -> int:
    from cli._trade_demo import DemoOptions, run_trade_demo

    if args.dir is not None and args.dir.exists() and any(args.dir.iterdir()):
        print(f"fibers: error: --dir {args.dir} is not empty; give a new or empty directory",
              file=sys.stderr)
        return 2
    live = console.is_terminal and not args.plain
    options = DemoOptions(trades=args.trades, crash=not args.no_crash, live=live,
                          base_dir=args.dir)
    if args.processes:
        from cli._process_demo import DemoFailed, run_process_demo

        try:
            return run_process_demo(console, options)
        except DemoFailed as exc:
            print(f"fibers: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("fibers: interrupted: every node process was stopped", file=sys.stderr)
            return 130
    return run_trade_demo(console, options)


def _run_shell(args: argparse.Namespace, console: Console) -> int:
    from cli._repl import ShellOptions, run_shell

    if args.embedded and args.connect is not None:
        print("fibers: error: give --embedded or --connect, not both", file=sys.stderr)
        return 2
    return run_shell(console, ShellOptions(embedded=args.embedded, connect=args.connect,
                                           user=args.user, ca=args.ca, node=args.node,
                                           base_dir=args.dir, debug=args.debug,
                                           pace=args.pace))


def _run_bench(args: argparse.Namespace, console: Console) -> int:
    from cli._bench import BenchOptions, run_bench

    return run_bench(console, BenchOptions.from_namespace(args))


_COMMANDS: dict[str, Callable[[argparse.Namespace, Console], int]] = {
    "demo": _run_demo,
    "shell": _run_shell,
    "network": lambda args, _console: _run_bootstrap(args),
    "node": lambda args, _console: _run_node(args),
    "bench": _run_bench,
}


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status."""
    args = _parser().parse_args(argv)
    command = _COMMANDS.get(args.command)
    return command(args, Console()) if command is not None else 2


if __name__ == "__main__":
    sys.exit(main())
