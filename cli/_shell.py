"""The shell's command layer: ``Shell.execute(line)`` runs one command against a node's
:class:`~cli._ops.NodeOps` and writes to a rich ``Console``. It knows nothing of the terminal:
the prompt loop (``cli._repl``) and the tests drive it alike.

Moving the network. On the embedded network nothing runs unless the shell runs the scheduler
loop (``NodeOps.pump``), so: commands that show state (``flow list``, ``vault``, ``node`` ...)
first let the network settle, so that what they show is current; ``flow start`` and ``flow
watch`` run it live, one event per refresh, paced so a person can follow.

Bad input never ends the shell: every exception a command raises is reported as one line
(``Type: message``; with ``debug`` also the traceback) and the shell carries on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.console import Console
from rich.live import Live
from rich.text import Text

from cli._convert import FlowArgumentError, UnknownNameError, closest
from cli._ops import FeedSubscription, NodeDownError, NodeOps, RunIdError
from cli._ops_values import ProgressSnapshot, StateMachineUpdate
from cli._shell_view import WatchView, outcome_text
from fibers.rpc import RpcError

__all__ = ["KeySource", "NetworkControl", "NoKeys", "Shell", "ShellError", "Watch", "unknown"]


class ShellError(Exception):
    """A command was used wrongly; the message says how to use it."""


class KeySource(Protocol):
    """Key presses while the shell watches flows (any key stops watching)."""

    interactive: bool
    """False when no key can ever arrive (no terminal): watching then ends once nothing can
    move any more, instead of waiting for a key."""

    def watching(self) -> AbstractContextManager[object]:
        """Keys are read one by one, unechoed, inside this context."""

    def pressed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a key; True (and the key consumed) if one came."""


class NoKeys:
    """The key source of a shell without a terminal: never a key, never a wait."""

    interactive = False

    def watching(self) -> AbstractContextManager[object]:
        return nullcontext()

    def pressed(self, timeout: float) -> bool:
        return False


class NetworkControl(Protocol):
    """What the embedded network lets the shell do beyond operating a node."""

    def is_up(self, name: str) -> bool:
        """Whether the node called ``name`` is running."""

    def crash(self, name: str) -> None:
        """Stop the node as a crash would (its flows stay in its storage)."""

    def restart(self, name: str) -> int:
        """Start the node again from its storage; returns how many flows it restored."""


@dataclass
class Watch:
    """The flows one :meth:`Shell.follow` shows, their latest progress, and the feeds that
    bring it (unsubscribed when the follow ends)."""

    view: WatchView = field(default_factory=WatchView)
    run_ids: list[str] = field(default_factory=list)
    subscriptions: list[FeedSubscription] = field(default_factory=list)

    def finished(self, run_id: str) -> bool:
        """Whether ``run_id``'s outcome has arrived."""
        snapshot = self.view.snapshots.get(run_id)
        return snapshot is not None and snapshot.outcome is not None


