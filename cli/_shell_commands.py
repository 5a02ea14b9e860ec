"""The shell's commands: what each does, its usage and help, and what its arguments are (for
completion). Each command is a function of the :class:`~cli._shell.Shell` and the rest of the
line; it reports through the shell's console and raises on bad input (the shell reports it).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from cli._convert import parse_arguments
from cli._shell import Shell, ShellError, Watch, unknown
from cli._shell_view import (
    checkpoints_tree,
    flow_classes_table,
    hospital_table,
    inspect_tree,
    machines_table,
    network_table,
    node_table,
    outcome_text,
    vault_table,
)

__all__ = ["COMMANDS", "Command", "Sub"]

# Argument kinds, for completion.
FLOW, ARGS, RUN_ID, HOSPITAL_ID, NODE, STATE_TYPE, COMMAND, ON_OFF = (
    "flow", "args", "run_id", "hospital_id", "node", "state_type", "command", "on_off")

Handler = Callable[[Shell, str], None]


@dataclass(frozen=True)
class Sub:
    """A subcommand (``flow start``)."""

    name: str
    usage: str
    summary: str
    run: Handler
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    """A command; with ``subs``, its first word picks one (``default`` runs without one)."""

    name: str
    usage: str
    summary: str
    default: Handler | None = None
    subs: tuple[Sub, ...] = ()
    args: tuple[str, ...] = ()
    details: str = ""
    embedded: bool = False

    def sub(self, name: str) -> Sub | None:
        """The subcommand called ``name``."""
        return next((s for s in self.subs if s.name == name.lower()), None)

    def run(self, shell: Shell, rest: str) -> None:
        """Run the command (or the subcommand named by the first word of ``rest``)."""
        if self.embedded and shell.control is None:
            raise ShellError(f"'{self.name}' works on the embedded network only "
                             "(fibers shell --embedded)")
        if not self.subs:
            assert self.default is not None
            self.default(shell, rest)
            return
        word, _, tail = rest.partition(" ")
        sub = self.sub(word) if word else None
        if sub is not None:
            sub.run(shell, tail.strip())
        elif not word and self.default is not None:
            self.default(shell, "")
        elif not word:
            raise ShellError(f"usage: {self.usage}; 'help {self.name}' says more")
        else:
            names = [s.name for s in self.subs]
            raise ShellError(unknown(f"{self.name} command", word, names) +
                             f" ({self.name} commands: {', '.join(names)})")


def _one(rest: str, what: str, usage: str) -> str:
    words = rest.split()
    if len(words) != 1:
        raise ShellError(f"usage: {usage} (give one {what})")
    return words[0]


# ----- flows -------------------------------------------------------------------------------------

def _flow_list(shell: Shell, rest: str) -> None:
    shell.settle()
    machines = shell.ops.state_machines()
    if not machines:
        shell.say(f"no flows running on {shell.current}; 'flow classes' lists the flows you "
                  "can start")
        return
    shell.console.print(machines_table(machines))


def _flow_classes(shell: Shell, rest: str) -> None:
    shell.console.print(flow_classes_table(shell.ops.startable_flows()))


def _flow_start(shell: Shell, rest: str) -> None:
    name, _, arg_text = rest.partition(" ")
    if not name:
        shell.console.print(flow_classes_table(shell.ops.startable_flows()))
        raise ShellError("usage: flow start <Flow> name: value, ... (flows above)")
    arguments = parse_arguments(arg_text)
    watch = Watch()
    started = shell.ops.start_tracked_flow(name, arguments, watch.view.update)
    watch.run_ids.append(started.run_id)
    watch.subscriptions.append(started.feed)
    shell.say(f"Started {started.flow_class} {started.short} ({started.run_id})")
    shell.follow(watch, all_flows=False, until_idle=True)


def _flow_watch(shell: Shell, rest: str) -> None:
    watch = Watch()
    ids = rest.split()
    for text in ids:
        shell.add_to_watch(watch, shell.ops.resolve_run_id(text))
    shell.follow(watch, all_flows=not ids, until_idle=False)


def _flow_inspect(shell: Shell, rest: str) -> None:
    run_id = _one(rest, "run id", "flow inspect <id>")
    shell.settle()
    shell.console.print(inspect_tree(shell.ops.inspect_flow(run_id)))


def _flow_kill(shell: Shell, rest: str) -> None:
    run_id = shell.ops.resolve_run_id(_one(rest, "run id", "flow kill <id>"))
    if not shell.ops.kill_flow(run_id):
        shell.say(f"flow {run_id[:8]} is not running: nothing to kill", style="yellow")
        return
    outcome = shell.ops.outcome(run_id)
    name = outcome.flow_class if outcome is not None else "flow"
    shell.say(f"Killed {name} {run_id[:8]}; its counterparties are told it ended")
    if outcome is not None and outcome.status != "KILLED":
        shell.console.print(outcome_text(outcome))  # it ended some other way on its way out


# ----- hospital, checkpoints ---------------------------------------------------------------------

def _hospital(shell: Shell, rest: str) -> None:
    shell.settle()
    rows = shell.ops.hospital()
    if not rows:
        shell.say(f"the hospital of {shell.current} is empty")
        return
    shell.console.print(hospital_table(rows))


def _hospital_retry(shell: Shell, rest: str) -> None:
    run_id = shell.ops.resolve_run_id(_one(rest, "run id", "hospital retry <id>"))
    if not shell.ops.retry(run_id):
        shell.say(f"flow {run_id[:8]} is not in the hospital", style="yellow")
        return
    shell.say(f"Retrying {run_id[:8]} from its checkpoint")
    watch = Watch()
    shell.add_to_watch(watch, run_id)
    shell.follow(watch, all_flows=False, until_idle=True)


def _hospital_kill(shell: Shell, rest: str) -> None:
    run_id = shell.ops.resolve_run_id(_one(rest, "run id", "hospital kill <id>"))
    if not shell.ops.hospital_kill(run_id):
        shell.say(f"flow {run_id[:8]} is not in the hospital", style="yellow")
        return
    shell.say(f"Killed hospitalised flow {run_id[:8]}; its checkpoint is deleted")


def _checkpoints_dump(shell: Shell, rest: str) -> None:
    shell.settle()
    entries = shell.ops.checkpoints_dump()
    if rest:
        path = Path(rest).expanduser()
        path.write_text(json.dumps(entries, indent=2, default=str) + "\n", encoding="utf-8")
        shell.say(f"Wrote {len(entries)} checkpoint(s) of {shell.current} to {path}")
        return
    shell.console.print(checkpoints_tree(entries, shell.current))


# ----- ledger, network, node ---------------------------------------------------------------------

def _vault(shell: Shell, rest: str) -> None:
    shell.settle()
    state_type = rest.strip() or None
    rows = shell.ops.vault_query(state_type)
    if not rows:
        kind = f"{state_type} states" if state_type else "states"
        shell.say(f"the vault of {shell.current} holds no unconsumed {kind}")
        return
    shell.console.print(vault_table(rows, title=f"Vault of {shell.current}"))


def _network(shell: Shell, rest: str) -> None:
    shell.settle()
    control = shell.control
    down = {n for n in shell.nodes if not control.is_up(n)} if control is not None else None
    shell.console.print(network_table(shell.ops.network_map(), down))


def _node(shell: Shell, rest: str) -> None:
    shell.settle()
    shell.console.print(node_table(shell.ops.node_info()))


def _node_drain(shell: Shell, rest: str) -> None:
    word = _one(rest, "of on or off", "node drain on|off").lower()
    if word not in ("on", "off"):
        raise ShellError("usage: node drain on|off")
    shell.ops.set_draining(word == "on")
    shell.say(f"{shell.current} is draining: it starts no new flows" if word == "on"
              else f"{shell.current} accepts new flows again")


def _use(shell: Shell, rest: str) -> None:
    shell.current = shell.node_name(_one(rest, "node name", "use <node>"))
    state = "" if shell.ops.is_up else " (it is down)"
    shell.say(f"now operating {shell.current}{state}")


def _crash(shell: Shell, rest: str) -> None:
    name = shell.node_name(_one(rest, "node name", "crash <node>"))
    assert shell.control is not None
    if not shell.control.is_up(name):
        raise ShellError(f"{name} is already down")
    shell.control.crash(name)
    shell.say(f"{name} crashed: its flows wait in its storage, messages for it wait in the "
              "network")


def _restart(shell: Shell, rest: str) -> None:
    name = shell.node_name(_one(rest, "node name", "restart <node>"))
    assert shell.control is not None
    if shell.control.is_up(name):
        raise ShellError(f"{name} is running; 'crash {name}' first")
    restored = shell.control.restart(name)
    shell.say(f"{name} restarted from its storage: {restored} flow(s) restored")


# ----- the shell itself --------------------------------------------------------------------------

class _Leave:
    """``exit()``/``quit()`` in the ``py`` prompt: back to the shell, stdin left open (the
    builtins close it)."""

    def __repr__(self) -> str:
        return "Use exit() or Ctrl-D to go back to the shell"

    def __call__(self, code: object = None) -> None:
        raise SystemExit(code)


def _py(shell: Shell, rest: str) -> None:
    import finance

    namespace: dict[str, Any] = {name: getattr(finance, name) for name in finance.__all__}
    namespace.update(ops=shell.ops, shell=shell, exit=_Leave(), quit=_Leave())
    if shell.namespace is not None:
        namespace.update(shell.namespace(shell.current))
    names = ", ".join(n for n in ("ops", "node", "net", "shell") if n in namespace)
    banner = (f"Python prompt on {shell.current}: {names} and the finance classes are in scope."
              " Ctrl-D or exit() goes back to the shell.")
    interact = shell.interact
    if interact is None:
        import code

        def interact(text: str, scope: dict[str, Any]) -> None:
            code.interact(banner=text, local=scope, exitmsg="")
    with contextlib.suppress(SystemExit):
        interact(banner, namespace)
    shell.say("back in the shell")


def _help(shell: Shell, rest: str) -> None:
    if rest:
        name = rest.split(maxsplit=1)[0].lower()
        command = COMMANDS.get(name)
        if command is None:
            raise ShellError(unknown("command", name, list(COMMANDS)))
        shell.say(f"{command.usage}: {command.summary}")
        for sub in command.subs:
            shell.say(f"  {sub.usage}: {sub.summary}")
        if command.details:
            shell.say(command.details)
        return
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
    for command in COMMANDS.values():
        if command.name == "quit" or (command.embedded and shell.control is None):
            continue
        if command.default is not None or not command.subs:
            table.add_row(Text(command.usage), Text(command.summary))
        for sub in command.subs:
            table.add_row(Text(sub.usage), Text(sub.summary))
    shell.console.print(table)
    shell.say("Run ids may be abbreviated to a unique prefix; Tab completes commands, flows, "
              "arguments, run ids and names. 'help <command>' says more.", style="dim")


def _exit(shell: Shell, rest: str) -> None:
    shell.finished = True


_START_DETAILS = """\
Arguments are name: value pairs separated by commas, converted to each parameter's type:
  Party a legal name (SellerBank); Amount 100 USD; int 42; bytes hex (01, 0xcafe) or text
  ("ref"); datetime ISO 8601 (UTC unless given), now, now+30d; StateAndRef <tx hash>(<index>)
  from the vault, the hash abbreviated (vault lists them); list [a, b]; None none.
