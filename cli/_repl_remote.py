"""``fibers shell --connect``: the shell on one node in another process, over its RPC."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from rich.console import Console

from cli._ops_remote import RemoteNodeOps
from cli._repl import ShellOptions, TerminalKeys, run_prompt_loop, run_script
from cli._shell import KeySource, NoKeys, Shell
from cli.rpc_node import NodeConfigError, client_settings
from fibers.rpc import RpcClient, RpcError

__all__ = ["PASSWORD_VARIABLE", "run_remote_shell"]

PASSWORD_VARIABLE = "FIBERS_RPC_PASSWORD"


def _client(options: ShellOptions) -> RpcClient:
    target = options.connect or ""
    if target.startswith(("https://", "http://")):
        if options.user is None:
            raise NodeConfigError("--connect URL needs --user NAME (the password comes from "
                                  f"{PASSWORD_VARIABLE} or a prompt)")
        password = os.environ.get(PASSWORD_VARIABLE)
        if password is None:
            password = getpass.getpass(f"Password of {options.user} at {target}: ")
        return RpcClient(target, user=options.user, password=password, ca=options.ca)
    settings = client_settings(Path(target), options.user or "operator")
    return RpcClient(settings.url, user=settings.user, password=settings.password,
                     ca=options.ca or settings.ca)


def run_remote_shell(console: Console, options: ShellOptions) -> int:
    """Run the shell on the node ``options.connect`` names; returns the exit status."""
    try:
        client = _client(options)
    except NodeConfigError as exc:
        print(f"fibers: error: {exc}", file=sys.stderr)
        return 2
    try:
        try:
            ops = RemoteNodeOps(client)
        except RpcError as exc:
            print(f"fibers: error: {exc}", file=sys.stderr)
            return 1
        terminal = sys.stdin.isatty() and console.is_terminal
        keys: KeySource = TerminalKeys() if terminal else NoKeys()
        shell = Shell({ops.name: ops}, console, keys=keys, debug=options.debug,
                      pace=options.pace)
        console.print(f"Connected to {ops.name} at {client.url}: 'help' lists the "
                      "commands, 'exit' leaves.", highlight=False)
        if not terminal:
            return run_script(shell, sys.stdin)
        return run_prompt_loop(shell, options.history or Path.home() / ".fibers_history")
    finally:
        client.close()
