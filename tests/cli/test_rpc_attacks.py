"""The node RPC attacked: JSON bombs within the body limit, a body over it, wrong types for
every parameter of every operation, unicode, flow names that are not startable flows (nothing
is imported or built), permission strings that look like more than they are, credentials in
the URL, a client that disconnects mid-stream."""

from __future__ import annotations

import json
import socket
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fibers.rpc import connect
from tests.cli.rpc_nodes import PASSWORDS, RpcNodes
from tests.tls._net import wait_for

OPERATOR = ("operator", PASSWORDS["operator"])


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RpcNodes]:
    nodes = RpcNodes(tmp_path_factory.mktemp("rpc-attacks"))
    try:
        yield nodes
    finally:
        nodes.close()


def _http(nodes: RpcNodes, **kwargs: Any) -> httpx.Client:
    trust = ssl.create_default_context(cafile=str(nodes.node_dir / "tls" / "ca.crt"))
    return httpx.Client(base_url=nodes.server.url, verify=trust, timeout=30, **kwargs)


def _flow_count(nodes: RpcNodes) -> int:
    return int(nodes.on_bank_a(lambda n: len(list(n.checkpoints.load_flows()))))


def _op(nodes: RpcNodes, operation: str, user: str = "operator", **arguments: Any
        ) -> httpx.Response:
    """Call ``operation`` with ``arguments`` as JSON that may hold lone surrogates (escaped:
    ``json.dumps`` writes ``\\ud800``), which the client's encoder would refuse to send."""
    return _post(nodes, f"/api/v1/ops/{operation}", json.dumps(arguments).encode(),
                 (user, PASSWORDS[user]))


def _post(nodes: RpcNodes, path: str, body: bytes, user: tuple[str, str] = OPERATOR
          ) -> httpx.Response:
    with _http(nodes, auth=user) as http:
        return http.post(path, content=body, headers={"Content-Type": "application/json"})


# ----- JSON bombs and the body limit --------------------------------------------------------------

BOMBS = {
    "nested arrays": b'{"flow": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
    "nested objects": b'{"flow": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}",
    "a 900 KB flow name": b'{"flow": "' + b"A" * 900_000 + b'"}',
    "50,000 arguments": b'{"flow": "Parked", "args": {'
                        + b",".join(b'"k%d": "v"' % i for i in range(50_000)) + b"}}",
    "huge number": b'{"flow": ' + b"9" * 900_000 + b"}",
}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_a_json_bomb_within_the_limit_is_a_400_and_the_node_carries_on(
        nodes: RpcNodes, bomb: str) -> None:
    assert len(BOMBS[bomb]) <= 1 << 20
    before = _flow_count(nodes)
    response = _post(nodes, "/api/v1/ops/start_flow", BOMBS[bomb])
    assert response.status_code == 400, response.text[:300]
    assert len(response.content) < 4096  # the message does not echo the bomb back
    assert _flow_count(nodes) == before
    assert _post(nodes, "/api/v1/ops/node_info", b"{}").status_code == 200


def test_a_body_over_the_limit_is_refused_before_it_is_read(nodes: RpcNodes) -> None:
    # The client announces 10 GB and sends a few bytes: the server must answer now, from the
    # header, instead of waiting for (and buffering) the body.
    trust = ssl.create_default_context(cafile=str(nodes.node_dir / "tls" / "ca.crt"))
    raw = socket.create_connection((nodes.server.host, nodes.server.port), timeout=30)
    with trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"POST /api/v1/ops/node_info HTTP/1.1\r\nHost: x\r\n"
                    b"Authorization: Basic b3BlcmF0b3I6b3Atc2VjcmV0\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{")
        status_line = tls.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.split()[1] == b"413", status_line


def test_a_chunked_body_over_the_limit_is_refused(nodes: RpcNodes) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"flow": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}'

    with _http(nodes, auth=OPERATOR) as http:
        response = http.post("/api/v1/ops/start_flow", content=chunks())
    assert response.status_code == 413


