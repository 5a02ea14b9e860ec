"""Tab completion for the shell (a prompt_toolkit ``Completer``): command and subcommand
names, flow names, a flow's argument names and, by the argument's type, party names, vault
state references and state types; run ids, node names and state types where a command takes
them. Candidates come from the shell's ``NodeOps`` at the moment Tab is pressed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from cli._convert import split_arguments
from cli._shell import Shell
from cli._shell_commands import (
    ARGS,
    COMMAND,
    COMMANDS,
    FLOW,
    HOSPITAL_ID,
    NODE,
    ON_OFF,
    RUN_ID,
    STATE_TYPE,
)
from cli._shell_view import short_ref

__all__ = ["ShellCompleter"]

_ARGS_START = re.compile(r"\s*\S+\s+\S+\s+\S+\s")  # "flow start <Flow> "
_NAME_BEING_TYPED = re.compile(r",\s*([A-Za-z_]\w*)?$")


class ShellCompleter(Completer):
    """Completes a shell line; never raises (a failing lookup just offers nothing)."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        try:
            yield from self._complete(document.text_before_cursor)
        except Exception:
            return  # e.g. the node is down: nothing to offer, and the prompt must not break

    def _complete(self, text: str) -> Iterator[Completion]:
        words = text.split()
        current = words.pop() if text and not text[-1].isspace() else ""
        if not words:
            yield from _matching(current, self._command_names())
            return
        command = COMMANDS.get(words[0].lower())
        if command is None:
            return
        kinds = command.args
        position = len(words) - 1  # index of the word being completed among the arguments
        if command.subs:
            if position == 0:
                yield from _matching(current, [s.name for s in command.subs])
                return
            sub = command.sub(words[1])
            if sub is None:
                return
            kinds, position = sub.args, position - 1
        if not kinds:
            return
        kind = kinds[min(position, len(kinds) - 1)]
        if kind == ARGS:
            yield from self._flow_arguments(words[2], text)
        elif position < len(kinds) or kind == RUN_ID:
            yield from self._values(kind, current)

    def _command_names(self) -> list[str]:
        embedded = self.shell.control is not None
        return [name for name, c in COMMANDS.items() if embedded or not c.embedded]

    def _values(self, kind: str, current: str) -> Iterator[Completion]:
        ops = self.shell.ops
        if kind == FLOW:
            yield from _matching(current, [f.name for f in ops.startable_flows()])
        elif kind == RUN_ID:
            rows = [(m.run_id, f"{m.flow_class} {m.status.lower()}")
                    for m in ops.state_machines()]
            rows += [(h.run_id, f"{h.flow_class} hospitalised") for h in ops.hospital()]
            yield from _run_ids(current, rows)
        elif kind == HOSPITAL_ID:
            yield from _run_ids(current, [(h.run_id, h.flow_class) for h in ops.hospital()])
        elif kind == NODE:
            yield from _matching(current, list(self.shell.nodes))
        elif kind == STATE_TYPE:
            yield from _matching(current, ops.state_types())
        elif kind == COMMAND:
            yield from _matching(current, self._command_names())
        elif kind == ON_OFF:
            yield from _matching(current, ["on", "off"])

    def _flow_arguments(self, flow_name: str, text: str) -> Iterator[Completion]:
        """After ``flow start <Flow> ``: argument names not given yet, or values for the
        argument being written, by its type."""
        info = self.shell.ops.flow_class_info(flow_name)
        start = _ARGS_START.match(text)
        items = split_arguments(text[start.end() if start else len(text):])
        given = {item.partition(":")[0].strip() for item in items}
        last = items[-1]
        # A comma counts as a separator only before "name:", so a name being typed is still
        # part of the last item: "amount: 10 USD, rec".
        typing_name = _NAME_BEING_TYPED.search(last)
        if typing_name is not None or ":" not in last:
            prefix = (typing_name.group(1) or "") if typing_name is not None else last.strip()
            names = [f"{p.name}: " for p in info.params if p.name not in given]
            yield from _matching(prefix, names)
            return
        name, _, value = last.partition(":")
        param = next((p for p in info.params if p.name == name.strip()), None)
        if param is None:
            return
        value = value.lstrip()
        ops = self.shell.ops
        if param.type_name in ("Party", "Party | None", "list[Party]"):
            yield from _matching(value, [row.name for row in ops.network_map()])
        elif param.type_name.startswith("StateAndRef"):
            rows = ops.vault_query(None)
            yield from (Completion(short_ref(r.ref), -len(value), display_meta=r.description)
                        for r in rows if short_ref(r.ref).startswith(value.lower()))
        elif param.type_name == "type":
            yield from _matching(value, ops.state_types())
        elif param.type_name == "bool":
            yield from _matching(value, ["true", "false"])


def _matching(current: str, candidates: list[str]) -> Iterator[Completion]:
    folded = current.casefold()
    for candidate in candidates:
        if candidate.casefold().startswith(folded):
            yield Completion(candidate, -len(current))


def _run_ids(current: str, rows: list[tuple[str, str]]) -> Iterator[Completion]:
    wanted = current.lower().replace("-", "")
    for run_id, meta in rows:
        if run_id.replace("-", "").startswith(wanted):
            yield Completion(run_id[:8], -len(current), display_meta=meta)
