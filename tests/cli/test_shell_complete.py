"""Tab completion: the candidates ``ShellCompleter`` offers for a line, by position and type."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent, Completion
from prompt_toolkit.document import Document
from rich.console import Console

from cli._repl_embedded import EmbeddedShellNetwork
from cli._shell import Shell
from cli._shell_complete import ShellCompleter


@pytest.fixture
def network(tmp_path: Path) -> Iterator[EmbeddedShellNetwork]:
    network = EmbeddedShellNetwork(tmp_path / "run")
    network.prepare()
    try:
        yield network
    finally:
        network.close()


@pytest.fixture
def shell(network: EmbeddedShellNetwork) -> Shell:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    return Shell(network.ops, console, current="BuyerBank", control=network, pace=0.0)


def completions(shell: Shell, text: str) -> list[Completion]:
    return list(ShellCompleter(shell).get_completions(Document(text), CompleteEvent()))


def texts(shell: Shell, text: str) -> list[str]:
    return [c.text for c in completions(shell, text)]


def test_commands_complete_from_the_start_of_the_line(shell: Shell) -> None:
    assert texts(shell, "") == ["flow", "hospital", "checkpoints", "vault", "network", "node",
                                "use", "crash", "restart", "py", "help", "exit", "quit"]
    assert texts(shell, "fl") == ["flow"]
    assert texts(shell, "H") == ["hospital", "help"]


def test_embedded_only_commands_are_not_offered_without_the_embedded_network(
    network: EmbeddedShellNetwork,
) -> None:
    plain = Shell(network.ops, Console(file=io.StringIO()), current="BuyerBank")
    assert "crash" not in texts(plain, "")


def test_subcommands_complete_after_their_command(shell: Shell) -> None:
    assert texts(shell, "flow ") == ["list", "classes", "start", "watch", "inspect", "kill"]
    assert texts(shell, "flow st") == ["start"]
    assert texts(shell, "hospital ") == ["retry", "kill"]
    assert texts(shell, "node drain ") == ["on", "off"]
    assert texts(shell, "help fl") == ["flow"]


def test_flow_names_complete_after_flow_start(shell: Shell) -> None:
    assert {"CashExitFlow", "CashIssueFlow", "CashPaymentFlow"} <= set(
        texts(shell, "flow start Cash"))
    assert all(t.startswith("Cash") for t in texts(shell, "flow start Cash"))


def test_argument_names_complete_until_each_is_given(shell: Shell) -> None:
    assert texts(shell, "flow start CashPaymentFlow ") == ["amount: ", "recipient: "]
    assert texts(shell, "flow start CashPaymentFlow amount: 10 USD, ") == ["recipient: "]
    assert texts(shell, "flow start CashPaymentFlow amount: 10 USD, rec") == ["recipient: "]
    assert texts(shell, "flow start CashPaymentFlow amount: 1,000 USD, ") == ["recipient: "]


def test_party_arguments_complete_to_names_on_the_network_map(shell: Shell) -> None:
    assert texts(shell, "flow start CashPaymentFlow recipient: ") == [
        "BuyerBank", "Notary", "SellerBank"]
    [completion] = completions(shell, "flow start CashPaymentFlow amount: 1 USD, recipient: se")
    assert (completion.text, completion.start_position) == ("SellerBank", -2)


def test_state_arguments_complete_to_vault_references(shell: Shell) -> None:
    shell.execute("use SellerBank")
    [completion] = completions(shell, "flow start SellerStarter asset_to_sell: ")
    [row] = shell.ops.vault_query("CommercialPaper")
    assert completion.text == row.ref[:12] + "(0)"
    assert completion.display_meta_text == row.description


def test_run_ids_complete_with_their_flow_as_meta(shell: Shell) -> None:
    shell.execute("crash SellerBank")
    shell.execute("flow start CashPaymentFlow amount: 1 USD, recipient: SellerBank")
    [machine] = shell.ops.state_machines()
    [completion] = completions(shell, "flow inspect ")
    assert completion.text == machine.run_id[:8]
    assert completion.display_meta_text == "CashPaymentFlow suspended"
    assert texts(shell, f"flow kill {machine.run_id[:3]}") == [machine.run_id[:8]]
    assert texts(shell, "flow kill xyz") == []
    assert texts(shell, "hospital retry ") == []


def test_nodes_and_state_types_complete_where_commands_take_them(shell: Shell) -> None:
    assert texts(shell, "use ") == ["Notary", "SellerBank", "BuyerBank"]
    assert texts(shell, "restart B") == ["BuyerBank"]
    assert {"Cash.State", "CommercialPaper.State"} <= set(texts(shell, "vault C"))


def test_completion_on_a_node_that_is_down_offers_nothing_and_does_not_raise(
    shell: Shell,
) -> None:
    shell.execute("crash BuyerBank")
    assert texts(shell, "flow inspect ") == []
    assert texts(shell, "flow start CashPaymentFlow recipient: ") == []
