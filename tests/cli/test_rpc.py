"""The node RPC in process: BankA (a ledger node on its own thread) served over HTTPS by
``serve_node``; clients are ``fibers.rpc.connect`` and raw httpx. Authentication and
permissions, durable starts, pushed progress, the vault, the hospital, bad requests, the
OpenAPI document, TLS trust, and the shell on ``RemoteNodeOps``."""

from __future__ import annotations

import io
import queue
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from cli._ops_remote import RemoteNodeOps
from cli._ops_values import ProgressSnapshot, VaultChange
from cli._shell import Shell
from fibers import Node, StateMachineRunId
from fibers.rpc import (
    RpcAuthenticationError,
    RpcConnectionError,
    RpcPermissionError,
    RpcRequestRefused,
)
from tests.cli.rpc_nodes import TIMEOUT, Ailing, RpcNodes
from tests.fibers._tls import write_tls

ISSUE = {"amount": "100.00 USD", "issuer_ref": "01", "notary": "Notary"}


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[RpcNodes]:
    nodes = RpcNodes(tmp_path)
    try:
        yield nodes
    finally:
        nodes.close()


def _raw(nodes: RpcNodes, **kwargs: Any) -> httpx.Client:
    trust = ssl.create_default_context(cafile=str(nodes.node_dir / "tls" / "ca.crt"))
    return httpx.Client(base_url=nodes.server.url, verify=trust, **kwargs)


def _stored_flows(nodes: RpcNodes) -> list[str]:
    return nodes.on_bank_a(lambda n: [str(f.run_id) for f in n.checkpoints.load_flows()])


# ----- authentication and permissions ------------------------------------------------------------

def test_a_call_without_credentials_is_refused_with_401(nodes: RpcNodes) -> None:
    with _raw(nodes) as http:
        response = http.post("/api/v1/ops/start_flow",
                             json={"flow": "Parked", "args": {"label": "x"}})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert response.json()["error"]["type"] == "AuthenticationError"
    assert _stored_flows(nodes) == []


def test_a_wrong_password_or_unknown_user_is_refused_with_401(nodes: RpcNodes) -> None:
    with nodes.client(password="not-it") as client, pytest.raises(RpcAuthenticationError):
        client.start_flow("Parked", label="x")
    with _raw(nodes, auth=("nobody", "x")) as http:
        assert http.post("/api/v1/ops/node_info").status_code == 401
    with _raw(nodes, headers={"Authorization": "Basic !!!"}) as http:
        assert http.post("/api/v1/ops/node_info").status_code == 401
    assert _stored_flows(nodes) == []


def test_a_missing_permission_is_refused_with_403_and_nothing_runs(nodes: RpcNodes) -> None:
    with nodes.client("viewer") as viewer:
        assert viewer.node_info()["name"] == "BankA"  # InvokeRpc.node_info
        with pytest.raises(RpcPermissionError, match="StartFlow"):
            viewer.start_flow("CashIssueFlow", **ISSUE)
        with pytest.raises(RpcPermissionError):
            viewer.set_draining(True)
        with pytest.raises(RpcPermissionError):
            viewer.subscribe("vault_track", lambda _e: None)
        with pytest.raises(RpcPermissionError):
            viewer.shutdown()
    assert _stored_flows(nodes) == []
    assert not nodes.shutdown_asked.is_set()
    with nodes.client() as operator:
        assert operator.vault_query() == []
        assert operator.node_info()["draining"] is False


def test_start_flow_permission_allows_only_its_class(nodes: RpcNodes) -> None:
    with nodes.client("cashier") as cashier:
        started = cashier.start_flow("CashIssueFlow", **ISSUE)
        assert started["flow_class"] == "CashIssueFlow"
        with pytest.raises(RpcPermissionError, match="StartFlow"):
            cashier.start_flow("Parked", label="x")
        with pytest.raises(RpcPermissionError):  # unknown to it: refused, not described
            cashier.start_flow("NoSuchFlow")
        with pytest.raises(RpcPermissionError):
            cashier.node_info()
        assert isinstance(cashier.vault_query(), list)  # InvokeRpc.vault_query
    assert all(rid != "x" for rid in _stored_flows(nodes))


def test_all_allows_every_flow_and_operation(nodes: RpcNodes) -> None:
    with nodes.client() as operator:
        parked = operator.start_flow("tests.cli.rpc_nodes.Parked", label="p")
        assert parked["flow_class"] == "Parked"
        operator.set_draining(True)
        with pytest.raises(Exception, match="draining") as refused:
            operator.start_flow("Parked", label="q")
        assert getattr(refused.value, "status", None) == 409
        operator.set_draining(False)
        operator.shutdown()
    assert nodes.shutdown_asked.is_set()


