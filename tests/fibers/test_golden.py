"""Golden files pin the journal and checkpoint format (see tests/fibers/golden/README.md).

A fixed scenario (fixed keys, node secrets, run ids, session ids, clock and random bytes) runs
two nodes to a fixed point, where Alice waits inside a sub-flow and Bob in a sleep. Their stored
records are compared with the committed golden files byte for byte, and the golden files are
loaded into fresh storage and restored, and the flows finish from them.

Regenerate (only when the format changes on purpose, and say so in the commit):

    FIBERS_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/fibers/test_golden.py
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fibers import StateMachineRunId
from fibers import _identity as identities
from fibers._checkpoint_store import DATABASES
from fibers._frame_snapshots import FrameSnapshot, decode_snapshots, encode_snapshots
from fibers._identity import NodeIdentity
from fibers._journal import Snapshot
from fibers._node import Node
from fibers._step_record import decode_step, encode_step
from fibers._storage import NodeStorage
from fibers.services import ServiceHub
from fibers.testing import MockNetwork
from tests.fibers.golden_flows import GoldenAsk, Tickets

GOLDEN = Path(__file__).parent / "golden"
REPO = Path(__file__).resolve().parents[2]
REGENERATE = os.environ.get("FIBERS_REGENERATE_GOLDEN") == "1"
NAMES = ("Alice", "Bob")
PYTHON = "{}.{}".format(*sys.version_info[:2])


# ----- the fixed scenario ---------------------------------------------------------------------


def _identity(name: str, private_key: Ed25519PrivateKey | None = None) -> NodeIdentity:
    """A node identity whose key is derived from the name (when a node first stores one)."""
    seed = hashlib.sha256(b"fibers golden key " + name.encode()).digest()
    return NodeIdentity(name, private_key or Ed25519PrivateKey.from_private_bytes(seed))


def _deterministic(monkeypatch: pytest.MonkeyPatch, base: Path) -> None:
    """Fix everything the scenario would otherwise draw at random."""
    for name in NAMES:
        directory = base / name
        directory.mkdir(parents=True)
        secret = directory / "node.secret"
        secret.write_bytes(hashlib.sha256(b"fibers golden secret " + name.encode()).digest())
        secret.chmod(0o600)
    run_ids = itertools.count(1)
    session_ids = itertools.count(1001)
    monkeypatch.setattr(identities, "NodeIdentity", _identity)
    monkeypatch.setattr(StateMachineRunId, "_new",
                        classmethod(lambda cls: cls(uuid.UUID(int=next(run_ids)))))
    monkeypatch.setattr(Node, "new_session_id", lambda self: next(session_ids))
    monkeypatch.setattr(os, "urandom", lambda count: bytes(range(count)))


class GoldenHub(ServiceHub):
    """The scenario's service as a typed attribute (``self.service_hub.tickets``)."""

    tickets: Tickets


def _install_tickets(node: Node[GoldenHub]) -> None:
    node.services.tickets = node.services.install("tickets", Tickets())


class GoldenNetwork(MockNetwork[GoldenHub]):
    """Installs the scenario's service on every node before it restores its flows."""

    def _node_setup(self, identity: NodeIdentity) -> Callable[[Node[GoldenHub]], object] | None:
        return _install_tickets


def _network(base: Path) -> MockNetwork[GoldenHub]:
    network = GoldenNetwork(base, hub=GoldenHub)
    for name in NAMES:
        network.create_node(name)
    return network


def _run_to_the_golden_point(network: MockNetwork) -> StateMachineRunId:
    alice, bob = network.node("Alice"), network.node("Bob")
    handle = alice.start_flow(GoldenAsk(bob.party))
    network.run_network()
    network.advance_time(5)  # Alice's sleep
    network.run_network()  # Alice asks "second"; Bob stores it and sleeps for 60 s
    [waiting] = alice.flows()
    assert waiting.waiting_for == "a message from Bob"
    [sleeping] = bob.flows()
    assert sleeping.waiting_for is not None and "timer" in sleeping.waiting_for
    return handle.id


def _records(storage: NodeStorage) -> dict[str, list[list[str]]]:
    """Every stored record by database, as hex; step records' snapshots with
    repository-relative file names (the only machine-dependent field), re-sealed."""
    dump: dict[str, list[list[str]]] = {}
    with storage.read() as txn:
        for db in DATABASES:
            rows = []
            for key, stored in storage.prefix_items(txn, db, b""):
                value = stored
                if db == "steps":
                    value = storage.seal(db, key, _relative(storage.unseal(db, key, stored)))
                rows.append([key.hex(), value.hex()])
            dump[db] = rows
    return dump


def _with_frames(step_record: bytes, edit: Callable[[FrameSnapshot], FrameSnapshot]) -> bytes:
    """A step record whose snapshot's frames went through ``edit``."""
    start, journal, snapshot = decode_step(step_record)
    if snapshot is not None:
        frames = [edit(f) for f in decode_snapshots(snapshot.frames)] if snapshot.frames else []
        snapshot = dataclasses.replace(
            snapshot, frames=encode_snapshots(frames) if snapshot.frames else b"")
    return encode_step(start, journal, snapshot)


