"""`fibers network bootstrap` and `fibers node run`: real node processes started here, synced
on their `ready` line and on observable state, each killed by its pid when the test ends."""

from __future__ import annotations

import json
import re
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from cli._node_process import NodeProcess
from cli._process_network import free_base_port
from fibers.storage import NodeStorage, stored_identity
from fibers.tls import IDENTITY_KEY_OID
from finance import Amount, Cash, CashIssueFlow, CashPaymentFlow
from tests.tls._net import TIMEOUT
from tests.tls._procs import NodeProc, fibers_cli

pytestmark = pytest.mark.slow


@pytest.fixture
def procs() -> Iterator[list[NodeProc]]:
    started: list[NodeProc] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.kill()


def _bootstrap(directory: Path, *nodes: str, base: int | None = None) -> int:
    base = base or free_base_port(2 * (1 + len(nodes)))
    args = ["network", "bootstrap", str(directory), "--notary", "Notary", "--base-port",
            str(base)]
    for node in nodes:
        args += ["--node", node]
    result = fibers_cli(*args)
    assert result.returncode == 0, result.stderr
    return base


def test_bootstrap_makes_a_self_contained_directory_per_node(tmp_path: Path) -> None:
    net = tmp_path / "net"
    base = _bootstrap(net, "BankA", "BankB")
    network = json.loads((net / "network.json").read_text())
    assert [(n["name"], n["p2p"], n["notary"]) for n in network["nodes"]] == [
        ("Notary", f"127.0.0.1:{base}", True), ("BankA", f"127.0.0.1:{base + 2}", False),
        ("BankB", f"127.0.0.1:{base + 4}", False)]
    ca = x509.load_pem_x509_certificate((net / "ca" / "ca.crt").read_bytes())
    for entry in network["nodes"]:
        node = net / entry["name"]
        assert json.loads((node / "network.json").read_text()) == network
        assert not (node / "ca.key").exists() and not (node / "tls" / "ca.key").exists()
        for private in (node / "tls" / "node.key", node / "operator.password"):
            assert stat.S_IMODE(private.stat().st_mode) == 0o600
        toml = (node / "node.toml").read_text()
        assert f'name = "{entry["name"]}"' in toml and 'permissions = ["ALL"]' in toml
        assert re.search(r'password_hash = "scrypt\$16384\$8\$1\$[^$]+\$[^$]+"', toml)
        cert = x509.load_pem_x509_certificate((node / "tls" / "node.crt").read_bytes())
        assert cert.issuer == ca.subject
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
            entry["name"]
        key = cert.extensions.get_extension_for_oid(IDENTITY_KEY_OID).value
        assert isinstance(key, x509.UnrecognizedExtension)
        assert key.value.hex() == entry["identity_key"]
        with NodeStorage.open(node / "storage") as storage:  # the identity, encrypted at rest
            assert stored_identity(storage, entry["name"]).party.owning_key.hex() == \
                entry["identity_key"]


def test_bootstrap_refuses_to_overwrite_a_network(tmp_path: Path) -> None:
    net = tmp_path / "net"
    _bootstrap(net, "BankA")
    before = (net / "network.json").read_bytes()
    result = fibers_cli("network", "bootstrap", str(net), "--notary", "Notary", "--node", "X")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "never overwritten" in result.stderr
    assert (net / "network.json").read_bytes() == before


def test_bootstrap_refuses_repeated_names(tmp_path: Path) -> None:
    result = fibers_cli("network", "bootstrap", str(tmp_path / "net"), "--notary", "A",
                        "--node", "A")
    assert result.returncode == 2 and "unique" in result.stderr
    assert not (tmp_path / "net").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_node_process_says_ready_and_stops_cleanly(tmp_path: Path, procs: list[NodeProc],
                                                     signum: int) -> None:
    net = tmp_path / "net"
    base = _bootstrap(net, "BankA")
    proc = NodeProc(net / "BankA")
    procs.append(proc)
    line = proc.wait_for_line("ready")
    assert f"p2p 127.0.0.1:{base + 2}" in line and f"https://127.0.0.1:{base + 3}" in line
    assert proc.signal(signum) == 0


def test_payments_to_a_node_process_settle_once_across_its_sigkill(
        tmp_path: Path, procs: list[NodeProc]) -> None:
    """BankA runs in this process (built as `fibers node run` builds it) and drives the flows;
    the notary and BankB are processes; BankB is SIGKILLed and started again."""
    net = tmp_path / "net"
    _bootstrap(net, "BankA", "BankB")
    notary_proc, bank_b = NodeProc(net / "Notary"), NodeProc(net / "BankB")
    procs += [notary_proc, bank_b]
    notary_proc.wait_for_line("ready")
    bank_b.wait_for_line("ready")
    bank_a = NodeProcess(net / "BankA")
    bank_a.start()
    try:
        runtime = bank_a.runtime
        notary = bank_a.network_map.party("Notary")
        payee = bank_a.network_map.party("BankB")

        def run(flow: object) -> None:
            handle = runtime.call(lambda n: n.start_flow(flow)).result(TIMEOUT)  # type: ignore
            handle.result.result(timeout=TIMEOUT)

        run(CashIssueFlow(Amount.parse("100.00 USD"), b"\x01", notary))
        run(CashPaymentFlow(Amount.parse("10.00 USD"), payee))
        bank_b.kill()  # SIGKILL: a crash
        pending = runtime.call(lambda n: n.start_flow(
            CashPaymentFlow(Amount.parse("25.00 USD"), payee))).result(TIMEOUT)
        restarted = NodeProc(net / "BankB")
        procs.append(restarted)
        restarted.wait_for_line("ready")
        pending.result.result(timeout=TIMEOUT)
        # Killed again while a payment to it is in flight, at whatever point it has reached.
        in_flight = runtime.call(lambda n: n.start_flow(
            CashPaymentFlow(Amount.parse("5.00 USD"), payee))).result(TIMEOUT)
        restarted.kill()
        again = NodeProc(net / "BankB")
        procs.append(again)
        again.wait_for_line("ready")
        in_flight.result.result(timeout=TIMEOUT)
        assert again.signal(signal.SIGTERM) == 0
        cash_a = runtime.call(lambda n: sum(s.state.data.amount.quantity
                                            for s in n.services.vault.query(Cash.State)))
        assert cash_a.result(TIMEOUT) == 6000
    finally:
        bank_a.stop()
    # BankB's storage, read after its clean stop: both payments, each exactly once.
    check = NodeProcess(net / "BankB")
    check.start()
    try:
        total = check.runtime.call(lambda n: sorted(
            s.state.data.amount.quantity for s in n.services.vault.query(Cash.State)))
        assert total.result(TIMEOUT) == [500, 1000, 2500]
    finally:
        check.stop()


def test_a_second_process_on_a_running_node_directory_is_refused(
        tmp_path: Path, procs: list[NodeProc]) -> None:
    net = tmp_path / "net"
    _bootstrap(net, "BankA")
    first = NodeProc(net / "BankA")
    procs.append(first)
    first.wait_for_line("ready")
    second = fibers_cli("node", "run", str(net / "BankA"))
    assert second.returncode == 1
    assert "another process runs the node" in second.stderr and "ready" not in second.stdout
    assert first.proc.poll() is None
    assert first.signal(signal.SIGTERM) == 0