# ----- wrong types for every parameter ------------------------------------------------------------

_WRONG = {"string": [5, 1.5, True, [], {}], "boolean": ["true", 1, 0, [], {}],
          "object": ["x", 5, [], True], "integer": ["1", 1.5, True], "number": ["1", True],
          "array": ["x", {}, 5]}


def _every_parameter(nodes: RpcNodes) -> list[tuple[str, str, str, Any]]:
    with nodes.client() as client:
        paths = client.openapi()["paths"]
    cases = []
    for path, item in paths.items():
        if "post" not in item or "requestBody" not in item["post"]:
            continue
        schema = item["post"]["requestBody"]["content"]["application/json"]["schema"]
        for name, prop in schema.get("properties", {}).items():
            for wrong in _WRONG[prop["type"]]:
                cases.append((path, name, prop["type"], wrong))
            if "additionalProperties" in prop:
                cases.append((path, name, "object of strings", {"k": 5}))
    return cases


def test_a_wrong_type_for_any_parameter_is_a_400_naming_it(nodes: RpcNodes) -> None:
    cases = _every_parameter(nodes)
    assert len(cases) > 30
    before = _flow_count(nodes)
    valid = {"string": "x", "boolean": False, "object": {}, "integer": 1, "number": 1.0,
             "array": []}
    with nodes.client() as client:
        paths = client.openapi()["paths"]
    with _http(nodes, auth=OPERATOR) as http:
        for path, name, _kind, wrong in cases:
            schema = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
            # Every other argument valid, so that only this one can be what is refused.
            body = {other: valid[prop["type"]] for other, prop in schema["properties"].items()}
            body[name] = wrong
            response = http.post(path, json=body)
            assert response.status_code == 400, (path, name, wrong, response.text)
            assert repr(name)[1:-1] in response.json()["error"]["message"], (path, name)
    assert _flow_count(nodes) == before
    assert nodes.on_bank_a(lambda n: n.is_draining) is False


# ----- names: unicode, things that are not startable flows --------------------------------------

@pytest.mark.parametrize("flow", [
    "os:system", "builtins:eval", "builtins.eval", "subprocess:Popen", "this:x",
    "antigravity:fly", "ledger:VaultService", "ledger.VaultService", "fibers:FlowLogic",
    "FlowLogic", "tests.fibers.test_sessions:Pong", "Pong", "__import__", "../../etc/passwd",
    "Parked\x00", "\ud800", "\uff30\uff41\uff52\uff4b\uff45\uff44", "P\u0430rked", "", " ",
    "Parked" * 10_000])
def test_a_name_that_is_not_a_startable_flow_starts_and_imports_nothing(
        nodes: RpcNodes, flow: str) -> None:
    modules = set(sys.modules)
    before = _flow_count(nodes)
    refused = _op(nodes, "start_flow", flow=flow, args={"label": "x"})
    assert refused.status_code == 400 and "startable flow" in refused.text, refused.text[:300]
    assert len(refused.content) < 4096
    assert _op(nodes, "start_flow", "cashier", flow=flow, args={"label": "x"}).status_code == 403
    assert _op(nodes, "flow_class_info", flow=flow).status_code == 400
    assert _flow_count(nodes) == before
    assert set(sys.modules) - modules == set()


@pytest.mark.parametrize("label", ["ünïcødé ✓", "\ud800", "\x00", "e\u0301", "🙂" * 1000,
                                   "\u202eevil"])
def test_unicode_arguments_start_and_come_back_as_given(nodes: RpcNodes, label: str) -> None:
    response = _op(nodes, "start_flow", flow="Parked", args={"label": label})
    assert response.status_code == 200, response.text
    started = response.json()["result"]
    assert started["flow_class"] == "Parked"
    inspected = _op(nodes, "inspect_flow", run_id=started["run_id"])
    assert inspected.status_code == 200, inspected.text
    assert _op(nodes, "kill_flow", run_id=started["run_id"]).json()["result"] is True