# ----- starts and feeds --------------------------------------------------------------------------

def test_a_start_returns_once_the_flows_first_step_is_committed(nodes: RpcNodes) -> None:
    with nodes.client() as operator:
        started = operator.start_flow("Parked", label="durable")

    def stored(node: Node) -> tuple[str, str | None]:
        flow = node.checkpoints.load_flow(StateMachineRunId.parse(started["run_id"]))
        return flow.flow_class, flow.diagnosis

    flow_class, diagnosis = nodes.on_bank_a(stored)
    assert flow_class.endswith("Parked") and diagnosis is None


def test_a_tracked_start_pushes_progress_until_the_outcome(nodes: RpcNodes) -> None:
    pushed: queue.Queue[dict[str, Any]] = queue.Queue()
    ended: queue.Queue[str] = queue.Queue()
    with nodes.client() as operator:
        first, subscription = operator.subscribe("start_tracked_flow", pushed.put,
                                                 on_end=ended.put, flow="CashIssueFlow",
                                                 args=ISSUE)
        snapshots = list(first["progress"])
        while not snapshots or snapshots[-1]["outcome"] is None:
            snapshots.append(pushed.get(timeout=TIMEOUT))
        assert ended.get(timeout=TIMEOUT) == "the feed ended"
        assert not subscription.active or subscription.thread.join(TIMEOUT) is None
    labels = {label for snapshot in snapshots for _depth, label in snapshot["steps"]}
    assert "Finalising the transaction" in labels
    assert snapshots[-1]["outcome"]["status"] == "COMPLETED"
    assert snapshots[-1]["run_id"] == first["run_id"]


def test_the_vault_is_queried_and_tracked(nodes: RpcNodes) -> None:
    ops_client = nodes.client()
    ops = RemoteNodeOps(ops_client)
    try:
        changes: list[VaultChange] = []
        rows, feed = ops.vault_track(changes.append, "Cash.State")
        assert rows == []
        progress: list[ProgressSnapshot] = []
        started = ops.start_tracked_flow("CashIssueFlow", ISSUE, progress.append)
        ops.pump(lambda: bool(changes) and bool(progress) and progress[-1].outcome is not None,
                 time_budget=TIMEOUT)
        feed.unsubscribe()
        started.feed.unsubscribe()
        [change] = changes
        [produced] = change.produced
        assert produced.state_type == "Cash.State" and "100.00 USD" in produced.description
        [row] = ops.vault_query("Cash")
        assert row.ref == produced.ref and not row.locked
        assert ops.vault_query("CommercialPaper.State") == []
    finally:
        ops_client.close()


def test_the_hospital_is_listed_retried_and_killed(nodes: RpcNodes) -> None:
    with nodes.client() as operator:
        first = operator.start_flow("Ailing", label="one")["run_id"]
        second = operator.start_flow("Ailing", label="two")["run_id"]
        rows = {row["run_id"]: row for row in operator.hospital()}
        assert set(rows) == {first, second}
        assert "one needs an operator" in rows[first]["diagnosis"]
        Ailing.healed = True
        assert operator.retry(first[:8]) is True
        assert operator.hospital_kill(second) is True
        assert operator.hospital() == []
        assert operator.retry(second) is False
        with pytest.raises(RpcRequestRefused, match="no flow on BankA"):
            operator.kill_flow("ffffffff")
    assert _stored_flows(nodes) == []


def test_the_state_machines_feed_reports_flows_added(nodes: RpcNodes) -> None:
    with nodes.client() as operator:
        updates: queue.Queue[dict[str, Any]] = queue.Queue()
        snapshot, subscription = operator.subscribe("state_machines_feed", updates.put)
        assert snapshot == []
        started = operator.start_flow("Parked", label="fed")
        update = updates.get(timeout=TIMEOUT)
        assert update["kind"] == "added" and update["machine"]["run_id"] == started["run_id"]
        assert operator.kill_flow(started["run_id"]) is True
        update = updates.get(timeout=TIMEOUT)
        assert update["kind"] == "removed" and update["outcome"]["status"] == "KILLED"
        subscription.unsubscribe()
        subscription.thread.join(TIMEOUT)
        assert not subscription.active


# ----- bad requests and the description ----------------------------------------------------------