class Shell:
    """Runs shell commands against the nodes in ``nodes`` (name -> ``NodeOps``), one of which
    is current (``use <node>`` switches); writes to ``console``.

    ``control`` adds the embedded network's ``crash``/``restart``; ``keys`` delivers key
    presses while watching (default: none); ``pace`` is the pause between two events while
    watching; ``interact(banner, namespace)`` runs the ``py`` prompt (default
    ``code.interact``) with ``namespace(node name)`` added to what the shell provides.
    """

    def __init__(
        self,
        nodes: Mapping[str, NodeOps],
        console: Console,
        *,
        current: str | None = None,
        control: NetworkControl | None = None,
        keys: KeySource | None = None,
        debug: bool = False,
        pace: float = 0.05,
        interact: Callable[[str, dict[str, Any]], object] | None = None,
        namespace: Callable[[str], dict[str, Any]] | None = None,
    ) -> None:
        if not nodes:
            raise ValueError("a shell needs at least one node")
        self.nodes = dict(nodes)
        self.console = console
        self.current = current if current is not None else next(iter(self.nodes))
        if self.current not in self.nodes:
            raise ValueError(f"no node called {self.current!r} (nodes: {', '.join(nodes)})")
        self.control = control
        self.keys: KeySource = keys or NoKeys()
        self.debug = debug
        self.pace = pace
        self.interact = interact
        self.namespace = namespace
        self.finished = False

    @property
    def ops(self) -> NodeOps:
        """The operations of the current node."""
        return self.nodes[self.current]

    @property
    def prompt(self) -> str:
        """``BuyerBank> `` (``BuyerBank (down)> `` while it is down)."""
        return f"{self.current}{'' if self.ops.is_up else ' (down)'}> "

    # ----- running commands ----------------------------------------------------------------------

    def execute(self, line: str) -> None:
        """Run one command line. Never raises (but ``KeyboardInterrupt``): errors are
        reported on the console."""
        # Imported here: the commands module builds on this one (Shell, ShellError).
        from cli._shell_commands import COMMANDS

        text = line.strip()
        if not text or text.startswith("#"):
            return
        name, _, rest = text.partition(" ")
        command = COMMANDS.get(name.lower())
        try:
            if command is None:
                message = unknown("command", name, list(COMMANDS))
                raise ShellError(message if message.endswith("?")
                                 else f"{message} ('help' lists the commands)")
            command.run(self, rest.strip())
        except (ShellError, UnknownNameError, RunIdError, FlowArgumentError) as exc:
            self.error(str(exc), exc)
        except NodeDownError as exc:
            hint = f": 'restart {self.current}' starts it again" if self.control else ""
            self.error(f"{exc}{hint}", exc)
        except Exception as exc:
            # An error from a remote node carries the name of the node's exception class.
            kind = exc.type if isinstance(exc, RpcError) else type(exc).__name__
            self.error(f"{kind}: {exc}" if str(exc) else kind, exc)

    def error(self, message: str, exc: BaseException | None = None) -> None:
        """Report a failed command (with the traceback in debug mode)."""
        if self.debug and exc is not None:
            self.console.print_exception()
        self.console.print(Text(message, style="red"))

    def say(self, message: str, *, style: str = "") -> None:
        """One line of plain output (no markup, no highlighting)."""
        self.console.print(Text(message, style=style))

    def settle(self) -> None:
        """Let the network run until nothing can move (bounded), so what is shown is current."""
        self.ops.pump()

    def node_name(self, name: str) -> str:
        """The node called ``name`` (case-insensitive); ``ShellError`` with the closest."""
        for known in self.nodes:
            if known.casefold() == name.strip().casefold():
                return known
        raise ShellError(unknown("node", name, list(self.nodes)) +
                         f" (nodes: {', '.join(self.nodes)})")

    # ----- watching flows ------------------------------------------------------------------------

    def add_to_watch(self, watch: Watch, run_id: str) -> None:
        """Follow ``run_id`` in ``watch`` (once)."""
        if run_id not in watch.run_ids:
            watch.run_ids.append(run_id)
            watch.subscriptions.append(self.ops.progress_feed(run_id, watch.view.update))

    def follow(self, watch: Watch, *, all_flows: bool, until_idle: bool) -> None:
        """Show ``watch`` live while running the network: until its flows ended (unless
        ``all_flows``: then flows that start are added and only a key ends it), a key is
        pressed, or (``until_idle``, or without a terminal) nothing can move any more. Then
        say how each flow ended or what it still waits for."""
        ops = self.ops
        if all_flows:
            for machine in ops.state_machines():
                self.add_to_watch(watch, machine.run_id)

            def added(update: StateMachineUpdate) -> None:
                if update.kind == "added":
                    self.add_to_watch(watch, update.machine.run_id)

            watch.subscriptions.append(ops.state_machines_feed(added))
        if self.keys.interactive:
            watch.view.footer = "press any key to stop watching (the flows keep running)"
        stopped_by_key = idle = False
        try:
            with self._live(watch.view) as live:
                while all_flows or not all(watch.finished(r) for r in watch.run_ids):
                    idle = ops.pump(max_events=1)
                    if watch.view.dirty:
                        live.refresh()
                    done = not all_flows and all(watch.finished(r) for r in watch.run_ids)
                    if done or (idle and (until_idle or not self.keys.interactive)):
                        break
                    if self.keys.pressed(0.2 if idle else self.pace):
                        stopped_by_key = True
                        break
                watch.view.footer = ""
                live.refresh()
            if not self.console.is_terminal:
                self.console.line()  # Live ends a terminal's last line itself, not a file's
        finally:
            for subscription in watch.subscriptions:
                subscription.unsubscribe()
        self._report(watch, stopped_by_key=stopped_by_key, idle=idle)

    @contextmanager
    def _live(self, view: WatchView) -> Iterator[Live]:
        with self.keys.watching(), Live(view, console=self.console, auto_refresh=False,
                                        redirect_stdout=False, redirect_stderr=False) as live:
            yield live

    def _report(self, watch: Watch, *, stopped_by_key: bool, idle: bool) -> None:
        running = {m.run_id: m for m in self.ops.state_machines()}
        hospital = {row.run_id: row for row in self.ops.hospital()}
        for run_id in watch.run_ids:
            snapshot: ProgressSnapshot | None = watch.view.snapshots.get(run_id)
            if snapshot is not None and snapshot.outcome is not None:
                self.console.print(outcome_text(snapshot.outcome))
            elif run_id in hospital:
                row = hospital[run_id]
                self.say(f"! {row.flow_class} {run_id[:8]} is in the hospital: {row.diagnosis}",
                         style="yellow")
            elif run_id in running:
                machine = running[run_id]
                waiting = f", waiting for {machine.waiting_for}" if machine.waiting_for else ""
                why = ("nothing can move it now (is a node down?)" if idle and not stopped_by_key
                       else "it keeps running")
                self.say(f"… {machine.flow_class} {run_id[:8]} is still running{waiting}: "
                         f"{why}; 'flow watch {run_id[:8]}' follows it", style="yellow")


def unknown(kind: str, name: str, known: list[str]) -> str:
    """``unknown command 'flw'; did you mean 'flow'?`` (the closest of ``known``, if any)."""
    close = closest(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{hint}"
