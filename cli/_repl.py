"""``fibers shell``: the prompt loop around :class:`~cli._shell.Shell`.

At a terminal the prompt is prompt_toolkit's (Tab completion, persistent history, Emacs keys;
Ctrl-C clears the line, Ctrl-D leaves); watching flows reads single keys from the terminal.
Without a terminal (a script piped in) each line of standard input is one command.
"""

from __future__ import annotations

import logging
import select
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from rich.console import Console

from cli._shell import KeySource, NoKeys, Shell

__all__ = ["ShellOptions", "TerminalKeys", "run_prompt_loop", "run_shell"]

DEFAULT_NODE = "BuyerBank"


@dataclass(frozen=True)
class ShellOptions:
    """What ``fibers shell`` was asked for."""

    embedded: bool = False
    connect: str | None = None
    user: str | None = None
    ca: Path | None = None
    node: str = DEFAULT_NODE
    base_dir: Path | None = None
    debug: bool = False
    pace: float = 0.05
    history: Path | None = None


class TerminalKeys:
    """Key presses from the terminal on standard input, read unechoed while watching."""

    interactive = True

    def __init__(self) -> None:
        from prompt_toolkit.input import create_input

        self._input = create_input()

    @contextmanager
    def watching(self) -> Iterator[None]:
        with self._input.raw_mode():
            self._input.read_keys()  # keys typed before watching began do not stop it
            yield

    def pressed(self, timeout: float) -> bool:
        ready, _, _ = select.select([self._input.fileno()], [], [], timeout)
        return bool(ready) and bool(self._input.read_keys())


def run_shell(console: Console, options: ShellOptions) -> int:
    """Run ``fibers shell``; returns the exit status."""
    if options.connect is not None:
        from cli._repl_remote import run_remote_shell

        _log_to(console)
        return run_remote_shell(console, options)
    if not options.embedded:
        print("fibers: error: 'fibers shell' needs --embedded (the demo's network in this "
              "process) or --connect DIR/NAME | URL --user NAME (a node over its RPC)",
              file=sys.stderr)
        return 2
    if options.base_dir is not None and options.base_dir.exists() \
            and any(options.base_dir.iterdir()):
        print(f"fibers: error: --dir {options.base_dir} is not empty; give a new or empty "
              "directory", file=sys.stderr)
        return 2
    from cli._repl_embedded import EmbeddedShellNetwork

    _log_to(console)
    base_dir = options.base_dir or Path(tempfile.mkdtemp(prefix="fibers-shell-"))
    console.print(f"Starting the embedded network (Notary, SellerBank, BuyerBank) in {base_dir}",
                  highlight=False)
    network = EmbeddedShellNetwork(base_dir)
    try:
        if options.node not in network.ops:
            print(f"fibers: error: no node called {options.node!r} (nodes: "
                  f"{', '.join(network.ops)})", file=sys.stderr)
            return 2
        for line in network.prepare():
            console.print(f"  {line}", highlight=False)
        terminal = sys.stdin.isatty() and console.is_terminal
        keys: KeySource = TerminalKeys() if terminal else NoKeys()
        shell = Shell(network.ops, console, current=options.node, control=network, keys=keys,
                      debug=options.debug, pace=options.pace, namespace=network.namespace)
        console.print(f"Operating [bold]{shell.current}[/]: 'help' lists the commands, "
                      "'use <node>' switches node, 'exit' leaves.", highlight=False)
        if not terminal:
            return run_script(shell, sys.stdin)
        history = options.history or (base_dir / "shell_history" if options.base_dir
                                      else Path.home() / ".fibers_history")
        return run_prompt_loop(shell, history)
    finally:
        network.close()
        console.print(f"Run directory (each node's LMDB storage): {base_dir}", highlight=False)


def _log_to(console: Console) -> None:
    """Node warnings (a flow hospitalised, a frame dropped) go through the shell's console,
    so they land above a live view instead of through it."""
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_time=False, show_path=False)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[handler])


def run_prompt_loop(shell: Shell, history: Path) -> int:
    """Prompt for commands until ``exit`` or Ctrl-D, with completion and ``history``."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
    from prompt_toolkit.history import FileHistory

    from cli._shell_complete import ShellCompleter

    history.parent.mkdir(parents=True, exist_ok=True)
    session: PromptSession[str] = PromptSession(
        history=FileHistory(str(history)),
        completer=ShellCompleter(shell),
        auto_suggest=AutoSuggestFromHistory(),
        complete_while_typing=False,
    )
    while not shell.finished:
        try:
            line = session.prompt(shell.prompt)
        except KeyboardInterrupt:
            continue  # Ctrl-C abandons the line being typed
        except EOFError:
            break
        try:
            shell.execute(line)
        except KeyboardInterrupt:
            shell.say("interrupted", style="yellow")
    return 0


def run_script(shell: Shell, stream: TextIO) -> int:
    """Run each line of ``stream`` as a command, echoed after the prompt, until ``exit``."""
    for line in stream:
        if shell.finished:
            break
        shell.say(f"{shell.prompt}{line.rstrip()}", style="dim")
        shell.execute(line)
    return 0