Quote a value that holds ", name:". The flow is followed live until it ends or waits for
something that cannot happen now; any key stops following (the flow keeps running).
Example: flow start CashPaymentFlow amount: 100 USD, recipient: SellerBank"""

COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("flow", "flow <command>", "start, watch, inspect and kill flows", subs=(
        Sub("list", "flow list", "the running flows", _flow_list),
        Sub("classes", "flow classes", "the flows you can start, with their arguments",
            _flow_classes),
        Sub("start", "flow start <Flow> name: value, ...", "start a flow and follow it live",
            _flow_start, (FLOW, ARGS)),
        Sub("watch", "flow watch [id ...]", "live progress trees until a key is pressed",
            _flow_watch, (RUN_ID,)),
        Sub("inspect", "flow inspect <id>", "a flow's suspended stack with its locals",
            _flow_inspect, (RUN_ID,)),
        Sub("kill", "flow kill <id>", "end a flow; its counterparties are told",
            _flow_kill, (RUN_ID,)),
    ), details=_START_DETAILS),
    Command("hospital", "hospital", "the hospitalised flows and their diagnosis", _hospital,
            subs=(Sub("retry", "hospital retry <id>", "run a hospitalised flow again",
                      _hospital_retry, (HOSPITAL_ID,)),
                  Sub("kill", "hospital kill <id>", "kill a hospitalised flow",
                      _hospital_kill, (HOSPITAL_ID,)))),
    Command("checkpoints", "checkpoints dump [file]",
            "every checkpoint, with stacks and locals (as JSON to a file)",
            subs=(Sub("dump", "checkpoints dump [file]", "show (or write) the checkpoints",
                      _checkpoints_dump),)),
    Command("vault", "vault [StateType]", "the unconsumed states (of one type)", _vault,
            args=(STATE_TYPE,)),
    Command("network", "network", "the parties on the network map", _network),
    Command("node", "node", "this node: identity, flows, vault", _node,
            subs=(Sub("drain", "node drain on|off", "refuse (or accept again) new flows",
                      _node_drain, (ON_OFF,)),)),
    Command("use", "use <node>", "operate another node", _use, args=(NODE,)),
    Command("crash", "crash <node>", "stop a node as a crash would", _crash, args=(NODE,),
            embedded=True),
    Command("restart", "restart <node>", "start a crashed node from its storage", _restart,
            args=(NODE,), embedded=True),
    Command("py", "py", "a Python prompt with ops, the node and the finance classes", _py),
    Command("help", "help [command]", "this list, or more on one command", _help,
            args=(COMMAND,)),
    Command("exit", "exit", "leave the shell", _exit),
    Command("quit", "quit", "leave the shell", _exit),
)}