def _relative(step_record: bytes) -> bytes:
    return _with_frames(step_record, lambda f: dataclasses.replace(
        f, filename=Path(f.filename).resolve().relative_to(REPO).as_posix()))


def _without_fingerprints(storage: NodeStorage, rows: list[list[str]]) -> list[list[str]]:
    """Step rows with the frames' code fingerprints blanked: a fingerprint covers the
    bytecode, which each Python minor version compiles differently."""
    blanked = []
    for key_hex, value_hex in rows:
        key = bytes.fromhex(key_hex)
        record = _with_frames(storage.unseal("steps", key, bytes.fromhex(value_hex)),
                              lambda f: dataclasses.replace(f, code_fingerprint=""))
        blanked.append([key_hex, storage.seal("steps", key, record).hex()])
    return blanked


def _steps(rows: list[list[str]]) -> tuple[list[str], Snapshot | None]:
    """The journal entry kinds and the latest snapshot of golden step rows."""
    kinds: list[str] = []
    latest = None
    for _, value in rows:
        _, journal, snapshot = decode_step(_payload(value))
        kinds.extend(entry[0] for entry in journal)
        latest = snapshot or latest
    return kinds, latest


def _golden(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((GOLDEN / f"{name.lower()}.json").read_text())
    return data


# ----- the tests --------------------------------------------------------------------------------


def test_todays_encoder_writes_the_golden_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _deterministic(monkeypatch, tmp_path)
    with _network(tmp_path) as network:
        run_id = _run_to_the_golden_point(network)
        for name in NAMES:
            storage = network.node(name).storage
            assert storage is not None
            records = _records(storage)
            if REGENERATE:
                GOLDEN.mkdir(exist_ok=True)
                document = {"node": name, "run_id": str(run_id) if name == "Alice" else None,
                            "python": PYTHON, "records": records}
                path = GOLDEN / f"{name.lower()}.json"
                path.write_text(json.dumps(document, indent=1) + "\n")
                continue
            golden = _golden(name)
            assert set(golden["records"]) == set(records)
            if golden["python"] != PYTHON:  # bytecode differs: compare all but fingerprints
                golden["records"]["steps"] = _without_fingerprints(
                    storage, golden["records"]["steps"])
                records["steps"] = _without_fingerprints(storage, records["steps"])
            for db, rows in records.items():
                assert rows == golden["records"][db], (
                    f"{name}'s {db} records differ from tests/fibers/golden: the checkpoint "
                    "format changed. If on purpose, regenerate (see the module docstring)."
                )


def test_the_golden_records_decode_to_the_expected_journal() -> None:
    alice = _golden("Alice")["records"]
    kinds, decoded = _steps(alice["steps"])
    assert kinds == ["now", "random", "service", "open", "send", "recv", "info", "sleep",
                     "sub_flow", "send"]
    assert decoded is not None
    assert decoded.call_chain == ("GoldenAsk.call", "GoldenFollowUp.call")
    assert decoded.waiting == "a message from Bob"
    assert decoded.frames == b""  # the default policy (on_demand): no locals in step records
    bob = _golden("Bob")["records"]
    bob_kinds, bob_snapshot = _steps(bob["steps"])
    assert bob_snapshot is not None and "timer" in bob_snapshot.waiting
    assert bob_kinds == ["recv", "send", "recv", "sleep"]


def test_flows_restored_from_the_golden_records_finish(tmp_path: Path) -> None:
    for name in NAMES:  # fresh storage holding exactly the golden records
        directory = tmp_path / name
        directory.mkdir()
        secret = directory / "node.secret"
        secret.write_bytes(hashlib.sha256(b"fibers golden secret " + name.encode()).digest())
        secret.chmod(0o600)
        storage = NodeStorage.open(directory, sync=False)
        records = _golden(name)["records"]
        for db in DATABASES:
            storage.db(db)
        rows = [(db, bytes.fromhex(key), bytes.fromhex(value))
                for db, db_rows in records.items() for key, value in db_rows]

        def load(
            txn: Any, storage: NodeStorage = storage, rows: list[tuple[str, bytes, bytes]] = rows
        ) -> None:
            for db, key, value in rows:
                storage.put(txn, db, key, value)

        with storage.group() as group:
            error = group.step(load)
            assert error is None
        storage.close()
    run_id = StateMachineRunId.parse(_golden("Alice")["run_id"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(identities, "NodeIdentity", _identity)
        network = _network(tmp_path)
    with network:
        alice = network.node("Alice")
        assert alice.hospital() == [] and network.node("Bob").hospital() == []
        handle = alice.handle(run_id)
        network.advance_time(65)  # a fresh clock: 5 s of Alice's sleep, 60 s of Bob's
        network.run_network()
        assert handle.result.result(timeout=0) == (
            "FIRST:70/SECOND/v1/2026-01-01T00:00:00+00:00"
        )
        for name in NAMES:
            assert network.node(name).flows() == []


def _payload(sealed_hex: str) -> bytes:
    from fibers._storage import _SEAL_OVERHEAD

    return bytes.fromhex(sealed_hex)[_SEAL_OVERHEAD:]