@pytest.mark.parametrize("run_id", ["../../etc/passwd", "/", "", "\x00", "%2e%2e", "*", "\ud800"])
def test_a_run_id_that_is_a_path_or_pattern_is_a_400(nodes: RpcNodes, run_id: str) -> None:
    for operation in ("outcome", "inspect_flow", "kill_flow", "retry", "hospital_kill",
                      "resolve_run_id"):
        response = _op(nodes, operation, run_id=run_id)
        assert response.status_code == 400, (operation, response.text)


@pytest.mark.parametrize("state_type", ["../../etc/passwd", "os.system", "\ud800", "*"])
def test_a_state_type_that_is_a_path_or_import_is_a_400(nodes: RpcNodes,
                                                         state_type: str) -> None:
    modules = set(sys.modules)
    response = _op(nodes, "vault_query", state_type=state_type)
    assert response.status_code == 400, response.text
    assert set(sys.modules) - modules == set()


def test_unsubscribing_with_a_path_as_id_is_harmless(nodes: RpcNodes) -> None:
    with _http(nodes, auth=OPERATOR) as http:
        for sid in ("..%2F..%2Fops%2Fshutdown", "%00", "x" * 5000):
            response = http.delete(f"/api/v1/subscriptions/{sid}")
            assert response.status_code in (200, 404)
    assert not nodes.shutdown_asked.is_set()


# ----- credentials ----------------------------------------------------------------------

def test_credentials_in_the_url_or_plain_http_are_refused_by_the_client(nodes: RpcNodes) -> None:
    ca = nodes.node_dir / "tls" / "ca.crt"
    url = nodes.server.url.replace("https://", "https://operator:op-secret@")
    with pytest.raises(ValueError, match="credentials") as in_url:
        connect(url, user="operator", password="op-secret", ca=ca)
    assert "op-secret" not in str(in_url.value)
    with pytest.raises(ValueError, match="https"):
        connect(nodes.server.url.replace("https://", "http://"), user="operator",
                password="op-secret", ca=ca)


# ----- feeds ----------------------------------------------------------------------------

def test_a_client_that_disconnects_mid_stream_ends_its_subscription(nodes: RpcNodes) -> None:
    before = nodes.server.open_subscriptions
    with _http(nodes, auth=OPERATOR) as http, \
            http.stream("POST", "/api/v1/feeds/state_machines_feed", json={}) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("data:")
        assert nodes.server.open_subscriptions == before + 1
    wait_for(lambda: nodes.server.open_subscriptions == before, "the subscription to end")


def test_permission_strings_that_look_like_more_are_refused_at_load(tmp_path: Path) -> None:
    from cli.rpc_node import NodeConfigError, serve_node
    from tests.cli.rpc_nodes import write_node_config

    for permission in ("all", "All", "StartFlow.*", "InvokeRpc.*", "*", "startflow.Parked",
                       "ALL ", "StartFlow.", "InvokeRpc"):
        node_dir = write_node_config(tmp_path / f"n{abs(hash(permission))}")
        config = (node_dir / "node.toml").read_text()
        (node_dir / "node.toml").write_text(
            config.replace('permissions = ["InvokeRpc.node_info"]',
                           f'permissions = ["{permission}"]'))
        with pytest.raises(NodeConfigError, match="permission") as refused:
            serve_node(None, node_dir)  # type: ignore[arg-type]
        assert repr(permission) in str(refused.value)


@pytest.mark.parametrize("user", ["../operator", "/etc/passwd", "..", "a/b", "", "\x00"])
def test_a_user_name_that_is_a_path_reads_no_file(nodes: RpcNodes, user: str) -> None:
    from cli.rpc_node import NodeConfigError, client_settings

    (nodes.node_dir.parent / "operator.password").write_text("outside")
    with pytest.raises(NodeConfigError, match="not a user name"):
        client_settings(nodes.node_dir, user)
    assert client_settings(nodes.node_dir).password == PASSWORDS["operator"]