@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object, got array"),
    (b'{"draining": "yes"}', "argument 'draining' must be boolean, got string"),
    (b'{}', "missing argument 'draining'"),
    (b'{"draining": true, "extra": 1}', "unknown argument(s) extra"),
])
def test_a_malformed_request_gets_400_naming_what_was_wrong(
    nodes: RpcNodes, body: bytes, message: str
) -> None:
    with _raw(nodes, auth=("operator", "op-secret")) as http:
        response = http.post("/api/v1/ops/set_draining", content=body,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert nodes.on_bank_a(lambda n: n.is_draining) is False


def test_bad_flow_arguments_and_unknown_operations(nodes: RpcNodes) -> None:
    with nodes.client() as operator:
        with pytest.raises(RpcRequestRefused, match="amount"):
            operator.start_flow("CashIssueFlow", amount="lots", issuer_ref="01",
                                notary="Notary")
        with pytest.raises(RpcRequestRefused) as wrong:
            operator.call("start_flow", flow="Parked", args={"label": 3})
        assert "argument 'args.label' must be string" in str(wrong.value)
        with pytest.raises(Exception, match="no operation 'py'") as missing:
            operator.call("py", code="1")
        assert getattr(missing.value, "status", None) == 404
    assert _stored_flows(nodes) == []


def test_the_openapi_document_is_served_and_valid(nodes: RpcNodes) -> None:
    from openapi_spec_validator import validate

    with nodes.client("viewer") as viewer:
        document = viewer.openapi()
    validate(document)
    paths = document["paths"]
    assert "/api/v1/ops/start_flow" in paths and "/api/v1/feeds/start_tracked_flow" in paths
    assert "/api/v1/ops/shutdown" in paths
    assert not any(path.rstrip("/").endswith("/py") for path in paths)
    schema = paths["/api/v1/ops/set_draining"]["post"]["requestBody"]["content"][
        "application/json"]["schema"]
    assert schema["properties"]["draining"] == {"type": "boolean"}


def test_a_client_that_does_not_trust_the_network_ca_is_refused(
    nodes: RpcNodes, tmp_path: Path
) -> None:
    other = write_tls(tmp_path / "other", ca_name="Another CA")
    with nodes.client(ca=other / "ca.crt") as stranger, pytest.raises(RpcConnectionError):
        stranger.node_info()
    with httpx.Client(verify=True) as http, pytest.raises(httpx.ConnectError):
        http.get(nodes.server.url + "/openapi.json")  # the system's CAs do not know it


# ----- the shell on RemoteNodeOps ----------------------------------------------------------------

def test_the_shell_runs_unchanged_on_remote_ops(nodes: RpcNodes) -> None:
    client = nodes.client()
    output = io.StringIO()
    console = Console(file=output, width=160, color_system=None)
    shell = Shell({"BankA": RemoteNodeOps(client)}, console, pace=0.01)
    try:
        shell.execute("flow start CashIssueFlow amount: 70 USD, issuer_ref: 07, notary: Notary")
        shell.execute("vault Cash")
        shell.execute("node")
        shell.execute("crash BankA")
        shell.execute("flow kill 0000")
    finally:
        client.close()
    text = output.getvalue()
    assert "Started CashIssueFlow" in text
    assert "✓ CashIssueFlow" in text and "completed: SignedTransaction" in text
    assert "70.00 USD" in text
    assert "'crash' works on the embedded network only" in text
    assert "no flow on BankA has a run id starting '0000'" in text


def test_a_node_that_went_away_is_shown_down_in_the_remote_shell(nodes: RpcNodes) -> None:
    client = nodes.client()
    output = io.StringIO()
    shell = Shell({"BankA": RemoteNodeOps(client)}, Console(file=output, width=160,
                                                            color_system=None))
    try:
        assert shell.prompt == "BankA> "
        nodes.server.stop()
        shell.execute("flow list")
        assert shell.prompt == "BankA (down)> "
    finally:
        client.close()
    assert "node BankA cannot be reached" in output.getvalue()


def test_calls_do_not_wait_for_a_delayed_ack(nodes: RpcNodes) -> None:
    """Without TCP_NODELAY a response's body waited for the client's delayed ACK of its headers
    (~40 ms a call on Linux). The bound is loose: only that signature fails it."""
    with nodes.client() as client:
        client.node_info()  # connect and authenticate once
        took = []
        for _ in range(15):
            start = time.perf_counter()
            client.node_info()
            took.append(time.perf_counter() - start)
    assert sorted(took)[len(took) // 2] < 0.025, took
