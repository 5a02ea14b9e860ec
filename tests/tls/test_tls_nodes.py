"""Ledger nodes on threaded runtimes talking over the TLS transport, in one process: each
built from its node directory exactly as `fibers node run` builds it (``NodeProcess``), each
with its own network map, so only TLS connects them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli._bootstrap import BootstrapPlan, bootstrap
from cli._node_process import NodeProcess
from cli._process_network import free_base_port
from fibers.tls import TlsFiles
from finance import Amount, Cash, CashIssueFlow, CashPaymentFlow
from tests.tls._net import TIMEOUT, closed_by_peer, tls_client

pytestmark = pytest.mark.slow

NAMES = ("Notary", "BankA", "BankB")


class Nodes:
    def __init__(self, base: Path) -> None:
        self.base = base
        bootstrap(BootstrapPlan(base, "Notary", True, NAMES[1:],
                                base_port=free_base_port(2 * len(NAMES))))
        self.processes: dict[str, NodeProcess] = {}
        for name in NAMES:
            self.start(name)

    def start(self, name: str) -> NodeProcess:
        process = self.processes[name] = NodeProcess(self.base / name)
        process.start()
        return process

    def run(self, name: str, flow: Any) -> Any:
        handle = self.processes[name].runtime.call(lambda n: n.start_flow(flow)).result(TIMEOUT)
        return handle.result.result(timeout=TIMEOUT)

    def cash(self, name: str) -> int:
        return self.processes[name].runtime.call(
            lambda n: sum(s.state.data.amount.quantity for s in n.services.vault.query(
                Cash.State))).result(TIMEOUT)

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    network = Nodes(tmp_path / "net")
    try:
        yield network
    finally:
        network.stop()


def test_a_payment_between_nodes_settles_over_tls(nodes: Nodes) -> None:
    notary = nodes.processes["Notary"].identity.party
    bank_b = nodes.processes["BankB"].identity.party
    nodes.run("BankA", CashIssueFlow(Amount.parse("100.00 USD"), b"\x01", notary))
    nodes.run("BankA", CashPaymentFlow(Amount.parse("30.00 USD"), bank_b))
    assert nodes.cash("BankA") == 7000
    assert nodes.cash("BankB") == 3000
    transport = nodes.processes["BankB"].transport
    assert transport.stats.refused == transport.stats.garbage == 0


def test_a_payment_to_a_stopped_node_settles_once_it_is_back(nodes: Nodes) -> None:
    notary = nodes.processes["Notary"].identity.party
    bank_b = nodes.processes["BankB"].identity.party
    nodes.run("BankA", CashIssueFlow(Amount.parse("100.00 USD"), b"\x01", notary))
    nodes.run("BankA", CashPaymentFlow(Amount.parse("10.00 USD"), bank_b))  # connect first
    nodes.processes["BankB"].stop()
    handle = nodes.processes["BankA"].runtime.call(
        lambda n: n.start_flow(CashPaymentFlow(Amount.parse("20.00 USD"), bank_b))
    ).result(TIMEOUT)
    assert not handle.result.done()
    nodes.start("BankB")  # the same directory: it restores, BankA reconnects and re-sends
    handle.result.result(timeout=TIMEOUT)
    assert nodes.cash("BankB") == 3000
    assert nodes.cash("BankA") == 7000


def test_a_node_whose_peer_sends_garbage_disconnects_it_and_carries_on(nodes: Nodes) -> None:
    notary = nodes.processes["Notary"].identity.party
    bank_b = nodes.processes["BankB"]
    files = TlsFiles.in_dir(nodes.base / "BankA" / "tls")  # a genuine peer gone bad
    with tls_client(bank_b.config.p2p_port, files, files.ca) as client:
        client.sendall(b"\x00\x00\x00\x05" + b"not a session message"[:5]
                       + b"\xff\xff\xff\xff")
        assert closed_by_peer(client)
    assert bank_b.transport.stats.garbage == 1
    nodes.run("BankA", CashIssueFlow(Amount.parse("100.00 USD"), b"\x01", notary))
    nodes.run("BankA", CashPaymentFlow(Amount.parse("30.00 USD"), bank_b.identity.party))
    assert nodes.cash("BankB") == 3000
    malformed = bank_b.runtime.call(lambda n: n.frame_stats.malformed).result(TIMEOUT)
    assert malformed == 1  # the well-framed bytes reached the node, which dropped them
