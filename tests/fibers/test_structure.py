"""The structure of the engine, checked on its source (``ast``) and at run time.

* No import cycle among ``fibers`` modules, counting the imports executed when a module is
  imported: module level, not under ``if TYPE_CHECKING:`` and not inside functions.
* No import inside a function that exists to dodge a cycle (``DEFERRED_IMPORTS`` lists those
  kept, each with its reason; today none).
* The flow side's parts touch no other object's underscore attributes, and one module walks a
  flow's stack (``fibers._stack``): the ``@suspendable`` check and the frame snapshot share it.
* The switch protocol's error names the likely cause when a flow does IO from outside its
  greenlet, and each potentially suspending request walks the stack once.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import fibers._state_machine
from fibers import FlowConfigurationError, FlowLogic, Party, initiated_by, initiating_flow
from fibers import suspendable as suspendable_
from fibers._flow_logic import binding_of
from fibers.testing import MockNetwork

PACKAGE = Path(fibers.__file__).parent

# (importing module, imported module) -> why the import must run inside a function.
DEFERRED_IMPORTS: dict[tuple[str, str], str] = {}

# The flow side's parts (docs/checkpoint-format.md): none touches another object's privates.
FLOW_SIDE = (
    "_annotations", "_checkpoint", "_checkpoint_store", "_flow_host", "_flow_logic", "_io",
    "_journal", "_kill", "_replay", "_requests", "_session", "_sessions", "_stack",
    "_state_machine", "_switch",
)
# Underscore names of other objects the flow side may use: the standard library's.
ALLOWED_PRIVATE = {("sys", "_getframe")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(node: ast.Import | ast.ImportFrom, module: str) -> set[str]:
    """The fibers modules ``node`` (in ``module``) imports. ``from fibers import _io`` imports
    the submodule; the package itself counts only when a name is taken from it."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in MODULES}
    if node.level:
        package = module.split(".")
        if MODULES[module].name != "__init__.py":
            package = package[:-1]
        base = ".".join(package[: len(package) - node.level + 1])
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    found = {f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES}
    if target in MODULES and len(found) < len(node.names):
        found.add(target)
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


Imports = Iterator[tuple[ast.Import | ast.ImportFrom, bool]]


def _visit(body: list[ast.stmt], at_import: bool) -> Imports:
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, at_import
        elif isinstance(node, ast.If) and _is_type_checking(node):
            yield from _visit(node.orelse, at_import)
        else:
            inner = at_import and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for field in ("body", "orelse", "finalbody"):
                yield from _visit(getattr(node, field, None) or [], inner)
            for part in (getattr(node, "handlers", None) or []) + (
                    getattr(node, "cases", None) or []):
                yield from _visit(part.body, inner)


def _imports(module: str) -> Imports:
    """Each import of ``module`` with whether it runs at import time."""
    path = MODULES[module]
    yield from _visit(ast.parse(path.read_text(), str(path)).body, True)


def import_graph() -> dict[str, set[str]]:
    """Module -> the fibers modules it imports at import time (packages count as modules)."""
    return {m: {t for node, now in _imports(m) if now for t in _imported(node, m)} - {m}
            for m in MODULES}


def deferred_imports() -> set[tuple[str, str]]:
    """(module, imported fibers module) for every import inside a function."""
    return {(m, t) for m in MODULES for node, now in _imports(m) if not now
            for t in _imported(node, m)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_checker_sees_imports_at_import_time_only() -> None:
    graph = import_graph()
    assert "fibers._wire" in graph["fibers._errors"]
    assert "fibers._errors" not in graph["fibers._wire"]
    # type-only imports do not count: _flow_logic names the state machine for mypy only
    assert "fibers._state_machine" not in graph["fibers._flow_logic"]
    assert "fibers._flow_logic" in graph["fibers._state_machine"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_fibers_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_no_import_is_deferred_into_a_function_to_dodge_a_cycle() -> None:
    """Each deferred import left is listed with its reason; a new one must be justified (or
    the cycle it dodges broken: a protocol in a lower module, a type-only import)."""
    assert deferred_imports() == set(DEFERRED_IMPORTS)


def test_the_flow_side_touches_no_other_objects_private_fields() -> None:
    offences = []
    for name in FLOW_SIDE:
        path = PACKAGE / f"{name}.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                continue
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Name) and (owner.id, node.attr) in ALLOWED_PRIVATE:
                continue
            if name == "_flow_logic" and node.attr == "_binding":
                continue  # the module owning a flow's binding, through bind()/binding_of()
            offences.append(f"fibers/{name}.py:{node.lineno}: {ast.unparse(node)}")
    assert offences == []


def test_one_module_walks_flow_stacks() -> None:
    walkers = sorted(
        name for name, path in MODULES.items()
        if "_getframe" in path.read_text() or ".f_back" in path.read_text()
    )
    assert walkers == ["fibers._stack"]


# ----- run time: the switch protocol and the single walk ------------------------------------


@initiating_flow
class Ask(FlowLogic[int]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable_
    def call(self) -> int:
        self.send(self.other, 1)
        first = self.receive(self.other, int).unwrap(int)
        return first + self.receive(self.other, int).unwrap(int)


@initiated_by(Ask)
class Answer(FlowLogic[None]):
    def __init__(self, other: Party) -> None:
        self.other = other

    @suspendable_
    def call(self) -> None:
        question = self.receive(self.other, int).unwrap(int)
        self.send(self.other, question + 1)
        self.send(self.other, question + 2)


def test_io_from_outside_the_flows_greenlet_names_the_likely_cause() -> None:
    with MockNetwork() as network:
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        flow = Ask(bob.party)
        alice.start_flow(flow)  # suspended in its first receive: nothing delivered yet
        assert binding_of(flow).machine.status.name == "SUSPENDED"  # type: ignore[union-attr]
        with pytest.raises(FlowConfigurationError, match=r"outside its own greenlet.*thread"):
            flow.receive(bob.party, int)
        network.run_network()
        binding = binding_of(flow)
        assert binding is not None and binding.machine.result_value == 5


def test_each_suspending_request_walks_the_stack_once(monkeypatch: pytest.MonkeyPatch) -> None:
    walks: list[tuple[str, ...]] = []
    real_walk = fibers._state_machine.walk

    def counting_walk(depth: int = 1) -> fibers._stack.FlowStack:
        stack = real_walk(depth + 1)
        walks.append(stack.call_chain)
        return stack

    monkeypatch.setattr(fibers._state_machine, "walk", counting_walk)
    with MockNetwork() as network:  # durable: every suspension takes a frame snapshot
        alice, bob = network.create_node("Alice"), network.create_node("Bob")
        handle = alice.start_flow(Ask(bob.party))
        network.run_network()
        assert handle.result.result(timeout=0) == 5
    ask, answer = (f"{cls.__qualname__}.call" for cls in (Ask, Answer))
    # one walk per receive (two in Ask, one in Answer), shared by check and snapshot
    assert sorted(walks) == sorted([(ask,), (ask,), (answer,)])
